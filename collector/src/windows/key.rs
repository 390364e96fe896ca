//! A window key: what results are grouped by.

use driftlog_protocol::DeviceId;
use driftlog_protocol::wire::Tags;

/// `name`, then ` tag=value` for each grouped tag present (in the configured order), then
/// ` device=N` when grouping per device. Readable in `log tail`, stable across runs.
pub fn window_key(out: &mut String, name: &str, tags: &Tags<'_>, group_by: &[String], device: Option<DeviceId>) {
    out.clear();
    out.push_str(name);
    for wanted in group_by {
        if let Some(tag) = tags.iter().find(|t| t.key == wanted) {
            out.push(' ');
            out.push_str(tag.key);
            out.push('=');
            out.push_str(tag.value);
        }
    }
    if let Some(device) = device {
        out.push_str(" device=");
        push_decimal(out, device);
    }
}

/// `n` in decimal, without the formatting machinery (this runs once per event).
fn push_decimal(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(digits[at..].iter().map(|&d| char::from(d)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_matches_display() {
        for n in [0, 7, 10, 99, 100, 123_456_789, u64::MAX] {
            let mut out = String::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string());
        }
    }
}
