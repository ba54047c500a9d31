//! Lock order between the aperture fault handler and a GGTT write, under
//! mmap/munmap pressure from a third thread of the same VMM process.
//!
//! The aperture fault runs with the process's mmap_lock held for read and
//! needs the vGPU's state lock; a GGTT PTE write holds the state lock and pins
//! the new page (`vfio_pin_pages`), which takes the same mmap_lock for read.
//! Two readers alone do not block each other, but a third thread queued for
//! the mmap_lock for write (mmap, munmap, mprotect) makes the rwsem block the
//! PTE writer's read behind it: PTE writer waits for the writer, the writer
//! for the faulting reader, the faulting reader for the PTE writer's state
//! lock.  All three sit in D state and the process cannot be killed.
//!
//! The driver avoided it first the way TTM does (try-lock, else drop the
//! mmap_lock, wait, VM_FAULT_RETRY).  Since the lock redesign of issue 12 the
//! fault handlers do not take the state lock at all: they take the vGPU's
//! `map` lock, which nothing holds across a pin or while waiting for an mm
//! lock (driver/kmod/mdev.rs, lock table), so the cycle cannot form and there
//! is no retry path left to count.  What the test checks is what that design
//! promises: all three threads keep going, reads raced PTE writes, and every
//! read shows a page the entry mapped.
//!
//! This test plays that VMM: T1 rewrites GGTT entries through BAR0 (each
//! write unpins the old guest RAM page, pins the new one and zaps the
//! aperture mapping), T2 reads the aperture mapping at those graphics pages
//! (each read after a rewrite faults), T3 maps, touches, mprotects and
//! unmaps anonymous memory.  A watchdog fails the test when a thread makes
//! no progress for [`STALL`] (a deadlocked process cannot be recovered: the
//! test cannot finish, but the message and the threads' kernel stacks are
//! printed first and the rig times the run out).  Each read is checked: the
//! value is the marker of some guest RAM page, and, when no write to that
//! entry overlapped the read, the marker of the page the entry maps.
//!
//! Checked against the bug: without the try-lock in the fault handlers the
//! watchdog fires, every time (aperture: 3 of 3 runs, once within the first
//! 11 PTE writes; display region: 1 of 1, after 7): T1 in `vaddr_get_pfns`
//! (mmap_read_lock) or `mm_lock_acct` (mmap_write_lock: type1 accounts the
//! pinned page in locked_vm) under the state lock, T2 in `aperture_fault` or
//! `display_fault` under the mmap_lock, T3 in `vm_mmap_pgoff`, all in D
//! state.  (Through `mm_lock_acct` two threads are enough.)

