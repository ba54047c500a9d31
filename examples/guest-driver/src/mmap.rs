//! Shared mappings (device BARs, DMA-mapped guest RAM) accessed only with
//! volatile loads and stores through raw pointers: the device may read or
//! write this memory at any time, so no Rust reference to it ever exists
//! (the contract of `VfioContainer::vfio_dma_map`).

use std::os::fd::RawFd;
use std::ptr;

use crate::error::{Error, Result};

/// One `mmap`ed range, unmapped on drop.
#[derive(Debug)]
pub struct Mmap {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; every access is a volatile
// load/store through the raw pointer, bounds-checked against `len`.
unsafe impl Send for Mmap {}

impl Mmap {
    /// A shared mapping of `len` bytes of `fd` at `offset`.
    pub fn shared(fd: RawFd, offset: u64, len: usize, what: &str) -> Result<Mmap> {
        let off = libc::off_t::try_from(offset)
            .map_err(|_| Error::BadInput(format!("{what}: offset {offset:#x}")))?;
        Self::map(fd, off, len, libc::MAP_SHARED, what)
    }

    /// Shared anonymous memory (shmem pages), populated.
    pub fn anonymous_shared(len: usize, what: &str) -> Result<Mmap> {
        Self::map(
            -1,
            0,
            len,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
            what,
        )
    }

    /// Private anonymous memory, populated.
    pub fn anonymous(len: usize, what: &str) -> Result<Mmap> {
        Self::map(
            -1,
            0,
            len,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
            what,
        )
    }

    fn map(fd: RawFd, off: libc::off_t, len: usize, flags: i32, what: &str) -> Result<Mmap> {
        if len == 0 {
            return Err(Error::BadInput(format!("{what}: empty mapping")));
        }
        // SAFETY: a fresh mapping chosen by the kernel; no existing memory
        // is affected; the kernel checks fd, offset and length.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                off,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Error::last_os(format!(
                "mmap {what} ({len:#x} bytes at {off:#x})"
            )));
        }
        Ok(Mmap { ptr: p.cast(), len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address of the first byte (for `VFIO_IOMMU_MAP_DMA`, `mlock`, pagemap).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    fn check(&self, off: usize, n: usize) -> bool {
        off.checked_add(n).is_some_and(|e| e <= self.len)
    }

    /// Volatile write of `data` at `off`: one access of the natural width
    /// when `data` is 1, 2, 4 or 8 bytes and aligned (device registers need
    /// exact widths), bytes otherwise.  False if out of bounds.
    pub fn write(&self, off: usize, data: &[u8]) -> bool {
        if !self.check(off, data.len()) {
            return false;
        }
        // SAFETY: `off..off+len` is inside the live mapping (checked above);
        // the widened accesses are aligned (checked); volatile, no references.
        unsafe {
            let p = self.ptr.add(off);
            match data.len() {
                8 if off % 8 == 0 => ptr::write_volatile(
                    p.cast::<u64>(),
                    u64::from_le_bytes(data.try_into().unwrap_or_default()),
                ),
                4 if off % 4 == 0 => ptr::write_volatile(
                    p.cast::<u32>(),
                    u32::from_le_bytes(data.try_into().unwrap_or_default()),
                ),
                2 if off % 2 == 0 => ptr::write_volatile(
                    p.cast::<u16>(),
                    u16::from_le_bytes(data.try_into().unwrap_or_default()),
                ),
                _ => {
                    for (i, b) in data.iter().enumerate() {
                        ptr::write_volatile(p.add(i), *b);
                    }
                }
            }
        }
        true
    }

    /// Volatile read into `buf` at `off` (widths as [`Mmap::write`]).
    pub fn read(&self, off: usize, buf: &mut [u8]) -> bool {
        if !self.check(off, buf.len()) {
            return false;
        }
        // SAFETY: as in `write`.
        unsafe {
            let p = self.ptr.add(off);
            match buf.len() {
                8 if off % 8 == 0 => {
                    buf.copy_from_slice(&ptr::read_volatile(p.cast::<u64>()).to_le_bytes())
                }
                4 if off % 4 == 0 => {
                    buf.copy_from_slice(&ptr::read_volatile(p.cast::<u32>()).to_le_bytes())
                }
                2 if off % 2 == 0 => {
                    buf.copy_from_slice(&ptr::read_volatile(p.cast::<u16>()).to_le_bytes())
                }
                _ => {
                    for (i, b) in buf.iter_mut().enumerate() {
                        *b = ptr::read_volatile(p.add(i));
                    }
                }
            }
        }
        true
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
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
}
