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
//! - where a trapped read's time goes: the kernel's function_graph tracer
//!   over `vfio_device_fops_read` for each driver (the C functions each
//!   access calls, per access; the module's Rust code has no ftrace entry,
//!   so its own time is what a level leaves unexplained);
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

/// The kernel's function_graph tracer (tracefs), limited to this process
/// and to the calls under `vfio_device_fops_read`/`_write`: where a trapped
/// access spends its time, function by function.  The module's Rust code
/// has no ftrace entry (the kernel builds Rust without `-Zinstrument-mcount`):
/// its time is what a level leaves unexplained by the C functions it calls.
struct Graph {
    dir: &'static str,
}

impl Graph {
    fn open() -> Option<Graph> {
        let dir = "/sys/kernel/tracing";
        if !std::path::Path::new(dir).join("trace").exists() {
            let c = std::ffi::CString::new(dir).unwrap();
            let t = std::ffi::CString::new("tracefs").unwrap();
            // SAFETY: NUL-terminated strings; no data argument.
            unsafe { libc::mount(t.as_ptr(), c.as_ptr(), t.as_ptr(), 0, std::ptr::null()) };
        }
        let tracers = std::fs::read_to_string(format!("{dir}/available_tracers")).ok()?;
        tracers.contains("function_graph").then_some(Graph { dir })
    }

    fn set(&self, file: &str, v: &str) {
        std::fs::write(format!("{}/{file}", self.dir), v)
            .unwrap_or_else(|e| panic!("tracefs {file} = {v}: {e}"));
    }

    /// The trace of `f`, under the graph functions `entry`.
    fn capture(&self, entry: &str, f: impl FnOnce()) -> String {
        self.set("tracing_on", "0");
        self.set("current_tracer", "nop");
        self.set("trace", "");
        self.set("buffer_size_kb", "8192");
        self.set("set_graph_function", entry);
        // The calling thread (libtest runs the test in one of its own).
        // SAFETY: gettid has no preconditions.
        self.set("set_ftrace_pid", &unsafe { libc::gettid() }.to_string());
        self.set("max_graph_depth", "5");
        // The tracer's own options exist once it is the current one.
        self.set("current_tracer", "function_graph");
        for o in [
            "funcgraph-tail",
            "nofuncgraph-irqs",
            "funcgraph-duration",
            "nofuncgraph-proc",
        ] {
            self.set("trace_options", o);
        }
        self.set("trace", "");
        self.set("tracing_on", "1");
        f();
        self.set("tracing_on", "0");
        let t = std::fs::read_to_string(format!("{}/trace", self.dir)).expect("trace");
        self.set("current_tracer", "nop");
        self.set("set_graph_function", "");
        self.set("set_ftrace_pid", "");
        t
    }
}

/// function_graph's text as a call tree: (path of names from the graph
/// function down, total µs, calls), in first-seen order.
fn graph_profile(trace: &str) -> Vec<(Vec<String>, f64, u64)> {
    let mut order: Vec<(Vec<String>, f64, u64)> = Vec::new();
    let mut add = |path: &[String], us: f64| match order.iter_mut().find(|(p, _, _)| p == path) {
        Some(e) => {
            e.1 += us;
            e.2 += 1;
        }
        None => order.push((path.to_vec(), us, 1)),
    };
    let mut stack: Vec<String> = Vec::new();
    for l in trace.lines() {
        if l.starts_with('#') {
            continue;
        }
        let Some((left, right)) = l.split_once('|') else {
            continue;
        };
        let us = left
            .split_whitespace()
            .rev()
            .skip_while(|w| *w != "us")
            .nth(1)
            .and_then(|w| w.parse::<f64>().ok());
        let call = right.trim();
        if let Some(name) = call.strip_suffix("() {") {
            stack.push(name.split_whitespace().next().unwrap_or(name).to_string());
        } else if let Some(name) = call.strip_suffix("();") {
            let mut p = stack.clone();
            p.push(name.split_whitespace().next().unwrap_or(name).to_string());
            if let Some(us) = us {
                add(&p, us);
            }
        } else if call.starts_with('}') {
            if let Some(us) = us {
                if !stack.is_empty() {
                    add(&stack, us);
                }
            }
            stack.pop();
        }
    }
    order
}

/// Where a trapped 4-byte read spends its time in the kernel, per driver
/// (gvt_rs, mtty, mbochs), from the function_graph tracer: the C functions
/// under `vfio_device_fops_read`, each with its mean time per access (the
/// tracer's own cost included: compare the drivers, not the absolute times).
#[test]
#[ignore = "runs inside the VM rig"]
fn bench_trap_path_profile() {
    let Some(g) = Graph::open() else {
        println!("GVT-RIG: skip: no function_graph tracer in this kernel");
        return;
    };
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
    let cfg = u64::from(VFIO_PCI_CONFIG_REGION_INDEX);
    const N: usize = 300;
    let cases: [(&str, &VfioDevice, u64); 6] = [
        (
            "gvt_rs BAR0 read",
            &ours,
            region_off(VFIO_PCI_BAR0_REGION_INDEX) + 0x4000,
        ),
        (
            "mtty   BAR0 read",
            &peer,
            region_off(VFIO_PCI_BAR0_REGION_INDEX) + 4,
        ),
        (
            "mbochs BAR2 read",
            &bochs,
            bochs.get_region_offset(VFIO_PCI_BAR2_REGION_INDEX),
        ),
        ("gvt_rs config read", &ours, region_off(cfg as u32)),
        ("mtty   config read", &peer, region_off(cfg as u32)),
        (
            "mbochs config read",
            &bochs,
            bochs.get_region_offset(VFIO_PCI_CONFIG_REGION_INDEX),
        ),
    ];
    for (what, dev, pos) in cases {
        let mut b = [0u8; 4];
        // Warm, then traced.
        for _ in 0..N {
            pread_at(dev, pos, &mut b);
        }
        let t = g.capture("vfio_device_fops_read", || {
            for _ in 0..N {
                assert_eq!(pread_at(dev, pos, &mut b), 4);
            }
        });
        let prof = graph_profile(&t);
        let calls = prof
            .iter()
            .find(|(p, _, _)| p.len() == 1)
            .map_or(0, |e| e.2);
        if calls == 0 {
            println!("bench: trap profile, {what}: nothing traced; the trace began:");
            for l in t.lines().take(20) {
                println!("bench:   | {l}");
            }
        }
        println!("bench: trap profile, {what}: {calls} traced calls of vfio_device_fops_read (mean per access; the tracer's cost included)");
        for (path, us, n) in &prof {
            // Interrupts that hit a traced call show under it: only what
            // every access calls.
            if calls == 0 || path.len() > 4 || (*n as f64) < calls as f64 * 0.9 {
                continue;
            }
            println!(
                "bench:   {:>7.0} ns {:>5.2}x  {}{}",
                us * 1000.0 / calls as f64,
                *n as f64 / calls as f64,
                "  ".repeat(path.len() - 1),
                path.last().unwrap()
            );
        }
    }
    drop(bochs);
    drop(peer);
    drop(ours);
    mb.remove().unwrap();
    mt.remove().unwrap();
    m.remove().unwrap();
}
