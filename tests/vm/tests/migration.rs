//! VFIO migration v2 of a vGPU (issue 14) through the raw uapi, as a VMM
//! drives it: `VFIO_DEVICE_FEATURE` MIGRATION / MIG_DEVICE_STATE /
//! MIG_DATA_SIZE, the data fds, `VFIO_MIG_GET_PRECOPY_INFO`.  The reference
//! guest driver runs its jobs on vGPU A; A is stopped and its state saved
//! to a file; A goes away; a fresh vGPU B of the same type (which gets the
//! same slices) resumes from the file with the guest's RAM copied; the same
//! driver carries on on B.  A vGPU C of the same type with other slices
//! (A still holds its own) takes A's stream too: the guest keeps A's GM
//! view, translated to C's placement, and carries on there; the same with
//! two unmodified nested QEMUs and QMP `migrate`.  Streams for
//! another type (raw uapi, and two nested QEMUs whose target is of another
//! type), damaged or oversized, are refused while the source keeps
//! running.  Saving goes through PRE_COPY as QEMU does: the bulk is read
//! while the guest runs, the rest after STOP_COPY.  Every test name contains `migration` (`cargo xtask vm-test
//! migration`).

use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::time::Instant;

use gvt_guest_driver::jobs::{self, Ppgtt};
use gvt_guest_driver::vfio::VfioBackend;
use gvt_guest_driver::{Backend, Driver, GuestBus};
use gvt_vmtests::guest::{driver, vgpu, RAM, TIMEOUT};
use gvt_vmtests::gvt::*;
use gvt_vmtests::Mdev;
use vfio_bindings::bindings::vfio::VFIO_PCI_BAR2_REGION_INDEX;
use vfio_ioctls::VfioDevice;

type Drv = Driver<VfioBackend>;

const VFIO_DEVICE_FEATURE: libc::c_ulong = vfio_ioc(17);
const VFIO_MIG_GET_PRECOPY_INFO: libc::c_ulong = vfio_ioc(21);
const FEATURE_GET: u32 = 1 << 16;
const FEATURE_SET: u32 = 1 << 17;
const FEATURE_MIGRATION: u32 = 1;
const FEATURE_MIG_DEVICE_STATE: u32 = 2;
const FEATURE_MIG_DATA_SIZE: u32 = 9;
const MIGRATION_STOP_COPY: u64 = 1;
const MIGRATION_P2P: u64 = 2;
const MIGRATION_PRE_COPY: u64 = 4;

const ERROR: u32 = 0;
const STOP: u32 = 1;
const RUNNING: u32 = 2;
const STOP_COPY: u32 = 3;
const RESUMING: u32 = 4;
const PRE_COPY: u32 = 6;

/// `VFIO_DEVICE_FEATURE` with `payload` after the header (copied back).
fn feature(dev: &VfioDevice, flags: u32, payload: &mut [u8]) -> io::Result<()> {
    let mut buf = vec![0u8; 8 + payload.len()];
    let argsz = buf.len() as u32;
    buf[..4].copy_from_slice(&argsz.to_le_bytes());
    buf[4..8].copy_from_slice(&flags.to_le_bytes());
    buf[8..].copy_from_slice(payload);
    ioctl_bytes(dev, VFIO_DEVICE_FEATURE, &mut buf)?;
    payload.copy_from_slice(&buf[8..]);
    Ok(())
}

/// Move to `state`; the data fd the arc returned, if any.
fn set_state(dev: &VfioDevice, state: u32) -> io::Result<Option<fs::File>> {
    let mut p = [0u8; 8];
    p[..4].copy_from_slice(&state.to_le_bytes());
    p[4..].copy_from_slice(&(-1i32).to_le_bytes());
    feature(dev, FEATURE_SET | FEATURE_MIG_DEVICE_STATE, &mut p)?;
    let fd = i32::from_le_bytes(p[4..].try_into().unwrap());
    // SAFETY: a data fd the kernel just installed for us, owned from here.
    Ok((fd >= 0).then(|| unsafe { fs::File::from_raw_fd(fd) }))
}

fn get_state(dev: &VfioDevice) -> u32 {
    let mut p = [0u8; 8];
    feature(dev, FEATURE_GET | FEATURE_MIG_DEVICE_STATE, &mut p).expect("GET MIG_DEVICE_STATE");
    u32::from_le_bytes(p[..4].try_into().unwrap())
}

fn errno_of<T>(r: io::Result<T>) -> i32 {
    r.err().and_then(|e| e.raw_os_error()).unwrap_or(0)
}

