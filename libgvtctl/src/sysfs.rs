//! The filesystem seam. The library touches sysfs, `/dev`, `/proc` and `/etc` only
//! through [`Sysfs`], so tests (and `gvtctl --root` on a tree made by `gvtctl sim init`)
//! can put a simulated mdev core ([`crate::fake_sysfs::FakeMdevSysfs`]) behind the same calls
//! the real kernel answers.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What a file is, as `stat(2)` says: enough to tell whether two names (or a name and
/// an open descriptor, through `/proc/<pid>/fd/<n>`) lead to the same file or device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub kind: FileKind,
    /// `st_dev`: the filesystem holding the inode.
    pub dev: u64,
    pub ino: u64,
    /// `st_rdev`: the device a device node stands for (0 for other files).
    pub rdev: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    CharDevice,
    BlockDevice,
    Other,
}

impl FileId {
    pub fn of(m: &std::fs::Metadata) -> FileId {
        let t = m.file_type();
        FileId {
            kind: if t.is_char_device() {
                FileKind::CharDevice
            } else if t.is_block_device() {
                FileKind::BlockDevice
            } else {
                FileKind::Other
            },
            dev: m.dev(),
            ino: m.ino(),
            rdev: m.rdev(),
        }
    }

    /// Whether an open file (`self`, from `/proc/<pid>/fd/<n>`) is `node`. A device node
    /// is the device it stands for: the same type and `st_rdev`, whatever name or
    /// filesystem it was opened through (libvirt gives each QEMU a private `/dev` with
    /// its own `/dev/vfio/N` node). Anything else is the same inode (`st_dev`, `st_ino`).
    pub fn is_same_as(&self, node: &FileId) -> bool {
        match node.kind {
            FileKind::CharDevice | FileKind::BlockDevice => {
                self.kind == node.kind && self.rdev == node.rdev
            }
            FileKind::Other => {
                self.kind == node.kind && self.dev == node.dev && self.ino == node.ino
            }
        }
    }
}

/// The filesystem operations the library needs. All paths are already rooted.
pub trait Sysfs {
    fn read_to_string(&self, path: &Path) -> io::Result<String>;
    /// Write `data` to an existing sysfs attribute in one `write(2)`; never creates it.
    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()>;
    /// Create or replace a regular file (definitions in `/etc/mdevctl.d`), atomically:
    /// a reader sees the old content or the whole new one ([`write_atomically`]).
    fn write_file(&self, path: &Path, data: &[u8]) -> io::Result<()>;
    /// Names of the entries of a directory (non-UTF-8 names are skipped), sorted.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    fn read_link(&self, path: &Path) -> io::Result<PathBuf>;
    /// The whole file as bytes (for text that need not be UTF-8, like a process name).
    fn read_bytes(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    /// `stat(2)`, following symbolic links: for `/proc/<pid>/fd/<n>` the file that
    /// descriptor has open, whatever its link text says.
    fn file_id(&self, path: &Path) -> io::Result<FileId> {
        std::fs::metadata(path).map(|m| FileId::of(&m))
    }
    /// Write `data` in one `write(2)` to the attribute `attr` (a relative path such as
    /// `gvt/weight`) of the device directory `dev`, opened beneath `dev` without
    /// following any symbolic link ([`open_beneath`]): a definition's attribute can
    /// name only a file of the device itself, never one reached through its
    /// `mdev_type`, `iommu_group`, `driver` or `subsystem` links.
    fn write_attr(&self, dev: &Path, attr: &str, data: &[u8]) -> io::Result<()> {
        write_once(&open_beneath(dev, attr)?, data)
    }
    /// Nanoseconds on a monotonic clock (only differences mean anything): the time of
    /// a statistics reading ([`crate::stats`]).
    fn now_ns(&self) -> u64 {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let start = *START.get_or_init(std::time::Instant::now);
        u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
    fn exists(&self, path: &Path) -> bool;
    fn is_dir(&self, path: &Path) -> bool;
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
}

/// Open `rel` (plain names separated by `/`: no `.`, `..`, empty or absolute parts)
/// for writing beneath the directory `dir`, one component at a time with `openat(2)`
/// and `O_NOFOLLOW`: a symbolic link anywhere below `dir` fails the open (`ELOOP` for
/// the last component, `ENOTDIR` for a directory), and what is opened is what is
/// written, so nothing can swap a link in between a check and the write. `dir` itself
/// is followed (`/sys/bus/mdev/devices/<uuid>` is the kernel's link to the device).
/// The file must be a regular file (a sysfs attribute, which takes a whole value per
/// write; it is not truncated).
pub fn open_beneath(dir: &Path, rel: &str) -> io::Result<std::fs::File> {
    use std::ffi::CString;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::fs::OpenOptionsExt;

    let invalid = || io::Error::from_raw_os_error(libc::EINVAL);
    let parts: Vec<&str> = rel.split('/').collect();
    if parts
        .iter()
        .any(|c| c.is_empty() || *c == "." || *c == "..")
    {
        return Err(invalid());
    }
    let mut cur: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)?
        .into();
    for (i, part) in parts.iter().enumerate() {
        let name = CString::new(*part).map_err(|_| invalid())?;
        let last = i + 1 == parts.len();
        let flags = libc::O_NOFOLLOW
            | libc::O_CLOEXEC
            | if last {
                libc::O_WRONLY | libc::O_NOCTTY | libc::O_NONBLOCK
            } else {
                libc::O_PATH | libc::O_DIRECTORY
            };
        // SAFETY: `cur` is an open descriptor and `name` a NUL-terminated string; the
        // result is checked before it is owned.
        let fd = unsafe { libc::openat(cur.as_raw_fd(), name.as_ptr(), flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by openat and nothing else owns it.
        cur = unsafe { OwnedFd::from_raw_fd(fd) };
    }
    let f = std::fs::File::from(cur);
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (a sysfs attribute)",
        ));
    }
    Ok(f)
}