use std::fmt::Write as _;
use std::os::fd::AsRawFd;
use std::sync::atomic::{fence, AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use gvt_vmtests::gvt::*;
use gvt_vmtests::Mdev;
use vfio_bindings::bindings::vfio::*;
use vfio_ioctls::VfioDevice;

const BAR0: u32 = VFIO_PCI_BAR0_REGION_INDEX;
const BAR2: u32 = VFIO_PCI_BAR2_REGION_INDEX;

const RAM_IOVA: u64 = 0x4000_0000;
/// Guest RAM pages the entries are pointed at, in turn.
const RAM_PAGES: usize = 8;
/// Graphics pages whose entries T1 rewrites and T2 reads.
const GM_PAGES: usize = 4;
/// PTE writes T1 does (the run's length).
const WRITES: u64 = 16000;
/// No progress of a running thread for this long: a deadlock (a working
/// PTE write, fault or mmap takes milliseconds even under TCG).
const STALL: Duration = Duration::from_secs(60);

/// The marker at the start of guest RAM page `r` (and its complement at the
/// page's middle).
fn mark(r: usize) -> u32 {
    0xF417_0000 | r as u32
}

fn is_mark(v: u32) -> bool {
    v & 0xFFFF_0000 == 0xF417_0000 && ((v & 0xFFFF) as usize) < RAM_PAGES
}

/// What the threads share.
struct Shared {
    stop: AtomicBool,
    /// Progress: PTE writes done, aperture reads done, mmap rounds done.
    writes: AtomicU64,
    reads: AtomicU64,
    maps: AtomicU64,
    /// Reads checked against the entry's exact page (no overlapping write).
    exact: AtomicU64,
    /// Per entry: odd while T1 rewrites it (a sequence count, as a seqlock).
    seq: [AtomicU64; GM_PAGES],
    /// Per entry: the guest RAM page it maps (or is being switched to).
    target: [AtomicUsize; GM_PAGES],
    /// The first wrong value seen, or a failed call.
    bad: Mutex<Option<String>>,
    /// Thread ids of T1, T2, T3 (for the deadlock report).
    tids: [AtomicI32; 3],
}

impl Shared {
    fn fail(&self, msg: String) {
        let mut b = self.bad.lock().unwrap();
        if b.is_none() {
            *b = Some(msg);
        }
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A fixed buffer that `write!` fills without allocating: once the
/// process is deadlocked, anything that needs its mmap_lock (a heap that
/// grows: brk, mmap) blocks too, so the report is built in memory set aside
/// (and touched) before the run.
struct Report {
    buf: Vec<u8>,
    len: usize,
}

impl Report {
    fn new(cap: usize) -> Report {
        Report {
            buf: vec![b' '; cap],
            len: 0,
        }
    }

    fn push(&mut self, b: &[u8]) {
        let n = b.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&b[..n]);
        self.len += n;
    }

    /// Append the contents of `/proc/self/task/<tid>/<file>` (no allocation:
    /// the path is built on the stack, read straight into the buffer).
    fn proc_file(&mut self, tid: i32, file: &str) {
        let mut path = [0u8; 64];
        let mut w = Cursor {
            buf: &mut path,
            len: 0,
        };
        let _ = write!(w, "/proc/self/task/{tid}/{file}\0");
        // SAFETY: a NUL-terminated path in `path`; the read stays inside the
        // unused tail of `buf`.
        unsafe {
            let fd = libc::open(path.as_ptr().cast(), libc::O_RDONLY);
            if fd < 0 {
                return;
            }
            let room = self.buf.len() - self.len;
            let n = libc::read(fd, self.buf.as_mut_ptr().add(self.len).cast(), room);
            if n > 0 {
                self.len += n as usize;
            }
            libc::close(fd);
        }
    }

    /// Write it all to fd 2 (not through libtest's capture of `eprintln!`,
    /// which shows nothing until the test ends, and it never will).
    fn emit(&self) {
        // SAFETY: the filled part of our own buffer.
        unsafe { libc::write(2, self.buf.as_ptr().cast(), self.len) };
    }
}

impl std::fmt::Write for Report {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.push(s.as_bytes());
        Ok(())
    }
}

struct Cursor<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl std::fmt::Write for Cursor<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let b = s.as_bytes();
        let end = self.len + b.len();
        if end > self.buf.len() {
            return Err(std::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(b);
        self.len = end;
        Ok(())
    }
}

/// The calling thread's id.
fn gettid() -> i32 {
    // SAFETY: no arguments, no memory.
    unsafe { libc::gettid() }
}

/// A vGPU with guest RAM pages 0..RAM_PAGES (each with its markers) and GM
/// pages 0..GM_PAGES of its aperture slice mapping RAM pages 0..GM_PAGES.
fn setup() -> (Mdev, Attrs, VfioDevice, GuestRam) {
    let m = Mdev::create(PARENT, &type_mb(32)).expect("create vGPU");
    let a = attrs(&m);
    let (dev, ram) = open_with_ram(&m, RAM_PAGES, RAM_IOVA);
    enable_mem(&dev);
    for r in 0..RAM_PAGES {
        ram.write32(r * 4096, mark(r));
        ram.write32(r * 4096 + 2048, !mark(r));
    }
    for j in 0..GM_PAGES {
        map_gtt(&dev, &ram, a.ap_base / 4096 + j as u64, j);
    }
    (m, a, dev, ram)
}

#[test]
#[ignore = "runs inside the VM rig"]
fn fault_lock_pte_writes_vs_aperture_faults_vs_mmap() {
    let (m, a, dev, ram) = setup();
    let ap = Mapping::new(&dev, BAR2, a.ap_base, GM_PAGES * 4096).expect("mmap the aperture");
    for j in 0..GM_PAGES {
        assert_eq!(
            ap.read32(j * 4096),
            mark(j),
            "GM page {j} starts as guest RAM page {j}"
        );
    }
    stress(&m, &dev, a.ap_base / 4096, ap.ptr as usize, "aperture");
    drop(ap);
    drop(ram);
    drop(dev);
    m.remove().expect("remove vGPU");
}

// PVINFO display_ready, QUERY_GFX_PLANE (as tests/display.rs; the plane's
// registers are gvt_vmtests::gvt's).
const DISPLAY_READY: u64 = PVINFO + 0x804;
const PLANE_ON_XRGB8888: u32 = PLANE_ENABLE | FMT_XRGB8888;
const QUERY_GFX_PLANE: libc::c_ulong = vfio_ioc(14);
const DISPLAY_REGION: u32 = VFIO_PCI_NUM_REGIONS + 1;

/// The same race on the display region's fault handler: the shown plane
/// lies on the rewritten entries (a 64x64 XRGB8888 plane, 256-byte stride:
/// exactly GM_PAGES pages), so each write zaps the VMM's mapping of the
/// display region and the next read faults through `display_fault`.
#[test]
#[ignore = "runs inside the VM rig"]
fn fault_lock_pte_writes_vs_display_faults_vs_mmap() {
    let (m, a, dev, ram) = setup();
    let w32 = |off: u64, v: u32| write32(&dev, BAR0, off, v);
    w32(PIPEASRC, (63 << 16) | 63);
    w32(DSPASTRIDE, 256);
    w32(DSPASURF, a.ap_base as u32);
    w32(DSPACNTR, PLANE_ON_XRGB8888);
    w32(DISPLAY_READY, 1);
    // QUERY_GFX_PLANE(REGION, primary): the plane is shown, in the region.
    let mut q = [0u8; 64];
    q[0..4].copy_from_slice(&64u32.to_le_bytes());
    q[4..8].copy_from_slice(&(1u32 << 2).to_le_bytes());
    q[8..12].copy_from_slice(&1u32.to_le_bytes());
    ioctl_bytes(&dev, QUERY_GFX_PLANE, &mut q).expect("QUERY_GFX_PLANE");
    let field = |o: usize| u32::from_le_bytes([q[o], q[o + 1], q[o + 2], q[o + 3]]);
    assert_eq!(
        (field(36), field(56)),
        ((GM_PAGES * 4096) as u32, DISPLAY_REGION),
        "plane size, region index"
    );
    let disp =
        RoMap::region(&dev, DISPLAY_REGION, GM_PAGES * 4096).expect("mmap the display region");
    for j in 0..GM_PAGES {
        assert_eq!(
            disp.read32(j * 4096),
            mark(j),
            "display page {j} starts as guest RAM page {j}"
        );
    }
    stress(
        &m,
        &dev,
        a.ap_base / 4096,
        disp.ptr as usize,
        "display region",
    );
    drop(disp);
    drop(ram);
    drop(dev);
    m.remove().expect("remove vGPU");
}

/// T1, T2, T3 and the watchdog (see the file's comment) on the entries of GM
/// pages `gm0..gm0 + GM_PAGES`, T2 reading the mapping at `base` (page `j`
/// of it shows GM page `gm0 + j`).
fn stress(_m: &Mdev, dev: &VfioDevice, gm0: u64, base: usize, what: &str) {
    let sh = Arc::new(Shared {
        stop: AtomicBool::new(false),
        writes: AtomicU64::new(0),
        reads: AtomicU64::new(0),
        maps: AtomicU64::new(0),
        exact: AtomicU64::new(0),
        seq: std::array::from_fn(|_| AtomicU64::new(0)),
        target: std::array::from_fn(AtomicUsize::new),
        bad: Mutex::new(None),
        tids: std::array::from_fn(|_| AtomicI32::new(0)),
    });

    // T1: GGTT PTE writes through BAR0 (pin the new page, unpin the old one,
    // zap the aperture mapping), on the raw device fd.
    let fd = dev.as_raw_fd();
    let t1 = {
        let sh = sh.clone();
        thread::Builder::new()
            .name("t1-pte".into())
            .spawn(move || {
                sh.tids[0].store(gettid(), Ordering::SeqCst);
                for k in 0..WRITES {
                    if sh.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let j = (k % GM_PAGES as u64) as usize;
                    let r = (sh.target[j].load(Ordering::SeqCst) + 1 + (k as usize / GM_PAGES) % 3)
                        % RAM_PAGES;
                    let pte = (RAM_IOVA + r as u64 * 4096) | 1;
                    let off = region_off(BAR0) + GGTT_BAR0 + (gm0 + j as u64) * 8;
                    sh.seq[j].fetch_add(1, Ordering::SeqCst);
                    sh.target[j].store(r, Ordering::SeqCst);
                    let b = pte.to_le_bytes();
                    // SAFETY: an 8-byte buffer; the fd stays open until this
                    // thread is joined (or the test already failed).
                    let n = unsafe { libc::pwrite(fd, b.as_ptr().cast(), 8, off as i64) };
                    sh.seq[j].fetch_add(1, Ordering::SeqCst);
                    if n != 8 {
                        sh.fail(format!(
                            "PTE write {k} returned {n}: {}",
                            std::io::Error::last_os_error()
                        ));
                        break;
                    }
                    sh.writes.fetch_add(1, Ordering::SeqCst);
                    // Let the reader run with no write in flight too.
                    thread::yield_now();
                }
            })
            .expect("spawn T1")
    };

    // T2: CPU reads of the aperture mapping at those graphics pages.
    let t2 = {
        let sh = sh.clone();
        thread::Builder::new()
            .name("t2-fault".into())
            .spawn(move || {
                sh.tids[1].store(gettid(), Ordering::SeqCst);
                while !sh.stop.load(Ordering::SeqCst) {
                    for j in 0..GM_PAGES {
                        let s1 = sh.seq[j].load(Ordering::SeqCst);
                        let t = sh.target[j].load(Ordering::SeqCst);
                        // SAFETY: inside the aperture mapping, which outlives
                        // this thread (joined before it is unmapped).
                        let v = unsafe { std::ptr::read_volatile((base + j * 4096) as *const u32) };
                        // SAFETY: as above.
                        let w = unsafe { std::ptr::read_volatile((base + j * 4096 + 2048) as *const u32) };
                        fence(Ordering::SeqCst);
                        let s2 = sh.seq[j].load(Ordering::SeqCst);
                        // Each read sees some guest RAM page (a PTE write
                        // between the two may move the second to another).
                        if !is_mark(v) || !is_mark(!w) {
                            sh.fail(format!("GM page {j}: read {v:#x}/{w:#x}, not a guest RAM page's markers"));
                            return;
                        }
                        // No write to this entry around the reads: both from
                        // the page it maps.
                        if s1 == s2 && s1 % 2 == 0 {
                            if v != mark(t) || w != !v {
                                sh.fail(format!(
                                    "GM page {j}: read {v:#x}/{w:#x}, but its entry maps guest RAM page {t} ({:#x})",
                                    mark(t)
                                ));
                                return;
                            }
                            sh.exact.fetch_add(1, Ordering::SeqCst);
                        }
                        sh.reads.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
            .expect("spawn T2")
    };

    // T3: mmap, touch, mprotect, munmap: mmap_lock taken for write, over and
    // over, in the same process.
    let t3 = {
        let sh = sh.clone();
        thread::Builder::new()
            .name("t3-mmap".into())
            .spawn(move || {
                sh.tids[2].store(gettid(), Ordering::SeqCst);
                while !sh.stop.load(Ordering::SeqCst) {
                    // SAFETY: a fresh anonymous mapping, touched and unmapped
                    // here only.
                    unsafe {
                        let p = libc::mmap(
                            std::ptr::null_mut(),
                            2 * 4096,
                            libc::PROT_READ | libc::PROT_WRITE,
                            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                            -1,
                            0,
                        );
                        if p == libc::MAP_FAILED {
                            sh.fail(format!("mmap: {}", std::io::Error::last_os_error()));
                            return;
                        }
                        std::ptr::write_volatile(p.cast::<u32>(), 1);
                        libc::mprotect(p, 4096, libc::PROT_READ);
                        libc::munmap(p, 2 * 4096);
                    }
                    sh.maps.fetch_add(1, Ordering::SeqCst);
                }
            })
            .expect("spawn T3")
    };

    // Watchdog: every running thread must make progress.
    let start = Instant::now();
    let counters: [(&str, &AtomicU64, &thread::JoinHandle<()>); 3] = [
        ("T1 (PTE writes)", &sh.writes, &t1),
        ("T2 (mapping reads)", &sh.reads, &t2),
        ("T3 (mmap/munmap)", &sh.maps, &t3),
    ];
    let mut last = [(0u64, Instant::now()); 3];
    let mut report = Report::new(64 << 10);
    let mut tick = 0u32;
    let mut line = Report::new(256);
    loop {
        thread::sleep(Duration::from_millis(500));
        tick += 1;
        if tick % 30 == 0 {
            // Progress, every 15 s, also straight to fd 2.
            line.len = 0;
            let _ = writeln!(
                line,
                "fault_lock: {:.0?}: {} PTE writes, {} mapping reads, {} mmap rounds",
                start.elapsed(),
                sh.writes.load(Ordering::SeqCst),
                sh.reads.load(Ordering::SeqCst),
                sh.maps.load(Ordering::SeqCst),
            );
            line.emit();
        }
        if t1.is_finished() {
            sh.stop.store(true, Ordering::SeqCst);
        }
        if counters.iter().all(|c| c.2.is_finished()) {
            break;
        }
        for (i, (name, c, h)) in counters.iter().enumerate() {
            let now = c.load(Ordering::SeqCst);
            if now != last[i].0 || h.is_finished() {
                last[i] = (now, Instant::now());
            } else if last[i].1.elapsed() >= STALL {
                let _ = write!(
                    report,
                    "\nfault_lock: DEADLOCK: {name} made no progress for {STALL:?} ({:.0?} into the run: \
                     {} PTE writes, {} mapping reads, {} mmap rounds); the fault, the GGTT \
                     write and mmap wait on each other (state lock vs mmap_lock)\n",
                    start.elapsed(),
                    sh.writes.load(Ordering::SeqCst),
                    sh.reads.load(Ordering::SeqCst),
                    sh.maps.load(Ordering::SeqCst),
                );
                for (k, t) in ["T1", "T2", "T3"].iter().enumerate() {
                    let tid = sh.tids[k].load(Ordering::SeqCst);
                    let _ = write!(report, "--- {t} (tid {tid}) stat: ");
                    report.proc_file(tid, "stat");
                    let _ = write!(report, "--- {t} wchan: ");
                    report.proc_file(tid, "wchan");
                    let _ = write!(report, "\n--- {t} kernel stack:\n");
                    report.proc_file(tid, "stack");
                }
                report.emit();
                panic!("fault_lock: DEADLOCK: {name} made no progress for {STALL:?}");
            }
        }
    }
    t1.join().expect("T1");
    t2.join().expect("T2");
    t3.join().expect("T3");
    let elapsed = start.elapsed();
    if let Some(b) = sh.bad.lock().unwrap().take() {
        panic!("fault_lock: {b}");
    }
    let writes = sh.writes.load(Ordering::SeqCst);
    assert_eq!(writes, WRITES, "every PTE write returned");
    let exact = sh.exact.load(Ordering::SeqCst);
    assert!(
        exact > 0,
        "some aperture reads were checked against a stable entry"
    );

    // Quiet again: every entry shows its last page, through the CPU mapping
    // and through the BAR2 region.
    for j in 0..GM_PAGES {
        let t = sh.target[j].load(Ordering::SeqCst);
        // SAFETY: inside the mapping, which outlives this call.
        let v = unsafe { std::ptr::read_volatile((base + j * 4096) as *const u32) };
        assert_eq!(
            v,
            mark(t),
            "{what}: GM page {j} maps guest RAM page {t} (mapping)"
        );
        assert_eq!(
            read32(dev, BAR2, (gm0 + j as u64) * 4096),
            mark(t),
            "{what}: GM page {j} maps guest RAM page {t} (BAR2 region)"
        );
    }
    let (reads, maps) = (
        sh.reads.load(Ordering::SeqCst),
        sh.maps.load(Ordering::SeqCst),
    );
    eprintln!("fault_lock ({what}): {writes} PTE writes, {reads} reads ({exact} exact), {maps} mmap rounds in {elapsed:.1?}");
    // The race this test exists for happened: all three threads ran, and
    // some reads overlapped a rewrite of the entry they read.  A run without
    // that proves nothing about the lock order.
    assert!(
        writes > 0 && maps > 0,
        "{what}: a thread never ran ({writes} writes, {maps} mmap rounds)"
    );
    assert!(reads > exact, "{what}: no read overlapped a PTE write ({reads} reads, all exact): the race was never exercised");
}