/// `gvt/migration` as `key → value`.
fn mig_sysfs(m: &Mdev) -> Vec<(String, String)> {
    let s = fs::read_to_string(m.sysfs_path().join("gvt/migration")).expect("gvt/migration");
    s.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

fn mig_num(m: &Mdev, key: &str) -> u64 {
    mig_sysfs(m)
        .into_iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("gvt/migration has no {key}"))
}

/// Everything the guest can read back that a restore must reproduce: the
/// GGTT view of its slices' first pages and the mediated registers.
fn guest_view(dev: &VfioDevice, a: &Attrs) -> Vec<u64> {
    use gvt_guest_driver::gvt_core::regs::{self, ring};
    use gvt_guest_driver::{BCS, RCS};
    let mut v = Vec::new();
    for base in [a.ap_base, a.high_base] {
        for i in 0..128u64 {
            v.push(read64(dev, 0, GGTT_BAR0 + ((base >> 12) + i) * 8));
        }
    }
    let mut regs32 = vec![regs::GT_IMR, regs::GT_IER, regs::FENCE, regs::FENCE + 4];
    for e in [RCS, BCS] {
        for r in [ring::START, ring::CTL, ring::HEAD, ring::TAIL] {
            regs32.push(e.reg(r));
        }
    }
    regs32.push(RCS.reg(ring::PP_DIR_BASE));
    for r in regs32 {
        v.push(u64::from(read32(dev, 0, u64::from(r))));
    }
    v
}

/// `VFIO_MIG_GET_PRECOPY_INFO` on a data fd: (initial_bytes, dirty_bytes).
fn precopy_info(f: &fs::File) -> io::Result<(u64, u64)> {
    let mut info = [0u8; 24];
    info[..4].copy_from_slice(&24u32.to_le_bytes());
    // SAFETY: a 24-byte vfio_precopy_info with argsz 24.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), VFIO_MIG_GET_PRECOPY_INFO, info.as_mut_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let u = |a: usize| u64::from_le_bytes(info[a..a + 8].try_into().unwrap());
    Ok((u(8), u(16)))
}

/// Save `d`'s vGPU as QEMU does, through one data fd: PRE_COPY while it
/// runs (the initial data `VFIO_MIG_GET_PRECOPY_INFO` reports, then rounds
/// of dirty data until it reports none left), then PRE_COPY_P2P ->
/// STOP_COPY (stopped, drained) and the rest.  Returns the stream, the
/// bytes read in PRE_COPY and the wall time of the STOP_COPY arc.
fn save(d: &Drv) -> (Vec<u8>, usize, u128) {
    let dev = d.bus().device();
    let mut f = set_state(dev, PRE_COPY)
        .expect("RUNNING -> PRE_COPY")
        .expect("a data fd");
    let mut s = Vec::new();
    let (initial, dirty) = precopy_info(&f).expect("PRECOPY_INFO in PRE_COPY");
    assert!(initial > 0, "PRE_COPY carries the initial data");
    assert_eq!(dirty, 0, "no round before the initial data was read");
    (&mut f)
        .take(initial)
        .read_to_end(&mut s)
        .expect("read the initial data");
    assert_eq!(s.len() as u64, initial);
    for _ in 0..8 {
        let (i, dirty) = precopy_info(&f).expect("PRECOPY_INFO after the initial data");
        assert_eq!(i, 0, "initial data read");
        if dirty == 0 {
            break;
        }
        let n = (&mut f)
            .take(dirty)
            .read_to_end(&mut s)
            .expect("read a round");
        assert_eq!(n as u64, dirty);
    }
    let pre = s.len();
    let t = Instant::now();
    // PRE_COPY -> PRE_COPY_P2P -> STOP_COPY: the fd of PRE_COPY continues.
    assert!(set_state(dev, STOP_COPY).expect("-> STOP_COPY").is_none());
    let us = t.elapsed().as_micros();
    // PRECOPY_INFO is for PRE_COPY states only.
    assert!(
        precopy_info(&f).is_err(),
        "PRECOPY_INFO refused in STOP_COPY"
    );
    f.read_to_end(&mut s).expect("read the stream");
    assert!(set_state(dev, STOP).expect("STOP_COPY -> STOP").is_none());
    (s, pre, us)
}

