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
//! - where a trapped access's time goes: a sampling profile of the trap
//!   loop (`perf_event_open`, the CPU clock every 50 µs, kernel IPs named
//!   from `/proc/kallsyms`, the module's Rust functions included), per
//!   driver, each function's share in ns per access;
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

/// A gvt_rs vGPU and the kernel's C samples' mtty and mbochs devices, each
/// opened (the vGPU's memory decode on): the trap benchmarks' three.
struct Three {
    m: Mdev,
    ours: VfioDevice,
    mt: Mdev,
    peer: VfioDevice,
    mb: Mdev,
    bochs: VfioDevice,
}

impl Three {
    fn open() -> Three {
        let m = Mdev::create(PARENT, &type_mb(32)).expect("vGPU");
        let ours = open(&m);
        enable_mem(&ours);
        let sample = |module: &str, suffix: &str| {
            ensure_module(module, &[]);
            let ty = types_of(module)
                .into_iter()
                .find(|t| t.ends_with(suffix))
                .unwrap_or_else(|| panic!("{module} type *{suffix}"));
            let d = Mdev::create(module, &ty).unwrap_or_else(|e| panic!("{module} mdev: {e}"));
            let f = open(&d);
            (d, f)
        };
        let (mt, peer) = sample("mtty", "-2");
        let (mb, bochs) = sample("mbochs", "-small");
        Three {
            m,
            ours,
            mt,
            peer,
            mb,
            bochs,
        }
    }

    /// Close the three, then remove them.
    fn remove(self) {
        let Three {
            m,
            ours,
            mt,
            peer,
            mb,
            bochs,
        } = self;
        drop((bochs, peer, ours));
        mb.remove().unwrap();
        mt.remove().unwrap();
        m.remove().unwrap();
    }
}

#[test]
#[ignore = "runs inside the VM rig"]
fn bench_trapped_bar0_vs_mtty() {
    let three = Three::open();
    let (ours, peer, bochs) = (&three.ours, &three.peer, &three.bochs);
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
        measure(ours, ours_at.0, ours_at.1, &mut o);
        measure(peer, peer_at.0, peer_at.1, &mut p);
        measure(bochs, bochs_at.0, bochs_at.1, &mut b);
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
    three.remove();
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

/// A sampling profiler of this thread: `perf_event_open` on the software
/// CPU clock, the interrupted instruction pointer of each sample (kernel
/// ones included: the rig runs as root), read from the ring buffer after
/// the run.  No perf binary in the rig's image; the kernel's own sampler is
/// enough to say which functions a trapped access spends its time in.
struct Sampler {
    fd: i32,
    ring: *mut u8,
    len: usize,
}

/// Data pages of the sample ring (2^n): 16-byte samples, 16384 of them.
const RING_PAGES: usize = 64;

impl Sampler {
    fn new(period_ns: u64) -> Option<Sampler> {
        // struct perf_event_attr, its first 64 bytes (PERF_ATTR_SIZE_VER0).
        let mut attr = [0u64; 8];
        attr[0] = 1 | (64 << 32); // type PERF_TYPE_SOFTWARE, size 64
        attr[1] = 0; // PERF_COUNT_SW_CPU_CLOCK
        attr[2] = period_ns; // sample_period
        attr[3] = 1; // sample_type PERF_SAMPLE_IP
                     // disabled, exclude_hv
        attr[5] = 1 | (1 << 6);
        // SAFETY: a valid attr of the size it states; this thread, any CPU.
        let fd =
            unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), 0, -1, -1, 0) } as i32;
        if fd < 0 {
            return None;
        }
        let len = (1 + RING_PAGES) * 4096;
        // SAFETY: a shared read-write mapping of the event's ring.
        let ring = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if ring == libc::MAP_FAILED {
            // SAFETY: our descriptor.
            unsafe { libc::close(fd) };
            return None;
        }
        Some(Sampler {
            fd,
            ring: ring.cast(),
            len,
        })
    }

    /// The sampled instruction pointers of `f`.
    fn run(&self, f: impl FnOnce()) -> Vec<u64> {
        // SAFETY: PERF_EVENT_IOC_ENABLE / _DISABLE on our event.
        unsafe { libc::ioctl(self.fd, 0x2400, 0) };
        f();
        // SAFETY: as above.
        unsafe { libc::ioctl(self.fd, 0x2401, 0) };
        let word = |off: usize| {
            // SAFETY: `off` lies in the mapped ring (its first page, or a
            // record inside the data pages, 8-byte aligned).
            unsafe { std::ptr::read_volatile(self.ring.add(off).cast::<u64>()) }
        };
        // struct perf_event_mmap_page: data_head at 1024, data_tail at 1032.
        let (head, tail) = (word(1024), word(1032));
        let size = (RING_PAGES * 4096) as u64;
        let mut ips = Vec::new();
        let mut at = tail;
        while at + 8 <= head {
            let h = word(4096 + (at % size) as usize);
            let (ty, len) = (h as u32, h >> 48);
            if len == 0 {
                break;
            }
            // PERF_RECORD_SAMPLE with PERF_SAMPLE_IP: header, ip.
            if ty == 9 && len == 16 {
                ips.push(word(4096 + ((at + 8) % size) as usize));
            }
            at += len;
        }
        // Consumed: the next run's samples start after these.
        // SAFETY: data_tail, in the ring's first page (ours to write).
        unsafe { std::ptr::write_volatile(self.ring.add(1032).cast::<u64>(), head) };
        ips
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        // SAFETY: the mapping and descriptor made in `new`.
        unsafe {
            libc::munmap(self.ring.cast(), self.len);
            libc::close(self.fd);
        }
    }
}

