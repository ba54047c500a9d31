//! The vGPU's vblank (issue 8): pipe A's frame counter (`PIPE_FRMCOUNT_G4X`
//! 0x70040) advances at the monitor's refresh rate while the primary plane
//! is enabled, and the pipe A vblank interrupt (Ivybridge display-engine
//! block: `DEIMR` 0x44004, `DEIIR` 0x44008, `DEIER` 0x4400C, bit 0) reaches
//! the VMM through the vGPU's MSI eventfd when the guest unmasked it.  The
//! test plays the guest through BAR0 and the VMM through VFIO.  It counts
//! events and never asserts durations: sleeps only give the timer a chance
//! to run, and a missing interrupt fails after a generous bound instead of
//! hanging the rig.

use std::os::fd::AsRawFd;
use std::thread;
use std::time::{Duration, Instant};

use gvt_vmtests::gvt::*;
use gvt_vmtests::Mdev;
use vfio_bindings::bindings::vfio::*;
use vfio_ioctls::VfioDevice;
use vmm_sys_util::eventfd::EventFd;

const BAR0: u32 = VFIO_PCI_BAR0_REGION_INDEX;
/// How long to wait for one interrupt before calling it lost (a 60 Hz
/// vblank under TCG arrives in well under a second).
const LOST: Duration = Duration::from_secs(30);

struct Rig {
    dev: VfioDevice,
    msi: EventFd,
    m: Mdev,
}

