//! The distro kernel's set (issue 15): `CONFIG_IOMMUFD=y`, the VFIO device
//! cdev (`/dev/vfio/devices/vfioN`), `CONFIG_MODVERSIONS` with
//! `CONFIG_GENDWARFKSYMS` (tools/build-distro-kernel.sh; `cargo xtask vm-test
//! --kernel distro`).  There `vfio_register_emulated_iommu_dev()` refuses a
//! device whose ops lack the four iommufd ops: with a module that registers
//! without them no vGPU can be created and every test here fails.
//!
//! On the Debian kernel (no `CONFIG_IOMMUFD`) these tests say so and skip;
//! its unfiltered run leaves them out (they are named `iommufd`).
//!
//! The VFIO consumer here is a VMM over the cdev path, by hand:
//! `VFIO_DEVICE_BIND_IOMMUFD` to `/dev/iommu`, `IOMMU_IOAS_ALLOC`,
//! `VFIO_DEVICE_ATTACH_IOMMUFD_PT`, `IOMMU_IOAS_MAP` of its guest RAM; then
//! GGTT PTE writes (the driver pins the pages through `vfio_pin_pages`, which
//! for a cdev-bound device is `iommufd_access_pin_pages`) and aperture
//! accesses that reach that RAM; `IOMMU_IOAS_UNMAP` while pages are pinned
//! (iommufd asks the access to let go through the device's `dma_unmap`; a
//! driver that keeps its pins makes iommufd WARN and fail the unmap with
//! EDEADLOCK); close.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use gvt_vmtests::gvt::*;
use gvt_vmtests::{run_l2_accel, skip, Mdev};
use vfio_bindings::bindings::vfio::{
    VFIO_PCI_BAR0_REGION_INDEX, VFIO_PCI_BAR2_REGION_INDEX, VFIO_PCI_CONFIG_REGION_INDEX,
};

const BAR0: u32 = VFIO_PCI_BAR0_REGION_INDEX;
const BAR2: u32 = VFIO_PCI_BAR2_REGION_INDEX;

/// `_IO(';', nr)` (linux/iommufd.h and linux/vfio.h share the type).
const fn io(nr: u32) -> libc::c_ulong {
    ((b';' as u32) << 8 | nr) as libc::c_ulong
}
const VFIO_DEVICE_BIND_IOMMUFD: libc::c_ulong = io(100 + 18);
const VFIO_DEVICE_ATTACH_IOMMUFD_PT: libc::c_ulong = io(100 + 19);
const VFIO_DEVICE_DETACH_IOMMUFD_PT: libc::c_ulong = io(100 + 20);
const IOMMU_DESTROY: libc::c_ulong = io(0x80);
const IOMMU_IOAS_ALLOC: libc::c_ulong = io(0x81);
const IOMMU_IOAS_MAP: libc::c_ulong = io(0x85);
const IOMMU_IOAS_UNMAP: libc::c_ulong = io(0x86);
const IOMMU_IOAS_MAP_FIXED_IOVA: u32 = 1 << 0;
const IOMMU_IOAS_MAP_WRITEABLE: u32 = 1 << 1;
const IOMMU_IOAS_MAP_READABLE: u32 = 1 << 2;

#[repr(C)]
#[derive(Default)]
struct BindIommufd {
    argsz: u32,
    flags: u32,
    iommufd: i32,
    out_devid: u32,
    token_uuid_ptr: u64,
}

#[repr(C)]
#[derive(Default)]
struct AttachPt {
    argsz: u32,
    flags: u32,
    pt_id: u32,
    pasid: u32,
}

#[repr(C)]
#[derive(Default)]
struct DetachPt {
    argsz: u32,
    flags: u32,
    pasid: u32,
}

#[repr(C)]
#[derive(Default)]
struct IoasAlloc {
    size: u32,
    flags: u32,
    out_ioas_id: u32,
}

