//! Device keys: the keys file, the development key's rules, reloading, and `keygen`.
//!
//! The keys file is append-only text that `keygen` writes (mode 0600):
//!
//! ```toml
//! [[device]]        # a device's key
//! device_id = 42
//! key_id = 3
//! key = "64 hex digits"
//!
//! [[retired]]       # a key `keygen --rotate` replaced: refused from now on
//! key_id = 3
//! ```
//!
//! Key id 0 is the published development key (all-zero secret), never a file's. It is
//! accepted as device 1 only when the configuration says so ([`KeyMode`]), and never for a
//! device that has a real key: otherwise anyone who reads a frame header (the epoch travels
//! in the clear) could sign the device's next sequence numbers with it and have the real
//! events dropped as duplicates.

use anyhow::Context;
use driftlog_protocol::endpoint::Keyring;
use driftlog_protocol::wire::MacKey;
use driftlog_protocol::{DeviceId, KeyId};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Key id 0 with the all-zero secret: what an agent without a key file uses.
pub const DEVELOPMENT_KEY_ID: KeyId = 0;
/// The device the development key stands for (what `driftlog-agent` uses without a key file).
pub const DEVELOPMENT_DEVICE: DeviceId = 1;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    device: Vec<DeviceEntry>,
    #[serde(default)]
    retired: Vec<RetiredEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceEntry {
    device_id: DeviceId,
    key_id: KeyId,
    key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetiredEntry {
    key_id: KeyId,
}

/// Key id → (device, key), the keys in force.
#[derive(Clone, Debug, Default)]
pub struct Keys {
    keys: BTreeMap<KeyId, (DeviceId, MacKey)>,
    /// Key ids retired by `keygen --rotate`: never in force again, never handed out again.
    retired: BTreeSet<KeyId>,
}

impl Keyring for Keys {
    fn key(&self, key_id: KeyId) -> Option<(DeviceId, &MacKey)> {
        self.keys.get(&key_id).map(|(device, key)| (*device, key))
    }
}

/// Which keys a collector accepts, decided from its configuration at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyMode {
    /// No keys file: the development key only (first runs).
    DevelopmentOnly,
    /// The keys file's keys only.
    KeysFile,
    /// The keys file's keys, and the development key for device 1 while it has no real key
    /// (`development_key = true`, which `validate` warns about).
    KeysFileAndDevelopment,
}

impl KeyMode {
    pub fn accepts_development_key(self) -> bool {
        self != KeyMode::KeysFile
    }
}

impl Keys {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The highest key id in use or retired.
    pub fn max_key_id(&self) -> Option<KeyId> {
        self.keys.keys().chain(&self.retired).copied().filter(|id| *id != DEVELOPMENT_KEY_ID).max()
    }

    /// The real (non-development) key ids of `device`.
    pub fn key_ids_of(&self, device: DeviceId) -> Vec<KeyId> {
        self.keys
            .iter()
            .filter(|(id, (owner, _))| **id != DEVELOPMENT_KEY_ID && *owner == device)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Adds the development key as [`DEVELOPMENT_DEVICE`] if `mode` accepts it and that
    /// device has no real key (a real key always wins). Returns whether it was added.
    pub fn add_development_key(&mut self, mode: KeyMode) -> bool {
        if !mode.accepts_development_key() || !self.key_ids_of(DEVELOPMENT_DEVICE).is_empty() {
            return false;
        }
        self.keys.insert(DEVELOPMENT_KEY_ID, (DEVELOPMENT_DEVICE, MacKey::new(&[0; 32])));
        true
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
        let mut keys = Keys { retired: file.retired.iter().map(|r| r.key_id).collect(), ..Keys::default() };
        for (index, entry) in file.device.iter().enumerate() {
            let secret = parse_hex_key(&entry.key).with_context(|| format!("device[{index}].key"))?;
            anyhow::ensure!(
                entry.key_id != DEVELOPMENT_KEY_ID,
                "device[{index}].key_id: 0 is the published development key's id"
            );
            anyhow::ensure!(
                !keys.keys.contains_key(&entry.key_id),
                "device[{index}].key_id: key id {} appears twice",
                entry.key_id
            );
            if !keys.retired.contains(&entry.key_id) {
                keys.insert(entry.key_id, entry.device_id, &secret);
            }
        }
        Ok(keys)
    }
}

/// The keyring a collector in `mode` starts (or reloads) with: the keys file's keys, plus the
/// development key where `mode` and the file allow it. Logs what is in force, loudly when
/// the development key is.
pub fn load_keyring(keys_file: Option<&Path>, mode: KeyMode) -> anyhow::Result<Keys> {
    let mut keys = match keys_file {
        Some(path) => Keys::load(path)?,
        None => Keys::default(),
    };
    let development = keys.add_development_key(mode);
    let file = keys_file.map(|p| p.display().to_string()).unwrap_or_default();
    match (mode, development) {
        (KeyMode::DevelopmentOnly, _) => tracing::warn!(
            device = DEVELOPMENT_DEVICE,
            "key mode: development key only (no keys_file): accepting the published development key (key id 0) \
             as device 1, and anyone can forge frames with it; create keys with `driftlog-collector keygen` and \
             set keys_file"
        ),
        (KeyMode::KeysFile, _) => tracing::info!(
            keys = keys.len(),
            keys_file = %file,
            "key mode: keys file only; the development key is refused"
        ),
        (KeyMode::KeysFileAndDevelopment, true) => tracing::warn!(
            keys = keys.len() - 1,
            keys_file = %file,
            "key mode: keys file plus the development key for device 1 (development_key = true): anyone can \
             forge frames as device 1 until it has a real key"
        ),
        (KeyMode::KeysFileAndDevelopment, false) => tracing::info!(
            keys = keys.len(),
            keys_file = %file,
            "key mode: keys file; development_key = true, but device 1 has a real key, so the development key is refused"
        ),
    }
    if let Some(path) = keys_file
        && readable_by_others(path)
    {
        tracing::warn!(keys_file = %file, "the keys file is readable by other users; chmod 600 {}", path.display());
    }
    Ok(keys)
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

/// What `keygen` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generated {
    pub key_id: KeyId,
    /// The agent's key file: two lines.
    pub agent_file: String,
    /// The device's key ids `--rotate` retired.
    pub retired: Vec<KeyId>,
}

/// A new random key for `device`, appended to `keys_file` (created if missing, mode 0600)
/// under the next free key id. A device that has a key already is refused unless `rotate`,
/// which retires its old key ids in the same append.
pub fn keygen(keys_file: &Path, device: DeviceId, rotate: bool) -> anyhow::Result<Generated> {
    let existing = if keys_file.exists() { Keys::load(keys_file)? } else { Keys::default() };
    let old = existing.key_ids_of(device);
    anyhow::ensure!(
        old.is_empty() || rotate,
        "device {device} already has key id {} in {}; `keygen --rotate` replaces it (the old key stops working)",
        old.iter().map(|id| id.to_string()).collect::<Vec<_>>().join(", "),
        keys_file.display()
    );
    let key_id = existing.max_key_id().map_or(1, |id| id + 1);
    let mut secret = [0u8; 32];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut secret))
        .context("cannot read /dev/urandom")?;
    let secret_hex = hex(&secret);
    let mut entry = String::new();
    for retired in &old {
        entry.push_str(&format!(
            "\n# device {device}: key id {retired} retired by keygen --rotate\n[[retired]]\nkey_id = {retired}\n"
        ));
    }
    entry.push_str(&format!("\n[[device]]\ndevice_id = {device}\nkey_id = {key_id}\nkey = \"{secret_hex}\"\n"));
    append_private(keys_file, &entry)?;
    Ok(Generated { key_id, agent_file: format!("key_id = {key_id}\nkey = \"{secret_hex}\"\n"), retired: old })
}

