//! The aggregation key of a sample: its name with its tags folded in, sanitized as the
//! reference server does it.
//!
//! A [`Key`] borrows the name and the raw tag list from the packet; the canonical key is
//! written into memory the caller owns ([`Key::write`]), so parsing allocates nothing, and a
//! key that needs no rewriting (no tags, only allowed characters: the common case) is the
//! packet's own bytes ([`Key::as_plain`]).

use super::Dialect;
use super::number::whitespace_at;

/// Tags one DogStatsD-dialect sample may carry (their canonical order is computed by
/// selection, so the bound keeps a hostile line's cost small).
pub const MAX_TAGS: usize = 64;

/// A sample's key as it appeared in the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key<'a> {
    /// The name: what precedes the first `:` of the line.
    pub name: &'a [u8],
    /// The raw tag list after `|#` (comma separated), empty when there is none.
    pub tags: &'a [u8],
    pub(super) dialect: Dialect,
}

impl<'a> Key<'a> {
    /// A key read by `dialect`'s rules from a name and a raw tag list (what follows `|#`).
    pub const fn new(name: &'a [u8], tags: &'a [u8], dialect: Dialect) -> Key<'a> {
        Key { name, tags, dialect }
    }

    /// The canonical key when it is the name itself, unchanged (no tags, nothing to
    /// sanitize): no copy needed.
    pub fn as_plain(&self) -> Option<&'a [u8]> {
        (self.tags.is_empty() && self.name.iter().all(|&b| is_kept(b))).then_some(self.name)
    }

    /// Writes the canonical key, piece by piece, to `out`.
    ///
    /// The reference (`etsy` dialect) appends each tag as `;tag`, in the order given, with
    /// its first `;` turned into `_` and its first `:` into `=`, then sanitizes the whole
    /// key: runs of whitespace become `_`, `/` becomes `-`, and every character outside
    /// `[A-Za-z0-9_.;=-]` is dropped. The `dogstatsd` dialect does the same with the tags
    /// sorted and deduplicated and empty tags left out, so that tag order does not split a
    /// series.
    pub fn write(&self, out: &mut impl FnMut(&[u8])) {
        self.write_name(out);
        for tag in self.tags_in_order() {
            out(b";");
            write_tag(tag, out);
        }
    }

    /// Writes the name alone, sanitized: the canonical key's first piece.
    pub fn write_name(&self, out: &mut impl FnMut(&[u8])) {
        sanitize(self.name, false, out);
    }

    /// The raw tags in the order the canonical key holds them: as given (`etsy`, empty ones
    /// included), or sorted, deduplicated and without empty ones (`dogstatsd`). Each is
    /// written into the key by [`write_tag`].
    pub fn tags_in_order(&self) -> TagsInOrder<'a> {
        TagsInOrder { tags: self.tags, dialect: self.dialect, last: None, given: None, done: self.tags.is_empty() }
    }

    /// The canonical key's length in bytes.
    pub fn len(&self) -> usize {
        let mut len = 0;
        self.write(&mut |piece| len += piece.len());
        len
    }

    /// Whether the canonical key is empty (the reference accepts an empty name).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the canonical key into `buf`; `None` if it does not fit.
    pub fn write_to_slice(&self, buf: &mut [u8]) -> Option<usize> {
        let mut at = 0;
        let mut fits = true;
        self.write(&mut |piece| match buf.get_mut(at..at + piece.len()) {
            Some(slot) if fits => {
                slot.copy_from_slice(piece);
                at += piece.len();
            }
            _ => fits = false,
        });
        fits.then_some(at)
    }
}

/// See [`Key::tags_in_order`].
#[derive(Clone, Debug)]
pub struct TagsInOrder<'a> {
    tags: &'a [u8],
    dialect: Dialect,
    /// DogStatsD: the last tag handed out (the next is the smallest above it).
    last: Option<&'a [u8]>,
    /// Etsy: the tags not handed out yet, comma separated.
    given: Option<&'a [u8]>,
    done: bool,
}

impl<'a> Iterator for TagsInOrder<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.done {
            return None;
        }
        match self.dialect {
            Dialect::Etsy => {
                let rest = self.given.get_or_insert(self.tags);
                let (tag, remaining) = match rest.iter().position(|&b| b == b',') {
                    Some(at) => (&rest[..at], Some(&rest[at + 1..])),
                    None => (*rest, None),
                };
                match remaining {
                    Some(remaining) => *rest = remaining,
                    None => self.done = true,
                }
                Some(tag)
            }
            Dialect::DogStatsd => {
                // Selection in byte order: the smallest tag above the last one handed out.
                let last = self.last;
                let next = self
                    .tags
                    .split(|&b| b == b',')
                    .filter(|tag| !tag.is_empty() && last.is_none_or(|l| *tag > l))
                    .min();
                match next {
                    Some(tag) => self.last = Some(tag),
                    None => self.done = true,
                }
                next
            }
        }
    }
}