#[repr(C)]
#[derive(Default)]
struct IoasMap {
    size: u32,
    flags: u32,
    ioas_id: u32,
    reserved: u32,
    user_va: u64,
    length: u64,
    iova: u64,
}

#[repr(C)]
#[derive(Default)]
struct IoasUnmap {
    size: u32,
    ioas_id: u32,
    iova: u64,
    length: u64,
}

#[repr(C)]
#[derive(Default)]
struct Destroy {
    size: u32,
    id: u32,
}

fn ioctl_raw<T>(fd: &OwnedFd, req: libc::c_ulong, arg: &mut T) -> io::Result<()> {
    // SAFETY: `arg` is a live, properly sized #[repr(C)] struct of the
    // layout the ioctl number names; the kernel reads/writes only it.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req, arg as *mut T) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn open_rw(path: &Path) -> io::Result<OwnedFd> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path; the descriptor is owned by the result.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: a fresh descriptor nobody else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// Is this the distro kernel?  tools/vm-run.sh says which kernel it booted
/// (`gvt.kernel=`); the tests also check the kernel's own evidence.
fn on_distro_kernel() -> bool {
    fs::read_to_string("/proc/cmdline")
        .unwrap_or_default()
        .split_whitespace()
        .any(|a| a == "gvt.kernel=distro")
}

/// True when the test must run; otherwise it has said why it skips.
fn distro_or_skip() -> bool {
    if on_distro_kernel() {
        assert!(
            Path::new("/dev/iommu").exists(),
            "the distro kernel has CONFIG_IOMMUFD=y: /dev/iommu must exist"
        );
        return true;
    }
    skip("this kernel is the Debian one (no CONFIG_IOMMUFD, no VFIO cdev): the distro kernel's set runs this (cargo xtask vm-test --kernel distro iommufd)");
    false
}

/// The vGPU's VFIO cdev, `/dev/vfio/devices/vfioN` (from `<dev>/vfio-dev/`).
fn cdev_of(m: &Mdev) -> std::path::PathBuf {
    let dir = m.sysfs_path().join("vfio-dev");
    let names: Vec<String> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (CONFIG_VFIO_DEVICE_CDEV)", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "one cdev per device: {names:?}");
    let p = Path::new("/dev/vfio/devices").join(&names[0]);
    assert!(p.exists(), "{} (devtmpfs)", p.display());
    p
}

fn pread_fd(fd: &OwnedFd, region: u32, off: u64, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: writing into `buf`, of its length.
    let r = unsafe {
        libc::pread(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            (region_off(region) + off) as i64,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

fn pwrite_fd(fd: &OwnedFd, region: u32, off: u64, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: reading `buf`, of its length.
    let r = unsafe {
        libc::pwrite(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            (region_off(region) + off) as i64,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// A VMM's side of the cdev path: the device fd bound to an iommufd, one
/// IOAS attached.
struct CdevVmm {
    dev: OwnedFd,
    iommufd: OwnedFd,
    ioas: u32,
}

impl CdevVmm {
    fn open(m: &Mdev) -> CdevVmm {
        let dev = open_rw(&cdev_of(m)).expect("open /dev/vfio/devices/vfioN");
        // Until it is bound, the cdev refuses everything but the bind.
        let mut b = [0u8; 4];
        assert_eq!(
            errno(pread_fd(&dev, VFIO_PCI_CONFIG_REGION_INDEX, 0, &mut b)),
            libc::EINVAL,
            "config read before VFIO_DEVICE_BIND_IOMMUFD"
        );
        let iommufd = open_rw(Path::new("/dev/iommu")).expect("open /dev/iommu");
        let mut bind = BindIommufd {
            argsz: std::mem::size_of::<BindIommufd>() as u32,
            iommufd: iommufd.as_raw_fd(),
            ..Default::default()
        };
        ioctl_raw(&dev, VFIO_DEVICE_BIND_IOMMUFD, &mut bind).expect("VFIO_DEVICE_BIND_IOMMUFD");
        println!("bound: devid {}", bind.out_devid);
        let mut alloc = IoasAlloc {
            size: std::mem::size_of::<IoasAlloc>() as u32,
            ..Default::default()
        };
        ioctl_raw(&iommufd, IOMMU_IOAS_ALLOC, &mut alloc).expect("IOMMU_IOAS_ALLOC");
        let mut at = AttachPt {
            argsz: std::mem::size_of::<AttachPt>() as u32,
            pt_id: alloc.out_ioas_id,
            ..Default::default()
        };
        ioctl_raw(&dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &mut at)
            .expect("VFIO_DEVICE_ATTACH_IOMMUFD_PT");
        assert_eq!(at.pt_id, alloc.out_ioas_id, "attached to the IOAS itself");
        CdevVmm {
            dev,
            iommufd,
            ioas: alloc.out_ioas_id,
        }
    }

    fn map(&self, ram: &Ram, iova: u64) -> io::Result<()> {
        let mut m = IoasMap {
            size: std::mem::size_of::<IoasMap>() as u32,
            flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
            ioas_id: self.ioas,
            user_va: ram.ptr as u64,
            length: ram.len as u64,
            iova,
            ..Default::default()
        };
        ioctl_raw(&self.iommufd, IOMMU_IOAS_MAP, &mut m)
    }

    /// `IOMMU_IOAS_UNMAP`; returns the length unmapped.
    fn unmap(&self, iova: u64, length: u64) -> io::Result<u64> {
        let mut u = IoasUnmap {
            size: std::mem::size_of::<IoasUnmap>() as u32,
            ioas_id: self.ioas,
            iova,
            length,
        };
        ioctl_raw(&self.iommufd, IOMMU_IOAS_UNMAP, &mut u).map(|()| u.length)
    }

    fn cfg16(&self, off: u64) -> u16 {
        let mut b = [0u8; 2];
        assert_eq!(
            pread_fd(&self.dev, VFIO_PCI_CONFIG_REGION_INDEX, off, &mut b).expect("config read"),
            2
        );
        u16::from_le_bytes(b)
    }

    fn enable_mem(&self) {
        let c = self.cfg16(4) | CMD_MEMORY;
        pwrite_fd(&self.dev, VFIO_PCI_CONFIG_REGION_INDEX, 4, &c.to_le_bytes())
            .expect("config write");
    }

    /// GGTT entry `gm_page` → IOVA `iova` (a trapped BAR0 write: the driver pins it).
    fn pte(&self, gm_page: u64, iova: u64) {
        assert_eq!(
            pwrite_fd(
                &self.dev,
                BAR0,
                GGTT_BAR0 + gm_page * 8,
                &(iova | 1).to_le_bytes()
            )
            .expect("PTE write"),
            8
        );
    }

    fn read32(&self, region: u32, off: u64) -> u32 {
        let mut b = [0u8; 4];
        assert_eq!(pread_fd(&self.dev, region, off, &mut b).expect("read"), 4);
        u32::from_le_bytes(b)
    }

    fn map_region(&self, region: u32, off: u64, len: usize) -> io::Result<RawMap> {
        // SAFETY: a fresh shared mapping of the device fd chosen by the kernel.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.dev.as_raw_fd(),
                (region_off(region) + off) as i64,
            )
        };
        if p == libc::MAP_FAILED {
            Err(io::Error::last_os_error())
        } else {
            Ok(RawMap(Ram { ptr: p.cast(), len }))
        }
    }
}

/// Anonymous memory (guest RAM, or a device mapping in [`RawMap`]).
struct Ram {
    ptr: *mut u8,
    len: usize,
}

impl Ram {
    fn new(pages: usize) -> Ram {
        let len = pages * 4096;
        // SAFETY: a fresh private anonymous mapping (QEMU's default guest RAM).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        Ram { ptr: p.cast(), len }
    }
    fn read32(&self, off: usize) -> u32 {
        assert!(off + 4 <= self.len && off % 4 == 0);
        // SAFETY: in bounds and aligned, inside our live mapping.
        unsafe { std::ptr::read_volatile(self.ptr.add(off).cast::<u32>()) }
    }
    fn write32(&self, off: usize, v: u32) {
        assert!(off + 4 <= self.len && off % 4 == 0);
        // SAFETY: as in `read32`.
        unsafe { std::ptr::write_volatile(self.ptr.add(off).cast::<u32>(), v) }
    }
}

impl Drop for Ram {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what was mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

struct RawMap(Ram);

/// The module's taint flags and the kernel log's module-loader complaints:
/// with MODVERSIONS every import of gvt_rs.ko must carry a version that
/// matches the kernel's ("no symbol version for X" when one is missing, a
/// load refused with "disagrees about version of symbol X" when one differs,
/// a forced load ('F') when the module has none).  Allowed: 'O' (out of
/// tree) and 'E' (unsigned: the kernel has CONFIG_MODULE_SIG, not enforced,
/// as Debian's; the rig signs nothing).
fn assert_clean_module_load() {
    let taint = fs::read_to_string("/sys/module/gvt_rs/taint").expect("/sys/module/gvt_rs/taint");
    println!("gvt_rs taint flags: {:?}", taint.trim());
    assert!(
        taint.trim().contains('O') && taint.trim().chars().all(|c| c == 'O' || c == 'E'),
        "gvt_rs taint flags other than out-of-tree/unsigned: {taint:?}"
    );
    let log = kernel_log();
    for bad in [
        "no symbol version",
        "disagrees about version",
        "Unknown symbol",
        "version magic",
        "forcing",
    ] {
        assert!(
            !log.lines().any(|l| l.contains(bad) && l.contains("gvt_rs")),
            "kernel log: gvt_rs: {bad}"
        );
    }
    let v = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    println!("kernel {}", v.trim());
}

#[test]
#[ignore = "runs inside the VM rig"]
fn iommufd_kernel_module_loads_versioned_and_vgpus_register() {
    if !distro_or_skip() {
        return;
    }
    load();
    assert_clean_module_load();
    // vfio_register_emulated_iommu_dev() refuses (WARN, -EINVAL) a device
    // without bind_iommufd & co on this kernel: the creates below are where
    // a module without them fails.
    let before = available();
    let ty = type_mb(32);
    for round in 0..3 {
        let ms: Vec<Mdev> = (0..2)
            .map(|i| {
                Mdev::create(PARENT, &ty).unwrap_or_else(|e| {
                    panic!("create vGPU {i} (round {round}) on the IOMMUFD kernel: {e}")
                })
            })
            .collect();
        for m in &ms {
            let c = cdev_of(m);
            println!("vGPU {} has cdev {}", m.uuid, c.display());
            assert!(
                m.sysfs_path().join("iommu_group").exists(),
                "the legacy group is there too (VFIO_GROUP=y)"
            );
        }
        for m in ms {
            m.remove().expect("remove");
        }
    }
    assert_eq!(available(), before, "capacity back");
}

#[test]
#[ignore = "runs inside the VM rig"]
fn iommufd_cdev_consumer_maps_pins_unmaps_and_closes() {
    if !distro_or_skip() {
        return;
    }
    let m = Mdev::create(PARENT, &type_mb(32)).expect("create vGPU");
    let a = attrs(&m);
    let vmm = CdevVmm::open(&m);
    assert_eq!(
        vmm.cfg16(0) as u32 | (vmm.cfg16(2) as u32) << 16,
        0x6776_1234,
        "config space through the cdev"
    );
    vmm.enable_mem();
    let iova = 0x4000_0000u64;
    let ram = Ram::new(8);
    vmm.map(&ram, iova).expect("IOMMU_IOAS_MAP");
    // Guest RAM pages 0..4 behind the first four aperture pages of the slice:
    // each PTE write pins its page through the iommufd access.
    let gm0 = a.ap_base / 4096;
    let mapped0 = stat(&m, "ggtt_mapped");
    for p in 0..4 {
        vmm.pte(gm0 + p, iova + p * 4096);
    }
    assert_eq!(
        stat(&m, "ggtt_mapped"),
        mapped0 + 4,
        "four GGTT entries pinned through the iommufd access"
    );
    let map = vmm
        .map_region(BAR2, a.ap_base, 4 * 4096)
        .expect("mmap the aperture slice");
    for p in 0..4usize {
        map.0.write32(p * 4096 + 12, 0xB0_0000 | p as u32);
        assert_eq!(
            ram.read32(p * 4096 + 12),
            0xB0_0000 | p as u32,
            "a write through the aperture reached guest RAM page {p} (pinned through iommufd)"
        );
        ram.write32(p * 4096 + 16, 0xC0_0000 | p as u32);
        assert_eq!(
            map.0.read32(p * 4096 + 16),
            0xC0_0000 | p as u32,
            "guest RAM page {p} seen through the aperture"
        );
        assert_eq!(
            vmm.read32(BAR2, a.ap_base + p as u64 * 4096 + 16),
            0xC0_0000 | p as u32,
            "region read of aperture page {p}"
        );
    }
    // Remap aperture page 1 onto RAM page 6: a new pin, the mapping follows.
    ram.write32(6 * 4096 + 12, 0x66);
    vmm.pte(gm0 + 1, iova + 6 * 4096);
    assert_eq!(map.0.read32(4096 + 12), 0x66);

    // The VMM unmaps its RAM while the vGPU holds pins in it: iommufd calls
    // the device's dma_unmap, which must drop them (or iommufd WARNs and
    // fails the unmap with EDEADLOCK).
    let n = vmm
        .unmap(iova, ram.len as u64)
        .expect("IOMMU_IOAS_UNMAP with pinned pages");
    assert_eq!(n, ram.len as u64, "the whole range unmapped");
    assert_eq!(
        stat(&m, "ggtt_mapped"),
        mapped0,
        "dma_unmap dropped every pin into the range"
    );
    let mut seen = [0u8; 4];
    for p in [0usize, 2, 3] {
        pread_fd(&vmm.dev, BAR2, a.ap_base + p as u64 * 4096 + 12, &mut seen)
            .expect("region read after unmap");
        assert_ne!(
            u32::from_le_bytes(seen),
            0xB0_0000 | p as u32,
            "page {p}: no access to the unmapped guest page"
        );
    }
    assert_ne!(
        vmm.read32(BAR2, a.ap_base + 4096 + 12),
        0x66,
        "page 1: no access to the unmapped RAM page 6"
    );
    // A PTE into the unmapped range cannot pin: the write is taken, the
    // page is scratch (no error to the guest, no splat).
    vmm.pte(gm0, iova);
    // Map again at the same IOVA: PTE writes pin again.
    let ram2 = Ram::new(8);
    ram2.write32(12, 0x2222);
    vmm.map(&ram2, iova).expect("IOMMU_IOAS_MAP again");
    vmm.pte(gm0, iova);
    assert_eq!(
        vmm.read32(BAR2, a.ap_base + 12),
        0x2222,
        "the new RAM behind page 0"
    );
    assert_eq!(stat(&m, "ggtt_mapped"), mapped0 + 1, "pinned again");
    drop(map);
    // Detach while pinned, then close everything: the access goes away with
    // its pins (nothing left for the remove below to wait for).
    let mut d = DetachPt {
        argsz: std::mem::size_of::<DetachPt>() as u32,
        ..Default::default()
    };
    ioctl_raw(&vmm.dev, VFIO_DEVICE_DETACH_IOMMUFD_PT, &mut d)
        .expect("VFIO_DEVICE_DETACH_IOMMUFD_PT");
    // iommufd asks the access to unmap everything (0..ULONG_MAX) first.
    assert_eq!(
        stat(&m, "ggtt_mapped"),
        mapped0,
        "the detach dropped the last pin"
    );
    let mut des = Destroy {
        size: std::mem::size_of::<Destroy>() as u32,
        id: vmm.ioas,
    };
    // The device fd still binds the iommufd: destroying the IOAS after the
    // detach works.
    ioctl_raw(&vmm.iommufd, IOMMU_DESTROY, &mut des).expect("IOMMU_DESTROY of the detached IOAS");
    drop(vmm);
    drop(ram2);
    drop(ram);
    m.remove().expect("remove after the cdev VMM closed");
}

/// Unmodified QEMU 10 over the cdev: `-object iommufd,id=iommufd0` and
/// `iommufd=iommufd0` on the vfio-pci device, running the reference guest
/// driver in L2 (blits, PPGTT store, rejected stream, recovery).  While it
/// runs, QEMU holds the cdev and /dev/iommu, not the group.
#[test]
#[ignore = "runs inside the VM rig"]
fn iommufd_nested_qemu_cdev_runs_the_guest_driver() {
    if !distro_or_skip() {
        return;
    }
    assert!(Path::new("/dev/kvm").exists(), "the rig loads kvm-amd");
    let m = Mdev::create(PARENT, &type_mb(32)).expect("create vGPU");
    let cdev = cdev_of(&m);
    let group = fs::read_link(m.sysfs_path().join("iommu_group"))
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let arg = format!(
        "vfio-pci,sysfsdev={},iommufd=iommufd0",
        m.sysfs_path().display()
    );
    // Who holds what, sampled while QEMU runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        let (cdev, group) = (cdev.clone(), format!("/dev/vfio/{group}"));
        std::thread::spawn(move || {
            let (mut held_cdev, mut held_iommu, mut held_group) = (false, false, false);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for (c, i, g) in qemu_fds(&cdev, &group) {
                    held_cdev |= c;
                    held_iommu |= i;
                    held_group |= g;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            (held_cdev, held_iommu, held_group)
        })
    };
    let r = run_l2_accel(
        "kvm",
        &["-object", "iommufd,id=iommufd0", "-device", &arg],
        "guestdrv",
        Duration::from_secs(400),
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (held_cdev, held_iommu, held_group) = watcher.join().unwrap();
    for l in r
        .output
        .lines()
        .filter(|l| l.contains("L2:") || l.contains("qemu") || l.contains("vfio"))
    {
        println!("{l}");
    }
    assert_eq!(r.status, Some(0), "nested QEMU failed:\n{}", r.output);
    assert!(r.output.contains("L2: pci 0x1234 0x6776 0x038000"));
    for line in [
        "L2: guestdrv round 2 ok",
        "L2: guestdrv ppgtt ok",
        "L2: guestdrv rejected ok",
        "L2: guestdrv recovered ok",
        "L2: guestdrv ok",
    ] {
        assert!(r.output.contains(line), "missing {line:?}:\n{}", r.output);
    }
    println!("QEMU held: cdev {held_cdev}, /dev/iommu {held_iommu}, group {held_group}");
    assert!(held_cdev && held_iommu, "QEMU used the cdev and /dev/iommu");
    assert!(!held_group, "QEMU did not open the legacy group node");
    let s = gvt_vmtests::guest::stats(&m);
    assert!(
        s.get("submissions_accepted").copied().unwrap_or(0) >= 9,
        "L2's accepted submissions: {s:?}"
    );
    m.remove().expect("remove");
}

/// For each qemu-system process: does it have `cdev`, /dev/iommu, `group` open?
fn qemu_fds(cdev: &Path, group: &str) -> Vec<(bool, bool, bool)> {
    let mut v = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if !comm.starts_with("qemu-system") {
            continue;
        }
        let (mut c, mut i, mut g) = (false, false, false);
        for fd in fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(t) = fs::read_link(fd.path()) {
                c |= t == cdev;
                i |= t == Path::new("/dev/iommu");
                g |= t == Path::new(group);
            }
        }
        v.push((c, i, g));
    }
    v
}