/// Kernel text symbols by address, from `/proc/kallsyms` (module ones with
/// their `[module]`).
fn kallsyms() -> Vec<(u64, String)> {
    let mut v: Vec<(u64, String)> = std::fs::read_to_string("/proc/kallsyms")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let a = u64::from_str_radix(f.next()?, 16).ok()?;
            let t = f.next()?;
            let name = f.next()?;
            let m = f.next().unwrap_or("");
            (a != 0 && matches!(t, "t" | "T" | "w" | "W")).then(|| {
                (
                    a,
                    format!(
                        "{}{}{m}",
                        demangle_short(name),
                        if m.is_empty() { "" } else { " " }
                    ),
                )
            })
        })
        .collect();
    v.sort();
    v
}

/// A Rust v0 symbol as its identifiers joined by `::` (the crate's dropped,
/// generic arguments' names following the function's, cut to 72
/// characters): `region::access`, `vgpu::Vgpu::bar0_read::shared::KGpu…`.
/// Enough to tell the functions apart without a demangler in the image.
fn demangle_short(name: &str) -> String {
    let Some(rest) = name.strip_prefix("_R") else {
        return name.to_string();
    };
    let b = rest.as_bytes();
    let (mut parts, mut i) = (Vec::new(), 0);
    while i < b.len() {
        // Between identifiers: a disambiguator `s<base-62>_`, a back
        // reference `B<base-62>_` and a const argument `K<type><hex>_` carry
        // numbers that are no identifier lengths.
        let skip_to_underscore = match b[i] {
            b's' | b'B' => Some(i + 1),
            b'K' if b.get(i + 2) != Some(&b'p') => Some(i + 2),
            _ => None,
        };
        if let Some(mut j) = skip_to_underscore {
            while j < b.len() && b[j] != b'_' {
                j += 1;
            }
            i = j + 1;
            continue;
        }
        if b[i].is_ascii_digit() && b[i] != b'0' {
            let mut j = i;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            let n: usize = rest[i..j].parse().unwrap_or(0);
            // An identifier may start with `_` after its length when it
            // begins with a digit or `_` itself.
            let start = if b.get(j) == Some(&b'_') { j + 1 } else { j };
            if start + n <= b.len() {
                parts.push(&rest[start..start + n]);
                i = start + n;
                continue;
            }
        }
        i += 1;
    }
    let s = parts.iter().skip(1).copied().collect::<Vec<_>>().join("::");
    match s.char_indices().nth(72) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None if s.is_empty() => name.to_string(),
        None => s,
    }
}

/// The samples by function: (name, samples), most first.
fn by_function(ips: &[u64], syms: &[(u64, String)]) -> Vec<(String, usize)> {
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for &ip in ips {
        let name = if ip < 0x8000_0000_0000_0000 {
            "[user space]".to_string()
        } else {
            match syms.partition_point(|(a, _)| *a <= ip) {
                0 => "[unknown]".to_string(),
                i => syms[i - 1].1.clone(),
            }
        };
        *counts.entry(name).or_default() += 1;
    }
    let mut v: Vec<(String, usize)> = counts.into_iter().collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.1));
    v
}

