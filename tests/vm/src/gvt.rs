//! Helpers for the gvt_rs driver tests: the parent's module parameters, the
//! per-vGPU sysfs attributes, and raw VFIO access (`pread`/`pwrite`/`ioctl`
//! on the device fd) for the cases where `vfio-ioctls` hides the errno.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use gvt_guest_driver::gvt_core::backend::EngineId;
use gvt_guest_driver::gvt_core::regs::{self as core_regs, ring, PlaneCtl};
use gvt_guest_driver::gvt_core::{irq, vblank};
use vfio_bindings::bindings::vfio::{
    VFIO_BASE, VFIO_PCI_BAR0_REGION_INDEX, VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_REQ_IRQ_INDEX,
    VFIO_TYPE,
};
use vfio_ioctls::{VfioContainer, VfioDevice};

use crate::{ensure_module, types_of, Mdev};

/// The gvt-sim parent under `/sys/class/mdev_bus`.
pub const PARENT: &str = "gvt-sim0";
/// Module parameters every driver test uses (so test binaries can share a
/// loaded module): 256 MiB aperture, 1 GiB of graphics memory.
pub const PARAMS: [&str; 2] = ["aperture_mb=256", "gm_mb=1024"];
pub const APERTURE: u64 = 256 << 20;
pub const BAR0_SIZE: u64 = 16 << 20;
pub const PVINFO: u64 = 0x78000;
pub const VGT_MAGIC: u64 = 0x4776_5447_7654_4776;
pub const VENDOR: u16 = 0x1234;
pub const DEVICE: u16 = 0x6776;

/// Load gvt_rs with [`PARAMS`] unless it is loaded.
pub fn load() {
    ensure_module("gvt_rs", &PARAMS);
}

/// The type directory whose name ends with `GVTsim_<mb>M`.
pub fn type_mb(mb: u64) -> String {
    load();
    let suffix = format!("GVTsim_{mb}M");
    types_of(PARENT)
        .into_iter()
        .find(|t| t.ends_with(&suffix))
        .unwrap_or_else(|| panic!("no {suffix} type"))
}

fn read_num(path: &Path) -> u64 {
    let s = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    s.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{}: {s:?}: {e}", path.display()))
}

/// `available_instances` of every type, by type name.
pub fn available() -> Vec<(String, u64)> {
    available_on(PARENT)
}

/// `available_instances` of every type of `parent`, by type name.
pub fn available_on(parent: &str) -> Vec<(String, u64)> {
    types_of(parent)
        .into_iter()
        .map(|t| {
            let n = read_num(
                &Path::new("/sys/class/mdev_bus")
                    .join(parent)
                    .join("mdev_supported_types")
                    .join(&t)
                    .join("available_instances"),
            );
            (t, n)
        })
        .collect()
}

/// The per-vGPU sysfs group `/sys/bus/mdev/devices/UUID/gvt/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attrs {
    pub id: u64,
    pub ap_base: u64,
    pub ap_size: u64,
    pub high_base: u64,
    pub high_size: u64,
    pub fence_base: u64,
    pub fence_count: u64,
}

pub fn attrs(m: &Mdev) -> Attrs {
    let g = m.sysfs_path().join("gvt");
    Attrs {
        id: read_num(&g.join("vgpu_id")),
        ap_base: read_num(&g.join("aperture_base")),
        ap_size: read_num(&g.join("aperture_size")),
        high_base: read_num(&g.join("high_gm_base")),
        high_size: read_num(&g.join("high_gm_size")),
        fence_base: read_num(&g.join("fence_base")),
        fence_count: read_num(&g.join("fence_count")),
    }
}

/// `gvt/ballooned`: aperture accesses outside the vGPU's slice.
pub fn ballooned(m: &Mdev) -> u64 {
    read_num(&m.sysfs_path().join("gvt").join("ballooned"))
}

/// Open `m` the way cloud-hypervisor does: a type1 container, the group of
/// the device's `iommu_group` link, the device by its sysfs path.
pub fn open(m: &Mdev) -> VfioDevice {
    open_at(&m.sysfs_path())
}

