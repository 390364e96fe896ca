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

/// Parses the command line; the first word (the kernel path) is skipped.
pub fn parse(cmdline: &str) -> Result<Args, ArgsError> {
    let mut args = Args { epoch: 0, key: None, events: 0, interval_ms: 100, drain_s: 600 };
    for word in cmdline.split_ascii_whitespace().skip(1) {
        let (name, value) = word.split_once('=').ok_or(ArgsError::Unknown)?;
        match name {
            "epoch" => args.epoch = number(value, "epoch must be a number")?,
            "events" => args.events = number(value, "events must be a number")?,
            "interval_ms" => {
                let message = "interval_ms must be a number of at most 3600000 (an hour)";
                let interval_ms = number(value, message)?;
                args.interval_ms = u32::try_from(interval_ms)
                    .ok()
                    .filter(|&ms| ms <= MAX_INTERVAL_MS)
                    .ok_or(ArgsError::BadValue(message))?
                    .max(1);
            }
            "drain_s" => args.drain_s = number(value, "drain_s must be a number")?,
            "key" => args.key = Some(key(value).ok_or(ArgsError::BadValue("key must be ID:64-hex-digits"))?),
            _ => return Err(ArgsError::Unknown),
        }
    }
    if args.epoch == 0 {
        return Err(ArgsError::MissingEpoch);
    }
    Ok(args)
}

fn number(value: &str, message: &'static str) -> Result<u64, ArgsError> {
    value.parse().map_err(|_| ArgsError::BadValue(message))
}

fn key(value: &str) -> Option<(KeyId, [u8; 32])> {
    let (id, hex) = value.split_once(':')?;
    let id = id.parse().ok()?;
    // Bytes, not string slices: slicing a `str` pulls in its char-boundary panic machinery.
    let hex = hex.as_bytes();
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
