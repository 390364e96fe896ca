//! Reloads the keys file when its modification time changes; a file that cannot be used
//! keeps the old keys.

use crate::keys::{KeyMode, Keys};
use std::path::PathBuf;
use std::time::SystemTime;

#[derive(Debug)]
pub(super) struct KeysWatch {
    path: Option<PathBuf>,
    mode: KeyMode,
    modified: Option<SystemTime>,
}

fn modified(path: &Option<PathBuf>) -> Option<SystemTime> {
    path.as_ref().and_then(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
}

impl KeysWatch {
    pub(super) fn new(path: Option<PathBuf>, mode: KeyMode) -> KeysWatch {
        KeysWatch { modified: modified(&path), path, mode }
    }

    /// The new keyring, when the file changed since the last call and loads.
    pub(super) fn changed(&mut self) -> Option<Keys> {
        let current = modified(&self.path);
        if current == self.modified {
            return None;
        }
        self.modified = current;
        let path = self.path.as_ref()?;
        match crate::keys::load_keyring(Some(path), self.mode) {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), path = %path.display(), "keys file reloaded");
                Some(keys)
            }
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "keys file changed but cannot be used; keeping the old keys"
                );
                None
            }
        }
    }
}
