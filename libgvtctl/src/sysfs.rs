//! The filesystem seam. The library touches sysfs, `/dev`, `/proc` and `/etc` only
//! through [`Sysfs`], so tests (and `gvtctl --root` on a tree made by `gvtctl sim init`)
//! can put a simulated mdev core ([`crate::sim::SimMdevCore`]) behind the same calls
//! the real kernel answers.

use std::io;
use std::path::{Path, PathBuf};

/// The filesystem operations the library needs. All paths are already rooted.
pub trait Sysfs {
    fn read_to_string(&self, path: &Path) -> io::Result<String>;
    /// Write `data` to an existing sysfs attribute in one `write(2)`; never creates it.
    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()>;
    /// Create or replace a regular file (definitions in `/etc/mdevctl.d`).
    fn write_file(&self, path: &Path, data: &[u8]) -> io::Result<()>;
    /// Names of the entries of a directory (non-UTF-8 names are skipped), sorted.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    fn read_link(&self, path: &Path) -> io::Result<PathBuf>;
    fn exists(&self, path: &Path) -> bool;
    fn is_dir(&self, path: &Path) -> bool;
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
}

/// The real filesystem (what the kernel's sysfs answers on a host).
#[derive(Debug, Default, Clone, Copy)]
pub struct RealSysfs;

impl Sysfs for RealSysfs {
    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path)?;
        let n = f.write(data)?;
        if n != data.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short write to sysfs attribute",
            ));
        }
        Ok(())
    }

    fn write_file(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        std::fs::write(path, data)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut v: Vec<String> = std::fs::read_dir(path)?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        v.sort();
        Ok(v)
    }

    fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        std::fs::read_link(path)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
}
