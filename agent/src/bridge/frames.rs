//! The serial link's framing: one datagram per COBS frame, each ending in a 0x00 byte (the
//! firmware's `link.rs` is the other end), and the bridge's optional loss injection.

use driftlog_protocol::SplitMix64;

/// What the splitter found in the byte stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Split {
    /// A decoded datagram.
    Frame(Vec<u8>),
    /// A frame that was not valid COBS.
    BadCobs,
    /// A frame longer than the bound; its bytes up to the next terminator were discarded.
    Oversized,
}

/// Splits a byte stream at 0x00 and COBS-decodes each frame. Holds at most `max_frame_bytes`
/// of an unfinished frame, so a peer that never sends a terminator cannot grow it.
#[derive(Debug)]
pub struct FrameSplitter {
    pending: Vec<u8>,
    max_frame_bytes: usize,
    overflowed: bool,
}

impl FrameSplitter {
    pub fn new(max_frame_bytes: usize) -> FrameSplitter {
        FrameSplitter { pending: Vec::with_capacity(max_frame_bytes.min(4096)), max_frame_bytes, overflowed: false }
    }

    /// Feeds received bytes; calls `each` with every frame they complete.
    pub fn push(&mut self, bytes: &[u8], mut each: impl FnMut(Split)) {
        for chunk in bytes.split_inclusive(|&b| b == 0) {
            let (body, ends) = match chunk.split_last() {
                Some((0, body)) => (body, true),
                _ => (chunk, false),
            };
            if !self.overflowed {
                if self.pending.len() + body.len() > self.max_frame_bytes {
                    self.overflowed = true;
                    self.pending.clear();
                } else {
                    self.pending.extend_from_slice(body);
                }
            }
            if !ends {
                continue;
            }
            if std::mem::take(&mut self.overflowed) {
                each(Split::Oversized);
            } else if !self.pending.is_empty() {
                // Two terminators in a row are a resynchronisation marker, not a frame.
                match cobs::decode_vec(&self.pending) {
                    Ok(frame) => each(Split::Frame(frame)),
                    Err(_) => each(Split::BadCobs),
                }
            }
            self.pending.clear();
        }
    }

    /// Forgets an unfinished frame (the connection it came from closed).
    pub fn reset(&mut self) {
        self.pending.clear();
        self.overflowed = false;
    }
}

/// `datagram` as one frame: its COBS encoding and the 0x00 terminator.
pub fn encode_frame(datagram: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.resize(cobs::max_encoding_length(datagram.len()), 0);
    let len = cobs::encode(datagram, out);
    out.truncate(len);
    out.push(0);
}

/// Drops frames with a fixed probability, from a seeded generator so a test run can be
/// repeated.
#[derive(Debug)]
pub struct DropInjector {
    rate: f64,
    random: SplitMix64,
}

impl DropInjector {
    pub fn new(rate: f64, seed: u64) -> DropInjector {
        DropInjector { rate: rate.clamp(0.0, 1.0), random: SplitMix64::new(seed) }
    }

    pub fn should_drop(&mut self) -> bool {
        self.rate > 0.0 && self.random.unit_f64() < self.rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(splitter: &mut FrameSplitter, bytes: &[u8]) -> Vec<Split> {
        let mut out = Vec::new();
        splitter.push(bytes, |split| out.push(split));
        out
    }

    #[test]
    fn frames_survive_any_chunking_and_zero_bytes_inside_datagrams() {
        let datagrams: Vec<Vec<u8>> = vec![vec![0xD7, 0x11, 0, 0, 5], vec![], (0..=255).collect(), vec![0; 300]];
        let mut stream = Vec::new();
        let mut frame = Vec::new();
        for datagram in &datagrams {
            encode_frame(datagram, &mut frame);
            assert!(!frame[..frame.len() - 1].contains(&0));
            stream.extend_from_slice(&frame);
        }
        for chunk_len in [1, 2, 7, 64, stream.len()] {
            let mut splitter = FrameSplitter::new(1024);
            let mut out = Vec::new();
            for chunk in stream.chunks(chunk_len) {
                splitter.push(chunk, |split| out.push(split));
            }
            // The empty datagram encodes to one byte, so it is a frame, not a resync marker.
            let expected: Vec<Split> = datagrams.iter().cloned().map(Split::Frame).collect();
            assert_eq!(out, expected, "chunks of {chunk_len}");
        }
    }

    #[test]
    fn bad_cobs_and_oversized_frames_are_reported_and_the_stream_recovers() {
        let mut splitter = FrameSplitter::new(8);
        let mut good = Vec::new();
        encode_frame(b"abc", &mut good);
        // 0x05 promises four more bytes but the frame ends after one: invalid COBS.
        let mut stream = vec![0x05, 0x01, 0x00];
        stream.extend_from_slice(&[0x01; 20]);
        stream.push(0);
        stream.extend_from_slice(&[0, 0]);
        stream.extend_from_slice(&good);
        assert_eq!(
            split_all(&mut splitter, &stream),
            vec![Split::BadCobs, Split::Oversized, Split::Frame(b"abc".to_vec())]
        );
        // An unfinished frame is forgotten on reset.
        splitter.push(&[0x03, b'x'], |_| panic!("no frame yet"));
        splitter.reset();
        assert_eq!(split_all(&mut splitter, &good), vec![Split::Frame(b"abc".to_vec())]);
    }

    #[test]
    fn drop_injection_follows_its_rate_and_seed() {
        let mut injector = DropInjector::new(0.1, 42);
        let dropped = (0..100_000).filter(|_| injector.should_drop()).count();
        assert!((9_000..11_000).contains(&dropped), "{dropped}");
        let mut again = DropInjector::new(0.1, 42);
        let mut first = DropInjector::new(0.1, 42);
        assert!((0..1_000).all(|_| again.should_drop() == first.should_drop()));
        assert!(!(0..1_000).any(|_| DropInjector::new(0.0, 1).should_drop()));
    }
}
