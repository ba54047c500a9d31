//! Isolation under a hostile tenant (issue 12): what one VMM or guest can do
//! to the other vGPUs of the same host through the real driver.  Every test
//! name contains `isolation` (`cargo xtask vm-test isolation`); the two that
//! need two vCPUs also contain `smp2` (the rig boots two for them:
//! `cargo xtask vm-test smp2`; with one vCPU they are skipped).
//!
//! - `isolation_pin_path_*` (finding 2): a GGTT write of vGPU A names an IOVA
//!   whose VMM address is vGPU B's mmapped aperture, while B's vblank runs and
//!   B's BAR0 is hammered: pinning faults into B's fault handler from A's task.
//! - `isolation_smp2_unmap_*` (finding 4): two vGPUs in one container re-pin frames
//!   of a range while the VMM DMA-unmaps it, over and over.
//! - `isolation_scratch_*` (finding 3): what one session wrote to the scratch
//!   page is not there for the next one (close/open, VFIO_DEVICE_RESET).
//! - `isolation_noisy_neighbour_*` (findings 1, 5): vGPU A submits worst-case
//!   work from several threads while B and C run the reference workload; B and
//!   C keep their fair share of engine time and their latency.
//! - `isolation_smp2_*`: BAR0 traps of two vGPUs run in parallel.
//!
//! The tests that can deadlock the driver (or keep it busy for minutes) run
//! their body in a child process: this test binary, run again with only that
//! test and `GVT_ISOLATION_CHILD` set.  The parent streams the child's output
//! (each line prefixed with `[child]`), and when the child does not exit in
//! time it prints the kernel stack of every child thread, leaves the child
//! (threads stuck in the kernel cannot be killed) and fails; it also leaves a
//! mark so that the following tests of this binary fail at once instead of
//! hanging on the wedged driver.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use gvt_guest_driver::driver::user_irq;
use gvt_guest_driver::gvt_core::cmd::encode::{color_blt, sdi};
use gvt_guest_driver::gvt_core::cmd::{Space, MI_NOOP, MI_USER_INTERRUPT};
use gvt_guest_driver::gvt_core::gpu::GpuConfig;
use gvt_guest_driver::jobs;
use gvt_guest_driver::vfio::{RamConfig, VfioBackend};
use gvt_guest_driver::{Driver, Layout, BCS, RCS};
use gvt_vmtests::guest::{driver_with, stats, vgpu, RAM, TIMEOUT};
use gvt_vmtests::gvt::*;
use gvt_vmtests::Mdev;
use vfio_bindings::bindings::vfio::*;
use vfio_ioctls::{VfioContainer, VfioDevice};

const BAR0: u32 = VFIO_PCI_BAR0_REGION_INDEX;
const BAR2: u32 = VFIO_PCI_BAR2_REGION_INDEX;
const PAGE: u64 = 4096;

// ---- the child-process harness ------------------------------------------------

const CHILD_ENV: &str = "GVT_ISOLATION_CHILD";
/// Left by a test whose child wedged in the driver: what happened.
const WEDGED: &str = "/tmp/gvt-isolation-wedged";

/// Fail at once when an earlier test of this binary left the driver wedged.
fn not_wedged() {
    if let Ok(why) = fs::read_to_string(WEDGED) {
        panic!(
            "not run: an earlier test left the driver wedged ({})",
            why.trim()
        );
    }
}

/// Run `body` in a child process (see the module comment) that must exit
/// successfully within `limit`.
fn supervised(name: &str, limit: Duration, body: impl FnOnce()) {
    if std::env::var(CHILD_ENV).as_deref() == Ok(name) {
        body();
        return;
    }
    not_wedged();
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child test process");
    let pid = child.id();
    // Set when the child reports a deadlock (its watchdog then exits; a
    // child whose threads sit in the kernel never finishes exiting).
    let deadlock = Arc::new(AtomicBool::new(false));
    let relay = |r: Box<dyn Read + Send>| {
        let deadlock = deadlock.clone();
        thread::spawn(move || {
            for line in BufReader::new(r).lines() {
                match line {
                    Ok(l) => {
                        if l.contains("DEADLOCK:") {
                            deadlock.store(true, Ordering::SeqCst);
                        }
                        eprintln!("[child] {l}")
                    }
                    Err(_) => break,
                }
            }
        })
    };
    let out = relay(Box::new(child.stdout.take().unwrap()));
    let err = relay(Box::new(child.stderr.take().unwrap()));
    let t0 = Instant::now();
    let mut deadlock_at = None;
    loop {
        if deadlock_at.is_none() && deadlock.load(Ordering::SeqCst) {
            deadlock_at = Some(Instant::now());
        }
        if deadlock_at.is_some_and(|t| t.elapsed() > Duration::from_secs(10)) {
            break;
        }
        if let Some(st) = child.try_wait().expect("wait for the child") {
            let _ = out.join();
            let _ = err.join();
            assert!(
                st.success(),
                "{name}: the child failed ({st}) after {:.1?}; its output is above",
                t0.elapsed()
            );
            return;
        }
        if t0.elapsed() > limit {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let stacks = task_stacks(pid);
    let why = if deadlock_at.is_some() {
        "reported a deadlock and did not exit".to_string()
    } else {
        format!("did not exit within {limit:?}")
    };
    eprintln!("{name}: the child (pid {pid}) {why}; its threads:\n{stacks}");
    // SAFETY: plain kill of our own child.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    thread::sleep(Duration::from_secs(3));
    if child.try_wait().ok().flatten().is_none() {
        let d = stacks.lines().filter(|l| l.contains(") D ")).count();
        let _ = fs::write(
            WEDGED,
            format!("{name}: its child pid {pid} {why} nor on SIGKILL; {d} threads in D state"),
        );
        eprintln!("{name}: the child survived SIGKILL (threads stuck in the kernel); left it and marked the driver wedged");
    }
    panic!("{name}: the child {why} (deadlock or unbounded work in the driver); its threads' kernel stacks are above");
}

/// `comm`, state and kernel stack of every thread of `pid`.
fn task_stacks(pid: u32) -> String {
    let mut s = String::new();
    if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let stat = fs::read_to_string(t.path().join("stat")).unwrap_or_default();
            let wchan = fs::read_to_string(t.path().join("wchan")).unwrap_or_default();
            let stack = fs::read_to_string(t.path().join("stack")).unwrap_or_default();
            s.push_str(&format!(
                "--- task {} stat: {} wchan: {wchan}\n{stack}",
                t.file_name().to_string_lossy(),
                stat.trim()
            ));
        }
    }
    s
}

fn gettid() -> i32 {
    // SAFETY: no arguments.
    unsafe { libc::gettid() }
}

/// Progress counters of the threads of a stress run, and the watchdog that
/// fails the run when one of them stops.
struct Progress {
    names: Vec<&'static str>,
    counts: Vec<AtomicU64>,
    tids: Vec<AtomicU64>,
}

