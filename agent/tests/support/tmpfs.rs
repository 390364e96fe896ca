//! A small tmpfs for full-disk tests (mounting needs root, which CI has).
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A tmpfs of `size` (as `mount -o size=` takes it) on `dir`, unmounted when dropped,
/// however the test ends.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let mounted =
            Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir).status();
        assert!(mounted.unwrap().success(), "mount a tmpfs on {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A tmpfs of `size` on `dir`, or `None` (with a note on stderr) when not root: the test
/// then passes without running.
pub fn mount_or_skip(dir: &Path, size: &str) -> Option<Tmpfs> {
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root (CI runs as root)");
        return None;
    }
    Some(Tmpfs::mount(dir, size))
}

/// Fills the file system holding `dir` with files of `chunk_bytes` until a write fails;
/// returns the files written (`ballast-0`, `ballast-1`, ...).
pub fn fill_with_files(dir: &Path, chunk_bytes: usize) -> usize {
    let chunk = vec![0u8; chunk_bytes];
    for index in 0.. {
        let path = dir.join(format!("ballast-{index}"));
        if std::fs::write(&path, &chunk).is_err() {
            let _ = std::fs::remove_file(&path);
            return index;
        }
    }
    unreachable!("the loop returns")
}
