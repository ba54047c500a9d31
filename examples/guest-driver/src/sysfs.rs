//! The sysfs backend: the vGPU as software inside a guest sees it, with no
//! kernel driver bound — the PCI function's `resource0` (BAR0, every access
//! trapped by the VMM and forwarded to the mediator) and `resource2` (the
//! aperture; only the vGPU's slice is mapped straight through) under
//! `/sys/bus/pci/devices/<bdf>/`, and its `config` file for the command
//! register.
//!
//! Guest RAM: a locked anonymous buffer whose pages' physical addresses come
//! from `/proc/self/pagemap` (root only: others read PFN 0).  The pages are
//! not contiguous; the driver maps them page by page.  The buffer stays
//! locked for the backend's lifetime (the L2 kernel of the rig has no
//! compaction or migration, and `compact_unevictable_allowed` is cleared
//! where it exists, so a locked page keeps its frame).
//!
//! Interrupts: none reach user space without a kernel driver; the driver
//! polls `HEAD` and the GT IIR instead ([`IrqWait::Unsupported`]).  INTx is
//! disabled in the command register so the unclaimed line stays quiet.

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::backend::{Backend, GuestBus, IrqWait};
use crate::error::{Error, Result};
use crate::mmap::Mmap;

const PAGE: u64 = 4096;
/// PVINFO: magic and the mappable (aperture) slice.
const PVINFO: usize = 0x78000;
const PV_MAPPABLE_BASE: usize = PVINFO + 0x40;
const PV_MAPPABLE_SIZE: usize = PVINFO + 0x44;

/// gvt-rs vGPU PCI IDs (see gvt-core's config space).
pub const VENDOR: u16 = 0x1234;
pub const DEVICE: u16 = 0x6776;

/// A vGPU reached through its PCI function's sysfs resources.
pub struct SysfsBackend {
    dir: PathBuf,
    bar0: Mmap,
    /// (aperture offset of the mapping, mapping of the vGPU's slice)
    bar2: (u64, Mmap),
    ram: Mmap,
    /// Physical address of every page of `ram`, in order.
    phys: Vec<u64>,
    /// Physical page address -> index in `ram`.
    index: BTreeMap<u64, usize>,
    err: Option<String>,
}

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok()
}

/// Size of BAR `n` from the function's `resource` file (0 if absent).
fn bar_size(dir: &Path, n: usize) -> Result<u64> {
    let p = dir.join("resource");
    let s = fs::read_to_string(&p).map_err(|e| Error::io(format!("read {}", p.display()), e))?;
    let f: Vec<u64> = s
        .lines()
        .nth(n)
        .unwrap_or("")
        .split_whitespace()
        .filter_map(hex)
        .collect();
    Ok(match f.as_slice() {
        [start, end, ..] if *end > *start => end - start + 1,
        _ => 0,
    })
}

impl SysfsBackend {
    /// The first PCI function with the gvt-rs vGPU's IDs.
    pub fn find() -> Result<PathBuf> {
        let root = Path::new("/sys/bus/pci/devices");
        let rd =
            fs::read_dir(root).map_err(|e| Error::io(format!("list {}", root.display()), e))?;
        let mut all: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        all.sort();
        for d in all {
            let id = |f: &str| fs::read_to_string(d.join(f)).ok().and_then(|s| hex(&s));
            if id("vendor") == Some(u64::from(VENDOR)) && id("device") == Some(u64::from(DEVICE)) {
                return Ok(d);
            }
        }
        Err(Error::BadInput(format!(
            "no PCI function {VENDOR:04x}:{DEVICE:04x} under {}",
            root.display()
        )))
    }

