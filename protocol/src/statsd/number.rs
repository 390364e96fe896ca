//! Numbers as the reference server reads them: JavaScript's `Number(string)` and `!isNaN`.
//!
//! The reference validates a value with `Boolean(str && !isNaN(str))` and converts it with
//! `Number(str)`, so it accepts what a JavaScript string-to-number conversion accepts:
//! surrounding whitespace, `Infinity`, `1e3`, `.5`, `5.`, and unsigned `0x`/`0o`/`0b`
//! integers; a string of whitespace alone is 0. [`js_number`] implements that grammar
//! (ECMA-262 `StringNumericLiteral`) over bytes, with the decimal conversion done by
//! `core`'s correctly rounded parser, as JavaScript's is.

/// `Number(text)` for a non-empty `text`, or `None` where JavaScript gives `NaN`.
pub fn js_number(text: &[u8]) -> Option<f64> {
    // The common case, a short run of digits, is an exact integer: no float parser needed.
    if !text.is_empty() && text.len() <= 15 && text.iter().all(u8::is_ascii_digit) {
        return Some(text.iter().fold(0u64, |value, digit| value * 10 + u64::from(digit - b'0')) as f64);
    }
    let trimmed = js_trim(text);
    if trimmed.is_empty() {
        return Some(0.0);
    }
    if let Some(value) = non_decimal_integer(trimmed) {
        return value;
    }
    let (negative, unsigned) = match trimmed[0] {
        b'-' => (true, &trimmed[1..]),
        b'+' => (false, &trimmed[1..]),
        _ => (false, trimmed),
    };
    let magnitude = if unsigned == b"Infinity" {
        f64::INFINITY
    } else {
        if !is_decimal_literal(unsigned) {
            return None;
        }
        // Checked ASCII above; `core`'s parser accepts a superset of this grammar.
        core::str::from_utf8(unsigned).ok()?.parse::<f64>().ok()?
    };
    Some(if negative { -magnitude } else { magnitude })
}

/// `StrUnsignedDecimalLiteral` without `Infinity`: digits with an optional fraction (at
/// least one digit on either side of the point) and an optional exponent.
fn is_decimal_literal(text: &[u8]) -> bool {
    let digits = |s: &[u8]| s.iter().take_while(|b| b.is_ascii_digit()).count();
    let integer = digits(text);
    let mut at = integer;
    let mut fraction = 0;
    if text.get(at) == Some(&b'.') {
        fraction = digits(&text[at + 1..]);
        at += 1 + fraction;
    }
    if integer + fraction == 0 {
        return false;
    }
    if matches!(text.get(at), Some(b'e' | b'E')) {
        at += 1;
        if matches!(text.get(at), Some(b'+' | b'-')) {
            at += 1;
        }
        let exponent = digits(&text[at..]);
        if exponent == 0 {
            return false;
        }
        at += exponent;
    }
    at == text.len()
}

/// `0x…`, `0o…`, `0b…` (no sign): `Some(Some(value))`, `Some(None)` for a prefix without
/// valid digits, `None` when `text` has no such prefix.
fn non_decimal_integer(text: &[u8]) -> Option<Option<f64>> {
    let radix = match text {
        [b'0', b'x' | b'X', ..] => 16,
        [b'0', b'o' | b'O', ..] => 8,
        [b'0', b'b' | b'B', ..] => 2,
        _ => return None,
    };
    let digits = &text[2..];
    if digits.is_empty() {
        return Some(None);
    }
    // Exact while it fits 128 bits (`as f64` then rounds to nearest, as JavaScript does);
    // longer literals lose only what no client sends.
    let mut exact: u128 = 0;
    let mut overflow: f64 = 0.0;
    let mut overflowed = false;
    for &byte in digits {
        let Some(digit) = (byte as char).to_digit(radix) else { return Some(None) };
        if !overflowed {
            match exact.checked_mul(u128::from(radix)).and_then(|v| v.checked_add(u128::from(digit))) {
                Some(value) => exact = value,
                None => {
                    overflowed = true;
                    overflow = exact as f64 * f64::from(radix) + f64::from(digit);
                }
            }
        } else {
            overflow = overflow * f64::from(radix) + f64::from(digit);
        }
    }
    Some(Some(if overflowed { overflow } else { exact as f64 }))
}

