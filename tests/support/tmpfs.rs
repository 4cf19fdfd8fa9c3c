//! A small tmpfs the test mounts (as root, as CI runs) to fill a disk for real, and the
//! filler that fills it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted for the test; unmounted (lazily, in case a file is still open) on drop.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` on `dir`; fails the test (never skips it) when it cannot.
    pub fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("cannot run `mount`");
        assert!(
            output.status.success(),
            "this test mounts a small tmpfs to fill the outbox's disk and must run as root \
             (CI does): `mount -t tmpfs` failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Self(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes `path` until the filesystem is full.
pub fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0xa5u8; 64 << 10];
    let err = loop {
        if let Err(err) = file.write_all(&chunk).and_then(|()| file.sync_data()) {
            break err;
        }
    };
    assert_eq!(err.raw_os_error(), Some(28), "ENOSPC expected: {err}");
}