/// Appends `text` to `path`, creating it with mode 0600 and making sure it is 0600 (it holds
/// secrets), then fsyncs it (and its directory when it was created).
fn append_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let created = !path.exists();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot open keys file {}", path.display()))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot make {} private (mode 0600)", path.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    if created {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::File::open(dir).and_then(|d| d.sync_all()).ok();
    }
    Ok(())
}

/// Whether `path` can be read by users other than its owner (a warning at start).
pub fn readable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
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
        let zero = good.replace("key_id = 3", "key_id = 0");
        assert!(format!("{:#}", Keys::parse(&zero).unwrap_err()).contains("development key"));
    }

    #[test]
    fn the_development_key_never_stands_for_a_device_with_a_real_key() {
        let mut no_file = Keys::default();
        assert!(no_file.add_development_key(KeyMode::DevelopmentOnly));
        assert_eq!(no_file.key(DEVELOPMENT_KEY_ID).map(|(d, _)| d), Some(DEVELOPMENT_DEVICE));
        let mut file_only = Keys::parse("").unwrap();
        assert!(!file_only.add_development_key(KeyMode::KeysFile));
        assert!(file_only.key(DEVELOPMENT_KEY_ID).is_none());
        let real = format!("[[device]]\ndevice_id = 1\nkey_id = 4\nkey = \"{}\"\n", "cd".repeat(32));
        let mut both = Keys::parse(&real).unwrap();
        assert!(!both.add_development_key(KeyMode::KeysFileAndDevelopment), "device 1 has a real key");
        assert!(both.key(DEVELOPMENT_KEY_ID).is_none());
    }

    #[test]
    fn keygen_appends_new_ids_refuses_a_second_key_and_rotates() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let first = keygen(&path, 42, false).unwrap();
        let second = keygen(&path, 43, false).unwrap();
        assert_eq!((first.key_id, second.key_id), (1, 2));
        assert_eq!(first.agent_file.lines().count(), 2);
        assert!(first.agent_file.starts_with("key_id = 1\nkey = \""));
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let again = keygen(&path, 42, false).unwrap_err().to_string();
        assert!(again.contains("already has key id 1") && again.contains("--rotate"), "{again}");
        let rotated = keygen(&path, 42, true).unwrap();
        assert_eq!((rotated.key_id, rotated.retired.clone()), (3, vec![1]));
        let keys = Keys::load(&path).unwrap();
        assert!(keys.key(1).is_none(), "the old key is retired");
        assert_eq!(keys.key(3).map(|(d, _)| d), Some(42));
        assert_eq!(keys.key(2).map(|(d, _)| d), Some(43));
        // A retired id is never handed out again, even when it was the highest.
        std::fs::write(&path, std::fs::read_to_string(&path).unwrap() + "\n[[retired]]\nkey_id = 3\n").unwrap();
        assert_eq!(keygen(&path, 44, false).unwrap().key_id, 4);
        // A keys file someone made readable to others is made private again.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(readable_by_others(&path));
        keygen(&path, 45, false).unwrap();
        assert!(!readable_by_others(&path));
    }
}
