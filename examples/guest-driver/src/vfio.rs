//! The VFIO backend: the vGPU as a VMM sees it, through rust-vmm's
//! `vfio-ioctls` (type1 container, group, device by sysfs path).
//!
//! - BAR0 and config space: `pread`/`pwrite` on the device fd at the
//!   region's offset (what `VfioDevice::region_read/region_write` do, but
//!   with the errno kept: vfio-ioctls logs and swallows failures);
//! - the aperture: an `mmap` of BAR2's sparse-mmap area (the vGPU's slice,
//!   pass-through), the region path for anything outside it (ballooned);
//! - guest RAM: an anonymous buffer registered with `VFIO_IOMMU_MAP_DMA`
//!   at a chosen IOVA, so GGTT PTEs name IOVAs of it and results are read
//!   back from it — exactly what a VMM does with a VM's memory;
//! - interrupts: MSI enabled in the (emulated) config space and wired to an
//!   eventfd with `VFIO_DEVICE_SET_IRQS`.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use vfio_bindings::bindings::vfio::{
    VFIO_PCI_BAR0_REGION_INDEX, VFIO_PCI_BAR2_REGION_INDEX, VFIO_PCI_CONFIG_REGION_INDEX,
};
use vfio_ioctls::{VfioContainer, VfioDevice, VfioOps, VfioRegionInfoCap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::backend::{Backend, GuestBus, IrqWait};
use crate::error::{Error, Result};
use crate::mmap::Mmap;

const PAGE: u64 = 4096;

/// PCI command register bits.
pub const CMD_MEMORY: u16 = 1 << 1;
pub const CMD_BUS_MASTER: u16 = 1 << 2;
pub const CMD_INTX_DISABLE: u16 = 1 << 10;

/// Guest RAM of a [`VfioBackend`]: `pages` pages at IOVA `iova`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamConfig {
    pub iova: u64,
    pub pages: u64,
    /// `MAP_SHARED | MAP_ANONYMOUS` (shmem pages, what QEMU's
    /// `memory-backend-memfd` or `share=on` gives) when true;
    /// `MAP_PRIVATE | MAP_ANONYMOUS` (anonymous pages, QEMU's default guest
    /// RAM) when false.
    pub shared: bool,
}

impl RamConfig {
    /// 4 MiB of shared anonymous memory at IOVA 1 GiB.
    pub const DEFAULT: RamConfig = RamConfig {
        iova: 1 << 30,
        pages: 1024,
        shared: true,
    };
}

/// A vGPU opened through VFIO, with its guest RAM.
pub struct VfioBackend {
    // Field order is drop order: the aperture mapping and the eventfd go
    // before the device, the device before the container.
    aperture: Option<(u64, Mmap)>,
    msi: Option<EventFd>,
    ram: Mmap,
    ram_cfg: RamConfig,
    /// IOVA ranges currently DMA-mapped.
    dma: Vec<(u64, u64)>,
    dev: VfioDevice,
    container: Arc<VfioContainer>,
    cfg_off: u64,
    bar0_off: u64,
    bar0_size: u64,
    bar2_off: u64,
    bar2_size: u64,
    path: String,
    err: Option<String>,
}