/// Resume `dev` from `s` (STOP -> RESUMING, write, -> STOP); the errno of
/// the write (EINVAL: a stream of another type, refused as its header
/// arrives; the RESUMING -> STOP arc then fails too) or of the arc, or 0.
fn resume(dev: &VfioDevice, s: &[u8]) -> i32 {
    set_state(dev, STOP).expect("-> STOP");
    let mut f = set_state(dev, RESUMING)
        .expect("STOP -> RESUMING")
        .expect("a data fd");
    let w = errno_of(f.write_all(s));
    drop(f);
    let e = errno_of(set_state(dev, STOP));
    assert!(
        w == 0 || e != 0,
        "a refused write, then a RESUMING -> STOP that succeeds"
    );
    let e = if w != 0 { w } else { e };
    if e != 0 {
        // A refused stream leaves the FSM in ERROR until a reset.
        assert_eq!(get_state(dev), ERROR, "ERROR after a refused stream");
        // SAFETY: VFIO_DEVICE_RESET takes no argument.
        unsafe { ioctl_raw(dev, VFIO_DEVICE_RESET, std::ptr::null_mut()) }.expect("reset");
        assert_eq!(get_state(dev), RUNNING, "RUNNING after the reset");
    }
    e
}

/// The guest's RAM as the VMM moves it: every page of `d`'s RAM.
fn guest_ram(d: &mut Drv) -> Vec<(u64, Vec<u8>)> {
    let mut ram = Vec::new();
    for gpa in d.bus().ram_pages() {
        let mut b = vec![0u8; 4096];
        assert!(d.bus_mut().ram_read(gpa, &mut b));
        ram.push((gpa, b));
    }
    ram
}

/// The target VMM: `m` opened with [`RAM`] holding `ram`, decode and MSI on.
fn open_target(m: &Mdev, ram: &[(u64, Vec<u8>)]) -> VfioBackend {
    let mut bus = VfioBackend::open(&m.sysfs_path(), RAM)
        .unwrap_or_else(|e| panic!("open the target {}: {e}", m.uuid));
    bus.enable().expect("target: decode, MSI");
    for (gpa, data) in ram {
        assert!(bus.ram_write(*gpa, data));
    }
    bus
}

#[test]
#[ignore = "runs inside the VM rig"]
fn migration_stop_save_to_file_and_restore_into_a_fresh_vgpu() {
    load();
    let a = vgpu(64);
    let attrs_a = attrs(&a);
    let mut d = driver(&a);
    let pp = Ppgtt::setup(&mut d).expect("PPGTT");
    let dev = d.bus().device();
    let mut p = [0u8; 8];
    feature(dev, FEATURE_GET | FEATURE_MIGRATION, &mut p).expect("MIGRATION feature");
    assert_eq!(
        u64::from_le_bytes(p),
        MIGRATION_STOP_COPY | MIGRATION_P2P | MIGRATION_PRE_COPY
    );
    let mut p = [0u8; 8];
    feature(dev, FEATURE_GET | FEATURE_MIG_DATA_SIZE, &mut p).expect("MIG_DATA_SIZE");
    let max = u64::from_le_bytes(p);
    assert!(max > 0);
    assert_eq!(get_state(dev), RUNNING);
    jobs::run_round(&mut d, 0xFF11_2233, 0xA1, 0xB1, TIMEOUT).expect("round 1 on A");
    let before = guest_view(d.bus().device(), &attrs_a);
    let (stream, pre_bytes, save_us) = save(&d);
    assert!(stream.len() as u64 <= max);
    assert_eq!(mig_num(&a, "saved_bytes"), stream.len() as u64);
    assert_eq!(mig_num(&a, "precopy_bytes"), pre_bytes as u64);
    assert_eq!(
        mig_num(&a, "stop_copy_bytes"),
        (stream.len() - pre_bytes) as u64
    );
    let device_save_us = mig_num(&a, "save_us");
    let path = "/tmp/vgpu-a.mig";
    fs::write(path, &stream).expect("save to file");
    // The guest's RAM as the VMM moves it.
    let ram = guest_ram(&mut d);
    let mut b_mdev = None;
    let mut restore_us = 0;
    let d = d.rebind(|bus_a| {
        // The source lets go; its slices are free again.
        drop(bus_a);
        a.remove().expect("remove A");
        let b = vgpu(64);
        let attrs_b = attrs(&b);
        assert_eq!(
            (attrs_b.ap_base, attrs_b.high_base),
            (attrs_a.ap_base, attrs_a.high_base),
            "the fresh vGPU got the same slices"
        );
        let bus = open_target(&b, &ram);
        let s = fs::read(path).expect("read the file");
        let t = Instant::now();
        assert_eq!(resume(bus.device(), &s), 0, "RESUMING -> STOP");
        restore_us = t.elapsed().as_micros();
        assert!(set_state(bus.device(), RUNNING)
            .expect("-> RUNNING")
            .is_none());
        assert_eq!(guest_view(bus.device(), &attrs_b), before, "guest view");
        b_mdev = Some(b);
        bus
    });
    let b = b_mdev.expect("target");
    let mut d = d;
    jobs::check_blit(&mut d, 0xFF11_2233, 0xA1).expect("round 1's pixels on B");
    jobs::run_round(&mut d, 0xFF44_5566, 0xA2, 0xB2, TIMEOUT).expect("round 2 on B");
    pp.set_present(&mut d, true).expect("PPGTT still usable");
    assert_eq!(mig_num(&b, "restored_bytes"), stream.len() as u64);
    println!(
        "BENCH migration type=GVTsim_64M stream_bytes={} pre_copy_bytes={pre_bytes} \
         stop_copy_bytes={} save_arc_us={save_us} device_save_us={} \
         restore_arc_us={restore_us} device_restore_us={}",
        stream.len(),
        stream.len() - pre_bytes,
        device_save_us,
        mig_num(&b, "restore_us")
    );
}