/// [`open`] by the device's real sysfs directory (`/sys/devices/...`)
/// instead of the `/sys/bus/mdev/devices` link.  A VMM that must survive a
/// remove needs this: the kernel drops the bus link first, then asks the
/// VMM (REQ) to let go, and vfio-ioctls 0.10 re-reads `<path>/iommu_group`
/// when the device is dropped (and panics if it is gone).
pub fn open_canonical(m: &Mdev) -> VfioDevice {
    open_at(&fs::canonicalize(m.sysfs_path()).expect("canonical sysfs path"))
}

fn open_at(path: &Path) -> VfioDevice {
    let container = Arc::new(VfioContainer::new(None).expect("open /dev/vfio/vfio"));
    VfioDevice::new(path, container, false).expect("open the vGPU through VFIO")
}

/// File offset of `region` (vfio-pci layout: index << 40).
pub fn region_off(index: u32) -> u64 {
    u64::from(index) << 40
}

fn cvt(r: isize) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// One `pread` on the device fd at `off` within `region`.
pub fn pread(dev: &VfioDevice, region: u32, off: u64, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid, writable buffer of `buf.len()` bytes.
    cvt(unsafe {
        libc::pread(
            dev.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            (region_off(region) + off) as i64,
        )
    })
}

/// One `pwrite` on the device fd at `off` within `region`.
pub fn pwrite(dev: &VfioDevice, region: u32, off: u64, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid buffer of `buf.len()` bytes.
    cvt(unsafe {
        libc::pwrite(
            dev.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            (region_off(region) + off) as i64,
        )
    })
}