impl VfioBackend {
    /// Open the device at `sysfs` (e.g. `/sys/bus/mdev/devices/UUID`) in a
    /// container of its own, map its aperture slice and register `ram` as
    /// its guest memory.
    pub fn open(sysfs: &Path, ram: RamConfig) -> Result<VfioBackend> {
        let path = sysfs.display().to_string();
        if ram.pages == 0 || ram.iova % PAGE != 0 {
            return Err(Error::BadInput(format!(
                "guest RAM {ram:?}: needs pages and a page-aligned IOVA"
            )));
        }
        let len = ram
            .pages
            .checked_mul(PAGE)
            .and_then(|l| usize::try_from(l).ok())
            .ok_or_else(|| Error::BadInput(format!("guest RAM of {} pages", ram.pages)))?;
        let container =
            Arc::new(VfioContainer::new(None).map_err(|e| Error::vfio("open /dev/vfio/vfio", e))?);
        let ops: Arc<dyn VfioOps> = container.clone();
        let dev = VfioDevice::new(sysfs, ops, false)
            .map_err(|e| Error::vfio(format!("open {path}"), e))?;
        let area = dev
            .get_region_caps(VFIO_PCI_BAR2_REGION_INDEX)
            .into_iter()
            .filter_map(|c| match c {
                VfioRegionInfoCap::SparseMmap(s) => s.areas.first().copied(),
                _ => None,
            })
            .next();
        let mut me = VfioBackend {
            aperture: None,
            msi: None,
            ram: if ram.shared {
                Mmap::anonymous_shared(len, "guest RAM")?
            } else {
                Mmap::anonymous(len, "guest RAM")?
            },
            ram_cfg: ram,
            dma: Vec::new(),
            cfg_off: dev.get_region_offset(VFIO_PCI_CONFIG_REGION_INDEX),
            bar0_off: dev.get_region_offset(VFIO_PCI_BAR0_REGION_INDEX),
            bar0_size: dev.get_region_size(VFIO_PCI_BAR0_REGION_INDEX),
            bar2_off: dev.get_region_offset(VFIO_PCI_BAR2_REGION_INDEX),
            bar2_size: dev.get_region_size(VFIO_PCI_BAR2_REGION_INDEX),
            dev,
            container,
            path,
            err: None,
        };
        if let Some(a) = area {
            let n = usize::try_from(a.size)
                .map_err(|_| Error::BadInput(format!("aperture area {a:?}")))?;
            let m = Mmap::shared(
                me.dev.as_raw_fd(),
                me.bar2_off + a.offset,
                n,
                "the BAR2 sparse area",
            )?;
            me.aperture = Some((a.offset, m));
        }
        me.dma_map(ram.iova, ram.pages * PAGE)?;
        Ok(me)
    }

    pub fn device(&self) -> &VfioDevice {
        &self.dev
    }

    pub fn container(&self) -> &Arc<VfioContainer> {
        &self.container
    }

    pub fn ram_config(&self) -> RamConfig {
        self.ram_cfg
    }

    /// The aperture slice that is mmapped (BAR2 offset, size).
    pub fn aperture_area(&self) -> Option<(u64, u64)> {
        self.aperture.as_ref().map(|(o, m)| (*o, m.len() as u64))
    }

    /// `VFIO_IOMMU_MAP_DMA` of `[iova, iova + size)` of the guest RAM
    /// buffer (again, after [`VfioBackend::dma_unmap`]).
    pub fn dma_map(&mut self, iova: u64, size: u64) -> Result<()> {
        let off = self
            .ram_offset(iova, size)
            .ok_or_else(|| Error::BadInput(format!("{iova:#x}+{size:#x} is not in guest RAM")))?;
        let n = usize::try_from(size).map_err(|_| Error::BadInput(format!("size {size:#x}")))?;
        // SAFETY: `[ptr, ptr + n)` lies inside `self.ram`, a live private
        // mapping that only volatile accesses through raw pointers touch
        // (`Mmap`); it is DMA-unmapped (drop, `dma_unmap`) before munmap.
        unsafe {
            self.container
                .vfio_dma_map(iova, n, self.ram.as_ptr().add(off))
        }
        .map_err(|e| Error::vfio(format!("MAP_DMA {iova:#x}+{size:#x}"), e))?;
        self.dma.push((iova, size));
        Ok(())
    }

    /// `VFIO_IOMMU_UNMAP_DMA` (what a VMM does when guest memory goes away):
    /// the driver is told (`dma_unmap`) and must drop its pins.
    pub fn dma_unmap(&mut self, iova: u64, size: u64) -> Result<()> {
        let n = usize::try_from(size).map_err(|_| Error::BadInput(format!("size {size:#x}")))?;
        self.container
            .vfio_dma_unmap(iova, n)
            .map_err(|e| Error::vfio(format!("UNMAP_DMA {iova:#x}+{size:#x}"), e))?;
        self.dma
            .retain(|&(i, s)| !(i >= iova && i + s <= iova + size));
        Ok(())
    }

    fn ram_offset(&self, gpa: u64, len: u64) -> Option<usize> {
        let off = gpa.checked_sub(self.ram_cfg.iova)?;
        let end = off.checked_add(len)?;
        (end <= self.ram.len() as u64).then_some(off as usize)
    }

