//! Device keys: the keys file (`[[device]] device_id, key_id, key`), reloading it when it
//! changes, and `keygen`.

use anyhow::Context;
use driftlog_protocol::endpoint::Keyring;
use driftlog_protocol::wire::MacKey;
use driftlog_protocol::{DeviceId, KeyId};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Key id 0 with the all-zero secret: what an agent without a key file uses.
pub const DEVELOPMENT_KEY_ID: KeyId = 0;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    device: Vec<DeviceEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceEntry {
    device_id: DeviceId,
    key_id: KeyId,
    key: String,
}

/// Key id → (device, key).
#[derive(Clone, Debug, Default)]
pub struct Keys {
    keys: BTreeMap<KeyId, (DeviceId, MacKey)>,
}

impl Keyring for Keys {
    fn key(&self, key_id: KeyId) -> Option<(DeviceId, &MacKey)> {
        self.keys.get(&key_id).map(|(device, key)| (*device, key))
    }
}

impl Keys {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn max_key_id(&self) -> Option<KeyId> {
        self.keys.keys().next_back().copied()
    }

    pub fn with_development_key(mut self, device: DeviceId) -> Keys {
        self.keys.entry(DEVELOPMENT_KEY_ID).or_insert((device, MacKey::new(&[0; 32])));
        self
    }

    pub fn insert(&mut self, key_id: KeyId, device: DeviceId, secret: &[u8; 32]) {
        self.keys.insert(key_id, (device, MacKey::new(secret)));
    }

    /// Reads a keys file. Duplicate key ids are an error (which device would it be?).
    pub fn load(path: &Path) -> anyhow::Result<Keys> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read keys file {}", path.display()))?;
        Keys::parse(&text).with_context(|| format!("keys file {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Keys> {
        let file: KeysFile = toml::from_str(text)?;
        let mut keys = Keys::default();
        for (index, entry) in file.device.iter().enumerate() {
            let secret = parse_hex_key(&entry.key).with_context(|| format!("device[{index}].key"))?;
            anyhow::ensure!(
                !keys.keys.contains_key(&entry.key_id),
                "device[{index}].key_id: key id {} appears twice",
                entry.key_id
            );
            keys.insert(entry.key_id, entry.device_id, &secret);
        }
        Ok(keys)
    }
}

pub fn parse_hex_key(hex: &str) -> anyhow::Result<[u8; 32]> {
    let hex = hex.trim();
    anyhow::ensure!(hex.len() == 64 && hex.is_ascii(), "must be 64 hex digits, got {} characters", hex.len());
    let mut secret = [0u8; 32];
    for (index, byte) in secret.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * index..2 * index + 2], 16)
            .map_err(|_| anyhow::anyhow!("not a hex digit near position {}", 2 * index))?;
    }
    Ok(secret)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random key for `device`, appended to `keys_file` (created if missing) under the
/// next free key id. Returns the key id and the agent's key file text.
pub fn keygen(keys_file: &Path, device: DeviceId) -> anyhow::Result<(KeyId, String)> {
    let existing = if keys_file.exists() { Keys::load(keys_file)? } else { Keys::default() };
    let key_id = existing.max_key_id().map_or(1, |id| id + 1).max(1);
    let mut secret = [0u8; 32];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut secret))
        .context("cannot read /dev/urandom")?;
    let secret_hex = hex(&secret);
    let entry = format!("\n[[device]]\ndevice_id = {device}\nkey_id = {key_id}\nkey = \"{secret_hex}\"\n");
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(keys_file)
        .with_context(|| format!("cannot open keys file {}", keys_file.display()))?;
    file.write_all(entry.as_bytes())?;
    file.sync_all()?;
    Ok((key_id, format!("key_id = {key_id}\nkey = \"{secret_hex}\"\n")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_file_parses_and_bad_entries_are_named() {
        let good = format!("[[device]]\ndevice_id = 7\nkey_id = 3\nkey = \"{}\"\n", "ab".repeat(32));
        let keys = Keys::parse(&good).unwrap();
        assert_eq!(keys.key(3).map(|(d, _)| d), Some(7));
        let twice = format!("{good}{good}");
        assert!(format!("{:#}", Keys::parse(&twice).unwrap_err()).contains("appears twice"));
        let short = "[[device]]\ndevice_id = 7\nkey_id = 3\nkey = \"abc\"\n";
        assert!(format!("{:#}", Keys::parse(short).unwrap_err()).contains("device[0].key"));
    }

    #[test]
    fn keygen_appends_new_ids() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let (first, agent) = keygen(&path, 42).unwrap();
        let (second, _) = keygen(&path, 43).unwrap();
        assert_eq!((first, second), (1, 2));
        assert!(agent.contains("key_id = 1"));
        let keys = Keys::load(&path).unwrap();
        assert_eq!(keys.key(2).map(|(d, _)| d), Some(43));
    }
}