/// The errno of a failed call (0 if it succeeded).
pub fn errno<T>(r: io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

pub fn read32(dev: &VfioDevice, region: u32, off: u64) -> u32 {
    let mut b = [0u8; 4];
    assert_eq!(pread(dev, region, off, &mut b).expect("pread"), 4);
    u32::from_le_bytes(b)
}

pub fn write32(dev: &VfioDevice, region: u32, off: u64, v: u32) {
    assert_eq!(
        pwrite(dev, region, off, &v.to_le_bytes()).expect("pwrite"),
        4
    );
}

pub fn read64(dev: &VfioDevice, region: u32, off: u64) -> u64 {
    let mut b = [0u8; 8];
    assert_eq!(pread(dev, region, off, &mut b).expect("pread"), 8);
    u64::from_le_bytes(b)
}

pub fn cfg16(dev: &VfioDevice, off: u64) -> u16 {
    let mut b = [0u8; 2];
    assert_eq!(
        pread(dev, VFIO_PCI_CONFIG_REGION_INDEX, off, &mut b).expect("config pread"),
        2
    );
    u16::from_le_bytes(b)
}

pub fn set_cfg16(dev: &VfioDevice, off: u64, v: u16) {
    assert_eq!(
        pwrite(dev, VFIO_PCI_CONFIG_REGION_INDEX, off, &v.to_le_bytes()).expect("config pwrite"),
        2
    );
}

/// PCI command register bits.
pub const CMD_MEMORY: u16 = 1 << 1;
pub const CMD_BUS_MASTER: u16 = 1 << 2;
pub const CMD_INTX_DISABLE: u16 = 1 << 10;

/// Turn memory decode on (what firmware or a guest driver does before it
/// touches the BARs).
pub fn enable_mem(dev: &VfioDevice) {
    let c = cfg16(dev, 4);
    set_cfg16(dev, 4, c | CMD_MEMORY);
}

/// A vGPU whose guest moved away (migration) is idle and reusable: it
/// opens, decodes, and its PVINFO shows its own aperture slice at `ap_base`.
pub fn assert_reusable_with_own_slice(m: &Mdev, ap_base: u64) {
    let dev = open(m);
    enable_mem(&dev);
    assert_eq!(
        u64::from(read32(&dev, 0, PVINFO + 0x40)),
        ap_base,
        "vGPU {}'s PVINFO shows its own aperture slice",
        m.uuid
    );
}

/// `_IO(VFIO_TYPE, VFIO_BASE + n)`
pub const fn vfio_ioc(n: u32) -> libc::c_ulong {
    (((VFIO_TYPE as u32) << 8) | (VFIO_BASE + n)) as libc::c_ulong
}
pub const VFIO_DEVICE_GET_INFO: libc::c_ulong = vfio_ioc(7);
pub const VFIO_DEVICE_GET_REGION_INFO: libc::c_ulong = vfio_ioc(8);
pub const VFIO_DEVICE_GET_IRQ_INFO: libc::c_ulong = vfio_ioc(9);
pub const VFIO_DEVICE_SET_IRQS: libc::c_ulong = vfio_ioc(10);
pub const VFIO_DEVICE_RESET: libc::c_ulong = vfio_ioc(11);

/// `ioctl(fd, req, arg)` on the device fd.
///
/// # Safety
/// `arg` is what `req` expects: a buffer at least as large as the `argsz`
/// in it, or a pointer the test wants the kernel to refuse (no user memory
/// is mapped there).
pub unsafe fn ioctl_raw(dev: &VfioDevice, req: libc::c_ulong, arg: *mut u8) -> io::Result<()> {
    // SAFETY: see the function's contract.
    let r = unsafe { libc::ioctl(dev.as_raw_fd(), req, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `ioctl(fd, req, buf)` with a byte buffer whose `argsz` fits in it.
pub fn ioctl_bytes(dev: &VfioDevice, req: libc::c_ulong, buf: &mut [u8]) -> io::Result<()> {
    if buf.len() >= 4 {
        let argsz = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        assert!(
            argsz <= buf.len(),
            "argsz {argsz} beyond the {}-byte buffer",
            buf.len()
        );
    }
    // SAFETY: the kernel stays within argsz, which fits in `buf`; an ioctl
    // that ignores argsz gets at least 64 bytes from the callers.
    unsafe { ioctl_raw(dev, req, buf.as_mut_ptr()) }
}

/// `ioctl(fd, req, &mut t)` for a plain uapi struct whose `argsz` is at most
/// its size.
pub fn ioctl<T>(dev: &VfioDevice, req: libc::c_ulong, t: &mut T) -> io::Result<()> {
    // SAFETY: `t` is a valid, writable `T`; the kernel stays within argsz.
    unsafe { ioctl_raw(dev, req, (t as *mut T).cast()) }
}

/// A `vfio_irq_set` header followed by `data` (little-endian), as bytes.
pub fn irq_set(flags: u32, index: u32, start: u32, count: u32, data: &[u8]) -> Vec<u8> {
    let argsz = 20 + data.len() as u32;
    let mut v = Vec::new();
    for x in [argsz, flags, index, start, count] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.extend_from_slice(data);
    v
}

/// `VFIO_DEVICE_SET_IRQS` with a prepared buffer (argsz may be overridden
/// by the caller editing the first four bytes).
pub fn set_irqs(dev: &VfioDevice, mut buf: Vec<u8>) -> io::Result<()> {
    ioctl_bytes(dev, VFIO_DEVICE_SET_IRQS, &mut buf)
}

/// A shared mapping of `len` bytes of `region` at `off`, or the mmap errno.
pub struct Mapping {
    pub ptr: *mut u8,
    pub len: usize,
}

impl Mapping {
    pub fn new(dev: &VfioDevice, region: u32, off: u64, len: usize) -> io::Result<Mapping> {
        Self::with_flags(dev, region, off, len, libc::MAP_SHARED)
    }

    pub fn with_flags(
        dev: &VfioDevice,
        region: u32,
        off: u64,
        len: usize,
        flags: i32,
    ) -> io::Result<Mapping> {
        // SAFETY: a fresh mapping chosen by the kernel; no existing memory
        // is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                dev.as_raw_fd(),
                (region_off(region) + off) as i64,
            )
        };
        if p == libc::MAP_FAILED {
            Err(io::Error::last_os_error())
        } else {
            Ok(Mapping { ptr: p.cast(), len })
        }
    }

    pub fn write32(&self, off: usize, v: u32) {
        assert!(off + 4 <= self.len && off % 4 == 0);
        // SAFETY: in bounds and aligned, inside a live shared mapping.
        unsafe { std::ptr::write_volatile(self.ptr.add(off).cast::<u32>(), v) }
    }

    pub fn read32(&self, off: usize) -> u32 {
        assert!(off + 4 <= self.len && off % 4 == 0);
        // SAFETY: as in `write32`.
        unsafe { std::ptr::read_volatile(self.ptr.add(off).cast::<u32>()) }
    }

    /// Read 4 bytes at `off` through the kernel (`write(2)` of the mapping
    /// into a pipe): a mapping that cannot be faulted in gives EFAULT here
    /// instead of killing the test with SIGBUS.
    pub fn probe(&self, off: usize) -> io::Result<u32> {
        let mut fds = [0i32; 2];
        // SAFETY: `fds` has room for the two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the source is inside the mapping; the kernel checks it.
        let w = unsafe { libc::write(fds[1], self.ptr.add(off).cast(), 4) };
        let r = if w == 4 {
            let mut b = [0u8; 4];
            // SAFETY: reading 4 bytes into a 4-byte buffer.
            let n = unsafe { libc::read(fds[0], b.as_mut_ptr().cast(), 4) };
            assert_eq!(n, 4);
            Ok(u32::from_le_bytes(b))
        } else {
            Err(io::Error::last_os_error())
        };
        // SAFETY: closing the descriptors we opened.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
        r
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// GGTT entries in BAR0: 8-byte PTEs from 8 MiB (bit 0 present, bits 12–47
/// the page: a guest physical address, i.e. an IOVA of the VMM's DMA map).
pub const GGTT_BAR0: u64 = 8 << 20;

/// "Guest RAM" the way a VMM provides it: anonymous memory DMA-mapped at
/// `iova` through the device's VFIO container (`VFIO_IOMMU_MAP_DMA`).
pub struct GuestRam {
    pub ptr: *mut u8,
    pub len: usize,
    pub iova: u64,
    container: Arc<VfioContainer>,
}

impl GuestRam {
    /// Byte `off` of guest RAM, as the VMM (host) sees it.
    pub fn read32(&self, off: usize) -> u32 {
        assert!(off + 4 <= self.len);
        // SAFETY: inside our own mapping.
        unsafe { std::ptr::read_volatile(self.ptr.add(off).cast::<u32>()) }
    }
    pub fn write32(&self, off: usize, v: u32) {
        assert!(off + 4 <= self.len);
        // SAFETY: inside our own mapping.
        unsafe { std::ptr::write_volatile(self.ptr.add(off).cast::<u32>(), v) }
    }
    /// The VFIO container the RAM is DMA-mapped in (the device's).
    pub fn container(&self) -> &Arc<VfioContainer> {
        &self.container
    }
    /// `VFIO_IOMMU_UNMAP_DMA` of the whole RAM (the driver must drop its pins).
    pub fn unmap(&mut self) {
        if self.len > 0 {
            self.container
                .vfio_dma_unmap(self.iova, self.len)
                .expect("VFIO_IOMMU_UNMAP_DMA");
            // SAFETY: our own anonymous mapping.
            unsafe { libc::munmap(self.ptr.cast(), self.len) };
            self.len = 0;
        }
    }
}

impl Drop for GuestRam {
    fn drop(&mut self) {
        self.unmap();
    }
}

/// Open `m` like [`open`], and give it `pages` pages of guest RAM at IOVA
/// `iova` in the same container.
pub fn open_with_ram(m: &Mdev, pages: usize, iova: u64) -> (VfioDevice, GuestRam) {
    open_with_ram_flags(m, pages, iova, libc::MAP_SHARED)
}

/// [`open_with_ram`] with private anonymous RAM, as QEMU allocates guest RAM
/// by default (shared memory is shmem, with a page cache; private is not).
pub fn open_with_private_ram(m: &Mdev, pages: usize, iova: u64) -> (VfioDevice, GuestRam) {
    open_with_ram_flags(m, pages, iova, libc::MAP_PRIVATE)
}

fn open_with_ram_flags(m: &Mdev, pages: usize, iova: u64, share: i32) -> (VfioDevice, GuestRam) {
    let container = Arc::new(VfioContainer::new(None).expect("open /dev/vfio/vfio"));
    let dev = VfioDevice::new(&m.sysfs_path(), container.clone(), false)
        .expect("open the vGPU through VFIO");
    (dev, guest_ram_flags(&container, pages, iova, share))
}

/// `pages` pages of shared anonymous memory DMA-mapped at `iova` in
/// `container`: the guest RAM of a VMM whose devices (one or several) share
/// that container.
pub fn guest_ram(container: &Arc<VfioContainer>, pages: usize, iova: u64) -> GuestRam {
    guest_ram_flags(container, pages, iova, libc::MAP_SHARED)
}

fn guest_ram_flags(
    container: &Arc<VfioContainer>,
    pages: usize,
    iova: u64,
    share: i32,
) -> GuestRam {
    let container = container.clone();
    let len = pages * 4096;
    // SAFETY: a fresh anonymous mapping.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            share | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(ptr, libc::MAP_FAILED, "mmap guest RAM");
    // SAFETY: the mapping lives until `GuestRam` unmaps it (after the DMA unmap).
    unsafe { container.vfio_dma_map(iova, len, ptr.cast()) }.expect("VFIO_IOMMU_MAP_DMA");
    GuestRam {
        ptr: ptr.cast(),
        len,
        iova,
        container,
    }
}

/// Point GGTT entry `gm_page` (graphics address / 4096) at guest RAM page
/// `ram_page`, through the trapped BAR0 window (memory decode must be on).
pub fn map_gtt(dev: &VfioDevice, ram: &GuestRam, gm_page: u64, ram_page: usize) {
    let pte = (ram.iova + ram_page as u64 * 4096) | 1;
    assert_eq!(
        pwrite(
            dev,
            VFIO_PCI_BAR0_REGION_INDEX,
            GGTT_BAR0 + gm_page * 8,
            &pte.to_le_bytes()
        )
        .expect("PTE write"),
        8
    );
}

/// Back `pages` pages of graphics memory from `gm_base` with guest RAM pages
/// `0..pages` (what a guest driver does before using its aperture).
pub fn map_gtt_range(dev: &VfioDevice, ram: &GuestRam, gm_base: u64, pages: usize) {
    for i in 0..pages {
        map_gtt(dev, ram, gm_base / 4096 + i as u64, i);
    }
}

/// The value of `key` in the vGPU's `gvt/stats` (`key value` lines).
pub fn stat(m: &Mdev, key: &str) -> u64 {
    let s = fs::read_to_string(m.sysfs_path().join("gvt").join("stats")).expect("read gvt/stats");
    s.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {key} in gvt/stats:\n{s}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("gvt/stats {key}: {e}"))
}

/// A read-only shared mapping of `len` bytes of `fd` at `off`: the display
/// region (read-only, as QEMU maps it), the EDID region's refusal, dma-bufs.
pub struct RoMap {
    pub ptr: *const u8,
    pub len: usize,
}

impl RoMap {
    pub fn new(fd: i32, off: u64, len: usize) -> io::Result<RoMap> {
        // SAFETY: a fresh mapping chosen by the kernel.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                off as i64,
            )
        };
        if p == libc::MAP_FAILED {
            Err(io::Error::last_os_error())
        } else {
            Ok(RoMap { ptr: p.cast(), len })
        }
    }

    /// `len` bytes of VFIO region `index` of `dev`, from its start.
    pub fn region(dev: &VfioDevice, index: u32, len: usize) -> io::Result<RoMap> {
        Self::new(dev.as_raw_fd(), region_off(index), len)
    }

    pub fn read32(&self, off: usize) -> u32 {
        assert!(off + 4 <= self.len && off % 4 == 0);
        // SAFETY: inside a live mapping, aligned.
        unsafe { std::ptr::read_volatile(self.ptr.add(off).cast::<u32>()) }
    }
}

impl Drop for RoMap {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe { libc::munmap(self.ptr as *mut _, self.len) };
    }
}

