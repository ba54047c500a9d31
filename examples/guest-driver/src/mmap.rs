//! Shared mappings (device BARs, DMA-mapped guest RAM), made and accessed
//! through rust-vmm's `vm-memory` (`MmapRegion`, `VolatileRef`): the device
//! may read or write this memory at any time, so every access is a volatile
//! load or store and no Rust reference to it ever exists (the contract of
//! `VfioContainer::vfio_dma_map`).

use std::fs::File;
use std::os::fd::{BorrowedFd, RawFd};

use vm_memory::bitmap::BitmapSlice;
use vm_memory::mmap::{MmapRegion, MmapRegionError};
use vm_memory::volatile_memory::{VolatileMemory, VolatileSlice};
use vm_memory::{ByteValued, FileOffset};

use crate::error::{Error, Result};

/// One `mmap`ed range, unmapped on drop.
#[derive(Debug)]
pub struct Mmap {
    region: MmapRegion,
}

impl Mmap {
    /// A shared mapping of `len` bytes of `fd` at `offset`.
    pub fn shared(fd: RawFd, offset: u64, len: usize, what: &str) -> Result<Mmap> {
        if fd < 0 {
            return Err(Error::BadInput(format!(
                "{what}: no file descriptor ({fd})"
            )));
        }
        // SAFETY: the caller's `fd` is open for the whole call; it is only
        // duplicated here (the mapping keeps its own descriptor).
        let owned = unsafe { BorrowedFd::borrow_raw(fd) }
            .try_clone_to_owned()
            .map_err(|e| Error::io(format!("dup the fd of {what}"), e))?;
        let file = FileOffset::new(File::from(owned), offset);
        Self::map(Some(file), len, libc::MAP_SHARED, what)
    }

    /// Shared anonymous memory (shmem pages), populated.
    pub fn anonymous_shared(len: usize, what: &str) -> Result<Mmap> {
        Self::map(
            None,
            len,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
            what,
        )
    }

    /// Private anonymous memory, populated.
    pub fn anonymous(len: usize, what: &str) -> Result<Mmap> {
        Self::map(
            None,
            len,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
            what,
        )
    }

    fn map(file: Option<FileOffset>, len: usize, flags: i32, what: &str) -> Result<Mmap> {
        if len == 0 {
            return Err(Error::BadInput(format!("{what}: empty mapping")));
        }
        let at = file.as_ref().map_or(0, |f| f.start());
        let region = MmapRegion::build(file, len, libc::PROT_READ | libc::PROT_WRITE, flags)
            .map_err(|e| {
                let what = format!("mmap {what} ({len:#x} bytes at {at:#x})");
                match e {
                    MmapRegionError::Mmap(err) => Error::io(what, err),
                    e => Error::BadInput(format!("{what}: {e}")),
                }
            })?;
        Ok(Mmap { region })
    }

    pub fn len(&self) -> usize {
        self.region.size()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The address of the first byte (for `VFIO_IOMMU_MAP_DMA`, `mlock`, pagemap).
    pub fn as_ptr(&self) -> *mut u8 {
        self.region.as_ptr()
    }

    /// Volatile write of `data` at `off`: one access of the natural width
    /// when `data` is 1, 2, 4 or 8 bytes and aligned (device registers need
    /// exact widths), bytes otherwise.  False if out of bounds.
    pub fn write(&self, off: usize, data: &[u8]) -> bool {
        let Ok(s) = self.region.get_slice(off, data.len()) else {
            return false;
        };
        match data.len() {
            8 if off % 8 == 0 => store(&s, u64::from_le_bytes(data.try_into().unwrap_or_default())),
            4 if off % 4 == 0 => store(&s, u32::from_le_bytes(data.try_into().unwrap_or_default())),
            2 if off % 2 == 0 => store(&s, u16::from_le_bytes(data.try_into().unwrap_or_default())),
            _ => data
                .iter()
                .enumerate()
                .all(|(i, b)| s.get_ref::<u8>(i).map(|r| r.store(*b)).is_ok()),
        }
    }

    /// Volatile read into `buf` at `off` (widths as [`Mmap::write`]).
    pub fn read(&self, off: usize, buf: &mut [u8]) -> bool {
        let Ok(s) = self.region.get_slice(off, buf.len()) else {
            return false;
        };
        match buf.len() {
            8 if off % 8 == 0 => load::<u64, _>(&s).map(|v| buf.copy_from_slice(&v.to_le_bytes())),
            4 if off % 4 == 0 => load::<u32, _>(&s).map(|v| buf.copy_from_slice(&v.to_le_bytes())),
            2 if off % 2 == 0 => load::<u16, _>(&s).map(|v| buf.copy_from_slice(&v.to_le_bytes())),
            _ => buf.iter_mut().enumerate().try_for_each(|(i, b)| {
                *b = s.get_ref::<u8>(i).ok()?.load();
                Some(())
            }),
        }
        .is_some()
    }
}

/// One volatile store of `v` (its whole width) at the start of `s`.
fn store<T: ByteValued, B: BitmapSlice>(s: &VolatileSlice<'_, B>, v: T) -> bool {
    s.get_ref::<T>(0).map(|r| r.store(v)).is_ok()
}

/// One volatile load of a `T` at the start of `s`.
fn load<T: ByteValued, B: BitmapSlice>(s: &VolatileSlice<'_, B>) -> Option<T> {
    s.get_ref::<T>(0).ok().map(|r| r.load())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_and_widths() {
        let m = Mmap::anonymous(8192, "test").unwrap();
        assert!(m.write(8, &0x1122_3344_5566_7788u64.to_le_bytes()));
        let mut b = [0u8; 4];
        assert!(m.read(8, &mut b));
        assert_eq!(u32::from_le_bytes(b), 0x5566_7788);
        assert!(m.read(9, &mut b), "unaligned: bytewise");
        assert_eq!(b, [0x77, 0x66, 0x55, 0x44]);
        assert!(!m.write(8190, &[0; 4]), "runs past the end");
        assert!(!m.read(usize::MAX, &mut b), "overflowing offset");
        assert!(Mmap::anonymous(0, "empty").is_err());
    }

    #[test]
    fn shared_file_mapping_at_an_offset() {
        use std::io::{Read, Seek, SeekFrom, Write};
        use std::os::fd::AsRawFd;
        let path = std::env::temp_dir().join(format!("gvt-mmap-test-{}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.write_all(&[0u8; 8192]).unwrap();
        let m = Mmap::shared(f.as_raw_fd(), 4096, 4096, "file").unwrap();
        assert!(m.write(4, &0xA1B2_C3D4u32.to_le_bytes()));
        let mut b = [0u8; 4];
        f.seek(SeekFrom::Start(4096 + 4)).unwrap();
        f.read_exact(&mut b).unwrap();
        assert_eq!(
            u32::from_le_bytes(b),
            0xA1B2_C3D4,
            "the write reached the file at 4096+4"
        );
        drop(m);
        std::fs::remove_file(&path).unwrap();
        assert!(
            matches!(Mmap::shared(-1, 0, 4096, "no fd"), Err(Error::BadInput(_))),
            "no descriptor: an error, not a panic"
        );
        let d = std::fs::File::open("/dev/null").unwrap();
        match Mmap::shared(d.as_raw_fd(), 0, 4096, "/dev/null") {
            Err(Error::Io { err, .. }) => assert_eq!(err.raw_os_error(), Some(libc::EACCES)),
            other => {
                panic!("a read-only descriptor mapped writable: the kernel's errno: {other:?}")
            }
        }
    }
}
