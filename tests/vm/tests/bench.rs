//! Benchmarks (not tests; `cargo xtask bench` runs the `bench_` filter, a
//! plain test run skips them).  Each compares against a baseline measured in
//! the same VM, on the same path, in the same run, and print the ratio; they
//! assert nothing about time.
//!
//! - trapped BAR0 round trip: 4-byte `pread`/`pwrite` on the vGPU's BAR0
//!   region (VFIO → gvt_rs → gvt-core MMIO dispatch) vs the same on the
//!   kernel's C sample mtty's BAR0 (VFIO → mtty's UART emulation).
//!   The same for mbochs (its MMIO BAR), config-space reads of all three,
//!   and a zero-byte read of each (the syscall + VFIO floor every access
//!   pays) to split each cost into the floor and the driver's own share;
//! - audited GGTT PTE updates through BAR0 with the real `vfio_pin_pages`
//!   (guest RAM DMA-mapped in the container) vs an unaudited 8-byte
//!   register write on the same trap path;
//! - aperture write bandwidth: `memset` and `memcpy` into the vGPU's
//!   mmap'ed aperture slice (no trap: the CPU writes the backing pages) vs
//!   plain anonymous memory.  Every GGTT entry of the slice maps its own page of the VMM's
//!   guest RAM first, as a guest driver does: unmapped entries would all be
//!   the one scratch page, a different (and cache-hot) thing to measure.

use std::hint::black_box;
use std::os::fd::AsRawFd;
use std::time::Instant;

use gvt_vmtests::gvt::*;
use gvt_vmtests::{ensure_module, types_of, Mdev};
use vfio_bindings::bindings::vfio::{
    VFIO_PCI_BAR0_REGION_INDEX, VFIO_PCI_BAR2_REGION_INDEX, VFIO_PCI_CONFIG_REGION_INDEX,
};
use vfio_ioctls::VfioDevice;

const ITERS: usize = 20_000;
const ROUNDS: usize = 3;
/// The trap benchmark: many short interleaved rounds, the best of each
/// (the rig is a TCG guest on a shared machine: load comes in bursts of
/// seconds, so the minimum over short windows is what is stable).
const TRAP_ITERS: usize = 2_000;
const TRAP_ROUNDS: usize = 25;

/// One 4-byte `pread` at absolute file offset `pos` of `dev`.
fn pread_at(dev: &VfioDevice, pos: u64, b: &mut [u8]) -> isize {
    // SAFETY: `b` is a valid writable buffer of `b.len()` bytes.
    unsafe { libc::pread(dev.as_raw_fd(), b.as_mut_ptr().cast(), b.len(), pos as i64) }
}

/// One `pwrite` at absolute file offset `pos` of `dev`.
fn pwrite_at(dev: &VfioDevice, pos: u64, b: &[u8]) -> isize {
    // SAFETY: `b` is a valid buffer of `b.len()` bytes.
    unsafe { libc::pwrite(dev.as_raw_fd(), b.as_ptr().cast(), b.len(), pos as i64) }
}

/// Nanoseconds per call of `TRAP_ITERS` 4-byte `pwrite`s at file offset `pos`.
fn time_write_at(dev: &VfioDevice, pos: u64) -> f64 {
    let t0 = Instant::now();
    for i in 0..TRAP_ITERS {
        let v = (i as u32).to_le_bytes();
        assert_eq!(pwrite_at(dev, pos, &v), 4);
    }
    t0.elapsed().as_nanos() as f64 / TRAP_ITERS as f64
}

/// Nanoseconds per call of `TRAP_ITERS` `pread`s of `len` bytes at file offset `pos`.
fn time_read_at(dev: &VfioDevice, pos: u64, len: usize) -> f64 {
    let mut b = [0u8; 4];
    let t1 = Instant::now();
    for _ in 0..TRAP_ITERS {
        assert_eq!(pread_at(dev, pos, &mut b[..len]), len as isize);
        black_box(&b);
    }
    t1.elapsed().as_nanos() as f64 / TRAP_ITERS as f64
}

/// One device's trap costs, best of `TRAP_ROUNDS` (ns per call).
#[derive(Clone, Copy)]
struct Trap {
    write: f64,
    read: f64,
    cfg: f64,
    /// A zero-byte `pread` (returns before any emulation, lock or copy):
    /// the syscall + VFIO dispatch floor every access pays.
    floor: f64,
}

impl Trap {
    fn mean(&self) -> f64 {
        (self.write + self.read) / 2.0
    }
}