// ---- display planes (linux/vfio.h) ----------------------------------------------

pub const VFIO_DEVICE_QUERY_GFX_PLANE: libc::c_ulong = vfio_ioc(14);
pub const VFIO_DEVICE_GET_GFX_DMABUF: libc::c_ulong = vfio_ioc(15);
/// `VFIO_GFX_PLANE_TYPE_PROBE`, `_DMABUF`, `_REGION`.
pub const GFX_PROBE: u32 = 1 << 0;
pub const GFX_DMABUF: u32 = 1 << 1;
pub const GFX_REGION: u32 = 1 << 2;
/// `DRM_PLANE_TYPE_PRIMARY`, `DRM_PLANE_TYPE_CURSOR`.
pub const PLANE_PRIMARY: u32 = 1;
pub const PLANE_CURSOR: u32 = 2;

/// `struct vfio_device_gfx_plane_info` (linux/vfio.h), 64 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlaneInfo {
    pub argsz: u32,
    pub flags: u32,
    pub drm_plane_type: u32,
    pub drm_format: u32,
    pub drm_format_mod: u64,
    pub width: u32,
    pub height: u32,
    pub stride: u32,
    pub size: u32,
    pub x_pos: u32,
    pub y_pos: u32,
    pub x_hot: u32,
    pub y_hot: u32,
    /// `region_index` or `dmabuf_id`.
    pub id: u32,
    pub reserved: u32,
}