/// Writes one raw tag as the canonical key holds it (after its `;`): its first `;` made
/// `_`, its first `:` made `=`, then sanitized.
pub fn write_tag(tag: &[u8], out: &mut impl FnMut(&[u8])) {
    sanitize(tag, true, out);
}

/// Bytes the reference keeps in a key.
fn is_kept(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.' | b';' | b'=')
}

/// The reference's `sanitizeKeyName` over one piece of a key, emitting runs of kept bytes
/// at once. A tag (`tag = true`) first has its first `;` replaced by `_` and its first `:`
/// by `=`. Pieces are always separated by a kept `;`, so a whitespace run never spans two.
fn sanitize(text: &[u8], tag: bool, out: &mut impl FnMut(&[u8])) {
    let (mut semicolon_seen, mut colon_seen) = (!tag, !tag);
    let mut in_whitespace = false;
    let mut run_start = 0;
    let mut at = 0;
    while at < text.len() {
        let byte = text[at];
        let replacement: Option<&[u8]> = if let Some(width) = whitespace_at(text, at) {
            let first = !in_whitespace;
            in_whitespace = true;
            out(&text[run_start..at]);
            at += width;
            run_start = at;
            if first {
                out(b"_");
            }
            continue;
        } else if byte == b';' && !semicolon_seen {
            semicolon_seen = true;
            Some(b"_")
        } else if byte == b':' && !colon_seen {
            colon_seen = true;
            Some(b"=")
        } else if byte == b'/' {
            Some(b"-")
        } else if is_kept(byte) {
            None
        } else {
            // Dropped, byte by byte: a multi-byte character is never kept, and no Unicode
            // whitespace starts with a continuation byte.
            Some(b"")
        };
        in_whitespace = false;
        if let Some(replacement) = replacement {
            out(&text[run_start..at]);
            out(replacement);
            run_start = at + 1;
        }
        at += 1;
    }
    out(&text[run_start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(name: &str, tags: &str, dialect: Dialect) -> std::string::String {
        let key = Key { name: name.as_bytes(), tags: tags.as_bytes(), dialect };
        let mut out = std::vec::Vec::new();
        key.write(&mut |piece| out.extend_from_slice(piece));
        assert_eq!(key.len(), out.len());
        let mut buf = [0u8; 256];
        let written = key.write_to_slice(&mut buf).unwrap();
        assert_eq!(&buf[..written], &out[..]);
        std::string::String::from_utf8(out).unwrap()
    }

    #[test]
    fn keys_are_sanitized_as_the_reference_does() {
        let etsy = |name, tags| render(name, tags, Dialect::Etsy);
        assert_eq!(etsy("a.b-c_d", ""), "a.b-c_d");
        assert_eq!(etsy("a  b\t\tc", ""), "a_b_c");
        assert_eq!(etsy("a/b", ""), "a-b");
        assert_eq!(etsy("a$b%c", ""), "abc");
        assert_eq!(etsy("a \u{e9} b", ""), "a__b");
        assert_eq!(etsy("a\u{a0}\u{3000}b", ""), "a_b");
        assert_eq!(etsy("caf\u{e9}", ""), "caf");
        assert_eq!(etsy("k", "env:prod,bare,x;y:z:w"), "k;env=prod;bare;x_y=zw");
        assert_eq!(etsy("k", "b:1,a:2"), "k;b=1;a=2");
        assert_eq!(etsy("k", "a,,b,"), "k;a;;b;");
        assert_eq!(etsy("k", "t:v|c:abc"), "k;t=vcabc");
        assert_eq!(etsy("k", "a b/c"), "k;a_b-c");
        assert!(Key { name: b"a.b", tags: b"", dialect: Dialect::Etsy }.as_plain().is_some());
        assert!(Key { name: b"a b", tags: b"", dialect: Dialect::Etsy }.as_plain().is_none());
        assert!(Key { name: b"a", tags: b"x", dialect: Dialect::Etsy }.as_plain().is_none());
    }

    #[test]
    fn dogstatsd_tags_are_sorted_and_deduplicated() {
        let dog = |name, tags| render(name, tags, Dialect::DogStatsd);
        assert_eq!(dog("k", "b:1,a:2,b:1,,c"), "k;a=2;b=1;c");
        assert_eq!(dog("k", "a:2,b:1"), dog("k", "b:1,a:2"));
        assert_eq!(dog("k", ""), "k");
    }

    #[test]
    fn invalid_utf8_is_dropped_and_never_panics() {
        let key = Key { name: b"a\xff\xe2\x80 b\xe2\x80\xa8c", tags: b"\xf0,x", dialect: Dialect::Etsy };
        let mut out = std::vec::Vec::new();
        key.write(&mut |piece| out.extend_from_slice(piece));
        assert_eq!(out, b"a_b_c;;x");
        let mut small = [0u8; 3];
        assert_eq!(key.write_to_slice(&mut small), None);
    }
}