fn measure(dev: &VfioDevice, reg: u64, cfg: u64, t: &mut Trap) {
    t.write = t.write.min(time_write_at(dev, reg));
    t.read = t.read.min(time_read_at(dev, reg, 4));
    t.cfg = t.cfg.min(time_read_at(dev, cfg, 4));
    t.floor = t.floor.min(time_read_at(dev, reg, 0));
}

#[test]
#[ignore = "runs inside the VM rig"]
fn bench_trapped_bar0_vs_mtty() {
    let m = Mdev::create(PARENT, &type_mb(32)).expect("vGPU");
    let ours = open(&m);
    enable_mem(&ours);
    ensure_module("mtty", &[]);
    let ty = types_of("mtty")
        .into_iter()
        .find(|t| t.ends_with("-2"))
        .expect("mtty type");
    let mt = Mdev::create("mtty", &ty).expect("mtty mdev");
    let peer = open(&mt);
    ensure_module("mbochs", &[]);
    let ty = types_of("mbochs")
        .into_iter()
        .find(|t| t.ends_with("-small"))
        .expect("mbochs type");
    let mb = Mdev::create("mbochs", &ty).expect("mbochs mdev");
    let bochs = open(&mb);
    // gvt_rs: a plain vreg of BAR0; mtty: the UART's MCR in BAR0; mbochs:
    // the first dword of its MMIO BAR (BAR2: the EDID block on reads, an
    // ignored register on writes).  Config space at 0 for all three.
    let cfg = u64::from(VFIO_PCI_CONFIG_REGION_INDEX);
    let ours_at = (
        region_off(VFIO_PCI_BAR0_REGION_INDEX) + 0x4000,
        region_off(cfg as u32),
    );
    let peer_at = (
        region_off(VFIO_PCI_BAR0_REGION_INDEX) + 4,
        region_off(cfg as u32),
    );
    let bochs_at = (
        bochs.get_region_offset(VFIO_PCI_BAR2_REGION_INDEX),
        bochs.get_region_offset(VFIO_PCI_CONFIG_REGION_INDEX),
    );
    let none = Trap {
        write: f64::MAX,
        read: f64::MAX,
        cfg: f64::MAX,
        floor: f64::MAX,
    };
    let (mut o, mut p, mut b) = (none, none, none);
    // Warm up all paths, then interleave the rounds.
    for _ in 0..=TRAP_ROUNDS {
        measure(&ours, ours_at.0, ours_at.1, &mut o);
        measure(&peer, peer_at.0, peer_at.1, &mut p);
        measure(&bochs, bochs_at.0, bochs_at.1, &mut b);
    }
    println!("bench: trapped BAR 4-byte access, {TRAP_ITERS} writes + {TRAP_ITERS} reads, best of {TRAP_ROUNDS} interleaved rounds:");
    for (name, t) in [
        ("gvt_rs BAR0 (plain vreg 0x4000)", o),
        ("mtty   BAR0 (UART MCR)         ", p),
        ("mbochs BAR2 (MMIO dword 0)     ", b),
    ] {
        println!(
            "bench:   {name}: write {:.0} ns, read {:.0} ns, mean {:.0} ns/access; config read {:.0} ns; floor (0-byte read) {:.0} ns",
            t.write,
            t.read,
            t.mean(),
            t.cfg,
            t.floor
        );
    }
    println!(
        "bench:   ratio gvt_rs / mtty = {:.2}, gvt_rs / mbochs = {:.2} (below 1: faster than the C sample)",
        o.mean() / p.mean(),
        o.mean() / b.mean()
    );
    println!(
        "bench:   config-space 4-byte read: ratio gvt_rs / mtty = {:.2}, gvt_rs / mbochs = {:.2}",
        o.cfg / p.cfg,
        o.cfg / b.cfg
    );
    println!(
        "bench:   above the floor (the driver's own share): gvt_rs {:.0} ns, mtty {:.0} ns, mbochs {:.0} ns per access; config {:.0} / {:.0} / {:.0} ns",
        o.mean() - o.floor,
        p.mean() - p.floor,
        b.mean() - b.floor,
        o.cfg - o.floor,
        p.cfg - p.floor,
        b.cfg - b.floor
    );
    drop(bochs);
    drop(peer);
    drop(ours);
    mb.remove().unwrap();
    mt.remove().unwrap();
    m.remove().unwrap();
}