const _: () = assert!(std::mem::size_of::<PlaneInfo>() == 64);

/// `VFIO_DEVICE_QUERY_GFX_PLANE` for a plane of `plane_type` with `flags`.
pub fn query_plane(dev: &VfioDevice, flags: u32, plane_type: u32) -> io::Result<PlaneInfo> {
    let mut p = PlaneInfo {
        argsz: 64,
        flags,
        drm_plane_type: plane_type,
        ..Default::default()
    };
    ioctl(dev, VFIO_DEVICE_QUERY_GFX_PLANE, &mut p).map(|()| p)
}

/// "No plane" as linux/vfio.h defines it: zero format, size, width, height
/// (and stride).
pub fn assert_no_plane(p: &PlaneInfo, what: &str) {
    assert_eq!(
        (p.drm_format, p.size, p.width, p.height, p.stride),
        (0, 0, 0, 0, 0),
        "{what}: no plane, got {p:?}"
    );
}

/// `VFIO_DEVICE_GET_GFX_DMABUF` of dma-buf plane `id`: the new dma-buf fd.
pub fn export_dmabuf(dev: &VfioDevice, id: u32) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut arg = id;
    // SAFETY: the ioctl reads one u32 at `arg` and returns a new fd.
    let fd = unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            VFIO_DEVICE_GET_GFX_DMABUF,
            &mut arg as *mut u32,
        )
    };
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: a new descriptor we own.
        Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
    }
}

