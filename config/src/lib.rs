//! The one way driftlog's binaries read their TOML config files: the file's text, parsed into
//! the binary's config type (which denies unknown fields), or the type's defaults when no file
//! is given. What the values mean and how they are validated stays with each binary.

use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// A config file that could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// The TOML parser's message names the line and the key.
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
}

/// Reads `path` as TOML into `T`; `None` gives `T::default()`.
pub fn load_toml<T: DeserializeOwned + Default>(path: Option<&Path>) -> Result<T, FileError> {
    let Some(path) = path else { return Ok(T::default()) };
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read { path: path.into(), source })?;
    toml::from_str(&text).map_err(|error| FileError::Parse { path: path.into(), message: error.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Example {
        name: String,
        port: u16,
    }

    #[test]
    fn a_file_is_read_and_its_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("example.toml");
        assert_eq!(load_toml::<Example>(None).unwrap(), Example::default());
        let missing = load_toml::<Example>(Some(&path)).unwrap_err();
        assert!(matches!(missing, FileError::Read { .. }), "{missing}");
        std::fs::write(&path, "name = \"a\"\nport = 7\n").unwrap();
        assert_eq!(load_toml::<Example>(Some(&path)).unwrap(), Example { name: "a".into(), port: 7 });
        std::fs::write(&path, "nmae = \"a\"\n").unwrap();
        let unknown = load_toml::<Example>(Some(&path)).unwrap_err().to_string();
        assert!(unknown.contains("example.toml") && unknown.contains("nmae"), "{unknown}");
    }
}
