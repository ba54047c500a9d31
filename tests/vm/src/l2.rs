//! What the L2 programs (`src/bin/l2-*.rs`, run by the nested guest's
//! `/init`) share: finding, enabling and booting the vGPU with the
//! reference guest driver over sysfs, and mapping PCI resource files.

use std::fs;
use std::os::fd::AsRawFd;

use gvt_guest_driver::sysfs::SysfsBackend;
use gvt_guest_driver::{BootConfig, Driver, Error, PteWidth, Result};

/// Find the vGPU's PCI function, enable it the way a kernel driver's
/// `pci_enable_device` does (memory decode on: under QEMU the firmware did
/// it already, under cloud-hypervisor's direct kernel boot nothing did, and
/// BAR0 reads fail until it is on), probe and boot the reference driver
/// with `ram_pages` of locked L2 RAM.  Prints `L2: TAG ...` lines.
pub fn boot_vgpu(tag: &str, ram_pages: usize) -> Result<Driver<SysfsBackend>> {
    let dir = SysfsBackend::find()?;
    let enable = dir.join("enable");
    fs::write(&enable, "1").map_err(|err| Error::Io {
        what: format!("write 1 to {}", enable.display()),
        err,
    })?;
    println!(
        "L2: {tag} enabled {} (enable={})",
        dir.display(),
        fs::read_to_string(&enable).unwrap_or_default().trim()
    );
    let bus = SysfsBackend::open(&dir, ram_pages)?;
    let mut d = Driver::probe(bus)?;
    println!(
        "L2: {tag} pvinfo vgt_id={} aperture={:#x}+{:#x} high={:#x}+{:#x} on {}",
        d.vgt_id(),
        d.aperture().base,
        d.aperture().size,
        d.high().base,
        d.high().size,
        dir.display()
    );
    // 32-bit PTE halves: one 4-byte MMIO access each, like a 32-bit guest.
    d.boot(BootConfig {
        aperture_pages: 96,
        high_pages: 8,
        width: PteWidth::Halves,
        verify_ptes: true,
    })?;
    println!("L2: {tag} booted, {} RAM pages left", d.free_pages());
    Ok(d)
}

/// A shared mapping of a PCI resource file (`/sys/bus/pci/devices/*/resourceN`),
/// with bounds-checked 32/64-bit volatile accesses.
pub struct Resource {
    ptr: *mut u8,
    len: usize,
}

impl Resource {
    /// Map `len` bytes of `path` from byte `off`.
    pub fn map(path: &str, off: usize, len: usize) -> Result<Resource, String> {
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| format!("{path}: {e}"))?;
        // SAFETY: a fresh shared mapping of the resource file; the kernel checks the range.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                off as i64,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!(
                "mmap {path} at {off:#x}+{len:#x}: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(Resource { ptr: p.cast(), len })
    }

    fn at(&self, off: usize, size: usize) -> *mut u8 {
        assert!(
            off % size == 0 && off.checked_add(size).is_some_and(|e| e <= self.len),
            "access {off:#x}/{size} outside the mapping"
        );
        // SAFETY: inside the mapping (checked above).
        unsafe { self.ptr.add(off) }
    }

    pub fn rd(&self, off: usize) -> u32 {
        // SAFETY: `at` returned an aligned address inside the mapping.
        unsafe { std::ptr::read_volatile(self.at(off, 4).cast::<u32>()) }
    }

    pub fn wr(&self, off: usize, v: u32) {
        // SAFETY: as in `rd`.
        unsafe { std::ptr::write_volatile(self.at(off, 4).cast::<u32>(), v) }
    }

    pub fn wr64(&self, off: usize, v: u64) {
        // SAFETY: as in `rd`.
        unsafe { std::ptr::write_volatile(self.at(off, 8).cast::<u64>(), v) }
    }
}