/// Where a trapped 4-byte access spends its time, per driver (gvt_rs,
/// mtty, mbochs): a sampling profile of each trap loop (the CPU clock every
/// 50 µs; kernel IPs named from `/proc/kallsyms`, the module's Rust
/// functions included), each function's share of the loop printed as ns
/// per access.  The sampler's own interrupts cost a little on top.
#[test]
#[ignore = "runs inside the VM rig"]
fn bench_trap_path_profile() {
    let Some(sampler) = Sampler::new(50_000) else {
        println!("GVT-RIG: skip: perf_event_open refused a CPU-clock sampler");
        return;
    };
    let syms = kallsyms();
    let three = Three::open();
    let (ours, peer, bochs) = (&three.ours, &three.peer, &three.bochs);
    // Symbols again: the modules just loaded.
    let syms = if syms.iter().any(|(_, n)| n.ends_with("[mtty]")) {
        syms
    } else {
        kallsyms()
    };
    let cfg = VFIO_PCI_CONFIG_REGION_INDEX;
    const N: usize = 100_000;
    let bar0 = region_off(VFIO_PCI_BAR0_REGION_INDEX);
    let cases: [(&str, &VfioDevice, u64, bool); 7] = [
        ("gvt_rs BAR0 read", ours, bar0 + 0x4000, false),
        ("gvt_rs BAR0 write", ours, bar0 + 0x4000, true),
        ("gvt_rs config read", ours, region_off(cfg), false),
        ("mtty   BAR0 read", peer, bar0 + 4, false),
        ("mtty   BAR0 write", peer, bar0 + 4, true),
        ("mtty   config read", peer, region_off(cfg), false),
        (
            "mbochs BAR2 read",
            bochs,
            bochs.get_region_offset(VFIO_PCI_BAR2_REGION_INDEX),
            false,
        ),
    ];
    for (what, dev, pos, write) in cases {
        let mut b = [0u8; 4];
        let mut one = |i: usize| {
            if write {
                let v = (i as u32 & 0x7).to_le_bytes();
                assert_eq!(pwrite_at(dev, pos, &v), 4);
            } else {
                assert_eq!(pread_at(dev, pos, &mut b), 4);
            }
        };
        for i in 0..N / 10 {
            one(i);
        }
        let t0 = Instant::now();
        let ips = sampler.run(|| (0..N).for_each(&mut one));
        let ns = t0.elapsed().as_nanos() as f64 / N as f64;
        let prof = by_function(&ips, &syms);
        let total = ips.len().max(1) as f64;
        println!(
            "bench: trap profile, {what}: {ns:.0} ns per access (sampled), {} samples",
            ips.len()
        );
        let mut shown = 0.0;
        for (name, n) in prof.iter().take(20) {
            let share = *n as f64 / total;
            shown += share;
            println!(
                "bench:   {:>6.0} ns {:>5.1}%  {name}",
                share * ns,
                share * 100.0
            );
        }
        println!(
            "bench:   {:>6.0} ns {:>5.1}%  (the rest)",
            (1.0 - shown) * ns,
            (1.0 - shown) * 100.0
        );
        // Inside gvt_rs's own functions: the hottest places, as offsets
        // into the function (objdump -d of the module names the
        // instructions).
        let mut at: std::collections::BTreeMap<(String, u64), usize> = Default::default();
        for &ip in &ips {
            if let Some(i) = syms.partition_point(|(a, _)| *a <= ip).checked_sub(1) {
                if syms[i].1.ends_with("[gvt_rs]") {
                    *at.entry((syms[i].1.clone(), ip - syms[i].0)).or_default() += 1;
                }
            }
        }
        let mut at: Vec<_> = at.into_iter().collect();
        at.sort_by_key(|e| std::cmp::Reverse(e.1));
        for ((name, off), n) in at.iter().take(12) {
            println!(
                "bench:     {:>5.1}%  {name} +{off:#x}",
                *n as f64 * 100.0 / total
            );
        }
    }
    three.remove();
}

/// Runs on the host (not a VM test): the profile's names.
#[test]
fn profile_names_say_which_function() {
    assert_eq!(
        demangle_short("_RNvNtCseVymUVJ6ZYQ_11gvt_rs_main6region2rw"),
        "region::rw"
    );
    assert_eq!(
        demangle_short(
            "_RINvMs4_NtNtCseVymUVJ6ZYQ_11gvt_rs_main8gvt_core4vgpuINtB6_4VgpuKj20_E9bar0_readKj40_TNtNtBa_6shared4KGpuEEBa_"
        ),
        "gvt_core::vgpu::Vgpu::bar0_read::shared::KGpu"
    );
    assert_eq!(demangle_short("mutex_lock"), "mutex_lock");
    let syms = vec![
        (0xffff_0000_0000_1000, "a".to_string()),
        (0xffff_0000_0000_2000, "b".to_string()),
    ];
    let by = by_function(
        &[
            0x1234,
            0xffff_0000_0000_1800,
            0xffff_0000_0000_2004,
            0xffff_0000_0000_2008,
        ],
        &syms,
    );
    assert_eq!(by[0], ("b".to_string(), 2));
    assert!(by.contains(&("[user space]".to_string(), 1)));
}