/// Issue 14's benchmark, per type: a vGPU of each gvt-sim type runs a
/// round of the reference driver (GGTT mapped, blits, interrupts), is saved
/// through PRE_COPY and STOP_COPY as QEMU does, and a fresh vGPU of the
/// type resumes and runs the next round.  One BENCH line per type: the
/// stream's bytes moved in PRE_COPY (while the guest runs) and at STOP_COPY
/// (the downtime's share), the STOP_COPY arc's and the device's save time,
/// the RESUMING -> STOP arc's and the device's restore time.
#[test]
#[ignore = "runs inside the VM rig"]
fn migration_bench_per_type() {
    load();
    for mb in [32u64, 64, 128, 256] {
        let a = vgpu(mb);
        let mut d = driver(&a);
        jobs::run_round(&mut d, 0xFF00_1000 | mb as u32, 0x11, 0x22, TIMEOUT).expect("round on A");
        let (stream, pre_bytes, save_us) = save(&d);
        assert!(pre_bytes > stream.len() / 2, "the bulk moved in PRE_COPY");
        let device_save_us = mig_num(&a, "save_us");
        let ram = guest_ram(&mut d);
        let mut target = None;
        let mut restore_us = 0;
        let mut d = d.rebind(|bus_a| {
            drop(bus_a);
            a.remove().expect("remove A");
            let b = vgpu(mb);
            let bus = open_target(&b, &ram);
            let t = Instant::now();
            assert_eq!(resume(bus.device(), &stream), 0, "RESUMING -> STOP");
            restore_us = t.elapsed().as_micros();
            assert!(set_state(bus.device(), RUNNING)
                .expect("-> RUNNING")
                .is_none());
            target = Some(b);
            bus
        });
        let b = target.expect("target");
        jobs::run_round(&mut d, 0xFF00_2000 | mb as u32, 0x33, 0x44, TIMEOUT).expect("round on B");
        println!(
            "BENCH migration_per_type type=GVTsim_{mb}M stream_bytes={} pre_copy_bytes={pre_bytes} \
             stop_copy_bytes={} max_stream_bytes={} save_arc_us={save_us} device_save_us={device_save_us} \
             restore_arc_us={restore_us} device_restore_us={}",
            stream.len(),
            stream.len() - pre_bytes,
            mig_num(&b, "max_stream_bytes"),
            mig_num(&b, "restore_us")
        );
        drop(d);
        b.remove().expect("remove B");
    }
}