/// Audited GGTT PTE updates through the trapped BAR0 window, with the real
/// `vfio_pin_pages` behind them (guest RAM DMA-mapped in the device's
/// container), against an unaudited 8-byte write of a plain register on the
/// same trap path.
#[test]
#[ignore = "runs inside the VM rig"]
fn bench_ggtt_pte_update_vs_unaudited() {
    let m = Mdev::create(PARENT, &type_mb(32)).expect("vGPU");
    let a = attrs(&m);
    let pages = 64usize;
    let (dev, ram) = open_with_ram(&m, pages, 0x4000_0000);
    enable_mem(&dev);
    let pte_at = region_off(VFIO_PCI_BAR0_REGION_INDEX) + GGTT_BAR0 + (a.ap_base / 4096) * 8;
    let reg_at = region_off(VFIO_PCI_BAR0_REGION_INDEX) + 0x4000;
    let n = ITERS / 4;
    let rate = |pos: u64, val: &dyn Fn(usize) -> u64| {
        let mut best = f64::MAX;
        for _ in 0..=ROUNDS {
            let t = Instant::now();
            for i in 0..n {
                assert_eq!(pwrite_at(&dev, pos, &val(i).to_le_bytes()), 8);
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        n as f64 / best
    };
    // Each write maps another guest page: pin the new one, unpin the old.
    let repin = rate(pte_at, &|i| (ram.iova + (i % pages) as u64 * 4096) | 1);
    // The same entry rewritten with the frame it already maps: the audit
    // without a pin.
    let same = rate(pte_at, &|_| ram.iova | 1);
    let plain = rate(reg_at, &|i| i as u64);
    assert_eq!(
        read64(
            &dev,
            VFIO_PCI_BAR0_REGION_INDEX,
            GGTT_BAR0 + (a.ap_base / 4096) * 8
        ),
        ram.iova | 1,
        "the last audited PTE write landed"
    );
    println!(
        "bench: audited GGTT PTE update (8-byte pwrite, real vfio_pin_pages), best of {ROUNDS}:"
    );
    println!(
        "bench:   new frame each write (pin + unpin): {:.0} updates/s ({:.0} ns)",
        repin,
        1e9 / repin
    );
    println!(
        "bench:   same frame rewritten (audit, no pin): {:.0} updates/s ({:.0} ns)",
        same,
        1e9 / same
    );
    println!(
        "bench:   unaudited 8-byte register write   : {:.0} writes/s ({:.0} ns)",
        plain,
        1e9 / plain
    );
    println!(
        "bench:   ratio audited / unaudited time = {:.2} (new frame), {:.2} (same frame)",
        plain / repin,
        plain / same
    );
    drop(ram);
    drop(dev);
    m.remove().unwrap();
}

/// Best-of-rounds GB/s of `memcpy` of `len` bytes from `src` to `dst`.
fn copy_bandwidth(dst: *mut u8, src: *const u8, len: usize, reps: usize) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for _ in 0..reps {
            // SAFETY: `src` and `dst` are distinct live mappings of `len`
            // bytes, `dst` writable.
            unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
            black_box(dst);
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    (len * reps) as f64 / best / 1e9
}

/// Best-of-rounds GB/s of `memset` over `len` bytes at `p`.
fn bandwidth(p: *mut u8, len: usize, reps: usize) -> f64 {
    let mut best = f64::MAX;
    for r in 0..ROUNDS {
        let t = Instant::now();
        for i in 0..reps {
            // SAFETY: `p` is a live writable mapping of `len` bytes.
            unsafe { std::ptr::write_bytes(p, (r * reps + i) as u8, len) };
            black_box(p);
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    (len * reps) as f64 / best / 1e9
}

#[test]
#[ignore = "runs inside the VM rig"]
fn bench_aperture_mmap_vs_anon() {
    let m = Mdev::create(PARENT, &type_mb(32)).expect("vGPU");
    let a = attrs(&m);
    let len = a.ap_size as usize;
    let pages = len / 4096;
    // The whole slice backed by guest RAM, page n of the slice on RAM page n.
    let (dev, ram) = open_with_ram(&m, pages, 0x4000_0000);
    enable_mem(&dev);
    map_gtt_range(&dev, &ram, a.ap_base, pages);
    let ap =
        Mapping::new(&dev, VFIO_PCI_BAR2_REGION_INDEX, a.ap_base, len).expect("mmap the slice");
    // SAFETY: a fresh private anonymous mapping.
    let anon = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(anon, libc::MAP_FAILED);
    let anon = anon.cast::<u8>();
    // A second anonymous buffer without transparent huge pages: the aperture
    // is mapped with 4 KiB pages, so this is the like-for-like baseline.
    // SAFETY: a fresh private anonymous mapping, advised before first touch.
    let small = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(small, libc::MAP_FAILED);
    // SAFETY: advising the mapping made just above.
    let nothp = unsafe { libc::madvise(small, len, libc::MADV_NOHUGEPAGE) } == 0;
    let small = small.cast::<u8>();
    // SAFETY: a live writable mapping of `len` bytes.
    unsafe { std::ptr::write_bytes(small, 0, len) };
    // Fault everything in first (the aperture: one trap per page, once).
    let t = Instant::now();
    // SAFETY: both are live writable mappings of `len` bytes.
    unsafe { std::ptr::write_bytes(ap.ptr, 0, len) };
    let ap_fault = t.elapsed();
    let t = Instant::now();
    // SAFETY: as above.
    unsafe { std::ptr::write_bytes(anon, 0, len) };
    let anon_fault = t.elapsed();
    let reps = 4;
    let (mut ab, mut nb, mut sb) = (0.0f64, 0.0f64, 0.0f64);
    for _ in 0..2 {
        ab = ab.max(bandwidth(ap.ptr, len, reps));
        nb = nb.max(bandwidth(anon, len, reps));
        sb = sb.max(bandwidth(small, len, reps));
    }
    // memcpy into the slice against memcpy between anonymous buffers (the
    // source: anonymous memory, 4 KiB pages like the aperture).
    // SAFETY: a fresh private anonymous mapping.
    let src = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(src, libc::MAP_FAILED);
    // SAFETY: advising and filling the mapping made just above.
    unsafe {
        libc::madvise(src, len, libc::MADV_NOHUGEPAGE);
        std::ptr::write_bytes(src.cast::<u8>(), 0x5A, len);
    }
    let src = src.cast::<u8>();
    let (mut ac, mut sc) = (0.0f64, 0.0f64);
    for _ in 0..2 {
        ac = ac.max(copy_bandwidth(ap.ptr, src, len, reps));
        sc = sc.max(copy_bandwidth(small, src, len, reps));
    }
    // SAFETY: as above, and the last write the rest of the test checks.
    unsafe { std::ptr::write_bytes(ap.ptr, ((ROUNDS - 1) * reps + reps - 1) as u8, len) };
    // The data really landed in guest RAM, every page of the slice in its
    // own RAM page: the last memset everywhere, then a per-page marker.
    let last = u32::from_le_bytes([((ROUNDS - 1) * reps + reps - 1) as u8; 4]);
    for p in 0..pages {
        assert_eq!(
            ram.read32(p * 4096 + 4092),
            last,
            "the memset reached guest RAM page {p}"
        );
        ap.write32(p * 4096, 0xBE00_0000 | p as u32);
    }
    for p in 0..pages {
        assert_eq!(
            ram.read32(p * 4096),
            0xBE00_0000 | p as u32,
            "slice page {p} is guest RAM page {p}"
        );
    }
    assert_eq!(
        read32(&dev, VFIO_PCI_BAR2_REGION_INDEX, a.ap_base + 4096),
        0xBE00_0001,
        "region read of page 1"
    );
    println!(
        "bench: aperture write bandwidth over a {} MiB slice, memset x{reps}, best of {ROUNDS}:",
        len >> 20
    );
    println!(
        "bench:   first touch (page faults): aperture {:.1} ms, anonymous {:.1} ms",
        ap_fault.as_secs_f64() * 1e3,
        anon_fault.as_secs_f64() * 1e3
    );
    println!("bench:   aperture mmap {ab:.2} GB/s, anonymous memory {nb:.2} GB/s");
    println!(
        "bench:   ratio aperture / anonymous = {:.2} (1.0: no trap on the pass-through path)",
        ab / nb
    );
    println!(
        "bench:   anonymous with 4 KiB pages (MADV_NOHUGEPAGE {}): {sb:.2} GB/s, ratio aperture / that = {:.2}",
        if nothp { "applied" } else { "refused" },
        ab / sb
    );
    println!(
        "bench:   memcpy into the aperture {ac:.2} GB/s, into anonymous 4 KiB pages {sc:.2} GB/s"
    );
    println!(
        "bench:   ratio aperture / memcpy = {:.2} (goal >= 0.95; the slice's GGTT entries map guest RAM)",
        ac / sc
    );
    // SAFETY: unmapping the anonymous mappings made above.
    unsafe {
        libc::munmap(src.cast(), len);
        libc::munmap(anon.cast(), len);
        libc::munmap(small.cast(), len);
    }
    drop(ap);
    drop(ram);
    drop(dev);
    m.remove().unwrap();
}