/// One `write(2)` of all of `data` (sysfs takes an attribute's value in one write).
pub fn write_once(mut f: &std::fs::File, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let n = f.write(data)?;
    if n != data.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short write to sysfs attribute",
        ));
    }
    Ok(())
}

/// Create or replace `path` so that a reader sees the old file or the whole new one,
/// never an empty or partial one, even across a crash: the data goes to a hidden
/// temporary file in the same directory (`.<name>.XXXXXX`, a name that is no UUID, so
/// neither gvtctl nor mdevctl takes it for a definition), is flushed to disk, and is
/// renamed over `path`; the directory is flushed last, which makes the rename durable.
/// The file gets mode 0644, as mdevctl's have.
pub fn write_atomically(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .tempfile_in(dir)?;
    tmp.write_all(data)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The real filesystem (what the kernel's sysfs answers on a host).
#[derive(Debug, Default, Clone, Copy)]
pub struct RealSysfs;

impl Sysfs for RealSysfs {
    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path)?;
        write_once(&f, data)
    }

    fn write_file(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        write_atomically(path, data)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::process::Command;

    #[test]
    fn atomic_writes_replace_whole_files_and_leave_nothing_behind() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("83b8f4f2-509f-382f-3c1e-e6bfe0fa1001");
        write_atomically(&p, b"first").unwrap();
        let ino = std::fs::metadata(&p).unwrap().ino();
        write_atomically(&p, b"second, longer").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "second, longer");
        // A new inode took the name (rename), the old one was never written in place.
        assert_ne!(std::fs::metadata(&p).unwrap().ino(), ino);
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o644
        );
        let names: Vec<_> = std::fs::read_dir(t.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        // A failure leaves the old file as it was.
        std::fs::create_dir(t.path().join("dir")).unwrap();
        assert!(write_atomically(&t.path().join("dir"), b"x").is_err());
        assert!(t.path().join("dir").is_dir());
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 2);
        assert!(write_atomically(&t.path().join("none/x"), b"x").is_err());
    }

    #[test]
    fn open_beneath_follows_no_link_below_the_directory() {
        let t = tempfile::tempdir().unwrap();
        let dev = t.path().join("dev");
        let other = t.path().join("other");
        std::fs::create_dir_all(dev.join("gvt")).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(dev.join("gvt/weight"), "4\n").unwrap();
        std::fs::write(other.join("remove"), "").unwrap();
        symlink(&other, dev.join("mdev_type")).unwrap();
        symlink(other.join("remove"), dev.join("gvt/evil")).unwrap();
        // The directory itself may be a link (/sys/bus/mdev/devices/<uuid> is).
        symlink(&dev, t.path().join("bus-link")).unwrap();

        write_once(
            &open_beneath(&t.path().join("bus-link"), "gvt/weight").unwrap(),
            b"8",
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(dev.join("gvt/weight")).unwrap(),
            "8\n"
        );
        let errno = |rel: &str| open_beneath(&dev, rel).unwrap_err().raw_os_error();
        assert_eq!(errno("mdev_type/remove"), Some(libc::ENOTDIR));
        assert_eq!(errno("gvt/evil"), Some(libc::ELOOP));
        assert_eq!(errno("mdev_type"), Some(libc::ELOOP));
        for bad in [
            "../other/remove",
            "gvt/../../other/remove",
            "/etc/passwd",
            "",
            "gvt//weight",
            "./gvt/weight",
            "gvt/\0",
        ] {
            assert_eq!(errno(bad), Some(libc::EINVAL), "{bad:?}");
        }
        assert_eq!(errno("gvt/none"), Some(libc::ENOENT));
        // Directories and FIFOs are not attributes (and a FIFO does not block the open).
        assert!(open_beneath(&dev, "gvt").is_err());
        assert!(Command::new("mkfifo")
            .arg(dev.join("gvt/fifo"))
            .status()
            .unwrap()
            .success());
        assert!(open_beneath(&dev, "gvt/fifo").is_err());
        assert_eq!(std::fs::read_to_string(other.join("remove")).unwrap(), "");
    }
}