    /// Map BAR0 and the vGPU's aperture slice (learned from PVINFO), and
    /// lock `ram_pages` pages of RAM for the driver.
    pub fn open(dir: &Path, ram_pages: usize) -> Result<SysfsBackend> {
        let open = |f: &str| {
            let p = dir.join(f);
            fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&p)
                .map_err(|e| Error::io(format!("open {}", p.display()), e))
        };
        let bar0_size = bar_size(dir, 0)?;
        if bar0_size < (PVINFO as u64) + 0x1000 {
            return Err(Error::BadInput(format!(
                "{}: BAR0 is {bar0_size:#x} bytes, too small for PVINFO",
                dir.display()
            )));
        }
        let bar2_size = bar_size(dir, 2)?;
        let r0 = open("resource0")?;
        let bar0 = Mmap::shared(r0.as_raw_fd(), 0, bar0_size as usize, "resource0")?;
        let rd32 = |off: usize| {
            let mut b = [0u8; 4];
            bar0.read(off, &mut b)
                .then(|| u32::from_le_bytes(b))
                .ok_or_else(|| Error::BadInput(format!("BAR0 {off:#x}")))
        };
        let magic = u64::from(rd32(PVINFO)?) | (u64::from(rd32(PVINFO + 4)?) << 32);
        if magic != gvt_core::pvinfo::VGT_MAGIC {
            return Err(Error::NotVgpu);
        }
        let base = u64::from(rd32(PV_MAPPABLE_BASE)?);
        let size = u64::from(rd32(PV_MAPPABLE_SIZE)?);
        if size == 0 || base % PAGE != 0 || base.checked_add(size).is_none_or(|e| e > bar2_size) {
            return Err(Error::BadInput(format!(
                "PVINFO aperture slice {base:#x}+{size:#x} does not fit BAR2 ({bar2_size:#x})"
            )));
        }
        let r2 = open("resource2")?;
        let bar2 = Mmap::shared(
            r2.as_raw_fd(),
            base,
            size as usize,
            "resource2 (aperture slice)",
        )?;
        let (ram, phys) = locked_ram(ram_pages)?;
        let index = phys.iter().enumerate().map(|(i, p)| (*p, i)).collect();
        Ok(SysfsBackend {
            dir: dir.to_path_buf(),
            bar0,
            bar2: (base, bar2),
            ram,
            phys,
            index,
            err: None,
        })
    }

    /// Write the PCI command register through the function's `config` file.
    pub fn set_command(&mut self, bits: u16) -> Result<()> {
        let p = self.dir.join("config");
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .map_err(|e| Error::io(format!("open {}", p.display()), e))?;
        f.write_all_at(&bits.to_le_bytes(), 4)
            .map_err(|e| Error::io(format!("write {} at 4", p.display()), e))?;
        let mut b = [0u8; 2];
        f.read_exact_at(&mut b, 4)
            .map_err(|e| Error::io(format!("read {} at 4", p.display()), e))?;
        let now = u16::from_le_bytes(b);
        // Memory decode must stick; a VMM may emulate the other bits.
        if now & bits & crate::vfio::CMD_MEMORY != bits & crate::vfio::CMD_MEMORY {
            return Err(Error::Refused {
                what: "the PCI command register".into(),
                detail: format!("wrote {bits:#x}, reads {now:#x}"),
            });
        }
        Ok(())
    }

    fn ram_at(&self, gpa: u64, len: usize) -> Option<usize> {
        let page = gpa & !(PAGE - 1);
        let off = (gpa - page) as usize;
        if off.checked_add(len)? > PAGE as usize {
            return None;
        }
        let i = *self.index.get(&page)?;
        Some(i * PAGE as usize + off)
    }
}

/// `pages` locked, touched pages and their physical addresses.
fn locked_ram(pages: usize) -> Result<(Mmap, Vec<u64>)> {
    let _ = fs::write("/proc/sys/vm/compact_unevictable_allowed", "0");
    let len = pages
        .checked_mul(PAGE as usize)
        .ok_or_else(|| Error::BadInput(format!("{pages} pages")))?;
    let ram = Mmap::anonymous(len, "guest RAM buffer")?;
    // SAFETY: locking our own live mapping.
    if unsafe { libc::mlock(ram.as_ptr().cast(), len) } != 0 {
        return Err(Error::last_os("mlock of the guest RAM buffer"));
    }
    for i in 0..pages {
        // Touch every page so it has a frame (zeroed: the driver's view).
        ram.write(i * PAGE as usize, &[0u8; 8]);
    }
    let pm = fs::File::open("/proc/self/pagemap")
        .map_err(|e| Error::io("open /proc/self/pagemap", e))?;
    let mut phys = Vec::with_capacity(pages);
    for i in 0..pages {
        let va = ram.as_ptr() as u64 + (i as u64) * PAGE;
        let mut e = [0u8; 8];
        pm.read_exact_at(&mut e, (va / PAGE) * 8)
            .map_err(|e| Error::io("read /proc/self/pagemap", e))?;
        let e = u64::from_le_bytes(e);
        let pfn = e & ((1 << 55) - 1);
        if e & (1 << 63) == 0 {
            return Err(Error::BadInput(format!(
                "page {i} of the locked buffer is not present"
            )));
        }
        if pfn == 0 {
            return Err(Error::Refused {
                what: "/proc/self/pagemap".into(),
                detail: "PFN 0: reading frame numbers needs CAP_SYS_ADMIN (run as root)".into(),
            });
        }
        phys.push(pfn * PAGE);
    }
    let mut sorted = phys.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != phys.len() {
        return Err(Error::BadInput(
            "two pages of the locked buffer share a frame".into(),
        ));
    }
    Ok((ram, phys))
}