impl Rig {
    /// A vGPU opened like a VMM does, memory decode and MSI on, its MSI
    /// wired to an eventfd.
    fn new() -> Rig {
        let m = Mdev::create(PARENT, &type_mb(32)).expect("create vGPU");
        let dev = open(&m);
        enable_mem(&dev);
        let msi = msi_on(&dev);
        Rig { dev, msi, m }
    }
    fn w(&self, off: u64, v: u32) {
        write32(&self.dev, BAR0, off, v);
    }
    fn r(&self, off: u64) -> u32 {
        read32(&self.dev, BAR0, off)
    }
    fn frames(&self) -> u32 {
        self.r(FRMCOUNT)
    }
    /// MSIs signalled since the last call (non-blocking).
    fn drain(&self) -> u64 {
        self.msi.read().unwrap_or(0)
    }
    /// Block until at least one MSI arrives; how many were counted.
    fn wait_msi(&self, what: &str) -> u64 {
        let mut p = libc::pollfd {
            fd: self.msi.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, LOST.as_millis() as i32) };
        assert_eq!(
            n,
            1,
            "{what}: no vblank MSI within {LOST:?} (frame counter {})",
            self.frames()
        );
        self.drain()
    }
    /// Poll the counter until it advanced by `n` frames from `from`.
    fn wait_frames(&self, from: u32, n: u32, what: &str) -> u32 {
        let start = Instant::now();
        loop {
            let f = self.frames();
            if f.wrapping_sub(from) >= n {
                return f;
            }
            assert!(
                start.elapsed() < LOST,
                "{what}: the frame counter is stuck at {f} (from {from})"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.dev.disable_msi();
    }
}

#[test]
#[ignore = "runs inside the VM rig"]
fn vblank_unmasked_interrupts_follow_the_frame_counter() {
    let r = Rig::new();
    r.w(DEIER, VBLANK);
    r.w(DEIMR, !VBLANK);
    assert_eq!(r.drain(), 0, "nothing before the plane is on");
    let c0 = r.frames();
    r.w(DSPACNTR, PLANE_ENABLE);
    const N: u64 = 10;
    let mut irqs = 0u64;
    while irqs < N {
        irqs += r.wait_msi("unmasked vblank");
        assert_eq!(
            r.r(DEIIR) & VBLANK,
            VBLANK,
            "the vblank bit is pending in DEIIR"
        );
        // The guest's handler acknowledges (write one to clear).
        r.w(DEIIR, VBLANK);
    }
    let c1 = r.frames();
    let advanced = c1.wrapping_sub(c0);
    eprintln!("vblank: {irqs} MSIs, frame counter {c0} -> {c1} (+{advanced})");
    // Each interrupt is at least one new vblank (several merge while the bit
    // is pending, never the other way round).
    assert!(
        u64::from(advanced) >= irqs,
        "{irqs} vblank interrupts but the counter advanced by {advanced}"
    );
    let stats = std::fs::read_to_string(r.m.sysfs_path().join("gvt/stats")).unwrap();
    assert!(
        stat(&r.m, "vblank_frames") >= u64::from(c1),
        "gvt/stats shows the frames:\n{stats}"
    );
}

#[test]
#[ignore = "runs inside the VM rig"]
fn vblank_masked_counts_frames_but_raises_nothing() {
    let r = Rig::new();
    r.w(DEIER, VBLANK);
    r.w(DEIMR, !0);
    r.w(DSPACNTR, PLANE_ENABLE);
    let c0 = r.frames();
    let c1 = r.wait_frames(c0, 5, "masked vblank");
    assert_eq!(
        r.drain(),
        0,
        "a masked vblank raises no MSI ({c0} -> {c1} frames)"
    );
    assert_eq!(r.r(DEIIR) & VBLANK, 0, "a masked vblank is not latched");
    // Unmasking now delivers again (the counter kept running meanwhile).
    r.w(DEIMR, !VBLANK);
    assert!(r.wait_msi("vblank after unmask") >= 1);
    assert!(r.frames().wrapping_sub(c1) >= 1);
    // Enabled in IMR but not in IER: latched, no interrupt.
    r.w(DEIER, 0);
    r.w(DEIIR, VBLANK);
    let _ = r.drain();
    let c2 = r.frames();
    r.wait_frames(c2, 3, "vblank with DEIER off");
    thread::sleep(Duration::from_millis(100));
    assert_eq!(r.drain(), 0, "DEIER off: no MSI");
}

#[test]
#[ignore = "runs inside the VM rig"]
fn vblank_counter_stops_with_the_plane() {
    let r = Rig::new();
    r.w(DEIER, VBLANK);
    r.w(DEIMR, !VBLANK);
    // Plane off from the start: the counter does not move, nothing fires.
    let c0 = r.frames();
    thread::sleep(Duration::from_millis(300));
    assert_eq!(r.frames(), c0, "no frames while the plane is off");
    assert_eq!(r.drain(), 0, "no vblank interrupts while the plane is off");
    // On: it runs.
    r.w(DSPACNTR, PLANE_ENABLE);
    r.wait_msi("vblank with the plane on");
    r.w(DEIIR, VBLANK);
    let c1 = r.wait_frames(c0, 3, "plane on");
    // Off again: it stops where it is, and no more vblanks are raised.
    r.w(DSPACNTR, 0);
    thread::sleep(Duration::from_millis(100));
    r.w(DEIIR, VBLANK);
    let _ = r.drain();
    let c2 = r.frames();
    assert!(
        c2.wrapping_sub(c0) >= c1.wrapping_sub(c0),
        "never backwards"
    );
    thread::sleep(Duration::from_millis(300));
    assert_eq!(r.frames(), c2, "the counter stopped with the plane");
    assert_eq!(
        r.drain(),
        0,
        "no vblank interrupts after the plane went off"
    );
    assert_eq!(r.r(DEIIR) & VBLANK, 0);
    // A device reset stops it too, and clears the interrupt block.
    r.w(DSPACNTR, PLANE_ENABLE);
    r.wait_msi("vblank before the reset");
    r.dev.reset();
    enable_mem(&r.dev);
    assert_eq!(r.r(DEIER), 0, "reset clears DEIER");
    let c3 = r.frames();
    thread::sleep(Duration::from_millis(200));
    assert_eq!(r.frames(), c3, "no frames after a reset (plane off)");
}
