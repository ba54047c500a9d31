//! Benchmarks (not tests; `cargo xtask bench` runs the `bench_` filter, a
//! plain test run skips them).  Both compare against a baseline measured in
//! the same VM, on the same path, in the same run, and print the ratio; they
//! assert nothing about time.
//!
//! - trapped BAR0 round trip: 4-byte `pread`/`pwrite` on the vGPU's BAR0
//!   region (VFIO → gvt_rs → gvt-core MMIO dispatch) vs the same on the
//!   kernel's C sample mtty's BAR0 (VFIO → mtty's UART emulation);
//! - aperture write bandwidth: `memset` over the vGPU's mmap'ed aperture
//!   slice (no trap: the CPU writes the backing pages) vs plain anonymous
//!   memory.  Every GGTT entry of the slice maps its own page of the VMM's
//!   guest RAM first, as a guest driver does: unmapped entries would all be
//!   the one scratch page, a different (and cache-hot) thing to measure.

use std::hint::black_box;
use std::time::{Duration, Instant};

use gvt_vmtests::gvt::*;
use gvt_vmtests::{ensure_module, types_of, Mdev};
use vfio_bindings::bindings::vfio::{
    VFIO_PCI_BAR0_REGION_INDEX, VFIO_PCI_BAR2_REGION_INDEX, VFIO_PCI_CONFIG_REGION_INDEX,
};
use vfio_ioctls::VfioDevice;

const ITERS: usize = 20_000;
const ROUNDS: usize = 3;

/// Nanoseconds per access of `ITERS` 4-byte writes, then `ITERS` reads, on
/// BAR0 at `off`.
fn time_rw(dev: &VfioDevice, off: u64) -> (f64, f64) {
    let t0 = Instant::now();
    for i in 0..ITERS {
        let v = (i as u32).to_le_bytes();
        assert_eq!(pwrite(dev, VFIO_PCI_BAR0_REGION_INDEX, off, &v).unwrap(), 4);
    }
    let w = t0.elapsed();
    let r = time_read(dev, VFIO_PCI_BAR0_REGION_INDEX, off);
    let per = |d: Duration| d.as_nanos() as f64 / ITERS as f64;
    (per(w), r)
}

/// Nanoseconds per 4-byte `pread` of `region` at `off`.
fn time_read(dev: &VfioDevice, region: u32, off: u64) -> f64 {
    let mut b = [0u8; 4];
    let t1 = Instant::now();
    for _ in 0..ITERS {
        assert_eq!(pread(dev, region, off, &mut b).unwrap(), 4);
        black_box(&b);
    }
    t1.elapsed().as_nanos() as f64 / ITERS as f64
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
    // Warm up both paths.
    time_rw(&ours, 0x4000);
    time_rw(&peer, 4);
    let (mut ow, mut or, mut pw, mut pr) = (f64::MAX, f64::MAX, f64::MAX, f64::MAX);
    for _ in 0..ROUNDS {
        let (w, r) = time_rw(&ours, 0x4000);
        ow = ow.min(w);
        or = or.min(r);
        let (w, r) = time_rw(&peer, 4);
        pw = pw.min(w);
        pr = pr.min(r);
    }
    // Decomposition: a 4-byte config-space read is a memcpy-like emulation
    // in both drivers, so its ratio is the VFIO + glue share of the cost.
    let (mut oc, mut pc) = (f64::MAX, f64::MAX);
    for _ in 0..ROUNDS {
        oc = oc.min(time_read(&ours, VFIO_PCI_CONFIG_REGION_INDEX, 0));
        pc = pc.min(time_read(&peer, VFIO_PCI_CONFIG_REGION_INDEX, 0));
    }
    let (o, p) = ((ow + or) / 2.0, (pw + pr) / 2.0);
    println!(
        "bench: trapped BAR0 4-byte access, {ITERS} writes + {ITERS} reads, best of {ROUNDS}:"
    );
    println!("bench:   gvt_rs BAR0 (plain vreg 0x4000): write {ow:.0} ns, read {or:.0} ns, mean {o:.0} ns/access");
    println!("bench:   mtty   BAR0 (UART MCR)     : write {pw:.0} ns, read {pr:.0} ns, mean {p:.0} ns/access");
    println!(
        "bench:   ratio gvt_rs / mtty = {:.2} (below 1: faster than the C sample)",
        o / p
    );
    println!("bench:   for scale, 4-byte config-space read: gvt_rs {oc:.0} ns, mtty {pc:.0} ns, ratio {:.2}", oc / pc);
    drop(peer);
    drop(ours);
    mt.remove().unwrap();
    m.remove().unwrap();
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
    // SAFETY: unmapping the anonymous mappings made above.
    unsafe {
        libc::munmap(anon.cast(), len);
        libc::munmap(small.cast(), len);
    }
    drop(ap);
    drop(ram);
    drop(dev);
    m.remove().unwrap();
}