#[test]
#[ignore = "runs inside the VM rig"]
fn migration_refuses_other_types_and_damage_while_the_source_runs() {
    load();
    let a = vgpu(64);
    let mut d = driver(&a);
    jobs::run_round(&mut d, 0xFF00_0001, 0xC1, 0xD1, TIMEOUT).expect("round on A");
    let (stream, _, _) = save(&d);
    // The source goes back to running and carries on.
    assert!(set_state(d.bus().device(), RUNNING).unwrap().is_none());
    jobs::run_round(&mut d, 0xFF00_0002, 0xC2, 0xD2, TIMEOUT).expect("source runs after saving");
    // Another type: refused as the header is written.
    let other = vgpu(32);
    let (dev_o, _ram_o) = open_with_ram(&other, 64, 1 << 30);
    set_state(&dev_o, STOP).expect("-> STOP");
    let mut f = set_state(&dev_o, RESUMING).unwrap().expect("fd");
    assert_eq!(
        errno_of(f.write_all(&stream[..64])),
        libc::EINVAL,
        "another type's header"
    );
    drop(f);
    set_state(&dev_o, RUNNING).ok();
    // SAFETY: VFIO_DEVICE_RESET takes no argument.
    unsafe { ioctl_raw(&dev_o, VFIO_DEVICE_RESET, std::ptr::null_mut()) }.expect("reset");
    assert_eq!(resume(&dev_o, &stream), libc::EINVAL, "another type");
    assert!(mig_num(&other, "refused") >= 1, "counted");
    // Same type, other slices (A holds them): taken, with A's view.
    let same = vgpu(64);
    let (dev_s, _ram_s) = open_with_ram(&same, 64, 1 << 30);
    assert_eq!(resume(&dev_s, &stream), 0, "another placement of the type");
    // Damaged, and larger than any stream of the type.
    let mut bad = stream.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x55;
    assert_eq!(resume(&dev_s, &bad), libc::EINVAL, "damaged");
    set_state(&dev_s, STOP).ok();
    let mut f = set_state(&dev_s, RESUMING).unwrap().expect("fd");
    let huge = vec![0u8; 64 << 20];
    let e = f.write_all(&huge).err().and_then(|e| e.raw_os_error());
    assert_eq!(e, Some(libc::EFBIG), "oversized stream");
    assert!(mig_num(&same, "refused") >= 1);
    // The source was never disturbed.
    jobs::run_round(&mut d, 0xFF00_0003, 0xC3, 0xD3, TIMEOUT).expect("source still runs");
    assert!(fs::read_to_string(a.sysfs_path().join("gvt/migration"))
        .unwrap()
        .starts_with("capabilities stop_copy p2p pre_copy"));
    // `gvtctl info` shows the migration capability and state (gvt/migration).
    let o = std::process::Command::new("/usr/bin/gvtctl")
        .args(["info", &a.uuid])
        .output()
        .expect("run /usr/bin/gvtctl");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("gvt/migration:") && out.contains("capabilities stop_copy p2p pre_copy"),
        "gvtctl info: {out}"
    );
    assert!(
        out.contains("migration:          stop_copy p2p pre_copy (state running); a target: gvtctl create --like"),
        "gvtctl info's migration line: {out}"
    );
}

#[test]
#[ignore = "runs inside the VM rig"]
fn migration_to_another_placement_the_guest_keeps_its_view_and_carries_on() {
    use gvt_guest_driver::gvt_core::pvinfo::{vgtif, PVINFO_BASE};
    load();
    let a = vgpu(64);
    let attrs_a = attrs(&a);
    let mut d = driver(&a);
    let pp = Ppgtt::setup(&mut d).expect("PPGTT");
    jobs::run_round(&mut d, 0xFF21_4365, 0xE1, 0xF1, TIMEOUT).expect("round 1 on A");
    let before = guest_view(d.bus().device(), &attrs_a);
    let (stream, pre_bytes, save_us) = save(&d);
    let ram = guest_ram(&mut d);
    let mut c_mdev = None;
    let mut restore_us = 0;
    let d = d.rebind(|bus_a| {
        // A keeps its slices while C is created: C is placed elsewhere.
        let c = vgpu(64);
        let attrs_c = attrs(&c);
        assert_ne!(attrs_c.ap_base, attrs_a.ap_base, "C got other slices");
        assert_ne!(attrs_c.high_base, attrs_a.high_base, "C got other slices");
        // The source's VMM lets go (A goes idle, its device reset).
        drop(bus_a);
        let bus = open_target(&c, &ram);
        let t = Instant::now();
        assert_eq!(resume(bus.device(), &stream), 0, "RESUMING -> STOP at C");
        restore_us = t.elapsed().as_micros();
        assert!(set_state(bus.device(), RUNNING)
            .expect("-> RUNNING")
            .is_none());
        // The guest reads A's slices in PVINFO, its GGTT view and registers
        // at A's addresses, as before.
        let pv = |f: u32| u64::from(read32(bus.device(), 0, u64::from(PVINFO_BASE + f)));
        assert_eq!(
            pv(vgtif::MAPPABLE_BASE),
            attrs_a.ap_base,
            "PVINFO: A's aperture"
        );
        assert_eq!(
            pv(vgtif::NONMAPPABLE_BASE),
            attrs_a.high_base,
            "PVINFO: A's high GM"
        );
        assert_eq!(pv(vgtif::VGT_ID), attrs_a.id, "PVINFO: A's id");
        assert_eq!(guest_view(bus.device(), &attrs_a), before, "guest view");
        // BAR2 follows the view: a mapping of A's aperture offsets on C
        // faults in the pages C's physical GGTT has behind them, the ones
        // the region's read path shows.
        let pages = 32usize;
        let m = gvt_guest_driver::mmap::Mmap::shared(
            bus.device().as_raw_fd(),
            region_off(VFIO_PCI_BAR2_REGION_INDEX) + attrs_a.ap_base,
            pages * 4096,
            "C's BAR2 at A's aperture",
        )
        .expect("mmap A's aperture offsets on C");
        for p in 0..pages {
            let mut via_map = vec![0u8; 4096];
            let mut via_read = vec![0u8; 4096];
            assert!(m.read(p * 4096, &mut via_map));
            let off = attrs_a.ap_base + (p * 4096) as u64;
            assert_eq!(
                pread(bus.device(), VFIO_PCI_BAR2_REGION_INDEX, off, &mut via_read).expect("pread"),
                4096
            );
            assert!(
                via_map == via_read,
                "aperture page {p}: mapping and region differ"
            );
        }
        drop(m);
        c_mdev = Some(c);
        bus
    });
    let c = c_mdev.expect("target");
    let mut d = d;
    jobs::check_blit(&mut d, 0xFF21_4365, 0xE1).expect("round 1's pixels on C");
    jobs::run_round(&mut d, 0xFF65_8709, 0xE2, 0xF2, TIMEOUT).expect("round 2 on C");
    pp.set_present(&mut d, true)
        .expect("PPGTT still usable on C");
    // A is idle and reusable: a new guest on it sees A's own slices.
    let mut d2 = driver(&a);
    jobs::run_round(&mut d2, 0xFF00_0A0A, 0xE3, 0xF3, TIMEOUT).expect("a new guest on A");
    drop(d2);
    jobs::run_round(&mut d, 0xFF0B_0B0B, 0xE4, 0xF4, TIMEOUT).expect("round 3 on C");
    println!(
        "BENCH migration_placement type=GVTsim_64M stream_bytes={} pre_copy_bytes={pre_bytes} \
         stop_copy_bytes={} save_arc_us={save_us} restore_arc_us={restore_us} \
         device_restore_us={}",
        stream.len(),
        stream.len() - pre_bytes,
        mig_num(&c, "restore_us")
    );
}