impl Progress {
    fn new(names: &[&'static str]) -> Arc<Progress> {
        Arc::new(Progress {
            names: names.to_vec(),
            counts: names.iter().map(|_| AtomicU64::new(0)).collect(),
            tids: names.iter().map(|_| AtomicU64::new(0)).collect(),
        })
    }
    fn register(&self, i: usize) {
        self.tids[i].store(gettid() as u64, Ordering::SeqCst);
    }
    fn tick(&self, i: usize) {
        self.counts[i].fetch_add(1, Ordering::SeqCst);
    }
    fn get(&self, i: usize) -> u64 {
        self.counts[i].load(Ordering::SeqCst)
    }
    fn line(&self) -> String {
        self.names
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{n} {}", self.get(i)))
            .collect::<Vec<_>>()
            .join(", ")
    }
    /// Print the threads' kernel stacks and exit the process (a test that
    /// deadlocked the driver cannot unwind: its threads sit in the kernel).
    fn deadlock(&self, what: &str, i: usize, stall: Duration, t0: Instant) -> ! {
        eprintln!(
            "{what}: DEADLOCK: {} made no progress for {stall:?} ({:.0?} into the run: {})",
            self.names[i],
            t0.elapsed(),
            self.line()
        );
        for (j, n) in self.names.iter().enumerate() {
            let tid = self.tids[j].load(Ordering::SeqCst);
            let p = format!("/proc/self/task/{tid}");
            eprintln!(
                "--- {n} (tid {tid}) stat: {} wchan: {}\n{}",
                fs::read_to_string(format!("{p}/stat"))
                    .unwrap_or_default()
                    .trim(),
                fs::read_to_string(format!("{p}/wchan")).unwrap_or_default(),
                fs::read_to_string(format!("{p}/stack")).unwrap_or_default()
            );
        }
        // SAFETY: ends the process; nothing is unwound.
        unsafe { libc::_exit(3) }
    }

    /// Wait until `done()`; every `check` counter must move at least once
    /// every `stall`, else [`Progress::deadlock`].
    fn watch(&self, what: &str, check: &[usize], stall: Duration, done: impl Fn() -> bool) {
        let t0 = Instant::now();
        let mut last: Vec<(u64, Instant)> = check
            .iter()
            .map(|&i| (self.get(i), Instant::now()))
            .collect();
        let mut shown = Instant::now();
        while !done() {
            thread::sleep(Duration::from_millis(200));
            if shown.elapsed() > Duration::from_secs(10) {
                eprintln!("{what}: {:.0?}: {}", t0.elapsed(), self.line());
                shown = Instant::now();
            }
            for (k, &i) in check.iter().enumerate() {
                let now = self.get(i);
                if now != last[k].0 {
                    last[k] = (now, Instant::now());
                } else if last[k].1.elapsed() > stall && !done() {
                    self.deadlock(what, i, stall, t0);
                }
            }
        }
    }
}

// ---- small helpers ----------------------------------------------------------------

/// An 8-byte GGTT entry write through BAR0 on the raw device fd.
fn pte_write(fd: i32, gm_page: u64, pte: u64) -> std::io::Result<()> {
    let off = (region_off(BAR0) + GGTT_BAR0 + gm_page * 8) as i64;
    let b = pte.to_le_bytes();
    // SAFETY: an 8-byte buffer; the caller keeps `fd` open.
    let n = unsafe { libc::pwrite(fd, b.as_ptr().cast(), 8, off) };
    if n == 8 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn bar0_read32(fd: i32, off: u64) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    // SAFETY: a 4-byte buffer; the caller keeps `fd` open.
    let n = unsafe {
        libc::pread(
            fd,
            b.as_mut_ptr().cast(),
            4,
            (region_off(BAR0) + off) as i64,
        )
    };
    if n == 4 {
        Ok(u32::from_le_bytes(b))
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Two vGPUs of the 32 MiB type opened by one VMM: one container, B's group
/// first, then A's (type1 notifies the last opened device first: A's
/// `dma_unmap` runs before B's).
fn two_in_one_container() -> (Mdev, Mdev, Arc<VfioContainer>, VfioDevice, VfioDevice) {
    let a = Mdev::create(PARENT, &type_mb(32)).expect("create vGPU A");
    let b = Mdev::create(PARENT, &type_mb(32)).expect("create vGPU B");
    let container = Arc::new(VfioContainer::new(None).expect("open /dev/vfio/vfio"));
    let dev_b = VfioDevice::new(&b.sysfs_path(), container.clone(), false).expect("open B");
    let dev_a = VfioDevice::new(&a.sysfs_path(), container.clone(), false).expect("open A");
    enable_mem(&dev_a);
    enable_mem(&dev_b);
    (a, b, container, dev_a, dev_b)
}

fn mark(v: u64) -> u32 {
    0x15A7_0000 | v as u32
}

// ---- 1. the pin path into another vGPU's fault handler -------------------------

const PIN_RAM_IOVA: u64 = 0x4000_0000;
/// Where the VMM DMA-maps its mapping of B's aperture slice.
const PIN_BAR_IOVA: u64 = 0x8000_0000;
/// Pages of B's aperture the VMM maps (and A's entries name).
const PIN_PAGES: u64 = 8;
const PIN_WRITES: u64 = 20_000;

/// Finding 2.  One VMM process opens A and B in one container, mmaps B's
/// aperture slice and DMA-maps that mapping (as QEMU does with every mmapped
/// BAR).  A's GGTT entries are rewritten to name those IOVAs (and back to
/// RAM, so each write pins anew), while B's vblank timer runs (plane on,
/// vblank unmasked, MSI wired), one thread rewrites B's GGTT entries and
/// reads B's PVINFO, and one reads B's `gvt/stats`.  Before each A write
/// that names B's aperture, A's thread moves B's entry behind that page
/// (which zaps the VMM's mapping of it), so the pin faults into B's fault
/// handler every time.
/// Every A write must return, B must keep working (vblank interrupts keep
/// coming, its aperture shows its RAM).
///
/// On the driver of 8b98663: A's write holds A's state lock and the GPU lock
/// across `vfio_pin_pages`; the pin faults into B's aperture handler, which
/// waits for B's state lock, whose holder (B's BAR0 access, the vblank work,
/// the stats read) waits for the GPU lock.  Run against it (1 vCPU): after
/// 52 A writes every thread stopped; the watchdog printed A's thread in
/// `fault_lock` <- `aperture_fault` <- `fixup_user_fault` <- `vaddr_get_pfns`
/// <- `vfio_iommu_type1_pin_pages` <- `gvt_rs_pin_gfn` <- `bar0_write`, B's
/// BAR0 reader in `access` (holding B's state lock, waiting for the GPU
/// lock), the stats reader in `gvt_rs_attr_show`, all in D state; the
/// child survived SIGKILL and the test failed after 46 s.
#[test]
#[ignore = "runs inside the VM rig"]
fn isolation_pin_path_two_vgpus_b_aperture_as_dma_target() {
    supervised(
        "isolation_pin_path_two_vgpus_b_aperture_as_dma_target",
        Duration::from_secs(240),
        pin_path_body,
    );
}

fn pin_path_body() {
    let (a, b, container, dev_a, dev_b) = two_in_one_container();
    let (aa, ab) = (attrs(&a), attrs(&b));
    let ram = guest_ram(&container, 2 * PIN_PAGES as usize, PIN_RAM_IOVA);
    for r in 0..2 * PIN_PAGES {
        ram.write32((r * PAGE) as usize, mark(r));
    }
    let (ap_a, ap_b0) = (aa.ap_base, ab.ap_base);
    let gm_b = move |j: u64| ap_b0 / PAGE + j;
    let gm_a = move |j: u64| ap_a / PAGE + j;
    for j in 0..PIN_PAGES {
        map_gtt(&dev_b, &ram, gm_b(j), j as usize);
    }
    // B's vblank: plane on, vblank unmasked, MSI to an eventfd.
    let msi = msi_on(&dev_b);
    write32(&dev_b, BAR0, DEIER, VBLANK);
    write32(&dev_b, BAR0, DEIMR, !VBLANK);
    write32(&dev_b, BAR0, DSPACNTR, PLANE_ENABLE);
    let f0 = read32(&dev_b, BAR0, FRMCOUNT);
    // B's aperture slice, mapped and DMA-mapped by the VMM.
    let ap_b = Mapping::new(&dev_b, BAR2, ab.ap_base, (PIN_PAGES * PAGE) as usize)
        .expect("mmap B's aperture");
    assert_eq!(ap_b.read32(0), mark(0), "B's GM page 0 is RAM page 0");
    // SAFETY: the mapping outlives the DMA mapping (unmapped below first).
    unsafe { container.vfio_dma_map(PIN_BAR_IOVA, (PIN_PAGES * PAGE) as usize, ap_b.ptr) }
        .expect("type1 accepts a DMA map of B's aperture mapping");
    let rejected0 = stats(&a).get("ggtt_rejected").copied();

    let p = Progress::new(&[
        "A PTE writes",
        "B BAR0 round",
        "B stats reads",
        "B vblank MSIs",
    ]);
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let (fa, fb) = (dev_a.as_raw_fd(), dev_b.as_raw_fd());
    let a_refused = Arc::new(AtomicU64::new(0));
    let ta = {
        let (p, stop, errors, a_refused) =
            (p.clone(), stop.clone(), errors.clone(), a_refused.clone());
        thread::spawn(move || {
            p.register(0);
            for k in 0..PIN_WRITES {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let j = k % PIN_PAGES;
                // Alternately B's aperture mapping and A's own RAM page.
                let on_b = (k / PIN_PAGES) % 2 == 0;
                if on_b {
                    // First move B's entry behind that page (as B's guest
                    // may at any time): the VMM's mapping of it is zapped,
                    // so pinning it faults into B's fault handler.
                    let r = j + PIN_PAGES * ((k / (2 * PIN_PAGES)) % 2);
                    if let Err(e) = pte_write(fb, gm_b(j), (PIN_RAM_IOVA + r * PAGE) | 1) {
                        errors
                            .lock()
                            .unwrap()
                            .push(format!("B PTE write before A's {k}: {e}"));
                    }
                }
                let pte = if on_b {
                    PIN_BAR_IOVA + j * PAGE
                } else {
                    PIN_RAM_IOVA + j * PAGE
                } | 1;
                // Naming B's aperture, A's write may be refused (an error
                // return is an answer too); on its own RAM it must work.
                match pte_write(fa, gm_a(j), pte) {
                    Err(e) if !on_b => errors
                        .lock()
                        .unwrap()
                        .push(format!("A PTE write {k} (own RAM): {e}")),
                    Err(_) => {
                        a_refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(()) => {}
                }
                p.tick(0);
            }
        })
    };
    let tb = {
        let (p, stop, errors) = (p.clone(), stop.clone(), errors.clone());
        thread::spawn(move || {
            p.register(1);
            let mut k = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let j = k % PIN_PAGES;
                let r = j + PIN_PAGES * ((k / PIN_PAGES) % 2);
                if let Err(e) = pte_write(fb, gm_b(j), (PIN_RAM_IOVA + r * PAGE) | 1) {
                    errors.lock().unwrap().push(format!("B PTE write {k}: {e}"));
                }
                for _ in 0..4 {
                    if let Err(e) = bar0_read32(fb, PVINFO) {
                        errors.lock().unwrap().push(format!("B PVINFO read: {e}"));
                    }
                }
                k += 1;
                p.tick(1);
            }
        })
    };
    let ts = {
        let (p, stop) = (p.clone(), stop.clone());
        let path = b.sysfs_path().join("gvt/stats");
        thread::spawn(move || {
            p.register(2);
            while !stop.load(Ordering::SeqCst) {
                let _ = fs::read_to_string(&path);
                p.tick(2);
                thread::sleep(Duration::from_millis(5));
            }
        })
    };
    // B's vblank MSIs, counted and acknowledged (DEIIR) as B's guest does.
    let tm = {
        let (p, stop) = (p.clone(), stop.clone());
        let msi = msi.try_clone().expect("dup the eventfd");
        thread::spawn(move || {
            p.register(3);
            while !stop.load(Ordering::SeqCst) {
                let mut pf = libc::pollfd {
                    fd: msi.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                if unsafe { libc::poll(&mut pf, 1, 100) } == 1 {
                    let n = msi.read().unwrap_or(0);
                    for _ in 0..n {
                        p.tick(3);
                    }
                    let _ = write_deiir(fb);
                }
            }
        })
    };
    let t0 = Instant::now();
    p.watch("pin_path", &[0, 1, 2, 3], Duration::from_secs(30), || {
        ta.is_finished()
    });
    stop.store(true, Ordering::SeqCst);
    p.watch("pin_path (stopping)", &[], Duration::from_secs(30), || {
        tb.is_finished() && ts.is_finished() && tm.is_finished()
    });
    ta.join().unwrap();
    tb.join().unwrap();
    ts.join().unwrap();
    tm.join().unwrap();
    let msis = p.get(3);
    let errs = errors.lock().unwrap().clone();
    eprintln!(
        "pin_path: {} in {:.1?}; vblank MSIs of B {msis}; A writes naming B's aperture refused with an error {}; errors {}{}",
        p.line(),
        t0.elapsed(),
        a_refused.load(Ordering::Relaxed),
        errs.len(),
        errs.first().map(|e| format!(" (first: {e})")).unwrap_or_default()
    );
    assert!(
        errs.is_empty(),
        "every trap returned without error: {errs:?}"
    );
    assert_eq!(p.get(0), PIN_WRITES, "every A PTE write returned");
    // B still works: vblank, frame counter, its aperture shows its RAM.
    let _ = msi.read();
    let mut pf = libc::pollfd {
        fd: msi.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    write_deiir(fb).unwrap();
    // SAFETY: one valid pollfd.
    assert_eq!(
        unsafe { libc::poll(&mut pf, 1, 30_000) },
        1,
        "B's vblank MSIs still come"
    );
    assert!(msis > 0, "B's vblank MSIs kept coming during the run");
    let f1 = read32(&dev_b, BAR0, FRMCOUNT);
    assert!(
        f1.wrapping_sub(f0) > 0,
        "B's frame counter advanced ({f0} -> {f1})"
    );
    for j in 0..PIN_PAGES {
        let v = ap_b.read32((j * PAGE) as usize);
        assert!(
            v == mark(j) || v == mark(j + PIN_PAGES),
            "B's aperture page {j} shows its RAM ({v:#x})"
        );
        assert_eq!(read32(&dev_b, BAR0, PVINFO), VGT_MAGIC as u32, "B's PVINFO");
    }
    // A works too: its entries back on its RAM.
    for j in 0..PIN_PAGES {
        map_gtt(&dev_a, &ram, gm_a(j), j as usize);
        assert_eq!(
            read32(&dev_a, BAR2, gm_a(j) * PAGE),
            mark(j),
            "A's GM page {j} on its RAM page {j}"
        );
    }
    let s = stats(&a);
    eprintln!(
        "pin_path: A ggtt_rejected {rejected0:?} -> {:?}, self_map_faults {:?}, fault_retries A {:?} B {:?}",
        s.get("ggtt_rejected"),
        s.get("self_map_faults"),
        s.get("fault_retries"),
        stats(&b).get("fault_retries")
    );
    container
        .vfio_dma_unmap(PIN_BAR_IOVA, (PIN_PAGES * PAGE) as usize)
        .expect("unmap B's aperture IOVA range");
    let _ = dev_b.disable_msi();
    drop(ap_b);
    drop(ram);
    drop(dev_a);
    drop(dev_b);
    a.remove().expect("remove A");
    b.remove().expect("remove B");
}

fn write_deiir(fd: i32) -> std::io::Result<()> {
    let b = VBLANK.to_le_bytes();
    // SAFETY: a 4-byte buffer on an open fd.
    let n = unsafe { libc::pwrite(fd, b.as_ptr().cast(), 4, (region_off(BAR0) + DEIIR) as i64) };
    if n == 4 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

// ---- 2. DMA unmap while the vGPUs re-pin ---------------------------------------

const RACE_IOVA: u64 = 0x6000_0000;
const RACE_PAGES: u64 = 16;
const RACE_CYCLES: u64 = 500;
/// Writer threads per vGPU, and the GM pages each rewrites.
const RACE_WRITERS: u64 = 2;
/// Writer threads on B (its state lock busy makes B's `dma_unmap` wait).
const RACE_B_WRITERS: u64 = 4;
const RACE_ENTRIES: u64 = 8;
/// Notification rounds one unmap may take: the first evicts every pin; a
/// pin already in flight then may need one more; pins into a range under
/// invalidation are refused, so never more.
const MAX_ROUNDS: u32 = 2;

/// Finding 4.  A and B in one container; on each, threads rewrite GGTT
/// entries to name frames of one DMA-mapped range (each write unpins the old
/// frame and pins the new one) while another thread unmaps and maps the
/// range again, `RACE_CYCLES` times (each time after the writers pinned
/// some frames of it).  The kernel's function tracer counts type1's
/// notification rounds of each unmap ([`Tracer`]; each round calls both
/// vGPUs' `dma_unmap`): at most `MAX_ROUNDS`, where type1 gives up with
/// `BUG_ON` after 11.
///
/// Run against 8b98663 (2 vCPUs), traced: `kernel BUG at
/// drivers/vfio/vfio_iommu_type1.c:1522!` (`BUG_ON(++retries > 10)`, RAX
/// 0xb, the range 0x60000000) in each of the 3 runs, within the first
/// few hundred cycles; the VM panicked and the rig reported the missing exit
/// status and the Oops.  The calibration counted `[1, 0]`.  (Untraced, three
/// runs of 300 and 1000 cycles completed: tracing type1's `mutex_lock`
/// slows the unmapping thread, which widens the window.)  Every unmap must complete (type1
/// retries its device notifications only 10 times before `BUG_ON`); both
/// vGPUs work afterwards.  A race between threads of a multi-threaded VMM:
/// it runs on two vCPUs (`smp2`), the writers beside the unmapping thread.
#[test]
#[ignore = "runs inside the VM rig"]
fn isolation_smp2_unmap_while_two_vgpus_repin_completes() {
    supervised(
        "isolation_smp2_unmap_while_two_vgpus_repin_completes",
        Duration::from_secs(420),
        unmap_body,
    );
}

/// The kernel's function tracer on one thread, counting type1's
/// notification rounds of each DMA unmap.  In type1 (7.3.4
/// `vfio_iommu_type1.c`) the unmap (`vfio_dma_do_unmap`) and its
/// notification (`vfio_notify_dma_unmap`) are inlined into
/// `vfio_iommu_type1_ioctl`: the unmap takes `iommu->lock` once, and each
/// round of device notifications takes `device_list_lock`, then
/// `iommu->lock` again; a map takes `iommu->lock` once.  So an ioctl that
/// calls `mutex_lock` `1 + 2r` times made `r` rounds.  (The driver's Rust
/// callbacks are not traceable: no `__fentry__`; their own `mutex_lock`
/// calls have a gvt_rs caller and are not counted.)
struct Tracer;

const TRACING: &str = "/sys/kernel/tracing";

impl Tracer {
    fn set(file: &str, v: &str) {
        fs::write(format!("{TRACING}/{file}"), v)
            .unwrap_or_else(|e| panic!("{TRACING}/{file} <- {v:?}: {e}"));
    }

    /// Trace thread `tid` from now on.
    fn start(tid: i32) -> Tracer {
        if !std::path::Path::new(TRACING).join("trace").exists() {
            let (src, dst, ty) = (c"tracefs", c"/sys/kernel/tracing", c"tracefs");
            // SAFETY: NUL-terminated strings, no data.
            let r = unsafe {
                libc::mount(src.as_ptr(), dst.as_ptr(), ty.as_ptr(), 0, std::ptr::null())
            };
            assert_eq!(r, 0, "mount tracefs: {}", std::io::Error::last_os_error());
        }
        Self::set("tracing_on", "0");
        Self::set("current_tracer", "nop");
        Self::set("buffer_size_kb", "8192");
        Self::set("set_ftrace_filter", "vfio_iommu_type1_ioctl\nmutex_lock\n");
        Self::set("set_ftrace_pid", &tid.to_string());
        Self::set("trace", "");
        Self::set("current_tracer", "function");
        Self::set("tracing_on", "1");
        Tracer
    }

    /// Stop; the notification rounds of each traced ioctl (0 for a map, or
    /// an unmap that found nothing pinned), and whether the trace buffer
    /// lost entries.
    fn stop(self) -> (Vec<u32>, bool) {
        Self::set("tracing_on", "0");
        let t = fs::read_to_string(format!("{TRACING}/trace")).expect("read the trace");
        Self::set("current_tracer", "nop");
        Self::set("set_ftrace_pid", "");
        Self::set("set_ftrace_filter", "");
        let lost = t.lines().any(|l| {
            l.starts_with("# entries-in-buffer") && {
                let n: Vec<&str> = l
                    .split(|c: char| !c.is_ascii_digit())
                    .filter(|x| !x.is_empty())
                    .collect();
                n.len() >= 2 && n[0] != n[1]
            }
        });
        let mut per = Vec::new();
        let mut cur: Option<u32> = None;
        for l in t.lines().filter(|l| !l.starts_with('#')) {
            if l.contains(": vfio_iommu_type1_ioctl <-") {
                per.extend(cur.take());
                cur = Some(0);
            } else if l.contains(": mutex_lock <-vfio_iommu_type1_ioctl") {
                if let Some(c) = cur.as_mut() {
                    *c += 1;
                }
            }
        }
        per.extend(cur);
        (
            per.into_iter()
                .map(|locks| locks.saturating_sub(1) / 2)
                .collect(),
            lost,
        )
    }
}

fn unmap_body() {
    let (a, b, container, dev_a, dev_b) = two_in_one_container();
    let (aa, ab) = (attrs(&a), attrs(&b));
    let len = (RACE_PAGES * PAGE) as usize;
    // The range's memory stays; only its DMA mapping comes and goes.
    // SAFETY: a fresh anonymous mapping, unmapped at the end.
    let mem = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(mem, libc::MAP_FAILED);
    let mem = mem.cast::<u8>();
    for r in 0..RACE_PAGES {
        // SAFETY: inside the mapping.
        unsafe { std::ptr::write_volatile(mem.add((r * PAGE) as usize).cast::<u32>(), mark(r)) };
    }
    // SAFETY: `mem` stays mapped until after the last DMA unmap.
    unsafe { container.vfio_dma_map(RACE_IOVA, len, mem) }.expect("map the range");

    // This thread unmaps, traced from here to the end of the race: the
    // tracer patches mutex_lock in and out only while nothing else of the
    // test runs (under TCG a patch while another vCPU runs the function can
    // leave it a stale int3).
    let tracer = Tracer::start(gettid());
    // Calibration of the round counting: one frame pinned (A's entry, read
    // through the aperture), nothing else running: the unmap takes exactly
    // one round, the map none.
    let gm_cal = aa.ap_base / PAGE + 1;
    pte_write(dev_a.as_raw_fd(), gm_cal, (RACE_IOVA + 3 * PAGE) | 1).expect("PTE write");
    assert_eq!(
        read32(&dev_a, BAR2, gm_cal * PAGE),
        mark(3),
        "A's entry on page 3 of the range"
    );
    container
        .vfio_dma_unmap(RACE_IOVA, len)
        .expect("calibration unmap");
    // SAFETY: as above.
    unsafe { container.vfio_dma_map(RACE_IOVA, len, mem) }.expect("calibration map");

    let names = [
        "unmap/map cycles",
        "A writer 0",
        "A writer 1",
        "B writer 0",
        "B writer 1",
        "B writer 2",
        "B writer 3",
    ];
    let p = Progress::new(&names);
    p.register(0);
    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    let mut i = 0;
    for (fd, base, n) in [
        (dev_a.as_raw_fd(), aa.ap_base, RACE_WRITERS),
        (dev_b.as_raw_fd(), ab.ap_base, RACE_B_WRITERS),
    ] {
        for t in 0..n {
            let (p, stop, refused) = (p.clone(), stop.clone(), refused.clone());
            i += 1;
            writers.push(thread::spawn(move || {
                p.register(i);
                let gm0 = base / PAGE + 16 + t * RACE_ENTRIES;
                let mut k = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let j = k % RACE_ENTRIES;
                    let r = (k * 7 + t) % RACE_PAGES;
                    if pte_write(fd, gm0 + j, (RACE_IOVA + r * PAGE) | 1).is_err() {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    k += 1;
                    p.tick(i);
                }
            }));
        }
    }
    // The watchdog, on its own thread: every thread, this one included,
    // must make progress.
    let done = Arc::new(AtomicBool::new(false));
    let wd = {
        let (p, done) = (p.clone(), done.clone());
        thread::spawn(move || {
            p.watch(
                "unmap",
                &[0, 1, 2, 3, 4, 5, 6],
                Duration::from_secs(30),
                || done.load(Ordering::SeqCst),
            )
        })
    };
    let t0 = Instant::now();
    let writes = |p: &Progress| (1..p.names.len()).map(|i| p.get(i)).sum::<u64>();
    for n in 0..RACE_CYCLES {
        // Let the writers pin frames of the range first, so that every
        // unmap has pins to invalidate.
        let (w0, t) = (writes(&p), Instant::now());
        while writes(&p) < w0 + 16 && t.elapsed() < Duration::from_millis(200) {
            thread::yield_now();
        }
        container
            .vfio_dma_unmap(RACE_IOVA, len)
            .unwrap_or_else(|e| panic!("unmap {n}: {e:?}"));
        // SAFETY: as above.
        unsafe { container.vfio_dma_map(RACE_IOVA, len, mem) }
            .unwrap_or_else(|e| panic!("map {n}: {e:?}"));
        p.tick(0);
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    done.store(true, Ordering::SeqCst);
    wd.join().unwrap();
    let (per, lost) = tracer.stop();
    eprintln!(
        "unmap: {} in {:.1?}; PTE writes refused {}",
        p.line(),
        t0.elapsed(),
        refused.load(Ordering::Relaxed)
    );
    eprintln!(
        "unmap: calibration: notification rounds of (unmap, map) with one frame pinned: {:?}",
        per.get(..2)
    );
    assert_eq!(
        per.get(..2),
        Some(&[1, 0][..]),
        "the round counting sees one round for an unmap of one pinned frame"
    );
    let per = &per[2..];
    assert_eq!(p.get(0), RACE_CYCLES);
    // Notification rounds per unmap (each round calls both vGPUs' dma_unmap).
    let mut hist = std::collections::BTreeMap::<u32, u32>::new();
    for &r in per.iter().filter(|&&r| r > 0) {
        *hist.entry(r).or_default() += 1;
    }
    let max_rounds = hist.keys().last().copied().unwrap_or(0);
    eprintln!(
        "unmap: type1 ioctls traced {}, unmaps that notified {}; notification rounds per unmap (rounds: unmaps) {hist:?}; max {max_rounds}{}",
        per.len(),
        hist.values().sum::<u32>(),
        if lost { " (the trace lost entries)" } else { "" }
    );
    assert!(
        !lost,
        "the trace buffer overflowed: the counts are incomplete"
    );
    assert!(
        hist.values().sum::<u32>() > 0,
        "some unmaps found frames pinned and notified the vGPUs"
    );
    assert!(
        max_rounds <= MAX_ROUNDS,
        "an unmap needed {max_rounds} notification rounds: pins into the range kept coming while it was being invalidated (type1 BUG_ONs after 11)"
    );
    // Both vGPUs work: an entry on a page of the (mapped) range shows it.
    for (dev, at, what) in [(&dev_a, &aa, "A"), (&dev_b, &ab, "B")] {
        let gm = at.ap_base / PAGE;
        pte_write(dev.as_raw_fd(), gm, (RACE_IOVA + 5 * PAGE) | 1).expect("PTE write");
        assert_eq!(
            read32(dev, BAR2, gm * PAGE),
            mark(5),
            "{what}'s GM page 0 on page 5 of the range"
        );
    }
    eprintln!("unmap: A stats {:?}", stats(&a));
    container
        .vfio_dma_unmap(RACE_IOVA, len)
        .expect("final unmap");
    // After the unmap nothing in the range is reachable: the entry is scratch.
    assert_ne!(
        read32(&dev_a, BAR2, aa.ap_base),
        mark(5),
        "A's entry left the unmapped range"
    );
    drop(dev_a);
    drop(dev_b);
    // SAFETY: our mapping, no longer DMA-mapped.
    unsafe { libc::munmap(mem.cast(), len) };
    a.remove().expect("remove A");
    b.remove().expect("remove B");
}

// ---- 3. scratch page contents across sessions ----------------------------------

const SCRATCH_PATTERN: u32 = 0x5EC2_E7A5;

/// Fill the page at graphics address `gma` (an entry that maps scratch)
/// through the BAR2 region; what the session then reads back there.
fn fill_scratch(dev: &VfioDevice, gma: u64) -> u32 {
    let page: Vec<u8> = (0..1024u32)
        .flat_map(|i| (SCRATCH_PATTERN ^ i).to_le_bytes())
        .collect();
    assert_eq!(pwrite(dev, BAR2, gma, &page).expect("aperture write"), 4096);
    read32(dev, BAR2, gma)
}

/// Every dword of the page at `gma`, read through the BAR2 region and
/// through an mmap of it: the number that are not zero.
fn nonzero(dev: &VfioDevice, gma: u64) -> (usize, usize) {
    let mut page = vec![0u8; 4096];
    assert_eq!(
        pread(dev, BAR2, gma, &mut page).expect("aperture read"),
        4096
    );
    let region = page.chunks(4).filter(|c| *c != [0, 0, 0, 0]).count();
    let map = Mapping::new(dev, BAR2, gma, 4096).expect("mmap the page");
    let mapped = (0..1024).filter(|i| map.read32(i * 4) != 0).count();
    (region, mapped)
}

/// Finding 3.  Every GGTT entry a guest has not written maps the vGPU's
/// scratch page (the aperture and the engines see it).  A session writes a
/// pattern there; the next session (after close and open, and after a
/// VFIO_DEVICE_RESET) must read zeros, through the region and the mapping,
/// at that entry and at another unmapped one.
///
/// Run against 8b98663: after close/open, and after RESET, all 1024 dwords
/// of the page read the previous session's pattern (through the region and
/// through the mapping, at both entries: one scratch page per vGPU).
#[test]
#[ignore = "runs inside the VM rig"]
fn isolation_scratch_is_scrubbed_across_close_open_and_reset() {
    not_wedged();
    let m = Mdev::create(PARENT, &type_mb(32)).expect("create vGPU");
    let at = attrs(&m);
    let (g1, g2) = (at.ap_base + 40 * PAGE, at.ap_base + 77 * PAGE);
    // Session 1: writes the pattern into scratch.
    let dev = open(&m);
    enable_mem(&dev);
    let back = fill_scratch(&dev, g1);
    eprintln!("scratch: session 1 wrote the pattern at unmapped GM {g1:#x}, reads back {back:#x}; GM {g2:#x} reads {:#x}", read32(&dev, BAR2, g2));
    assert!(
        back == SCRATCH_PATTERN || back == 0,
        "scratch reads what was written or zero, got {back:#x}"
    );
    drop(dev);
    // Session 2, after close/open.
    let dev = open(&m);
    enable_mem(&dev);
    let (r1, m1) = nonzero(&dev, g1);
    let (r2, m2) = nonzero(&dev, g2);
    eprintln!("scratch: after close/open: non-zero dwords at GM {g1:#x}: region {r1}, mapping {m1}; at {g2:#x}: {r2}, {m2} (first dword {:#x})", read32(&dev, BAR2, g1));
    let after_close = (r1, m1, r2, m2);
    // Within one session, across VFIO_DEVICE_RESET.
    let back = fill_scratch(&dev, g1);
    eprintln!("scratch: session 2 wrote the pattern, reads back {back:#x}; VFIO_DEVICE_RESET");
    dev.reset();
    enable_mem(&dev);
    let (r1, m1) = nonzero(&dev, g1);
    let (r2, m2) = nonzero(&dev, g2);
    eprintln!("scratch: after RESET: non-zero dwords at GM {g1:#x}: region {r1}, mapping {m1}; at {g2:#x}: {r2}, {m2} (first dword {:#x})", read32(&dev, BAR2, g1));
    assert_eq!(
        after_close,
        (0, 0, 0, 0),
        "the next session reads zeros where the previous one wrote (close/open)"
    );
    assert_eq!(
        (r1, m1, r2, m2),
        (0, 0, 0, 0),
        "after a reset the scratch page reads zeros"
    );
    drop(dev);
    m.remove().expect("remove vGPU");
}

// ---- 4. the noisy neighbour ----------------------------------------------------

/// B and C's measured windows.
const ALONE: Duration = Duration::from_secs(12);
const NOISY: Duration = Duration::from_secs(30);
/// B and C keep the blitter busy with honest fills of this many rows of
/// 4096 bytes, `FILL_DEPTH` queued at a time.
const FILL_ROWS: u32 = 256;
const FILL_DEPTH: u64 = 4;

/// B's and C's drivers back, what they measured, and every vGPU's engine
/// time at the start and the end of the window.
type Window = (
    [Driver<VfioBackend>; 2],
    [Victim; 2],
    Vec<(u64, u64)>,
    Vec<(u64, u64)>,
);

/// What one of B and C measured.
#[derive(Default, Clone, Debug)]
struct Victim {
    lat: Vec<Duration>,
    /// The longest loop iteration (the fills' TAIL writes, HEAD reads and
    /// the check included: every trap of the round).
    worst: Duration,
    fills: u64,
    slow: u64,
}

/// B's or C's workload until `stop`: the blitter kept busy with honest
/// fills of its own high GM; on the render engine the reference store job
/// (MI_STORE_DATA_IMM + MI_USER_INTERRUPT), timed from its TAIL write to the
/// user interrupt, its value checked.
fn victim(d: &mut Driver<VfioBackend>, k: u32, stop: &AtomicBool) -> Victim {
    let mut v = Victim::default();
    let surf = d.layout().surfaces() + (1 << 20);
    let mut r = 0u32;
    while !stop.load(Ordering::SeqCst) {
        let it = Instant::now();
        if d.head(BCS).unwrap() == d.tail(BCS) {
            for i in 0..FILL_DEPTH {
                let c = 0xFF00_0000 | (k << 16) | r;
                d.submit(
                    BCS,
                    &color_blt(
                        surf + i * u64::from(FILL_ROWS) * PAGE,
                        4096,
                        (0, 0, 1024, FILL_ROWS),
                        c,
                    ),
                )
                .unwrap();
                v.fills += 1;
            }
        }
        let value = 0x5000_0000 | (k << 16) | (r & 0xFFFF);
        let t0 = Instant::now();
        d.submit(
            RCS,
            &[
                &sdi(Space::Ggtt, jobs::store_addr(d), value)[..],
                &[MI_USER_INTERRUPT],
            ]
            .concat(),
        )
        .unwrap();
        let w = d
            .wait_all(user_irq(RCS), TIMEOUT)
            .unwrap_or_else(|e| panic!("vGPU {k} round {r}: {e}"));
        let l = t0.elapsed();
        v.lat.push(l);
        if l > Duration::from_millis(500) {
            v.slow += 1;
            eprintln!(
                "noisy: vGPU {k} store round {r}: {:.3} s from TAIL write to user interrupt",
                l.as_secs_f64()
            );
        }
        d.ack(w.iir & user_irq(RCS)).unwrap();
        jobs::check_store(d, value).unwrap_or_else(|e| panic!("vGPU {k} round {r}: {e}"));
        v.worst = v.worst.max(it.elapsed());
        r += 1;
    }
    // Let the queued fills finish (not timed).
    d.wait_idle(BCS, TIMEOUT)
        .unwrap_or_else(|e| panic!("vGPU {k} blitter: {e}"));
    v
}

fn p99(l: &[Duration]) -> Duration {
    let mut s = l.to_vec();
    s.sort();
    if s.is_empty() {
        return Duration::ZERO;
    }
    s[((s.len() * 99).div_ceil(100)).saturating_sub(1)]
}

fn weight(m: &Mdev) -> u64 {
    fs::read_to_string(m.sysfs_path().join("gvt/weight"))
        .expect("gvt/weight")
        .trim()
        .parse()
        .expect("weight")
}

/// Engine time (ns) of every vGPU: `(rcs, bcs)`.
fn engine_ns(ms: &[&Mdev]) -> Vec<(u64, u64)> {
    ms.iter()
        .map(|m| {
            let s = stats(m);
            (s["rcs_time_ns"], s["bcs_time_ns"])
        })
        .collect()
}

/// All refusals of `m` (every `reject_*` counter the driver has).
fn rejects(m: &Mdev) -> u64 {
    stats(m)
        .iter()
        .filter(|(k, _)| k.starts_with("reject_"))
        .map(|(_, v)| *v)
        .sum()
}

/// Nice the calling thread (the host's CPU scheduler, not the driver,
/// divides CPU time between VMM processes; niced, A's own threads leave the
/// CPU to B and C, so what remains is what the driver does on A's behalf).
fn nice_me() {
    // SAFETY: setpriority of the calling thread only.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, gettid() as libc::id_t, 19) };
}

/// A PPGTT with `pts` page tables of 512 present entries each (so loading
/// it shadows `pts * 512` entries, each a pin): its page directory at `pd`.
fn thrash_ppgtt(d: &mut Driver<VfioBackend>, pd: u64, pts: usize, data: &[u64]) {
    let mut pdes = vec![0u32; 1024];
    for i in 0..pts {
        let pt = d.alloc_page().expect("a RAM page for a page table");
        let ptes: Vec<u32> = (0..512)
            .flat_map(|e| {
                let g = data[e % data.len()] | 1;
                [g as u32, (g >> 32) as u32]
            })
            .collect();
        d.write_phys(pt, &ptes).unwrap();
        pdes[2 * i] = pt as u32 | 1;
        pdes[2 * i + 1] = (pt >> 32) as u32;
    }
    d.write(pd, &pdes).unwrap();
}

/// Findings 1 and 5, the noisy-neighbour test and benchmark.  B and C (the
/// same type, so the same weight as A) run their workload (`victim`) alone
/// for `ALONE`, then for `NOISY` while A, from four threads at nice 19,
/// submits worst-case work as fast as it can: on the blitter a 65535x65535
/// XY_COLOR_BLT with pitch 0 (256 KiB of span, 17 GB of writes; the auditor
/// may refuse it: counted) and honest fills of its whole high GM slice; on
/// the render engine TAIL storms alternating PP_DIR_BASE between two page
/// directories of 8 full page tables each (4096 pins per switch); and GGTT
/// PTE storms.  From the driver's `gvt/stats`: on the blitter, where all
/// three are backlogged, B and C each get at least 90% of their fair share
/// (weight / sum of weights) of the engine time charged in the window; and
/// their store jobs' submission-to-interrupt latency p99 stays within two
/// scheduler quanta of what it was without A (the worse of a window before
/// A starts and one after A's work drained).  Prints a `bench:` line.
///
/// Run against 8b98663, three times (before the second quiet window was
/// added): B's and C's store jobs took up to 55 s from TAIL write to
/// interrupt with A (p99 55.1 s; alone 0.50 s and 0.35 s on the loaded
/// host); p99 148 ms (alone 46 and 50 ms) while their rounds fell from 63/s
/// to 3.5/s; p99 34.7 s (alone 44 and 49 ms), honest fills 10.7/s instead of
/// 252/s.  The blitter shares looked fair every time (B 0.48-0.50, C
/// 0.50-0.51, A 0.005-0.015 of the engine time charged) because A's giant
/// blits and full-slice fills were charged microseconds; the test failed on
/// the latency.  With the second quiet window: p99 18.4 s (alone 14.0 and
/// 13.3 ms before and after), fills 14/s instead of 416/s, shares again
/// B 0.49, C 0.50, A 0.008.
#[test]
#[ignore = "runs inside the VM rig"]
fn isolation_noisy_neighbour_keeps_fair_share_and_latency() {
    supervised(
        "isolation_noisy_neighbour_keeps_fair_share_and_latency",
        Duration::from_secs(480),
        noisy_body,
    );
}

fn noisy_body() {
    let quantum = Duration::from_nanos(GpuConfig::DEFAULT.sched.quantum_ns);
    let (ma, mb, mc) = (vgpu(32), vgpu(32), vgpu(32));
    let w = [weight(&ma), weight(&mb), weight(&mc)];
    let ram_a = RamConfig { pages: 2048, ..RAM };
    let mut da = driver_with(&ma, ram_a);
    let db = driver_with(&mb, RAM);
    let dc = driver_with(&mc, RAM);
    let ms = [&ma, &mb, &mc];

    // A's weapons, prepared before anything is timed.
    let la = da.layout();
    let (pd1, pd2) = (la.page_directory(), la.page_directory() + PAGE);
    let data: Vec<u64> = (0..8).map(|_| da.alloc_page().unwrap()).collect();
    thrash_ppgtt(&mut da, pd1, 8, &data);
    thrash_ppgtt(&mut da, pd2, 8, &data);
    let giant_dst = la.high.base + (1 << 20);
    let slice_rows = ((la.high.size - (1 << 20)) / PAGE).min(65535) as u32;
    let pte_fd = da.bus().device().as_raw_fd();
    let pte_gm0 = la.aperture.base / PAGE + 200;
    let ram_iova = ram_a.iova;

    let run = |dv: [Driver<VfioBackend>; 2],
               window: Duration,
               with_a: Option<&(dyn Fn() + Sync)>|
     -> Window {
        let stop = AtomicBool::new(false);
        let go = Barrier::new(3);
        let [mut d1, mut d2] = dv;
        let (e0, e1, v1, v2) = thread::scope(|s| {
            let h1 = s.spawn(|| {
                go.wait();
                victim(&mut d1, 1, &stop)
            });
            let h2 = s.spawn(|| {
                go.wait();
                victim(&mut d2, 2, &stop)
            });
            if let Some(f) = with_a {
                f();
            }
            let e0 = engine_ns(&ms);
            go.wait();
            thread::sleep(window);
            let e1 = engine_ns(&ms);
            stop.store(true, Ordering::SeqCst);
            (e0, e1, h1.join().expect("B"), h2.join().expect("C"))
        });
        ([d1, d2], [v1, v2], e0, e1)
    };

    // Alone.
    let (dv, alone, _, _) = run([db, dc], ALONE, None);
    let p99_alone = [p99(&alone[0].lat), p99(&alone[1].lat)];
    eprintln!(
        "noisy: alone: B {} rounds p99 {:?}, C {} rounds p99 {:?}",
        alone[0].lat.len(),
        p99_alone[0],
        alone[1].lat.len(),
        p99_alone[1]
    );

    // With A.
    let stop_a = Arc::new(AtomicBool::new(false));
    let da = Arc::new(Mutex::new(da));
    // Giant blits, full-slice fills, PPGTT switches, PTE writes, engine
    // resets, TAIL writes that failed.
    let a_counts: Arc<[AtomicU64; 6]> = Arc::new(std::array::from_fn(|_| AtomicU64::new(0)));
    let rejects_a0 = rejects(&ma);
    let a_threads: Mutex<Vec<thread::JoinHandle<()>>> = Mutex::new(Vec::new());
    let start_a = || {
        let mut hs = a_threads.lock().unwrap();
        // Blitter: the degenerate giant, then two honest full-slice fills.
        let (d, stop, n) = (da.clone(), stop_a.clone(), a_counts.clone());
        hs.push(thread::spawn(move || {
            nice_me();
            while !stop.load(Ordering::SeqCst) {
                // A refusal may come as an error interrupt or as a failed
                // TAIL write: both are counted, A goes on.
                if d.lock()
                    .unwrap()
                    .submit(
                        BCS,
                        &color_blt(giant_dst, 0, (0, 0, 65535, 65535), 0xFFAA_0000),
                    )
                    .is_err()
                {
                    n[5].fetch_add(1, Ordering::Relaxed);
                }
                n[0].fetch_add(1, Ordering::Relaxed);
                for _ in 0..2 {
                    if d.lock()
                        .unwrap()
                        .submit(
                            BCS,
                            &color_blt(giant_dst, 4096, (0, 0, 1024, slice_rows), 0xFFAA_5500),
                        )
                        .is_err()
                    {
                        n[5].fetch_add(1, Ordering::Relaxed);
                    }
                    n[1].fetch_add(1, Ordering::Relaxed);
                }
                // Until the blitter is done or refused it (then reset it).
                loop {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let mut g = d.lock().unwrap();
                    let iir = g.iir().unwrap();
                    if iir & gvt_guest_driver::driver::error_irq(BCS) != 0 {
                        g.recover(BCS).unwrap();
                        n[4].fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    if g.head(BCS).unwrap() == g.tail(BCS) {
                        break;
                    }
                    drop(g);
                    thread::sleep(Duration::from_millis(5));
                }
            }
        }));
        // Render: PP_DIR_BASE alternating between the two directories, a
        // TAIL write after each switch, and plain TAIL storms.
        let (d, stop, n) = (da.clone(), stop_a.clone(), a_counts.clone());
        hs.push(thread::spawn(move || {
            nice_me();
            let mut k = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let mut g = d.lock().unwrap();
                g.set_ppgtt(if k % 2 == 0 { pd1 } else { pd2 }).unwrap();
                let mut refused = u64::from(
                    g.submit(
                        RCS,
                        &[&sdi(Space::Ppgtt, 0x40, k as u32)[..], &[MI_NOOP]].concat(),
                    )
                    .is_err(),
                );
                for _ in 0..4 {
                    refused += u64::from(g.submit(RCS, &[MI_NOOP, MI_NOOP]).is_err());
                }
                n[5].fetch_add(refused, Ordering::Relaxed);
                if k % 16 == 15 {
                    // Keep the ring from overrunning; reset after a refusal.
                    loop {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        let iir = g.iir().unwrap();
                        if iir & gvt_guest_driver::driver::error_irq(RCS) != 0 {
                            g.recover(RCS).unwrap();
                            n[4].fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        if g.head(RCS).unwrap() == g.tail(RCS) {
                            break;
                        }
                        drop(g);
                        thread::sleep(Duration::from_millis(5));
                        g = d.lock().unwrap();
                    }
                }
                drop(g);
                n[2].fetch_add(1, Ordering::Relaxed);
                k += 1;
            }
        }));
        // GGTT PTE storms, two threads, on the raw fd.
        for t in 0..2u64 {
            let (stop, n) = (stop_a.clone(), a_counts.clone());
            hs.push(thread::spawn(move || {
                nice_me();
                let mut k = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let gpa = ram_iova + (2000 + (k * 5 + t) % 48) * PAGE;
                    let _ = pte_write(pte_fd, pte_gm0 + t * 64 + k % 64, gpa | 1);
                    n[3].fetch_add(1, Ordering::Relaxed);
                    k += 1;
                }
            }));
        }
        drop(hs);
        // A gets going before the window opens.
        thread::sleep(Duration::from_secs(2));
    };
    let (dv, noisy, e0, e1) = run(dv, NOISY, Some(&start_a));
    stop_a.store(true, Ordering::SeqCst);
    let p99_noisy = [p99(&noisy[0].lat), p99(&noisy[1].lat)];
    let d: Vec<(u64, u64)> = e0
        .iter()
        .zip(&e1)
        .map(|(a, b)| (b.0 - a.0, b.1 - a.1))
        .collect();
    let bcs_total: u64 = d.iter().map(|x| x.1).sum();
    let rcs_total: u64 = d.iter().map(|x| x.0).sum();
    let wsum: u64 = w.iter().sum();
    let fair = |i: usize| w[i] as f64 / wsum as f64;
    let share = |x: u64, t: u64| if t == 0 { 0.0 } else { x as f64 / t as f64 };
    let n = |i: usize| a_counts[i].load(Ordering::Relaxed);
    for h in a_threads.into_inner().unwrap() {
        let t = Instant::now();
        while !h.is_finished() && t.elapsed() < Duration::from_secs(60) {
            thread::sleep(Duration::from_millis(50));
        }
        assert!(
            h.is_finished(),
            "A's thread stopped within a minute of being told to"
        );
        h.join().unwrap();
    }
    let rej_a = rejects(&ma) - rejects_a0;
    // The baseline again once A's queued work is gone (the host's load
    // drifts: the bound takes the worse of the two quiet windows).
    let t = Instant::now();
    loop {
        let mut g = da.lock().unwrap();
        let iir = g.iir().unwrap();
        for e in [BCS, RCS] {
            if iir & gvt_guest_driver::driver::error_irq(e) != 0 {
                g.recover(e).unwrap();
            }
        }
        if g.head(BCS).unwrap() == g.tail(BCS) && g.head(RCS).unwrap() == g.tail(RCS) {
            break;
        }
        drop(g);
        assert!(
            t.elapsed() < Duration::from_secs(180),
            "A's queued work drained within 3 minutes after A stopped"
        );
        thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "noisy: A's queued work drained {:.1} s after A stopped submitting",
        t.elapsed().as_secs_f64()
    );
    let (dv, alone2, _, _) = run(dv, ALONE, None);
    let p99_after = [p99(&alone2[0].lat), p99(&alone2[1].lat)];
    eprintln!(
        "noisy: alone again: B {} rounds p99 {:?}, C {} rounds p99 {:?}",
        alone2[0].lat.len(),
        p99_after[0],
        alone2[1].lat.len(),
        p99_after[1]
    );
    // The bound.  The latency is wall time in a one-vCPU TCG guest: the
    // guest's CPU is shared by B, C, the engine worker and A's four threads
    // (niced, but their traps run in the kernel on A's behalf), and the host
    // runs the simulated engine at whatever speed its own load allows.  The
    // scheduler's promise, 2 quanta of *engine* time, is proven in engine
    // time by the core's host tests (e2e/hostile.rs: a neighbour waking
    // mid-period is served within two rounds); what this test adds
    // is the real driver's order of magnitude: CPU sharing alone may stretch
    // a round by up to 7/3 (runnable threads with A / without), so the bound
    // is 4x the worse quiet window, plus 2 quanta, plus how far the two quiet
    // windows themselves differed.  The old driver's p99 with A was 18-55 s
    // against 14 ms alone (three orders of magnitude over this bound); one CI
    // run of the new one on 2 cores measured 20.8 ms against 12.8 ms alone.
    const STRETCH: u32 = 4;
    let jitter = [
        p99_alone[0].abs_diff(p99_after[0]),
        p99_alone[1].abs_diff(p99_after[1]),
    ];
    let p99_alone = [
        p99_alone[0].max(p99_after[0]),
        p99_alone[1].max(p99_after[1]),
    ];
    let bound = [
        STRETCH * p99_alone[0] + 2 * quantum + jitter[0],
        STRETCH * p99_alone[1] + 2 * quantum + jitter[1],
    ];
    println!(
        "bench: noisy neighbour (weights A {} B {} C {}, quantum {:?}): blitter share B {:.3} C {:.3} A {:.3} (fair {:.3}, B/fair {:.2}, C/fair {:.2}); render share B {:.3} C {:.3} A {:.3}; \
         store p99 B {:.2} ms (alone {:.2} ms, {:.2}x, bound {:.2} ms), C {:.2} ms (alone {:.2} ms, {:.2}x, bound {:.2} ms); rounds B {} C {} (alone {} {}); \
         longest round B {:.2} s C {:.2} s (alone {:.2} {:.2}); honest 1 MiB fills per second B {:.1} C {:.1} (alone {:.1} {:.1}); \
         A: {} giant blits, {} full-slice fills, {} PPGTT switches, {} PTE writes, {} engine resets, {} failed TAIL writes, {} refusals counted by the driver",
        w[0], w[1], w[2], quantum,
        share(d[1].1, bcs_total), share(d[2].1, bcs_total), share(d[0].1, bcs_total), fair(1),
        share(d[1].1, bcs_total) / fair(1), share(d[2].1, bcs_total) / fair(2),
        share(d[1].0, rcs_total), share(d[2].0, rcs_total), share(d[0].0, rcs_total),
        p99_noisy[0].as_secs_f64() * 1e3, p99_alone[0].as_secs_f64() * 1e3, p99_noisy[0].as_secs_f64() / p99_alone[0].as_secs_f64(), bound[0].as_secs_f64() * 1e3,
        p99_noisy[1].as_secs_f64() * 1e3, p99_alone[1].as_secs_f64() * 1e3, p99_noisy[1].as_secs_f64() / p99_alone[1].as_secs_f64(), bound[1].as_secs_f64() * 1e3,
        noisy[0].lat.len(), noisy[1].lat.len(), alone[0].lat.len(), alone[1].lat.len(),
        noisy[0].worst.as_secs_f64(), noisy[1].worst.as_secs_f64(), alone[0].worst.as_secs_f64(), alone[1].worst.as_secs_f64(),
        noisy[0].fills as f64 / NOISY.as_secs_f64(), noisy[1].fills as f64 / NOISY.as_secs_f64(),
        alone[0].fills as f64 / ALONE.as_secs_f64(), alone[1].fills as f64 / ALONE.as_secs_f64(),
        n(0), n(1), n(2), n(3), n(4), n(5), rej_a
    );
    eprintln!(
        "noisy: engine ns in the window (rcs, bcs): A {:?} B {:?} C {:?}",
        d[0], d[1], d[2]
    );
    for (i, who) in [(1usize, "B"), (2, "C")] {
        assert!(
            share(d[i].1, bcs_total) >= 0.9 * fair(i),
            "{who} got {:.3} of the blitter's engine time, below 90% of its fair share {:.3}",
            share(d[i].1, bcs_total),
            fair(i)
        );
        assert!(
            p99_noisy[i - 1] <= bound[i - 1],
            "{who}'s store latency p99 {:?} with A exceeds {:?} ({STRETCH} x alone {:?} + 2 quanta + quiet-window jitter {:?})",
            p99_noisy[i - 1],
            bound[i - 1],
            p99_alone[i - 1],
            jitter[i - 1]
        );
    }
    for m in [&mb, &mc] {
        let s = stats(m);
        assert_eq!(
            (rejects(m), s["hangs_total"]),
            (0, 0),
            "the victims were never refused nor blamed for a hang"
        );
    }
    drop(dv);
    drop(da);
}

// ---- 5. parallel BAR0 traps ----------------------------------------------------

const TRAPS: usize = 20_000;
const PTE_TRAPS: usize = 5_000;

/// Seconds for `TRAPS` 4-byte PVINFO reads on `dev` (the other arguments
/// are [`trap_ptes`]'s).
fn trap_reads(dev: &VfioDevice, _: u64, _: u64) -> f64 {
    let t = Instant::now();
    for _ in 0..TRAPS {
        assert_eq!(read32(dev, BAR0, PVINFO), VGT_MAGIC as u32);
    }
    t.elapsed().as_secs_f64()
}

/// Seconds for `PTE_TRAPS` GGTT entry writes on `dev` (GM page `gm`
/// alternately on two RAM pages: each write pins one page, unpins another).
fn trap_ptes(dev: &VfioDevice, ram_iova: u64, gm: u64) -> f64 {
    let t = Instant::now();
    for i in 0..PTE_TRAPS {
        pte_write(dev.as_raw_fd(), gm, (ram_iova + (i as u64 % 2) * PAGE) | 1).expect("PTE write");
    }
    t.elapsed().as_secs_f64()
}

/// Best of 3: (one vGPU after the other, both in parallel) seconds of `f`
/// on A and B.
fn serial_parallel(
    f: fn(&VfioDevice, u64, u64) -> f64,
    a: (&VfioDevice, u64, u64),
    b: (&VfioDevice, u64, u64),
) -> (f64, f64) {
    f(a.0, a.1, a.2);
    f(b.0, b.1, b.2);
    let (mut serial, mut parallel) = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        serial = serial.min(f(a.0, a.1, a.2) + f(b.0, b.1, b.2));
        let go = Barrier::new(2);
        let t = thread::scope(|s| {
            let h = s.spawn(|| {
                go.wait();
                f(b.0, b.1, b.2)
            });
            go.wait();
            let t0 = Instant::now();
            f(a.0, a.1, a.2);
            h.join().unwrap();
            t0.elapsed().as_secs_f64()
        });
        parallel = parallel.min(t);
    }
    (serial, parallel)
}

/// What a GGTT-write worker process is to do (see [`pte_worker`]).
const PTE_WORKER_ENV: &str = "GVT_ISOLATION_PTE_WORKER";

/// A VMM process of its own for one vGPU (the test below run again with
/// [`PTE_WORKER_ENV`] naming the vGPU): opens it with its own container and
/// RAM, says `READY`, waits for a line on stdin, does [`PTE_TRAPS`] GGTT
/// entry writes, prints `ELAPSED <seconds>`.  (Two VMs are two VMM
/// processes; in one process every pin takes the same mm's `mmap_lock` for
/// write, VFIO type1's locked_vm accounting, which would serialise them.)
fn pte_worker(uuid: &str) {
    let m = Mdev::existing(uuid);
    let (dev, ram) = open_with_ram(&m, 2, 0x4000_0000);
    enable_mem(&dev);
    let gm = attrs(&m).ap_base / PAGE + 5;
    trap_ptes(&dev, ram.iova, gm);
    println!("READY");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).expect("GO");
    let t = trap_ptes(&dev, ram.iova, gm);
    println!("ELAPSED {t}");
    drop(ram);
    drop(dev);
}

/// A started [`pte_worker`] process, ready.
struct PteWorker {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
}

impl PteWorker {
    fn start(m: &Mdev) -> PteWorker {
        let exe = std::env::current_exe().expect("current_exe");
        let mut child = Command::new(exe)
            .args([
                "isolation_smp2_parallel_bar0_traps_of_two_vgpus_scale",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(PTE_WORKER_ENV, &m.uuid)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn a worker");
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut w = PteWorker { child, out };
        w.wait_for("READY");
        w
    }
    fn wait_for(&mut self, prefix: &str) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                self.out.read_line(&mut line).expect("worker output") > 0,
                "the worker ended before {prefix}"
            );
            // The test harness prints `test NAME ... ` without a newline
            // before the worker's first line.
            if let Some(at) = line.find(prefix) {
                return line[at + prefix.len()..].trim().to_string();
            }
        }
    }
    fn go(&mut self) {
        use std::io::Write;
        writeln!(self.child.stdin.as_mut().unwrap(), "GO").expect("GO");
    }
    fn finish(mut self) {
        self.wait_for("ELAPSED");
        assert!(
            self.child.wait().expect("worker exit").success(),
            "a worker failed"
        );
    }
}

/// Best of 3: (A then B, A and B together) wall seconds of the GGTT-write
/// workers, each VMM in its own process.
fn serial_parallel_processes(a: &Mdev, b: &Mdev) -> (f64, f64) {
    let (mut serial, mut parallel) = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        let mut s = 0.0;
        for m in [a, b] {
            let mut w = PteWorker::start(m);
            let t0 = Instant::now();
            w.go();
            w.finish();
            s += t0.elapsed().as_secs_f64();
        }
        serial = serial.min(s);
        let (mut wa, mut wb) = (PteWorker::start(a), PteWorker::start(b));
        let t0 = Instant::now();
        wa.go();
        wb.go();
        wa.finish();
        wb.finish();
        parallel = parallel.min(t0.elapsed().as_secs_f64());
    }
    (serial, parallel)
}

/// Benchmark: how much faster two vGPUs take trapped BAR0 accesses at the
/// same time than one vGPU after the other (2.0: traps of different vGPUs
/// share no lock).  Two kinds: reads of a plain register
/// (the PVINFO magic; two threads of one process), and GGTT entry writes
/// (each pins and unpins a page of the VMM's RAM; two VMM processes, as two
/// VMs are).  Needs two vCPUs (the rig boots two for tests named `smp2`).
/// Prints the ratios.
///
/// The ratios are a benchmark, not an assertion (a timed assertion in a
/// TCG guest on a 2-core host is a coin toss: against 8b98663 the PVINFO
/// ratio was 1.09 in one run and 0.82 in the next, GGTT entry writes 0.46;
/// the new driver measured 1.00-1.26 on a loaded host).  What the test
/// asserts is that every trap of both vGPUs, serial and parallel, returned
/// the right value; that no shared lock is held across pinning is asserted
/// deterministically by the pin-path test above.
#[test]
#[ignore = "runs inside the VM rig"]
fn isolation_smp2_parallel_bar0_traps_of_two_vgpus_scale() {
    if let Ok(uuid) = std::env::var(PTE_WORKER_ENV) {
        return pte_worker(&uuid);
    }
    not_wedged();
    // SAFETY: plain sysconf.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    assert!(
        cpus >= 2,
        "this test needs 2 vCPUs ({cpus} online): the rig boots 2 for tests named smp2"
    );
    let (a, b) = (
        Mdev::create(PARENT, &type_mb(32)).unwrap(),
        Mdev::create(PARENT, &type_mb(32)).unwrap(),
    );
    let mut ratios = Vec::new();
    {
        let (da, ra) = open_with_ram(&a, 2, 0x4000_0000);
        let (db, rb) = open_with_ram(&b, 2, 0x4000_0000);
        enable_mem(&da);
        enable_mem(&db);
        let (ga, gb) = (attrs(&a).ap_base / PAGE + 5, attrs(&b).ap_base / PAGE + 5);
        let (serial, parallel) =
            serial_parallel(trap_reads, (&da, ra.iova, ga), (&db, rb.iova, gb));
        ratios.push(("PVINFO reads", TRAPS, serial, parallel));
    }
    let (serial, parallel) = serial_parallel_processes(&a, &b);
    ratios.push((
        "GGTT entry writes (two VMM processes)",
        PTE_TRAPS,
        serial,
        parallel,
    ));
    for &(what, n, serial, parallel) in &ratios {
        println!(
            "bench: parallel BAR0 traps, 2 vGPUs x {n} {what}, best of 3: one after the other {serial:.3} s, in parallel {parallel:.3} s, speed-up {:.2} (2.0: no shared lock; 1.0 or less: serialised)",
            serial / parallel
        );
    }
    a.remove().unwrap();
    b.remove().unwrap();
}

/// A's or B's blitter kept backlogged until `stop`: between 4 and 8 honest
/// fills of its own high GM queued in its ring at all times (refilled when
/// fewer than 4 are left, never waiting for it to drain: a vGPU whose queue
/// runs dry is idle, and the scheduler gives its turn to the other).
/// Returns the fills submitted.
fn backlog(d: &mut Driver<VfioBackend>, k: u32, stop: &AtomicBool) -> u64 {
    let surf = d.layout().surfaces() + (1 << 20);
    // 4 MiB per fill (1024 rows of 4 KiB): the engine, not the submitting
    // thread, must be the bottleneck, or neither vGPU is really backlogged.
    const ROWS: u32 = 4 * FILL_ROWS;
    let fill = |i: u64, c: u32| {
        color_blt(
            surf + (i % FILL_DEPTH) * u64::from(ROWS) * PAGE,
            4096,
            (0, 0, 1024, ROWS),
            c,
        )
    };
    let per = fill(0, 0).len() as u32 * 4;
    let ring = Layout::RING_PAGES * PAGE as u32;
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let queued = (d.tail(BCS) + ring - d.head(BCS).unwrap()) % ring;
        if queued >= 4 * per {
            thread::sleep(Duration::from_micros(200));
            continue;
        }
        for _ in 0..4 {
            let c = 0xFF00_0000 | (k << 16) | (n as u32 & 0xFFFF);
            d.submit(BCS, &fill(n, c))
                .unwrap_or_else(|e| panic!("vGPU {k} fill {n}: {e}"));
            n += 1;
        }
    }
    d.wait_idle(BCS, TIMEOUT)
        .unwrap_or_else(|e| panic!("vGPU {k} blitter: {e}"));
    n
}

/// A's share of the blitter time charged to A and B between `e0` and `e1`,
/// and the blitter's busy fraction of `window` (charged time / wall time).
fn share_a(e0: &[(u64, u64)], e1: &[(u64, u64)], window: Duration) -> (f64, f64) {
    let a = (e1[0].1 - e0[0].1) as f64;
    let b = (e1[1].1 - e0[1].1) as f64;
    (a / (a + b).max(1.0), (a + b) / window.as_nanos() as f64)
}

/// Issue 16: a live weight change takes effect while the vGPUs run.  A and B
/// (same type, same weight) keep their blitters backlogged; over a window
/// the blitter time the driver charged (`gvt/stats` `bcs_time_ns`) splits
/// about evenly.  Then `gvtctl modify A --live --attr gvt/weight=4W` (the
/// running vGPU, no restart); from one balancing period (100 ms) after the
/// change, A's share moves to its new fair share 4/5: at least 90% of it,
/// as the noisy-neighbour test holds B and C to.  Printed as a `bench:` line.
#[test]
#[ignore = "runs inside the VM rig"]
fn isolation_live_weight_change_moves_the_shares() {
    supervised(
        "isolation_live_weight_change_moves_the_shares",
        Duration::from_secs(600),
        live_weight_body,
    );
}

fn live_weight_body() {
    let (ma, mb) = (vgpu(32), vgpu(32));
    let w = weight(&ma);
    assert_eq!(w, weight(&mb), "same type, same weight");
    let (da, db) = (driver_with(&ma, RAM), driver_with(&mb, RAM));
    let ms = [&ma, &mb];
    let window = Duration::from_secs(3);
    let period = Duration::from_millis(100);
    let stop = AtomicBool::new(false);
    let (mut da, mut db) = (da, db);
    let (before, after, fills) = thread::scope(|s| {
        let ha = s.spawn(|| backlog(&mut da, 1, &stop));
        let hb = s.spawn(|| backlog(&mut db, 2, &stop));
        // Both backlogged before anything is measured.
        thread::sleep(4 * period);
        let e0 = engine_ns(&ms);
        thread::sleep(window);
        let e1 = engine_ns(&ms);
        let out = Command::new("gvtctl")
            .args([
                "--json",
                "modify",
                &ma.uuid,
                "--live",
                "--attr",
                &format!("gvt/weight={}", 4 * w),
            ])
            .output()
            .expect("run gvtctl");
        assert!(
            out.status.success(),
            "gvtctl modify --live: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        thread::sleep(period);
        let e2 = engine_ns(&ms);
        thread::sleep(window);
        let e3 = engine_ns(&ms);
        stop.store(true, Ordering::SeqCst);
        let fills = (ha.join().expect("A"), hb.join().expect("B"));
        ((e0, e1), (e2, e3), fills)
    });
    assert_eq!(weight(&ma), 4 * w, "the driver took the new weight");
    let (s0, u0) = share_a(&before.0, &before.1, window);
    let (s1, u1) = share_a(&after.0, &after.1, window);
    println!(
        "bench: live weight change: A's blitter share {s0:.3} at weights {w}:{w} (fair 0.500), \
         {s1:.3} from one period after {}:{w} (fair 0.800); blitter busy {u0:.2} and {u1:.2} \
         of the windows; fills A {} B {}",
        4 * w,
        fills.0,
        fills.1
    );
    assert!(
        (0.45..=0.55).contains(&s0),
        "equal weights: A's share {s0:.3} is not within 10% of 0.5"
    );
    assert!(
        s1 >= 0.9 * 0.8,
        "after the live change to {}:{w}, A's share {s1:.3} is below 90% of 0.8",
        4 * w
    );
    assert_eq!((rejects(&ma), rejects(&mb)), (0, 0), "honest work");
}