/// [`stat`], or `None` where this driver's `gvt/stats` has no `key`.
pub fn stat_opt(m: &Mdev, key: &str) -> Option<u64> {
    let s = fs::read_to_string(m.sysfs_path().join("gvt").join("stats")).expect("read gvt/stats");
    s.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

// ---- registers, display engine and MSI (the core's register map) -------------------

/// RCS ring tail.
pub const RCS_TAIL: u64 = EngineId::Rcs.reg(ring::TAIL) as u64;
/// Display-engine interrupt block (Ivybridge `DEIMR`, `DEIIR`, `DEIER`) and
/// its pipe A vblank bit.
pub const DEIMR: u64 = core_regs::DE_IMR as u64;
pub const DEIIR: u64 = core_regs::DE_IIR as u64;
pub const DEIER: u64 = core_regs::DE_IER as u64;
pub const VBLANK: u32 = irq::DE_PIPEA_VBLANK;
/// Pipe A frame and flip counters (`PIPE_FRMCOUNT_G4X`, `PIPE_FLIPCOUNT_G4X`).
pub const FRMCOUNT: u64 = vblank::PIPEA_FRMCOUNT as u64;
pub const FLIPCOUNT: u64 = vblank::PIPEA_FLIPCOUNT as u64;
/// Primary plane A registers, pipe A source size, the plane's enable bit
/// and its XRGB8888 format.
pub const DSPACNTR: u64 = core_regs::DSPACNTR as u64;
pub const DSPASTRIDE: u64 = core_regs::DSPASTRIDE as u64;
pub const DSPASURF: u64 = core_regs::DSPASURF as u64;
pub const PIPEASRC: u64 = core_regs::PIPEASRC as u64;
pub const PLANE_ENABLE: u32 = PlaneCtl(0).with_enable(true).0;
/// Cursor A control, image address and position.
pub const CURACNTR: u64 = core_regs::CURACNTR as u64;
pub const CURABASE: u64 = core_regs::CURABASE as u64;
pub const CURAPOS: u64 = core_regs::CURAPOS as u64;
pub const FMT_XRGB8888: u32 = PlaneCtl(0).with_format(PlaneCtl::FORMAT_XRGB8888).0;

/// Turn `dev`'s MSI on as a guest does (message address, enable bit in the
/// emulated capability) and wire it to a fresh non-blocking eventfd.
pub fn msi_on(dev: &VfioDevice) -> vmm_sys_util::eventfd::EventFd {
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
    write32(dev, VFIO_PCI_CONFIG_REGION_INDEX, 0x44, 0xFEE0_0000);
    set_cfg16(dev, 0x42, cfg16(dev, 0x42) | 1);
    let msi = EventFd::new(EFD_NONBLOCK).expect("eventfd");
    dev.enable_msi(vec![&msi]).expect("wire MSI to an eventfd");
    msi
}

/// Offer dma-buf planes on `m` (sysfs `gvt/dmabuf` = 1; the driver's
/// default is 0, region planes only): for the tests of the dma-buf path.
pub fn dmabuf_on(m: &Mdev) {
    std::fs::write(m.sysfs_path().join("gvt/dmabuf"), "1").expect("gvt/dmabuf");
}

/// Unload gvt_rs if it is loaded (no vGPU may exist), then load it with
/// `params` (the others at their defaults).  `Err` carries what the kernel
/// logged during the failed load.
pub fn reload(params: &[&str]) -> Result<(), String> {
    if Path::new("/sys/module/gvt_rs").exists() {
        let st = std::process::Command::new("rmmod")
            .arg("gvt_rs")
            .status()
            .expect("run rmmod");
        assert!(st.success(), "rmmod gvt_rs: {st} (a vGPU still exists?)");
    }
    let before = kernel_log().len();
    let st = std::process::Command::new("insmod")
        .arg("/lib/modules/gvt_rs.ko")
        .args(params)
        .status()
        .expect("run insmod");
    if st.success() {
        Ok(())
    } else {
        let log = kernel_log();
        Err(log.get(before..).unwrap_or(&log).to_string())
    }
}

/// The kernel log (`dmesg`), every level.
pub fn kernel_log() -> String {
    let o = std::process::Command::new("dmesg")
        .output()
        .expect("run dmesg");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// gvt_rs loaded with other parameters until dropped; then loaded again
/// with [`PARAMS`] (what the other tests expect), also when the test fails.
/// Drop every vGPU before it.
pub struct LoadedWith;

impl LoadedWith {
    pub fn new(params: &[&str]) -> LoadedWith {
        reload(params).unwrap_or_else(|log| {
            panic!("insmod gvt_rs {params:?} failed; the kernel said:\n{log}")
        });
        LoadedWith
    }
}

impl Drop for LoadedWith {
    fn drop(&mut self) {
        if let Err(log) = reload(&PARAMS) {
            panic!("gvt_rs with {PARAMS:?} again: {log}");
        }
    }
}

/// A VMM holding a vGPU's device until the kernel asks it to let go: its
/// REQ irq wired to an eventfd that a thread waits on (60 s at most); then,
/// still its holder, it reads the PVINFO magic (the device works until
/// closed) and closes the device.  For tests of what makes the kernel ask
/// (a remove, a parent's unbind).
pub struct ReqHolder {
    released: Arc<std::sync::atomic::AtomicBool>,
    rx: std::sync::mpsc::Receiver<(u64, u64)>,
    thread: std::thread::JoinHandle<()>,
}

impl ReqHolder {
    pub fn start(dev: VfioDevice) -> ReqHolder {
        use std::sync::atomic::{AtomicBool, Ordering};
        let req = vmm_sys_util::eventfd::EventFd::new(0).unwrap();
        dev.enable_irq(VFIO_PCI_REQ_IRQ_INDEX, vec![&req])
            .expect("wire REQ");
        let released = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = {
            let released = released.clone();
            std::thread::spawn(move || {
                let mut pfd = libc::pollfd {
                    fd: req.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                let n = unsafe { libc::poll(&mut pfd, 1, 60_000) };
                let got = if n == 1 { req.read().unwrap() } else { 0 };
                enable_mem(&dev);
                let magic = read64(&dev, VFIO_PCI_BAR0_REGION_INDEX, PVINFO);
                tx.send((got, magic)).unwrap();
                released.store(true, Ordering::SeqCst);
                // Close the device fd ourselves: vfio-ioctls 0.10's Drop looks
                // the group up through the sysfs path *after* closing the fd,
                // racing with the removal this close lets complete (it panics
                // with InvalidPath).  The group stays with the container.
                let fd = dev.as_raw_fd();
                std::mem::forget(dev);
                // SAFETY: `fd` is the device fd we own; nothing uses it after.
                unsafe { libc::close(fd) };
            })
        };
        ReqHolder {
            released,
            rx,
            thread,
        }
    }

    /// Whether the holder has let go (read its last value and closed).
    pub fn released(&self) -> bool {
        self.released.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How often REQ fired (0: never within 60 s) and the magic the holder
    /// read before closing.
    pub fn finish(self) -> (u64, u64) {
        let r = self.rx.recv().expect("the holder's report");
        self.thread.join().expect("the holder thread");
        r
    }
}
