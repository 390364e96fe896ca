//! The device key file written by `driftlog-collector keygen`:
//!
//! ```toml
//! key_id = 5
//! key = "64 hex digits"
//! ```

use driftlog_protocol::KeyId;
use driftlog_protocol::wire::MacKey;
use serde::Deserialize;
use std::path::Path;

/// The published development key: id 0, all-zero secret. Anyone can forge frames with it;
/// it exists so a first run works without setup, and the collector accepts it only when its
/// own config says so.
pub const DEVELOPMENT_KEY_ID: KeyId = 0;
pub const DEVELOPMENT_SECRET: [u8; 32] = [0; 32];
/// The device id collectors give the development key; an agent without a key file must use it.
pub const DEVELOPMENT_DEVICE: u64 = 1;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    key_id: KeyId,
    key: String,
}

/// Reads a key file; returns the key id and the key.
pub fn load(path: &Path) -> anyhow::Result<(KeyId, MacKey)> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read key file {}", path.display()))?;
    let file: KeyFile = toml::from_str(&text).with_context(|| format!("key file {}", path.display()))?;
    let secret = parse_hex_key(&file.key).with_context(|| format!("key file {}: key", path.display()))?;
    Ok((file.key_id, MacKey::new(&secret)))
}

pub fn parse_hex_key(hex: &str) -> anyhow::Result<[u8; 32]> {
    let hex = hex.trim();
    anyhow::ensure!(hex.len() == 64, "must be 64 hex digits, got {}", hex.len());
    let mut secret = [0u8; 32];
    for (index, byte) in secret.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * index..2 * index + 2], 16)
            .map_err(|_| anyhow::anyhow!("not a hex digit near position {}", 2 * index))?;
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_keys_parse_and_bad_ones_are_named() {
        let key = parse_hex_key(&"ab".repeat(32)).unwrap();
        assert_eq!(key, [0xAB; 32]);
        assert!(parse_hex_key("abc").unwrap_err().to_string().contains("64 hex digits"));
        assert!(parse_hex_key(&"zz".repeat(32)).unwrap_err().to_string().contains("hex digit"));
    }
}
