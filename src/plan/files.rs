//! The bytes of every file a config names, read once per load: the main thread
//! validates them, and every worker builds its TLS state from the same bytes,
//! so no worker ever reads the disk (or sees a file that changed after the check).

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// What identifies one version of a file: mtime, size, inode.
pub type Stamp = Option<(i64, i64, u64, u64)>;

pub fn stamp(p: &Path) -> Stamp {
    std::fs::metadata(p)
        .ok()
        .map(|m| (m.mtime(), m.mtime_nsec(), m.len(), m.ino()))
}

/// One file as loaded: its bytes and what `/stats` shows about it.
#[derive(Clone)]
pub struct Loaded {
    pub bytes: Arc<[u8]>,
    pub key: String,
    pub sha256: String,
    pub stamp: Stamp,
}

/// Files read for one plan. While the plan is built it reads through to the
/// disk; once frozen, a path it does not hold is an error, never a disk read.
pub struct Files {
    map: Mutex<BTreeMap<PathBuf, Loaded>>,
    frozen: bool,
}

impl Default for Files {
    fn default() -> Self {
        Files {
            map: Mutex::new(BTreeMap::new()),
            frozen: false,
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Files {
    /// The bytes of `path`, read from disk the first time (unless frozen).
    /// A file that changes while it is read is refused: the reload retries.
    pub fn read(&self, path: &Path, key: &str) -> io::Result<Arc<[u8]>> {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(l) = map.get(path) {
            return Ok(l.bytes.clone());
        }
        if self.frozen {
            return Err(io::Error::other("not in the loaded snapshot"));
        }
        let before = stamp(path);
        let bytes: Arc<[u8]> = std::fs::read(path)?.into();
        let after = stamp(path);
        if before != after {
            return Err(io::Error::other(
                "the file changed while it was read (a writer is still at work); retry when it is complete",
            ));
        }
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
        map.insert(
            path.to_path_buf(),
            Loaded {
                bytes: bytes.clone(),
                key: key.to_string(),
                sha256: hex(digest.as_ref()),
                stamp: after,
            },
        );
        Ok(bytes)
    }

    /// A new snapshot holding `from`'s files except `fresh`, which are read
    /// from disk when asked for: a watched file's change reloads that file,
    /// not a certificate someone is half-way through replacing.
    pub fn seeded(from: &Files, fresh: &[PathBuf]) -> Files {
        let map = from.map.lock().unwrap_or_else(PoisonError::into_inner);
        let kept = map
            .iter()
            .filter(|(p, _)| !fresh.contains(p))
            .map(|(p, l)| (p.clone(), l.clone()))
            .collect();
        Files {
            map: Mutex::new(kept),
            frozen: false,
        }
    }

    /// From now on, only what was read is available.
    pub fn freeze(mut self) -> Files {
        self.frozen = true;
        self
    }

    /// Every file read, by path.
    pub fn list(&self) -> Vec<(PathBuf, Loaded)> {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.iter().map(|(p, l)| (p.clone(), l.clone())).collect()
    }

    /// The stamp each file had when it was read.
    pub fn stamp_of(&self, path: &Path) -> Stamp {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(path).and_then(|l| l.stamp)
    }
}

#[cfg(test)]
mod tests {
    use super::Files;

    #[test]
    fn a_frozen_snapshot_serves_what_it_read_and_never_reads_the_disk_again() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.pem");
        std::fs::write(&p, b"one").unwrap();
        let f = Files::default();
        assert_eq!(&*f.read(&p, "k").unwrap(), b"one");
        let f = f.freeze();
        std::fs::write(&p, b"two").unwrap();
        assert_eq!(&*f.read(&p, "k").unwrap(), b"one");
        assert!(f.read(&dir.path().join("b.pem"), "k").is_err());
    }
}