    fn pread(&self, at: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        let off = libc::off_t::try_from(at)
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: `buf` is a valid, writable buffer of `buf.len()` bytes.
        let r = unsafe {
            libc::pread(
                self.dev.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                off,
            )
        };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(r as usize)
        }
    }

    fn pwrite(&self, at: u64, buf: &[u8]) -> std::io::Result<usize> {
        let off = libc::off_t::try_from(at)
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: `buf` is a valid buffer of `buf.len()` bytes.
        let r = unsafe { libc::pwrite(self.dev.as_raw_fd(), buf.as_ptr().cast(), buf.len(), off) };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(r as usize)
        }
    }

    fn region_rw(
        &mut self,
        what: &str,
        base: u64,
        size: u64,
        off: u64,
        buf: &mut [u8],
        write: bool,
    ) -> bool {
        if off.checked_add(buf.len() as u64).is_none_or(|e| e > size) {
            self.err = Some(format!(
                "{what} {off:#x}+{}: outside the region ({size:#x} bytes)",
                buf.len()
            ));
            return false;
        }
        let r = if write {
            self.pwrite(base + off, buf)
        } else {
            self.pread(base + off, buf)
        };
        match r {
            Ok(n) if n == buf.len() => true,
            Ok(n) => {
                self.err = Some(format!(
                    "{what} {off:#x}: short transfer ({n} of {})",
                    buf.len()
                ));
                false
            }
            Err(e) => {
                self.err = Some(format!("{what} {off:#x}+{}: {e}", buf.len()));
                false
            }
        }
    }

    /// A config-space read of 1, 2 or 4 bytes.
    pub fn cfg_read(&mut self, off: u64, buf: &mut [u8]) -> Result<()> {
        if self.region_rw("config read", self.cfg_off, 256, off, buf, false) {
            Ok(())
        } else {
            Err(Error::Refused {
                what: format!("config read at {off:#x}"),
                detail: self.err.take().unwrap_or_default(),
            })
        }
    }

    /// A config-space write of 1, 2 or 4 bytes.
    pub fn cfg_write(&mut self, off: u64, data: &[u8]) -> Result<()> {
        let mut b = data.to_vec();
        if self.region_rw("config write", self.cfg_off, 256, off, &mut b, true) {
            Ok(())
        } else {
            Err(Error::Refused {
                what: format!("config write at {off:#x}"),
                detail: self.err.take().unwrap_or_default(),
            })
        }
    }

    pub fn cfg_read16(&mut self, off: u64) -> Result<u16> {
        let mut b = [0u8; 2];
        self.cfg_read(off, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    /// The offset of PCI capability `id` in config space.
    pub fn find_cap(&mut self, id: u8) -> Result<Option<u64>> {
        let mut p = [0u8; 1];
        self.cfg_read(0x34, &mut p)?;
        let mut at = u64::from(p[0] & !3);
        for _ in 0..48 {
            if at < 0x40 {
                return Ok(None);
            }
            let mut h = [0u8; 2];
            self.cfg_read(at, &mut h)?;
            if h[0] == id {
                return Ok(Some(at));
            }
            at = u64::from(h[1] & !3);
        }
        Ok(None)
    }

    /// The MSI eventfd's count since the last read (0 if MSI is not wired).
    pub fn take_msi_count(&mut self) -> u64 {
        self.msi.as_ref().and_then(|e| e.read().ok()).unwrap_or(0)
    }

    /// Read the guest RAM dword at `gpa` (the VMM's view of guest memory).
    pub fn ram_read32(&mut self, gpa: u64) -> Option<u32> {
        let mut b = [0u8; 4];
        self.ram_read(gpa, &mut b).then(|| u32::from_le_bytes(b))
    }
}

impl Drop for VfioBackend {
    fn drop(&mut self) {
        for (iova, size) in std::mem::take(&mut self.dma) {
            let _ = self.container.vfio_dma_unmap(iova, size as usize);
        }
    }
}

impl GuestBus for VfioBackend {
    fn bar0_read(&mut self, offset: u64, buf: &mut [u8]) -> bool {
        let (base, size) = (self.bar0_off, self.bar0_size);
        self.region_rw("BAR0 read", base, size, offset, buf, false)
    }

    fn bar0_write(&mut self, offset: u64, data: &[u8]) -> bool {
        let mut b = [0u8; 8];
        let Some(b) = b.get_mut(..data.len()) else {
            self.err = Some(format!("BAR0 write of {} bytes", data.len()));
            return false;
        };
        b.copy_from_slice(data);
        let (base, size) = (self.bar0_off, self.bar0_size);
        self.region_rw("BAR0 write", base, size, offset, b, true)
    }

    fn aperture_write(&mut self, offset: u64, data: &[u8]) -> bool {
        if let Some((area, m)) = &self.aperture {
            if let Some(rel) = offset.checked_sub(*area) {
                if let Ok(rel) = usize::try_from(rel) {
                    if m.write(rel, data) {
                        return true;
                    }
                }
            }
        }
        let mut b = data.to_vec();
        let (base, size) = (self.bar2_off, self.bar2_size);
        self.region_rw("BAR2 write", base, size, offset, &mut b, true)
    }

    fn aperture_read(&mut self, offset: u64, buf: &mut [u8]) -> bool {
        if let Some((area, m)) = &self.aperture {
            if let Some(rel) = offset.checked_sub(*area) {
                if let Ok(rel) = usize::try_from(rel) {
                    if m.read(rel, buf) {
                        return true;
                    }
                }
            }
        }
        let (base, size) = (self.bar2_off, self.bar2_size);
        self.region_rw("BAR2 read", base, size, offset, buf, false)
    }

    fn ram_write(&mut self, gpa: u64, data: &[u8]) -> bool {
        match self.ram_offset(gpa, data.len() as u64) {
            Some(off) => self.ram.write(off, data),
            None => {
                self.err = Some(format!("guest physical {gpa:#x} is not guest RAM"));
                false
            }
        }
    }

    fn ram_read(&mut self, gpa: u64, buf: &mut [u8]) -> bool {
        match self.ram_offset(gpa, buf.len() as u64) {
            Some(off) => self.ram.read(off, buf),
            None => {
                self.err = Some(format!("guest physical {gpa:#x} is not guest RAM"));
                false
            }
        }
    }
}

impl Backend for VfioBackend {
    fn describe(&self) -> String {
        format!(
            "VFIO {} (RAM {:#x}+{:#x})",
            self.path,
            self.ram_cfg.iova,
            self.ram_cfg.pages * PAGE
        )
    }

    fn ram_pages(&self) -> Vec<u64> {
        (0..self.ram_cfg.pages)
            .map(|i| self.ram_cfg.iova + i * PAGE)
            .collect()
    }

    fn enable(&mut self) -> Result<()> {
        let c = self.cfg_read16(4)?;
        self.cfg_write(
            4,
            &((c | CMD_MEMORY | CMD_BUS_MASTER) & !CMD_INTX_DISABLE).to_le_bytes(),
        )?;
        if let Some(cap) = self.find_cap(0x05)? {
            let ev = match self.msi.take() {
                Some(ev) => ev,
                None => EventFd::new(EFD_NONBLOCK).map_err(|e| Error::io("eventfd", e))?,
            };
            self.dev
                .enable_msi(vec![&ev])
                .map_err(|e| Error::vfio("SET_IRQS MSI eventfd", e))?;
            let ctl = self.cfg_read16(cap + 2)?;
            self.cfg_write(cap + 2, &(ctl | 1).to_le_bytes())?;
            self.msi = Some(ev);
        }
        Ok(())
    }

    fn wait_irq(&mut self, timeout: Duration) -> Result<IrqWait> {
        let Some(ev) = &self.msi else {
            return Ok(IrqWait::Unsupported);
        };
        let mut p = libc::pollfd {
            fd: ev.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Ok(IrqWait::TimedOut);
            }
            return Err(Error::io("poll on the MSI eventfd", e));
        }
        match ev.read() {
            Ok(n) => Ok(IrqWait::Fired(n)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(IrqWait::TimedOut),
            Err(e) => Err(Error::io("read of the MSI eventfd", e)),
        }
    }

    fn take_error(&mut self) -> Option<String> {
        self.err.take()
    }
}