impl GuestBus for SysfsBackend {
    fn bar0_read(&mut self, offset: u64, buf: &mut [u8]) -> bool {
        let ok = usize::try_from(offset).is_ok_and(|o| self.bar0.read(o, buf));
        if !ok {
            self.err = Some(format!(
                "BAR0 read {offset:#x}+{}: outside resource0",
                buf.len()
            ));
        }
        ok
    }

    fn bar0_write(&mut self, offset: u64, data: &[u8]) -> bool {
        let ok = usize::try_from(offset).is_ok_and(|o| self.bar0.write(o, data));
        if !ok {
            self.err = Some(format!(
                "BAR0 write {offset:#x}+{}: outside resource0",
                data.len()
            ));
        }
        ok
    }

    fn aperture_write(&mut self, offset: u64, data: &[u8]) -> bool {
        let (base, m) = &self.bar2;
        let ok = offset
            .checked_sub(*base)
            .and_then(|r| usize::try_from(r).ok())
            .is_some_and(|r| m.write(r, data));
        if !ok {
            self.err = Some(format!(
                "aperture write {offset:#x}: outside the mapped slice"
            ));
        }
        ok
    }

    fn aperture_read(&mut self, offset: u64, buf: &mut [u8]) -> bool {
        let (base, m) = &self.bar2;
        let ok = offset
            .checked_sub(*base)
            .and_then(|r| usize::try_from(r).ok())
            .is_some_and(|r| m.read(r, buf));
        if !ok {
            self.err = Some(format!(
                "aperture read {offset:#x}: outside the mapped slice"
            ));
        }
        ok
    }

    fn ram_write(&mut self, gpa: u64, data: &[u8]) -> bool {
        match self.ram_at(gpa, data.len()) {
            Some(o) => self.ram.write(o, data),
            None => {
                self.err = Some(format!(
                    "physical {gpa:#x} is not a page of the driver's buffer"
                ));
                false
            }
        }
    }

    fn ram_read(&mut self, gpa: u64, buf: &mut [u8]) -> bool {
        match self.ram_at(gpa, buf.len()) {
            Some(o) => self.ram.read(o, buf),
            None => {
                self.err = Some(format!(
                    "physical {gpa:#x} is not a page of the driver's buffer"
                ));
                false
            }
        }
    }
}

impl Backend for SysfsBackend {
    fn describe(&self) -> String {
        format!(
            "sysfs {} ({} locked RAM pages)",
            self.dir.display(),
            self.phys.len()
        )
    }

    fn ram_pages(&self) -> Vec<u64> {
        self.phys.clone()
    }

    fn enable(&mut self) -> Result<()> {
        self.set_command(
            crate::vfio::CMD_MEMORY | crate::vfio::CMD_BUS_MASTER | crate::vfio::CMD_INTX_DISABLE,
        )
    }

    fn wait_irq(&mut self, _timeout: Duration) -> Result<IrqWait> {
        Ok(IrqWait::Unsupported)
    }

    fn take_error(&mut self) -> Option<String> {
        self.err.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_sizes_from_the_resource_file() {
        let d = std::env::temp_dir().join(format!("gvt-guest-sysfs-{}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        fs::write(
            d.join("resource"),
            "0x00000000fd000000 0x00000000fdffffff 0x0000000000140204\n\
             0x0000000000000000 0x0000000000000000 0x0000000000000000\n\
             0x00000000e0000000 0x00000000efffffff 0x000000000014220c\n",
        )
        .unwrap();
        assert_eq!(bar_size(&d, 0).unwrap(), 16 << 20);
        assert_eq!(bar_size(&d, 1).unwrap(), 0, "absent BAR");
        assert_eq!(bar_size(&d, 2).unwrap(), 256 << 20);
        assert_eq!(bar_size(&d, 9).unwrap(), 0, "no such line");
        fs::write(d.join("resource"), "garbage\n").unwrap();
        assert_eq!(bar_size(&d, 0).unwrap(), 0);
        let _ = fs::remove_dir_all(&d);
        assert!(
            bar_size(&d, 0).is_err(),
            "missing file is an error, not a panic"
        );
    }

    #[test]
    fn locked_ram_has_distinct_frames_or_says_why_not() {
        match locked_ram(8) {
            Ok((m, phys)) => {
                assert_eq!((m.len(), phys.len()), (8 * PAGE as usize, 8));
                assert!(phys.iter().all(|p| p % PAGE == 0 && *p != 0));
            }
            // Without CAP_SYS_ADMIN pagemap hides frame numbers.
            Err(e) => assert!(matches!(e, Error::Refused { .. }), "{e}"),
        }
    }
}