/// JavaScript's `String.prototype.trim` over UTF-8: ASCII whitespace and the Unicode space
/// separators, line terminators and BOM that `\s` also matches.
pub fn js_trim(text: &[u8]) -> &[u8] {
    // Most text starts and ends with a printable ASCII byte: nothing to trim.
    let printable = |byte: &u8| (0x21..0x7f).contains(byte);
    if text.first().is_some_and(printable) && text.last().is_some_and(printable) {
        return text;
    }
    let mut start = 0;
    while let Some(width) = whitespace_at(text, start) {
        start += width;
    }
    let mut end = text.len();
    while end > start {
        match whitespace_ending_at(text, end) {
            Some(width) => end -= width,
            None => break,
        }
    }
    &text[start..end]
}

/// The width of the JavaScript whitespace character starting at `at`, if there is one.
pub(super) fn whitespace_at(text: &[u8], at: usize) -> Option<usize> {
    let rest = text.get(at..)?;
    match *rest.first()? {
        b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ' => Some(1),
        byte if byte < 0x80 => None,
        _ => {
            let width = utf8_width(rest[0]);
            let ch = core::str::from_utf8(rest.get(..width)?).ok()?.chars().next()?;
            is_unicode_space(ch).then_some(width)
        }
    }
}

fn whitespace_ending_at(text: &[u8], end: usize) -> Option<usize> {
    // A character ends at `end`; try each possible start (UTF-8 is at most 4 bytes).
    (1..=end.min(4)).find(|&width| whitespace_at(&text[..end], end - width) == Some(width))
}

fn utf8_width(first: u8) -> usize {
    match first {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => 1,
    }
}

/// Non-ASCII characters JavaScript's `\s` (and `trim`) match.
fn is_unicode_space(ch: char) -> bool {
    matches!(
        ch,
        '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}' | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}' | '\u{feff}'
    )
}

/// A strict decimal number (DogStatsD dialect): optional sign, digits, fraction, exponent;
/// no whitespace, no hexadecimal, no `Infinity`/`NaN`, and finite.
pub fn strict_number(text: &[u8]) -> Option<f64> {
    let unsigned = match text.first()? {
        b'-' | b'+' => &text[1..],
        _ => text,
    };
    if !is_decimal_literal(unsigned) {
        return None;
    }
    let value: f64 = core::str::from_utf8(text).ok()?.parse().ok()?;
    value.is_finite().then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn javascript_number_conversion() {
        let cases: &[(&str, Option<f64>)] = &[
            ("1", Some(1.0)),
            ("-1.5", Some(-1.5)),
            ("+2", Some(2.0)),
            (" 7 ", Some(7.0)),
            ("\t", Some(0.0)),
            ("1e3", Some(1000.0)),
            ("1E-2", Some(0.01)),
            (".5", Some(0.5)),
            ("5.", Some(5.0)),
            ("5.e1", Some(50.0)),
            ("0x10", Some(16.0)),
            ("0X1f", Some(31.0)),
            ("0o17", Some(15.0)),
            ("0b101", Some(5.0)),
            ("007", Some(7.0)),
            ("Infinity", Some(f64::INFINITY)),
            ("-Infinity", Some(f64::NEG_INFINITY)),
            ("\u{a0}3\u{feff}", Some(3.0)),
            ("-0x10", None),
            ("0x", None),
            ("0xg", None),
            ("NaN", None),
            ("nan", None),
            ("inf", None),
            ("infinity", None),
            ("1e", None),
            (".", None),
            ("e5", None),
            ("1_000", None),
            ("1,5", None),
            ("--1", None),
            ("1 2", None),
            ("abc", None),
            ("\u{fffd}", None),
        ];
        for (text, expected) in cases {
            assert_eq!(js_number(text.as_bytes()), *expected, "Number({text:?})");
        }
        assert_eq!(js_number(b"0x1fffffffffffff"), Some(9007199254740991.0));
        assert_eq!(js_number(b"0xffffffffffffffffffffffffffffffffff"), Some(2f64.powi(136)));
    }

    #[test]
    fn trimming_matches_javascript() {
        assert_eq!(js_trim(b" \t a b \r\x0b"), b"a b");
        assert_eq!(js_trim("\u{3000}x\u{2028}".as_bytes()), b"x");
        assert_eq!(js_trim(b"\xff x \xe2"), b"\xff x \xe2");
        assert_eq!(js_trim(b""), b"");
    }

    #[test]
    fn strict_numbers_refuse_what_javascript_alone_accepts() {
        assert_eq!(strict_number(b"-1.5e2"), Some(-150.0));
        for bad in ["", " 1", "0x10", "Infinity", "NaN", "1e400", "+", "1.2.3"] {
            assert_eq!(strict_number(bad.as_bytes()), None, "{bad:?}");
        }
    }
}