/// QEMU needs `enable-migration=on` to migrate a VFIO device without dirty
/// tracking of the device or the IOMMU (it then counts every guest page
/// dirty); the mdev's container (type1 over no IOMMU in L1) reports none.
const NESTED_DEV_OPTS: &str = ",enable-migration=on";

/// QEMU B of a nested migration: the machine of [`gvt_vmtests::screen::NestedDisplay`]
/// on `m`, with sockets of its own, waiting (`-incoming`) on the returned
/// migration socket.
fn incoming(
    m: &Mdev,
) -> (
    gvt_vmtests::screen::Qemu,
    gvt_vmtests::screen::Qmp,
    std::os::unix::net::UnixStream,
    String,
) {
    use gvt_vmtests::screen::{connect, NestedDisplay, Qemu, Qmp};
    let pid = std::process::id();
    let (qmp_a, tty_a) = (
        format!("/tmp/gvt-qmp-{pid}.sock"),
        format!("/tmp/gvt-tty-{pid}.sock"),
    );
    let (qmp_b, tty_b, mig) = (
        format!("/tmp/gvt-qmp-b-{pid}.sock"),
        format!("/tmp/gvt-tty-b-{pid}.sock"),
        format!("/tmp/gvt-mig-{pid}.sock"),
    );
    let _ = fs::remove_file(&mig);
    let mut args: Vec<String> = NestedDisplay::command(m, "tcg", "vfio-pci", NESTED_DEV_OPTS)
        .into_iter()
        .map(|a| a.replace(&qmp_a, &qmp_b).replace(&tty_a, &tty_b))
        .collect();
    args.extend(["-incoming".to_string(), format!("unix:{mig}")]);
    let qb = Qemu::spawn(&args);
    let qb_qmp = Qmp::new(&qmp_b);
    let qb_tty = connect(&tty_b);
    for _ in 0..600 {
        if std::path::Path::new(&mig).exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    (qb, qb_qmp, qb_tty, mig)
}

/// Issue 14's nested migration: two unmodified nested QEMUs in L1.  QEMU A
/// runs L2's display program on vGPU 1 (a picture drawn with audited blits,
/// the plane programmed); QEMU B waits with `-incoming` on vGPU 2, which has
/// other slices.  QMP `migrate` moves the running guest from A to B: B's
/// screendump equals A's, and the guest keeps running on B (it draws
/// picture 2 with blits audited on vGPU 2, waits for their interrupt and
/// flips; the screendump equals picture 2).  vGPU 1 is idle and reusable
/// afterwards.  Prints QEMU's downtime as a BENCH line.
#[test]
#[ignore = "runs inside the VM rig"]
fn migration_nested_qemu_to_another_placement() {
    nested_move(32);
}

/// The benchmark's QEMU downtime per type: the nested move above for each
/// type two vGPUs of fit the rig's parent at once (256 MiB of aperture:
/// 32M, 64M, 128M).  `cargo xtask bench`.
#[test]
#[ignore = "runs inside the VM rig"]
fn bench_migration_nested_per_type() {
    for mb in [32, 64, 128] {
        nested_move(mb);
    }
}

/// Two nested QEMUs, A on a new vGPU of `mb` MiB of aperture, B waiting on
/// a second one: move the running guest (see the test above); prints the
/// BENCH line of the type.
fn nested_move(mb: u64) {
    use gvt_vmtests::expected_frame;
    use gvt_vmtests::guest::{refusals, stat, stats};
    use gvt_vmtests::screen::{NestedDisplay, DEVICE_ID, STEP};
    use serde_json::json;
    load();
    let ty = type_mb(mb);
    let m1 = Mdev::create(PARENT, &ty).expect("create vGPU 1");
    let m2 = Mdev::create(PARENT, &ty).expect("create vGPU 2");
    let (a1, a2) = (attrs(&m1), attrs(&m2));
    assert_ne!(a1.ap_base, a2.ap_base, "vGPU 2 has another aperture slice");
    assert_ne!(a1.high_base, a2.high_base, "vGPU 2 has another high slice");
    for m in [&m1, &m2] {
        fs::write(m.sysfs_path().join("gvt/dmabuf"), "0").expect("gvt/dmabuf");
    }
    // A: boots L2, which draws picture 1 and shows it.
    let mut s = NestedDisplay::start_device(&m1, "tcg", true, "vfio-pci", NESTED_DEV_OPTS);
    let (w, h) = (s.width, s.height);
    let before = s.screendump();
    before
        .compare(&expected_frame(1, w, h), w, h)
        .unwrap_or_else(|e| panic!("A's screendump of frame 1: {e}"));
    // B: the same machine on vGPU 2, its own sockets, waiting for A.
    let pid = std::process::id();
    let (mut qb, mut qb_qmp, mut qb_tty, mig) = incoming(&m2);
    let restored0 = mig_num(&m2, "restored_bytes");
    // Move the running guest.
    let (status, info) = s.qmp.migrate(&format!("unix:{mig}"), STEP);
    assert_eq!(status, "completed", "migration failed: {info}");
    // What vGPU 1 moved in each phase (QEMU read its PRE_COPY data while
    // the guest ran, the rest after stopping it).
    let (pre_bytes, stop_bytes, save_us) = (
        mig_num(&m1, "precopy_bytes"),
        mig_num(&m1, "stop_copy_bytes"),
        mig_num(&m1, "save_us"),
    );
    assert!(pre_bytes > 0, "vGPU 1 moved its bulk in PRE_COPY");
    let downtime = info.get("downtime").and_then(|v| v.as_u64()).unwrap_or(0);
    let total = info.get("total-time").and_then(|v| v.as_u64()).unwrap_or(0);
    qb_qmp.wait_running(STEP);
    let stream = mig_num(&m2, "restored_bytes");
    assert!(stream > 0 && stream != restored0, "vGPU 2 took a stream");
    // A lets go first (vGPU 1 is reset: its pages leave the GGTT), so what
    // B shows can only come from vGPU 2.
    s.qmp.cmd(json!({"execute": "quit"}));
    drop(s);
    // The screen moved: B shows exactly what A showed.
    let after = qb_qmp.screendump(DEVICE_ID, &format!("/tmp/gvt-shot-b-{pid}.ppm"));
    assert!(after == before, "B's screendump equals A's");
    // The guest keeps running on B: picture 2, drawn with blits that vGPU
    // 2 audits, their interrupt, the flip.
    let audited = stat(&m2, "cmds_audited");
    writeln!(qb_tty, "flip").unwrap();
    // The rest of the guest's workload on B: a store through its PPGTT
    // (root and tables moved with it), pipe A's vblank latched and the
    // frame counter past where it was on A.
    let l = qb.wait_for("L2: display ppgtt store ok", STEP);
    assert!(l.contains("(was "), "L2 checked PPGTT and vblank on B: {l}");
    println!("{l}");
    qb.wait_for("L2: display B", STEP);
    assert!(
        stat(&m2, "cmds_audited") > audited,
        "vGPU 2 audited the guest's blits"
    );
    let st2 = stats(&m2);
    let refused = refusals(&st2);
    assert!(
        refused.is_empty(),
        "vGPU 2 refused the moved guest: {refused:?}"
    );
    let flipped = qb_qmp.screendump(DEVICE_ID, &format!("/tmp/gvt-shot-b-{pid}.ppm"));
    flipped
        .compare(&expected_frame(2, w, h), w, h)
        .unwrap_or_else(|e| panic!("B's screendump after the flip to frame 2: {e}"));
    // vGPU 1 is idle and reusable, with its own slices.
    gvt_vmtests::gvt::assert_reusable_with_own_slice(&m1, a1.ap_base);
    println!(
        "BENCH migration_nested type=GVTsim_{mb}M downtime_ms={downtime} total_ms={total} \
         device_stream_bytes={stream} pre_copy_bytes={pre_bytes} stop_copy_bytes={stop_bytes} \
         device_save_us={save_us} device_restore_us={}",
        mig_num(&m2, "restore_us")
    );
    writeln!(qb_tty, "done").unwrap();
    qb.wait_for("L2: display ok", STEP);
    qb.wait_for("L2: done", STEP);
    let st = qb.child.wait().expect("qemu B exit");
    assert!(st.success(), "QEMU B exit status {st}");
    m1.remove().expect("remove vGPU 1");
    m2.remove().expect("remove vGPU 2");
}

/// Issue 14: a migration refused with the source still running, with two
/// unmodified nested QEMUs.  QEMU B waits on a vGPU of **another type**;
/// QMP `migrate` from A fails: B's device refuses the stream as its header
/// arrives (RESUMING's write, EINVAL), B's load fails and tells A over the
/// return path; A's migration is `failed` and its guest keeps running on
/// vGPU 1 (query-status `running`; its next job, picture 2 drawn with
/// blits that vGPU 1 audits, their interrupt and the flip, shows on A's
/// screen).  vGPU 2 counts the refusal.
#[test]
#[ignore = "runs inside the VM rig"]
fn migration_nested_qemu_refused_by_another_type_source_runs_on() {
    use gvt_vmtests::expected_frame;
    use gvt_vmtests::guest::stat;
    use gvt_vmtests::screen::{NestedDisplay, STEP};
    use serde_json::json;
    load();
    let m1 = Mdev::create(PARENT, &type_mb(32)).expect("create vGPU 1");
    let m2 = Mdev::create(PARENT, &type_mb(64)).expect("create vGPU 2, another type");
    for m in [&m1, &m2] {
        fs::write(m.sysfs_path().join("gvt/dmabuf"), "0").expect("gvt/dmabuf");
    }
    let mut s = NestedDisplay::start_device(&m1, "tcg", true, "vfio-pci", NESTED_DEV_OPTS);
    let (w, h) = (s.width, s.height);
    s.screendump()
        .compare(&expected_frame(1, w, h), w, h)
        .unwrap_or_else(|e| panic!("A's screendump of frame 1: {e}"));
    let (mut qb, mut qb_qmp, _qb_tty, mig) = incoming(&m2);
    let refused0 = mig_num(&m2, "refused");
    // The return path: B's failure to load reaches A (as libvirt sets it).
    let caps = json!({"execute": "migrate-set-capabilities", "arguments": {
        "capabilities": [{"capability": "return-path", "state": true}]}});
    s.qmp.cmd(caps.clone());
    qb_qmp.cmd(caps);
    let (status, info) = s.qmp.migrate(&format!("unix:{mig}"), STEP);
    assert_ne!(
        status, "completed",
        "the migration to another type completed: {info}"
    );
    println!("A's query-migrate after the refusal: {info}");
    // B gave up; its log says why.
    let st = qb.child.wait().expect("qemu B exit");
    assert!(!st.success(), "QEMU B failed its incoming migration");
    let b_log = qb
        .lines_within(std::time::Duration::from_secs(2))
        .join("\n");
    println!("QEMU B:\n{b_log}");
    assert!(
        b_log.contains("/vfio)") && b_log.contains("load of migration failed: Invalid argument"),
        "B's load failed on the vGPU's refusal"
    );
    drop(qb_qmp);
    assert!(
        mig_num(&m2, "refused") > refused0,
        "vGPU 2 refused the stream"
    );
    // A runs on.
    s.qmp.wait_running(STEP);
    let audited = stat(&m1, "cmds_audited");
    s.flip();
    assert!(
        stat(&m1, "cmds_audited") > audited,
        "vGPU 1 audited the guest's next blits"
    );
    s.screendump()
        .compare(&expected_frame(2, w, h), w, h)
        .unwrap_or_else(|e| panic!("A's screendump after the flip to frame 2: {e}"));
    assert_eq!(
        fs::read_to_string(m1.sysfs_path().join("gvt/migration"))
            .unwrap()
            .lines()
            .nth(1),
        Some("state running"),
        "vGPU 1's VFIO state"
    );
    s.finish();
    m1.remove().expect("remove vGPU 1");
    m2.remove().expect("remove vGPU 2");
}
