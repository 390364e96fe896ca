//! Boot arguments: `key=value` words from QEMU's `-append` (semihosting `SYS_GET_CMDLINE`).
//!
//! | word | meaning | default |
//! | --- | --- | --- |
//! | `epoch=N` | the boot epoch, never reused by this device (required, at least 1) | – |
//! | `key=ID:HEX` | key id and 64 hex digits of the secret (overrides the compiled-in key) | `DRIFTLOG_KEY_FILE` at build time |
//! | `events=N` | stop sampling after N events, wait until they are acknowledged, report and exit; 0 runs forever | 0 |
//! | `interval_ms=N` | device time between two samples of every sensor, at most an hour (3 600 000) | 100 |
//! | `drain_s=N` | after the last event, how long (device time) to wait for the acknowledgements | 600 |
//!
//! Unknown words are refused: a typo must not silently run with defaults.

use driftlog_protocol::{Epoch, KeyId};

/// The longest sampling interval, an hour: periods in µs then fit 32 bits, which the
/// Cortex-M3 divides in hardware.
pub const MAX_INTERVAL_MS: u32 = 3_600_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Args {
    pub epoch: Epoch,
    pub key: Option<(KeyId, [u8; 32])>,
    pub events: u64,
    pub interval_ms: u32,
    pub drain_s: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgsError {
    MissingEpoch,
    BadValue(&'static str),
    Unknown,
}

impl ArgsError {
    pub fn message(self) -> &'static str {
        match self {
            ArgsError::MissingEpoch => "epoch=N is required (at least 1, never reused)",
            ArgsError::BadValue(word) => word,
            ArgsError::Unknown => "unknown boot argument (expected epoch, key, events, interval_ms, drain_s)",
        }
    }
}

/// Parses the command line; the first word (the kernel path) is skipped. Bytes, not `str`:
/// UTF-8 validation, `str` splitting and `str::parse` cost flash these words never need.
pub fn parse(cmdline: &[u8]) -> Result<Args, ArgsError> {
    let mut args = Args { epoch: 0, key: None, events: 0, interval_ms: 100, drain_s: 600 };
    for word in cmdline.split(u8::is_ascii_whitespace).filter(|w| !w.is_empty()).skip(1) {
        let at = word.iter().position(|&b| b == b'=').ok_or(ArgsError::Unknown)?;
        let (name, value) = (&word[..at], &word[at + 1..]);
        match name {
            b"epoch" => args.epoch = number(value, "epoch must be a number")?,
            b"events" => args.events = number(value, "events must be a number")?,
            b"interval_ms" => {
                let message = "interval_ms must be a number of at most 3600000 (an hour)";
                let interval_ms = number(value, message)?;
                args.interval_ms = u32::try_from(interval_ms)
                    .ok()
                    .filter(|&ms| ms <= MAX_INTERVAL_MS)
                    .ok_or(ArgsError::BadValue(message))?
                    .max(1);
            }
            b"drain_s" => args.drain_s = number(value, "drain_s must be a number")?,
            b"key" => args.key = Some(key(value).ok_or(ArgsError::BadValue("key must be ID:64-hex-digits"))?),
            _ => return Err(ArgsError::Unknown),
        }
    }
    if args.epoch == 0 {
        return Err(ArgsError::MissingEpoch);
    }
    Ok(args)
}

fn number(value: &[u8], message: &'static str) -> Result<u64, ArgsError> {
    decimal(value).ok_or(ArgsError::BadValue(message))
}

/// A decimal number of at least one digit that fits `u64`.
fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &digit| {
        let digit = digit.checked_sub(b'0').filter(|d| *d <= 9)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

fn key(value: &[u8]) -> Option<(KeyId, [u8; 32])> {
    let colon = value.iter().position(|&b| b == b':')?;
    let id = KeyId::try_from(decimal(&value[..colon])?).ok()?;
    let hex = &value[colon + 1..];
    if hex.len() != 64 {
        return None;
    }
    let mut secret = [0u8; 32];
    for (byte, pair) in secret.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
    }
    Some((id, secret))
}

fn hex_digit(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}
