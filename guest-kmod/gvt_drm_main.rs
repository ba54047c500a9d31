// SPDX-License-Identifier: GPL-2.0
//! gvt_drm: the native Linux DRM/KMS driver of the gvt-sim vGPU (PCI
//! `1234:6776`), for the guests of gvt-rs.  A guest loads it like any GPU
//! driver: it binds by PCI ID, and gives the guest `/dev/dri/card0` and a
//! framebuffer console on the vGPU's screen.
//!
//! What it does, after i915 on GVT-g (docs/gvt-sim.md):
//! - **PVINFO** (BAR0 0x78000): checks the `VGT_MAGIC` and reads the two GM
//!   slices the mediator ballooned for this vGPU (aperture and high);
//!   allocates graphics memory **only inside them** ([`GmMaps`]).
//! - **GEM**: shmem objects (guest RAM).  A framebuffer the plane scans out
//!   is mapped into the vGPU's GGTT at `prepare_fb`: its pages' DMA
//!   addresses written as present PTEs into BAR0's GGTT view
//!   (0x800000 + 8·index), in a range of the driver's slices; unmapped (PTEs
//!   not present) at `cleanup_fb` once no plane state uses it.  Dumb buffers
//!   (64-byte aligned stride, what the plane needs) and `mmap` come from the
//!   GEM shmem helper.
//! - **KMS**: one primary plane (XRGB8888, XBGR8888, RGB565: the opaque
//!   formats gvt-sim scans out), one cursor plane (ARGB8888, 64×64,
//!   128×128 or 256×256: i9xx cursor A, §9.2), one CRTC (pipe A), one
//!   virtual encoder and one connector whose modes come from the monitor's
//!   EDID page (BAR0 0x79000) and whose status is its connected bit,
//!   polled every 10 s by DRM's output poll helper (no hotplug interrupt):
//!   a moved hotplug counter makes the driver take the new EDID, and DRM
//!   then sends the hotplug uevent ([`connector_detect_ctx`]).  A
//!   plane update writes `PIPEASRC`, `DSPASTRIDE`, `DSPACNTR` and last
//!   `DSPASURF` (the flip); a cursor update `CURAPOS`, `CURACNTR` and last
//!   `CURABASE`.
//! - **vblank**: the pipe A vblank interrupt (`DEIMR`/`DEIIR`/`DEIER` bit
//!   0, §8.3) over the vGPU's MSI; enabled by the vblank core while someone
//!   waits, and page-flip / commit events are sent from it.  The count is
//!   the hardware frame counter (`PIPE_FRMCOUNT_G4X`, §9.4: every vblank,
//!   also those whose interrupts merged while the guest was slow), the
//!   timestamps gvt-sim's vblank times (`PIPE_FRMTMSTMP`) moved into the
//!   guest's clock ([`crtc_get_vblank_timestamp`]).  The module
//!   parameter `vblank=0` turns it off: the atomic helpers then send the
//!   events at commit (`no_vblank`).  The rig tests both.
//! - **fbdev emulation** (`drm_client_setup`, the shmem fbdev helper), so
//!   fbcon draws the guest's console on the vGPU.
//! - **The mediated blitter** ([`Blitter`]): a 4-page BCS ring and a status
//!   page in coherent DMA memory, mapped into the GGTT inside the driver's
//!   slices.  A blit is `XY_COLOR_BLT` / `XY_SRC_COPY_BLT`, then
//!   `MI_STORE_DATA_IMM` of the next seqno into the status page and
//!   `MI_USER_INTERRUPT`, submitted by a TAIL write (audited and shadowed
//!   by the mediator, §7.3); it completes on the BCS user interrupt over
//!   the same MSI as vblank (a sleeping wait where the caller may sleep,
//!   else the seqno is polled), with a timeout.  A BCS error interrupt
//!   (refusal, fault, hang) or a timeout resets the blitter (GDRST bit 3)
//!   and programs its ring again; after 3 failures in a row it is given up
//!   and everything is drawn on the CPU, never wedging the guest.  fbcon's
//!   fills and copies (scrolling: `FBINFO_HWACCEL_COPYAREA` makes it
//!   SCROLL_MOVE where the kernel has
//!   `CONFIG_FRAMEBUFFER_CONSOLE_LEGACY_ACCELERATION`) go to it (`gvt_drm_helpers.c` wraps the shmem fbdev
//!   ops; the CPU draws whenever the blitter is busy, off or the
//!   framebuffer is not mapped).  debugfs `gvt_drm-<pci>/blit_stats`,
//!   `blit_fill` (a checked fill) and `blit_bench` (blitter vs CPU
//!   throughput, a `BENCH` line in the kernel log).  Module parameter
//!   `blit=0`: CPU only.
//!
//! **Binding choice.**  The kernel crate binds the PCI bus (used here:
//! [`pci::Driver`], the ID table, enabling memory decode and bus mastering)
//! and `drm_device`/GEM, but no KMS object, atomic helper, fbdev client or
//! shmem-helper entry point.  So, like the host module does for VFIO, the
//! driver binds what it calls module-locally: bindgen over the DRM headers
//! at build time (`Kbuild`, `drm_bindings_generated.rs`) and a small C file
//! (`gvt_drm_helpers.c`) for the macros (`DEFINE_DRM_GEM_FOPS`,
//! `devm_drm_dev_alloc`, the driver table) and static inlines (MMIO and
//! scatterlist accessors).  The DRM device, its KMS objects and every
//! callback are the C API's own objects; all of their logic is here.
//!
//! Lifetimes: the `gvt_drm_dev` (drm_device + KMS objects) is devm/drmm
//! managed; [`Gpu`] (this file's state) lives until the drm_device is
//! released (a drmm action frees it); BAR0 is unmapped at unbind, so every
//! hardware access is inside `drm_dev_enter`/`drm_dev_exit`, and unbind
//! unplugs the DRM device first.
//!
//! Locks: [`Gpu::maps`] (a mutex: the GGTT mappings and the slices'
//! allocation) is taken by `prepare_fb`/`cleanup_fb`/plane update, never
//! with another of ours held.

use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use kernel::prelude::*;
use kernel::sync::Mutex;
use kernel::{device::Core, new_mutex, pci};

/// Module-local bindings for the KMS/GEM helper API and the C shims.
#[allow(
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    dead_code,
    unreachable_pub
)]
#[allow(clippy::all, unsafe_op_in_unsafe_fn, missing_docs, improper_ctypes)]
mod b {
    // The kernel crate's bindings provide the types rust/bindgen_parameters
    // blocklists (`__kernel_size_t`, ...); ours shadow the rest.
    pub use kernel::bindings::*;
    use kernel::ffi;
    use pin_init::MaybeZeroable;
    // Mapped by hand, as rust/bindings does (blocklisted by bindgen_parameters).
    type __kernel_size_t = usize;
    type __kernel_ssize_t = isize;
    type __kernel_ptrdiff_t = isize;
    include!("drm_bindings_generated.rs");
}

// ---- the device (docs/gvt-sim.md) --------------------------------------

/// PVINFO page in BAR0 (§4), laid out as Linux's `struct vgt_if`.
const PVINFO: u32 = 0x78000;
const VGT_MAGIC: u64 = 0x4776_5447_7654_4776;
const PV_VERSION_MAJOR: u32 = PVINFO + 0x8;
const PV_VGT_ID: u32 = PVINFO + 0xC;
const PV_MAPPABLE_BASE: u32 = PVINFO + 0x40;
const PV_MAPPABLE_SIZE: u32 = PVINFO + 0x44;
const PV_NONMAPPABLE_BASE: u32 = PVINFO + 0x48;
const PV_NONMAPPABLE_SIZE: u32 = PVINFO + 0x4C;
const PV_DISPLAY_READY: u32 = PVINFO + 0x804;
/// Guest EDID page (§9.5).
const EDID_PAGE: u32 = 0x79000;
const EDID_STATUS: u32 = 0x79200;
const EDID_SIZE: u32 = 0x79204;
/// The monitor's hotplug counter: one more on every plug, unplug or EDID
/// change by the VMM (docs/gvt-sim.md, the EDID page).
const EDID_HOTPLUGS: u32 = 0x79208;
const EDID_MAX: usize = 512;
/// Display-engine interrupts (§8.3): bit 0 pipe A vblank.
const DEIMR: u32 = 0x44004;
const DEIIR: u32 = 0x44008;
const DEIER: u32 = 0x4400C;
const DE_PIPEA_VBLANK: u32 = 1;
/// Pipe A's frame counter and the time of its latest vblank (§9.4):
/// `PIPE_FRMCOUNT_G4X`, `PIPE_FRMTMSTMP` (µs of the host's clock, low 32
/// bits); both brought up to date when read.
const PIPEA_FRMCOUNT: u32 = 0x70040;
const PIPEA_FRMTMSTMP: u32 = 0x70048;
/// A timestamp sample taken this long (µs) after the vblank it reads says
/// nothing about the clocks' offset (the pipe was stopped, or the guest
/// was not running): not used to move the estimate up.
const TS_SAMPLE_MAX_US: i64 = 100_000;
/// How fast the offset estimate follows samples above it (1/2^n of the
/// difference per sample; a lower sample replaces it at once).
const TS_LEAK_SHIFT: u32 = 10;
/// Primary plane / pipe A (§9.1).
const PIPEASRC: u32 = 0x6001C;
const DSPACNTR: u32 = 0x70180;
const DSPASTRIDE: u32 = 0x70188;
const DSPASURF: u32 = 0x7019C;
const DSPCNTR_ENABLE: u32 = 1 << 31;
const DSPCNTR_FORMAT_SHIFT: u32 = 26;
/// Cursor A (§9.2): mode (bits 5:0), GGTT address, position.
const CURACNTR: u32 = 0x70080;
const CURABASE: u32 = 0x70084;
const CURAPOS: u32 = 0x70088;
/// The cursor sizes gvt-sim scans out (square, 32-bit ARGB), largest last.
const CURSOR_SIZES: [u32; 3] = [64, 128, 256];
/// Guest GGTT view (§5.1): one 8-byte PTE per 4 KiB of GM.
const GGTT_VIEW: u32 = 0x80_0000;
const GGTT_ENTRIES: u64 = 1 << 20;
const PTE_PRESENT: u64 = 1;
const PAGE: u64 = 4096;
/// Plane limits (§9.1).
const MAX_W: u32 = 8192;
const MAX_H: u32 = 4096;
const MAX_STRIDE: u32 = 32768;
const STRIDE_ALIGN: u32 = 64;

const fn fourcc(a: u8, b: u8, c: u8, d: u8) -> u32 {
    (a as u32) | (b as u32) << 8 | (c as u32) << 16 | (d as u32) << 24
}
const XRGB8888: u32 = fourcc(b'X', b'R', b'2', b'4');
const ARGB8888: u32 = fourcc(b'A', b'R', b'2', b'4');
const XBGR8888: u32 = fourcc(b'X', b'B', b'2', b'4');
const ABGR8888: u32 = fourcc(b'A', b'B', b'2', b'4');
const RGB565: u32 = fourcc(b'R', b'G', b'1', b'6');

/// The plane formats and their `DSPCNTR` format field (§9.1).
///
/// One plane, nothing to blend with: the alpha formats are not offered
/// (their alpha would be ignored, and DRM wants a blend-mode property then).
static FORMATS: [u32; 3] = [XRGB8888, XBGR8888, RGB565];
/// The cursor plane's one format: 32-bit ARGB, the alpha blended.
static CURSOR_FORMATS: [u32; 1] = [ARGB8888];

/// `CURACNTR`'s mode for an `n`×`n` ARGB cursor (i915's
/// `MCURSOR_MODE_*_ARGB_AX`).
fn curacntr_mode(n: u32) -> Option<u32> {
    match n {
        64 => Some(0x27),
        128 => Some(0x22),
        256 => Some(0x23),
        _ => None,
    }
}

/// `CURAPOS` for a position: sign and magnitude per axis (x bits 14:0,
/// sign 15; y bits 30:16, sign 31).  `None` past the 15-bit magnitude.
fn curapos(x: i32, y: i32) -> Option<u32> {
    let axis = |v: i32| {
        let m = v.unsigned_abs();
        (m <= 0x7FFF).then_some(m | if v < 0 { 0x8000 } else { 0 })
    };
    Some(axis(x)? | axis(y)? << 16)
}

fn dspcntr_format(fourcc: u32) -> Option<u32> {
    match fourcc {
        RGB565 => Some(5),
        XRGB8888 => Some(6),
        ARGB8888 => Some(7),
        XBGR8888 => Some(14),
        ABGR8888 => Some(15),
        _ => None,
    }
}

/// A GM slice `[base, base + size)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Slice {
    base: u64,
    size: u64,
}

impl Slice {
    fn end(&self) -> u64 {
        self.base + self.size
    }
}

/// One framebuffer object mapped into the GGTT.
#[derive(Clone, Copy, Default)]
struct Map {
    /// The `drm_gem_object` (its address; 0 = free entry).
    obj: usize,
    gm: u64,
    pages: u64,
    /// Plane states that hold it (prepare_fb .. cleanup_fb).
    refs: u32,
}

/// Most framebuffers mapped at once (a plane uses at most two: the shown
/// one and the next).
const MAX_MAPS: usize = 16;

/// The driver's graphics memory: what is mapped where, inside the slices.
struct GmMaps {
    slices: [Slice; 2],
    maps: [Map; MAX_MAPS],
}

impl GmMaps {
    fn find(&self, obj: usize) -> Option<usize> {
        self.maps.iter().position(|m| m.obj == obj && obj != 0)
    }

    /// First fit of `pages` pages in the slices (the high slice first: the
    /// CPU never needs the aperture for a shmem framebuffer).
    fn alloc(&self, pages: u64) -> Option<u64> {
        let len = pages.checked_mul(PAGE)?;
        for s in self.slices {
            let mut at = s.base;
            'retry: loop {
                let end = at.checked_add(len)?;
                if end > s.end() {
                    break;
                }
                for m in self.maps.iter().filter(|m| m.obj != 0) {
                    let mend = m.gm + m.pages * PAGE;
                    if at < mend && m.gm < end {
                        at = mend;
                        continue 'retry;
                    }
                }
                return Some(at);
            }
        }
        None
    }
}

/// The offset between the guest's clock and the host clock gvt-sim
/// timestamps vblanks with, estimated from samples (see
/// [`crtc_get_vblank_timestamp`]): µs in the upper 32 bits (wrapping, like
/// `PIPE_FRMTMSTMP`), a fraction of a µs in the lower 32; 0 = none yet
/// (an estimate of exactly 0 is taken as none: one more sample).
struct ClockOffset(AtomicU64);

impl ClockOffset {
    /// Take the sample `s` (guest time − vblank time, µs, wrapping; an upper
    /// bound of the offset, the excess being how late the guest read it):
    /// the lowest sample wins at once, a higher one pulls the estimate up
    /// by 1/2^[`TS_LEAK_SHIFT`] of the difference (the two clocks drift).
    /// Returns the new estimate's excess below `s` in µs (≥ 0) with its
    /// fraction, as a 32.32 fixed-point number.
    fn sample(&self, s: u32) -> u64 {
        let s_fp = u64::from(s) << 32;
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            let d = if cur == 0 {
                -1
            } else {
                i64::from(s.wrapping_sub((cur >> 32) as u32) as i32)
            };
            let new = if d < 0 {
                s_fp.max(1)
            } else if d <= TS_SAMPLE_MAX_US {
                cur.wrapping_add(((d as u64) << 32) >> TS_LEAK_SHIFT)
            } else {
                cur
            };
            match self
                .0
                .compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return (s_fp.wrapping_sub(new) as i64).max(0) as u64,
                Err(c) => cur = c,
            }
        }
    }
}

/// The Rust state of one bound vGPU.
#[pin_data]
struct Gpu {
    mmio: usize,
    /// The `gvt_drm_dev` (its blitter wait queue).
    gd: usize,
    /// vblank interrupts are on (the module parameter).
    vblank: bool,
    blt: Blitter,
    #[pin]
    maps: Mutex<GmMaps>,
    /// Guest clock − host vblank clock (vblank timestamps).
    clock: ClockOffset,
    /// The hotplug counter the connector's EDID was last read at
    /// (`connector_detect_ctx`); `u32::MAX` + 1 states before the first.
    hotplugs: AtomicU64,
}

impl Gpu {
    fn rd32(&self, off: u32) -> u32 {
        // SAFETY: `mmio` is BAR0 (16 MiB) mapped for the bound device; every
        // caller is inside `drm_dev_enter` (or probe) and `off` is a register
        // offset of docs/gvt-sim.md, below 16 MiB and dword aligned.
        unsafe { b::gvt_drm_rd32(self.mmio as *mut c_void, off) }
    }
    fn wr32(&self, off: u32, v: u32) {
        // SAFETY: as in `rd32`.
        unsafe { b::gvt_drm_wr32(self.mmio as *mut c_void, off, v) }
    }
    fn wr64(&self, off: u32, v: u64) {
        // SAFETY: as in `rd32`; `off` is qword aligned (a GGTT view entry).
        unsafe { b::gvt_drm_wr64(self.mmio as *mut c_void, off, v) }
    }
    fn write_pte(&self, index: u64, v: u64) {
        if index < GGTT_ENTRIES {
            self.wr64(GGTT_VIEW + (index as u32) * 8, v);
        }
    }
}

fn is_err<T>(p: *const T) -> bool {
    (p as usize) >= (-4095isize) as usize
}

fn err_of<T>(p: *const T) -> c_int {
    p as isize as c_int
}

/// The `gvt_drm_dev` of a DRM device of this driver.
///
/// # Safety
/// `drm` is the `drm` member of a live `gvt_drm_dev`.
unsafe fn gdev(drm: *mut b::drm_device) -> *mut b::gvt_drm_dev {
    const _: () = assert!(core::mem::offset_of!(b::gvt_drm_dev, drm) == 0);
    drm.cast()
}

/// The [`Gpu`] of a DRM device of this driver.
///
/// # Safety
/// `drm` is the `drm` member of a live `gvt_drm_dev` set up by probe.
unsafe fn gpu<'a>(drm: *mut b::drm_device) -> &'a Gpu {
    // SAFETY: the caller's contract; `rs` is set before the device is
    // registered or any KMS object exists, and freed only when the
    // drm_device is released (drmm action), after every callback.
    unsafe { &*((*gdev(drm)).rs as *const Gpu) }
}

/// Runs `f` with the device present (not unplugged); false if it is gone.
fn with_hw(drm: *mut b::drm_device, f: impl FnOnce()) -> bool {
    let mut idx: c_int = 0;
    // SAFETY: `drm` is a live DRM device (a callback argument's device).
    if !unsafe { b::drm_dev_enter(drm, &mut idx) } {
        return false;
    }
    f();
    // SAFETY: paired with the successful `drm_dev_enter` above.
    unsafe { b::drm_dev_exit(idx) };
    true
}

// ---- the blitter (BCS: docs/gvt-sim.md §3.1, §7, §8.1, §10.1) --------------

/// The blitter's ring registers (BCS block at 0x22000).
const BCS_TAIL: u32 = 0x22030;
const BCS_HEAD: u32 = 0x22034;
const BCS_START: u32 = 0x22038;
const BCS_CTL: u32 = 0x2203C;
const BCS_EIR: u32 = 0x220B0;
/// GT interrupts (§8.1): bit 22 BCS user interrupt, bit 25 BCS error
/// (refused submission, engine fault, hang).
const GTIMR: u32 = 0x44014;
const GTIIR: u32 = 0x44018;
const GTIER: u32 = 0x4401C;
const GT_BCS_USER: u32 = 1 << 22;
const GT_BCS_ERROR: u32 = 1 << 25;
/// GDRST bit 3: reset this vGPU's blitter (§10.1).
const GDRST: u32 = 0x941C;
const GDRST_BCS: u32 = 1 << 3;
/// Commands (§7.2).
const MI_NOOP: u32 = 0;
const MI_USER_INTERRUPT: u32 = 0x02 << 23;
/// MI_STORE_DATA_IMM, GGTT, one dword (4 dwords).
const MI_SDI_GGTT: u32 = (0x20 << 23) | (1 << 22) | 2;
/// XY_COLOR_BLT, write alpha and RGB, 7 dwords.
const XY_COLOR_BLT: u32 = (2 << 29) | (0x50 << 22) | (3 << 20) | 5;
/// XY_SRC_COPY_BLT, write alpha and RGB, 10 dwords.
const XY_SRC_COPY_BLT: u32 = (2 << 29) | (0x53 << 22) | (3 << 20) | 8;
/// DW1: 32 bpp and the ROP (0xF0 pattern copy: fill; 0xCC source copy).
const BLT_FILL_32: u32 = (3 << 24) | (0xF0 << 16);
const BLT_COPY_32: u32 = (3 << 24) | (0xCC << 16);
/// The ring: 4 pages; then one status page (the seqno at +0).
const RING_PAGES: u64 = 4;
const RING_BYTES: u32 = (RING_PAGES * PAGE) as u32;
const BLT_PAGES: u64 = RING_PAGES + 1;
/// How long a blit may take (wall clock, nested TCG included) before the
/// driver takes it for a hang and resets its blitter.
const BLT_TIMEOUT_MS: u32 = 3000;
/// Failed blits in a row after which the blitter is given up (CPU only):
/// a vGPU the mediator put in the failed state refuses everything.
const BLT_MAX_FAILURES: u32 = 3;
/// Blit coordinates are 16 bits, the pitch 15 (§7.2).
const BLT_MAX_COORD: u32 = 0xFFFF;
const BLT_MAX_PITCH: u32 = 0x7FFF;
/// The GM map entry of the driver's own ring and status page.
const OWN_MAP: usize = usize::MAX;

/// A framebuffer object the blitter may address: mapped in the GGTT.
#[derive(Default)]
struct Target {
    /// The `drm_gem_object` (0 = free entry).
    obj: AtomicUsize,
    gm: AtomicU64,
    pages: AtomicU64,
}

/// Why a blit was not done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BltErr {
    /// Not for the blitter (off, busy, unmapped, a shape it cannot do):
    /// the caller draws on the CPU.
    NotHere,
    /// The vGPU reported an error (refusal, fault, hang) or the blit did
    /// not complete in time: the blitter was reset.
    Failed,
}

/// The driver's blitter: one ring of its own in its GM slices, used
/// synchronously by one owner at a time ([`Blitter::try_own`]).
///
/// Submission: the commands, `MI_STORE_DATA_IMM` of the next seqno to the
/// status page, `MI_USER_INTERRUPT`, then TAIL.  Completion: the seqno in
/// the status page, on the BCS user interrupt over MSI (a sleeping wait
/// woken by [`irq_handler`]) or polled (fbcon draws where it may not
/// sleep).  Recovery: on the BCS error interrupt or a timeout the blitter
/// is reset (GDRST) and its ring programmed again; after
/// [`BLT_MAX_FAILURES`] failures in a row it is given up.
#[derive(Default)]
struct Blitter {
    /// Usable (set up, not given up, device bound).
    up: AtomicBool,
    /// The engine's owner holds it: ring, tail and seqno are the owner's.
    busy: AtomicBool,
    /// Stopped for good ([`Gpu::blt_fini`], unbind): `busy` stays set, no
    /// blit runs again and nobody may wait to own the engine.
    finished: AtomicBool,
    /// CPU address of the ring and status page (coherent DMA memory).
    cpu: AtomicUsize,
    /// Their GGTT address.
    gm: AtomicU64,
    tail: AtomicU32,
    seqno: AtomicU32,
    /// Set by the IRQ handler on a BCS error interrupt.
    error: AtomicBool,
    failures: AtomicU32,
    targets: [Target; MAX_MAPS],
    // Counters (debugfs blit_stats).
    submissions: AtomicU64,
    completed: AtomicU64,
    irq_user: AtomicU64,
    irq_error: AtomicU64,
    timeouts: AtomicU64,
    errors: AtomicU64,
    resets: AtomicU64,
    fb_fills: AtomicU64,
    fb_copies: AtomicU64,
    fb_cpu: AtomicU64,
    bytes: AtomicU64,
}

impl Blitter {
    fn try_own(&self) -> bool {
        self.busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }
    /// Own the engine, sleeping while someone else does.
    fn own(&self) {
        while !self.try_own() {
            // SAFETY: only called where the caller may sleep.
            unsafe { b::gvt_drm_msleep(1) };
        }
    }
    fn release(&self) {
        self.busy.store(false, Ordering::Release);
    }
    fn status_ptr(&self) -> *const u32 {
        (self.cpu.load(Ordering::Relaxed) + RING_BYTES as usize) as *const u32
    }
    /// Whether seqno `want` was written (or an error came).
    fn done(&self, want: u32) -> bool {
        // SAFETY: the status page is the driver's coherent DMA page (set up
        // before `up`), written by the device: a volatile aligned read.
        let cur = unsafe { ptr::read_volatile(self.status_ptr()) };
        (cur.wrapping_sub(want) as i32) >= 0 || self.error.load(Ordering::Acquire)
    }
    /// Where `obj` is mapped: `(gm, bytes)`.  The caller owns the engine.
    fn target(&self, obj: usize) -> Option<(u64, u64)> {
        self.targets.iter().find_map(|t| {
            (obj != 0 && t.obj.load(Ordering::Acquire) == obj).then(|| {
                (
                    t.gm.load(Ordering::Relaxed),
                    t.pages.load(Ordering::Relaxed) * PAGE,
                )
            })
        })
    }
    /// `obj` is mapped at `gm`: the blitter may address it.
    fn publish(&self, obj: usize, gm: u64, pages: u64) {
        if let Some(t) = self
            .targets
            .iter()
            .find(|t| t.obj.load(Ordering::Relaxed) == 0)
        {
            t.gm.store(gm, Ordering::Relaxed);
            t.pages.store(pages, Ordering::Relaxed);
            t.obj.store(obj, Ordering::Release);
        }
    }
    /// `obj` is about to be unmapped: once this returns no blit uses it.
    /// After [`Gpu::blt_fini`] (unbind unmaps the framebuffers after it)
    /// no blit runs any more and the engine is never released: nothing to
    /// wait for (waiting to own it hung unbind for good).
    fn withdraw(&self, obj: usize) {
        let owned = loop {
            if self.finished.load(Ordering::Acquire) {
                break false;
            }
            if self.try_own() {
                break true;
            }
            // SAFETY: unmapping runs where it may sleep (atomic commits,
            // object release).
            unsafe { b::gvt_drm_msleep(1) };
        };
        for t in &self.targets {
            if t.obj.load(Ordering::Relaxed) == obj {
                t.obj.store(0, Ordering::Release);
            }
        }
        if owned {
            self.release();
        }
    }
}

/// Wait-queue condition of a sleeping blit wait.
struct Waiter<'a> {
    blt: &'a Blitter,
    seqno: u32,
}

unsafe extern "C" fn blt_done(arg: *mut c_void) -> bool {
    // SAFETY: `arg` is the `Waiter` on the stack of `Gpu::blt_wait`, alive
    // for the whole `gvt_drm_bcs_wait` call that passes it here.
    let w = unsafe { &*arg.cast::<Waiter<'_>>() };
    w.blt.done(w.seqno)
}

impl Gpu {
    /// Program the blitter's ring (empty) at its GM address.
    fn blt_ring_init(&self) {
        let gm = self.blt.gm.load(Ordering::Relaxed) as u32;
        self.wr32(BCS_CTL, 0);
        self.wr32(BCS_HEAD, 0);
        self.wr32(BCS_TAIL, 0);
        self.wr32(BCS_START, gm);
        self.wr32(BCS_CTL, (((RING_PAGES as u32) - 1) << 12) | 1);
        self.blt.tail.store(0, Ordering::Relaxed);
    }

    /// Set the blitter up: its ring and status page in coherent DMA memory,
    /// mapped into the GGTT inside the driver's slices; GT interrupts.
    fn blt_init(&self, gd: *mut b::gvt_drm_dev) -> Result {
        let mut dma = 0u64;
        // SAFETY: `gd` is the bound device; the memory lives until unbind
        // (dmam), and unbind stops the ring and unmaps it first.
        let cpu = unsafe { b::gvt_drm_dma_alloc(gd, (BLT_PAGES * PAGE) as usize, &mut dma) };
        if cpu.is_null() {
            return Err(ENOMEM);
        }
        let mut maps = self.maps.lock();
        let Some(slot) = maps.maps.iter().position(|m| m.obj == 0) else {
            return Err(ENOSPC);
        };
        let Some(gm) = maps.alloc(BLT_PAGES) else {
            return Err(ENOSPC);
        };
        for p in 0..BLT_PAGES {
            self.write_pte(gm / PAGE + p, (dma + p * PAGE) | PTE_PRESENT);
        }
        maps.maps[slot] = Map {
            obj: OWN_MAP,
            gm,
            pages: BLT_PAGES,
            refs: 1,
        };
        drop(maps);
        self.blt.cpu.store(cpu as usize, Ordering::Relaxed);
        self.blt.gm.store(gm, Ordering::Relaxed);
        self.blt.seqno.store(0, Ordering::Relaxed);
        self.blt_ring_init();
        self.wr32(GTIIR, GT_BCS_USER | GT_BCS_ERROR);
        self.wr32(GTIMR, !(GT_BCS_USER | GT_BCS_ERROR));
        self.wr32(GTIER, GT_BCS_USER | GT_BCS_ERROR);
        self.blt.up.store(true, Ordering::Release);
        pr_info!(
            "gvt_drm: blitter ring at GM {:#x} ({} pages), status page at {:#x}\n",
            gm,
            RING_PAGES,
            gm + u64::from(RING_BYTES)
        );
        Ok(())
    }

    /// Stop the blitter for good (unbind): nobody owns it after this.
    fn blt_fini(&self) {
        if self.blt.cpu.load(Ordering::Relaxed) == 0 {
            return;
        }
        self.blt.up.store(false, Ordering::Release);
        self.blt.own();
        self.wr32(GTIER, 0);
        self.wr32(GTIMR, !0);
        self.wr32(BCS_CTL, 0);
        self.wr32(GDRST, GDRST_BCS);
        let gm = self.blt.gm.load(Ordering::Relaxed);
        for p in 0..BLT_PAGES {
            self.write_pte(gm / PAGE + p, 0);
        }
        // Keeps `busy`: no blit after unbind; withdrawing no longer waits.
        self.blt.finished.store(true, Ordering::Release);
    }

    /// The vGPU reported an error or a blit timed out: reset the blitter
    /// (GDRST, which also drops whatever the mediator still had queued)
    /// and program the ring again; give it up after too many in a row.
    fn blt_recover(&self, why: &str) {
        self.blt.resets.fetch_add(1, Ordering::Relaxed);
        let eir = self.rd32(BCS_EIR);
        self.wr32(GDRST, GDRST_BCS);
        self.wr32(BCS_EIR, eir);
        self.wr32(GTIIR, GT_BCS_USER | GT_BCS_ERROR);
        self.blt_ring_init();
        self.blt.error.store(false, Ordering::Release);
        let n = self.blt.failures.fetch_add(1, Ordering::Relaxed) + 1;
        pr_warn!(
            "gvt_drm: blitter {} (RING_EIR {:#x}): reset ({} in a row)\n",
            why,
            eir,
            n
        );
        if n >= BLT_MAX_FAILURES {
            self.blt.up.store(false, Ordering::Release);
            pr_err!(
                "gvt_drm: blitter given up after {} failures: drawing on the CPU\n",
                n
            );
        }
    }

    /// Put `cmds` in the ring followed by the seqno store and the user
    /// interrupt, submit (TAIL) and wait.  The caller owns the engine and
    /// is inside `drm_dev_enter`; `sleep`: wait on the interrupt (else poll).
    fn blt_run(&self, cmds: &[u32], sleep: bool) -> core::result::Result<(), BltErr> {
        let seqno = self.blt.seqno.load(Ordering::Relaxed).wrapping_add(1);
        let status_gm = self.blt.gm.load(Ordering::Relaxed) + u64::from(RING_BYTES);
        let tail_cmds = [
            MI_SDI_GGTT,
            status_gm as u32,
            (status_gm >> 32) as u32,
            seqno,
            MI_USER_INTERRUPT,
        ];
        let n = (cmds.len() + tail_cmds.len()) as u32;
        let n = n + (n & 1); // a qword: TAIL is 8-byte aligned
        let ring = self.blt.cpu.load(Ordering::Relaxed) as *mut u32;
        let mut t = self.blt.tail.load(Ordering::Relaxed);
        let put = |t: &mut u32, d: u32| {
            // SAFETY: `ring` is the driver's 4-page coherent ring, `*t` a
            // dword offset below RING_BYTES (kept so by the wrap below);
            // only the engine's owner writes it.
            unsafe { ptr::write_volatile(ring.add((*t / 4) as usize), d) };
            *t = (*t + 4) % RING_BYTES;
        };
        // No command across the end of the ring: NOOPs up to it first.
        if t + 4 * n > RING_BYTES {
            while t != 0 {
                put(&mut t, MI_NOOP);
            }
        }
        for &d in Iterator::chain(cmds.iter(), tail_cmds.iter()) {
            put(&mut t, d);
        }
        if n as usize > cmds.len() + tail_cmds.len() {
            put(&mut t, MI_NOOP);
        }
        self.blt.tail.store(t, Ordering::Relaxed);
        self.blt.seqno.store(seqno, Ordering::Relaxed);
        self.blt.submissions.fetch_add(1, Ordering::Relaxed);
        // The ring's dwords reach memory before the TAIL write (writel
        // orders after the CPU's earlier stores).
        self.wr32(BCS_TAIL, t);
        self.blt_wait(seqno, sleep)
    }

    fn blt_wait(&self, seqno: u32, sleep: bool) -> core::result::Result<(), BltErr> {
        // SAFETY: reads the clock.
        let start = unsafe { b::gvt_drm_ktime_ns() };
        if sleep {
            let w = Waiter {
                blt: &self.blt,
                seqno,
            };
            // SAFETY: `gd` is the bound device (its wait queue); `w` lives
            // across the call, `blt_done` only reads it.
            unsafe {
                b::gvt_drm_bcs_wait(
                    self.gd as *mut b::gvt_drm_dev,
                    Some(blt_done),
                    ptr::addr_of!(w).cast_mut().cast(),
                    BLT_TIMEOUT_MS,
                )
            };
        } else {
            let limit = u64::from(BLT_TIMEOUT_MS) * 1_000_000;
            // SAFETY: reads the clock / busy-waits (any context).
            while !self.blt.done(seqno) && unsafe { b::gvt_drm_ktime_ns() } - start < limit {
                // SAFETY: as above.
                unsafe { b::gvt_drm_udelay(2) };
            }
        }
        if self.blt.error.load(Ordering::Acquire) {
            self.blt.errors.fetch_add(1, Ordering::Relaxed);
            self.blt_recover("error interrupt");
            return Err(BltErr::Failed);
        }
        if !self.blt.done(seqno) {
            self.blt.timeouts.fetch_add(1, Ordering::Relaxed);
            self.blt_recover("timeout");
            return Err(BltErr::Failed);
        }
        self.blt.failures.store(0, Ordering::Relaxed);
        self.blt.completed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Run one blit of a `w × h` 32-bpp rectangle, counted in `bytes`.
    fn blt_rect(
        &self,
        cmds: &[u32],
        (w, h): (u32, u32),
        sleep: bool,
    ) -> core::result::Result<(), BltErr> {
        self.blt_run(cmds, sleep)?;
        self.blt
            .bytes
            .fetch_add(u64::from(w) * u64::from(h) * 4, Ordering::Relaxed);
        Ok(())
    }

    /// Fill `[x, x+w) × [y, y+h)` of the 32-bpp surface at `gm` (`size`
    /// bytes, `pitch` bytes a row) with `color`.  The caller owns the engine.
    #[allow(clippy::too_many_arguments)]
    fn blt_fill(
        &self,
        (gm, size): (u64, u64),
        pitch: u32,
        (x, y, w, h): (u32, u32, u32, u32),
        color: u32,
        sleep: bool,
    ) -> core::result::Result<(), BltErr> {
        if !rect_ok(size, pitch, x, y, w, h) {
            return Err(BltErr::NotHere);
        }
        let cmds = [
            XY_COLOR_BLT,
            BLT_FILL_32 | pitch,
            (y << 16) | x,
            ((y + h) << 16) | (x + w),
            gm as u32,
            (gm >> 32) as u32,
            color,
        ];
        self.blt_rect(&cmds, (w, h), sleep)
    }

    /// Copy `w × h` pixels from `(sx, sy)` to `(dx, dy)` within the surface.
    /// The blitter copies rows top to bottom, left to right: an overlap
    /// that needs another order is not for it.
    #[allow(clippy::too_many_arguments)]
    fn blt_copy(
        &self,
        (gm, size): (u64, u64),
        pitch: u32,
        (dx, dy): (u32, u32),
        (sx, sy): (u32, u32),
        (w, h): (u32, u32),
        sleep: bool,
    ) -> core::result::Result<(), BltErr> {
        if !rect_ok(size, pitch, dx, dy, w, h) || !rect_ok(size, pitch, sx, sy, w, h) {
            return Err(BltErr::NotHere);
        }
        if !copy_order_ok((dx, dy), (sx, sy), (w, h)) {
            return Err(BltErr::NotHere);
        }
        let cmds = [
            XY_SRC_COPY_BLT,
            BLT_COPY_32 | pitch,
            (dy << 16) | dx,
            ((dy + h) << 16) | (dx + w),
            gm as u32,
            (gm >> 32) as u32,
            (sy << 16) | sx,
            pitch,
            gm as u32,
            (gm >> 32) as u32,
        ];
        self.blt_rect(&cmds, (w, h), sleep)
    }

    /// Run `f` as the blitter's owner, inside `drm_dev_enter`, on the
    /// framebuffer object `obj`'s mapping; `NotHere` if the blitter is off,
    /// busy (`wait`: false) or `obj` not mapped.
    fn with_blitter(
        &self,
        drm: *mut b::drm_device,
        obj: usize,
        wait: bool,
        f: impl FnOnce((u64, u64)) -> core::result::Result<(), BltErr>,
    ) -> core::result::Result<(), BltErr> {
        if !self.blt.up.load(Ordering::Acquire) {
            return Err(BltErr::NotHere);
        }
        if wait {
            self.blt.own();
        } else if !self.blt.try_own() {
            return Err(BltErr::NotHere);
        }
        let mut r = Err(BltErr::NotHere);
        if self.blt.up.load(Ordering::Acquire) {
            if let Some(t) = self.blt.target(obj) {
                with_hw(drm, || r = f(t));
            }
        }
        self.blt.release();
        r
    }
}

/// A rectangle the blitter can draw inside a `size`-byte 32-bpp surface.
fn rect_ok(size: u64, pitch: u32, x: u32, y: u32, w: u32, h: u32) -> bool {
    let (x2, y2) = (u64::from(x) + u64::from(w), u64::from(y) + u64::from(h));
    w > 0
        && h > 0
        && pitch > 0
        && pitch <= BLT_MAX_PITCH
        && x2 <= u64::from(BLT_MAX_COORD)
        && y2 <= u64::from(BLT_MAX_COORD)
        && x2 * 4 <= u64::from(pitch)
        && (y2 - 1) * u64::from(pitch) + x2 * 4 <= size
}

/// Whether a top-to-bottom, left-to-right copy gives the right result.
fn copy_order_ok((dx, dy): (u32, u32), (sx, sy): (u32, u32), (w, h): (u32, u32)) -> bool {
    let apart = dx + w <= sx || sx + w <= dx || dy + h <= sy || sy + h <= dy;
    apart || dy < sy || (dy == sy && dx <= sx)
}

/// One of fbcon's draws on the blitter, counted in `done` (or `fb_cpu`
/// when the CPU must draw it): 0 if the blitter did it.  Never waits for
/// the engine (fbcon may draw from its owner's own context, e.g. a
/// printk): busy means the CPU draws.
///
/// # Safety
/// `drm` is a live device of this driver, `obj` its fbdev framebuffer's
/// GEM object.
unsafe fn fbcon_blit(
    drm: *mut b::drm_device,
    obj: *mut b::drm_gem_object,
    done: fn(&Blitter) -> &AtomicU64,
    f: impl FnOnce(&Gpu, (u64, u64), bool) -> core::result::Result<(), BltErr>,
) -> c_int {
    // SAFETY: the caller's contract; `gvt_drm_may_sleep` reads the context.
    let (g, sleep) = unsafe { (gpu(drm), b::gvt_drm_may_sleep()) };
    if g.with_blitter(drm, obj as usize, false, |t| f(g, t, sleep))
        .is_ok()
    {
        done(&g.blt).fetch_add(1, Ordering::Relaxed);
        0
    } else {
        g.blt.fb_cpu.fetch_add(1, Ordering::Relaxed);
        1
    }
}

/// fbcon's solid fill (gvt_drm_helpers.c): 0 if the blitter drew it.
#[no_mangle]
unsafe extern "C" fn gvt_drm_rs_fillrect(
    drm: *mut b::drm_device,
    obj: *mut b::drm_gem_object,
    pitch: u32,
    x: u32,
    y: u32,
    w: u32,
    h: u32,
    color: u32,
) -> c_int {
    // SAFETY: the fbdev emulation's device and framebuffer object.
    unsafe {
        fbcon_blit(
            drm,
            obj,
            |b| &b.fb_fills,
            |g, t, sleep| g.blt_fill(t, pitch, (x, y, w, h), color, sleep),
        )
    }
}

/// fbcon's copy (scrolling): 0 if the blitter did it.
#[no_mangle]
unsafe extern "C" fn gvt_drm_rs_copyarea(
    drm: *mut b::drm_device,
    obj: *mut b::drm_gem_object,
    pitch: u32,
    dx: u32,
    dy: u32,
    sx: u32,
    sy: u32,
    w: u32,
    h: u32,
) -> c_int {
    // SAFETY: as in `gvt_drm_rs_fillrect`.
    unsafe {
        fbcon_blit(
            drm,
            obj,
            |b| &b.fb_copies,
            |g, t, sleep| g.blt_copy(t, pitch, (dx, dy), (sx, sy), (w, h), sleep),
        )
    }
}

/// `blit_stats` (debugfs): the blitter's counters, `key value` lines.
#[no_mangle]
unsafe extern "C" fn gvt_drm_rs_stats(drm: *mut b::drm_device, buf: *mut u8, len: usize) -> usize {
    // SAFETY: debugfs files exist while the device is bound.
    let g = unsafe { gpu(drm) };
    // SAFETY: `buf` is the caller's `len`-byte buffer.
    let out = unsafe { core::slice::from_raw_parts_mut(buf, len) };
    let mut w = SliceWriter { buf: out, at: 0 };
    let bl = &g.blt;
    let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let _ = core::fmt::write(
        &mut w,
        format_args!(
            "up {}\nsubmissions {}\ncompleted {}\nirq_user {}\nirq_error {}\ntimeouts {}\nerrors {}\nresets {}\nfb_fills {}\nfb_copies {}\nfb_cpu {}\nbytes {}\n",
            u32::from(bl.up.load(Ordering::Relaxed)),
            r(&bl.submissions),
            r(&bl.completed),
            r(&bl.irq_user),
            r(&bl.irq_error),
            r(&bl.timeouts),
            r(&bl.errors),
            r(&bl.resets),
            r(&bl.fb_fills),
            r(&bl.fb_copies),
            r(&bl.fb_cpu),
            r(&bl.bytes),
        ),
    );
    w.at
}

/// `core::fmt` into a byte buffer, cut at its end.
struct SliceWriter<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl core::fmt::Write for SliceWriter<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - self.at);
        self.buf[self.at..self.at + n].copy_from_slice(&s.as_bytes()[..n]);
        self.at += n;
        Ok(())
    }
}

/// The fbdev emulation's framebuffer: object, CPU address, pitch, size.
struct FbTarget {
    obj: usize,
    vaddr: *mut u8,
    pitch: u32,
    w: u32,
    h: u32,
}

fn fbdev_target(drm: *mut b::drm_device) -> Option<FbTarget> {
    let mut obj = ptr::null_mut();
    let mut vaddr = ptr::null_mut();
    let (mut pitch, mut w, mut h) = (0, 0, 0);
    // SAFETY: `drm` is a bound device of this driver; out-parameters.
    let ok =
        unsafe { b::gvt_drm_fbdev_target(drm, &mut obj, &mut vaddr, &mut pitch, &mut w, &mut h) };
    (ok && w > 0 && h > 16 && pitch >= w * 4).then_some(FbTarget {
        obj: obj as usize,
        vaddr: vaddr.cast(),
        pitch,
        w,
        h,
    })
}

fn now_ns() -> u64 {
    // SAFETY: reads the clock.
    unsafe { b::gvt_drm_ktime_ns() }
}

/// MB/s (10⁶ bytes) ×10 of `bytes` in `ns`.
fn mbps10(bytes: u64, ns: u64) -> u64 {
    bytes.saturating_mul(10_000) / ns.max(1)
}

/// `blit_fill` (debugfs): fill a 256×128 rectangle at (64, 64) of the
/// console's framebuffer with colour `arg` inside a one-pixel ring of its
/// complement on the blitter (`XY_COLOR_BLT`), copy the whole (ring
/// included) 320 pixels to the right (`XY_SRC_COPY_BLT`), then check every
/// pixel of both on the CPU.  They stay on the screen (the VM test looks
/// for them in a screendump).  With bit 31 of `arg` set, a blit the
/// mediator refuses first (the recovery path).
#[no_mangle]
unsafe extern "C" fn gvt_drm_rs_fill_test(drm: *mut b::drm_device, arg: u32) -> c_int {
    // SAFETY: debugfs files exist while the device is bound.
    let g = unsafe { gpu(drm) };
    let Some(fb) = fbdev_target(drm) else {
        return ENODEV.to_errno();
    };
    let (x0, y0, w, h) = (64u32, 64u32, 256u32, 128u32);
    const COPY_DX: u32 = 320;
    if fb.w < x0 + COPY_DX + w + 1 || fb.h < y0 + h + 1 {
        return EINVAL.to_errno();
    }
    let px = |x: u32, y: u32| {
        // SAFETY: `(x, y)` is inside the framebuffer (checked above), whose
        // vmap lives as long as the fbdev emulation.
        unsafe { ptr::read_volatile(fb.vaddr.add((y * fb.pitch + x * 4) as usize).cast::<u32>()) }
    };
    // Bit 31: first a blit the mediator must refuse (a fill just past the
    // driver's high GM slice, outside its slices): the error interrupt
    // comes, the blitter is reset and its ring programmed again, and the
    // checked fill below runs on the recovered blitter.
    if arg & (1 << 31) != 0 {
        let outside = g.maps.lock().slices[0].end();
        let resets = g.blt.resets.load(Ordering::Relaxed);
        let r = g.with_blitter(drm, fb.obj, true, |t| {
            g.blt_fill((outside, t.1), fb.pitch, (0, 0, 64, 1), 0, true)
        });
        let reset = g.blt.resets.load(Ordering::Relaxed) - resets;
        pr_info!(
            "gvt_drm: blit_fill: a blit outside the slices at {:#x}: {:?}, {} reset\n",
            outside,
            r,
            reset
        );
        if r != Err(BltErr::Failed) || reset != 1 {
            return EIO.to_errno();
        }
    }
    let color = arg & 0x00FF_FFFF;
    let r = g.with_blitter(drm, fb.obj, true, |t| {
        g.blt_fill(
            t,
            fb.pitch,
            (x0 - 1, y0 - 1, w + 2, h + 2),
            color ^ 0x00FF_FFFF,
            true,
        )?;
        g.blt_fill(t, fb.pitch, (x0, y0, w, h), color, true)?;
        g.blt_copy(
            t,
            fb.pitch,
            (x0 - 1 + COPY_DX, y0 - 1),
            (x0 - 1, y0 - 1),
            (w + 2, h + 2),
            true,
        )
    });
    if let Err(e) = r {
        pr_err!("gvt_drm: blit_fill: the blitter did not fill ({:?})\n", e);
        return EIO.to_errno();
    }
    let mut bad = 0u32;
    for y in y0 - 1..y0 + h + 1 {
        for x in x0 - 1..x0 + w + 1 {
            let inside = (x0..x0 + w).contains(&x) && (y0..y0 + h).contains(&y);
            let want = if inside { color } else { color ^ 0x00FF_FFFF };
            for dx in [0, COPY_DX] {
                if px(x + dx, y) & 0x00FF_FFFF != want {
                    bad += 1;
                }
            }
        }
    }
    pr_info!(
        "gvt_drm: blit_fill {:#08x} at ({},{}) {}x{} and its copy: {} wrong pixels\n",
        color,
        x0,
        y0,
        w,
        h,
        bad
    );
    if bad == 0 {
        0
    } else {
        EIO.to_errno()
    }
}

/// `blit_bench` (debugfs): `arg` MiB (at least one screen) of whole-screen
/// fills and of scrolls (a copy of the screen 16 rows up, fbcon's
/// SCROLL_MOVE) on the console's framebuffer, by the blitter (through the
/// mediator: ring, audit, MSI) and by the CPU; a `BENCH` line in the
/// kernel log with MB/s of each.
#[no_mangle]
unsafe extern "C" fn gvt_drm_rs_bench(drm: *mut b::drm_device, arg: u32) -> c_int {
    // SAFETY: debugfs files exist while the device is bound.
    let g = unsafe { gpu(drm) };
    let Some(fb) = fbdev_target(drm) else {
        pr_err!("gvt_drm: blit_bench: no fbdev framebuffer\n");
        return ENODEV.to_errno();
    };
    let (w, h, pitch) = (fb.w, fb.h, fb.pitch);
    let screen = u64::from(w) * u64::from(h) * 4;
    let scroll = u64::from(w) * u64::from(h - 16) * 4;
    let n = ((u64::from(arg.max(1)) << 20) / screen).max(1) as u32;
    let irq0 = g.blt.irq_user.load(Ordering::Relaxed);
    let mut t = [0u64; 4];
    let r = g.with_blitter(drm, fb.obj, true, |tg| {
        let s = now_ns();
        for i in 0..n {
            g.blt_fill(tg, pitch, (0, 0, w, h), 0x0010_1010 * (i % 8), true)?;
        }
        t[0] = now_ns() - s;
        let s = now_ns();
        for _ in 0..n {
            g.blt_copy(tg, pitch, (0, 0), (0, 16), (w, h - 16), true)?;
        }
        t[1] = now_ns() - s;
        Ok(())
    });
    if let Err(e) = r {
        pr_err!("gvt_drm: blit_bench: the blitter failed ({:?})\n", e);
        return EIO.to_errno();
    }
    let irqs = g.blt.irq_user.load(Ordering::Relaxed) - irq0;
    // The CPU, on the same framebuffer (as the shmem fbdev helper draws).
    let s = now_ns();
    for i in 0..n {
        let v = 0x0001_0101 * (i % 8);
        for y in 0..h {
            // SAFETY: row `y` of the framebuffer's vmap (w·4 ≤ pitch bytes).
            let row = unsafe {
                core::slice::from_raw_parts_mut(
                    fb.vaddr.add((y * pitch) as usize).cast::<u32>(),
                    w as usize,
                )
            };
            row.fill(v);
        }
    }
    t[2] = now_ns() - s;
    let s = now_ns();
    for _ in 0..n {
        // SAFETY: both ranges are inside the framebuffer's vmap; `copy`
        // allows the overlap.
        unsafe {
            ptr::copy(
                fb.vaddr.add((16 * pitch) as usize),
                fb.vaddr,
                ((h - 16) * pitch) as usize,
            )
        };
    }
    t[3] = now_ns() - s;
    let f = |bytes: u64, ns: u64| {
        let v = mbps10(bytes * u64::from(n), ns);
        (v / 10, v % 10)
    };
    let (bf, bc, cf, cc) = (
        f(screen, t[0]),
        f(scroll, t[1]),
        f(screen, t[2]),
        f(scroll, t[3]),
    );
    pr_info!(
        "BENCH gvt_drm_blit {}x{} ops {} fill_blitter_MBps {}.{} fill_cpu_MBps {}.{} scroll_blitter_MBps {}.{} scroll_cpu_MBps {}.{} blit_us {} user_irqs {}\n",
        w,
        h,
        n,
        bf.0,
        bf.1,
        cf.0,
        cf.1,
        bc.0,
        bc.1,
        cc.0,
        cc.1,
        (t[0] + t[1]) / 1000 / u64::from(2 * n),
        irqs
    );
    0
}

// ---- GEM / dumb buffers ----------------------------------------------------

#[no_mangle]
unsafe extern "C" fn gvt_drm_rs_dumb_create(
    file: *mut b::drm_file,
    dev: *mut b::drm_device,
    args: *mut b::drm_mode_create_dumb,
) -> c_int {
    // SAFETY: the DRM core passes its file, device and the ioctl's argument.
    let ret = unsafe { b::drm_mode_size_dumb(dev, args, STRIDE_ALIGN as _, 0) };
    if ret != 0 {
        return ret;
    }
    // SAFETY: as above; `args` was just sized by `drm_mode_size_dumb`.
    unsafe {
        b::drm_gem_shmem_create_with_handle(file, dev, (*args).size as usize, &mut (*args).handle)
    }
}

/// Map the (first) GEM object of `fb` into the GGTT, or take one more
/// reference to its mapping.
///
/// # Safety
/// `drm` and `fb` are live objects of this driver.
unsafe fn map_fb(drm: *mut b::drm_device, fb: *mut b::drm_framebuffer) -> c_int {
    // SAFETY: the caller's contract.
    let g = unsafe { gpu(drm) };
    // SAFETY: `fb` is a GEM framebuffer (drm_gem_fb_create) with one plane.
    let obj = unsafe { b::drm_gem_fb_get_obj(fb, 0) };
    if obj.is_null() {
        return EINVAL.to_errno();
    }
    let mut maps = g.maps.lock();
    if let Some(i) = maps.find(obj as usize) {
        maps.maps[i].refs += 1;
        return 0;
    }
    let Some(slot) = maps.maps.iter().position(|m| m.obj == 0) else {
        return ENOSPC.to_errno();
    };
    // SAFETY: `obj` is a live GEM object of this driver (shmem helper).
    let size = unsafe { (*obj).size } as u64;
    let pages = size.div_ceil(PAGE);
    let Some(gm) = maps.alloc(pages) else {
        pr_warn!(
            "gvt_drm: no room for a {} KiB framebuffer in the GM slices\n",
            size / 1024
        );
        return ENOSPC.to_errno();
    };
    // SAFETY: `obj` is a shmem GEM object (DRM_GEM_SHMEM driver ops).
    let shmem = unsafe { b::gvt_drm_to_shmem(obj) };
    // SAFETY: `shmem` is live; the pin is dropped in `unmap_fb`.
    let ret = unsafe { b::drm_gem_shmem_pin(shmem) };
    if ret != 0 {
        return ret;
    }
    // SAFETY: `shmem` is live and pinned; the table stays with the object.
    let sgt = unsafe { b::drm_gem_shmem_get_pages_sgt(shmem) };
    if is_err(sgt) {
        // SAFETY: paired with the pin above.
        unsafe { b::drm_gem_shmem_unpin(shmem) };
        return err_of(sgt);
    }
    let mut index = gm / PAGE;
    let last = index + pages;
    let ok = with_hw(drm, || {
        // SAFETY: `sgt` is the object's DMA-mapped table (valid while pinned).
        let (mut sg, n) = unsafe { ((*sgt).sgl, (*sgt).nents) };
        for _ in 0..n {
            if sg.is_null() {
                break;
            }
            // SAFETY: `sg` is an entry of `sgt` (first or sg_next of one).
            let (addr, len) = unsafe { (b::gvt_drm_sg_dma_address(sg), b::gvt_drm_sg_dma_len(sg)) };
            let mut off = 0u64;
            while off < u64::from(len) && index < last {
                g.write_pte(index, ((addr + off) & !(PAGE - 1)) | PTE_PRESENT);
                index += 1;
                off += PAGE;
            }
            // SAFETY: as above.
            sg = unsafe { b::gvt_drm_sg_next(sg) };
        }
    });
    if !ok || index != last {
        if ok {
            pr_err!(
                "gvt_drm: framebuffer has {} of {} pages\n",
                index - gm / PAGE,
                pages
            );
        }
        // SAFETY: paired with the pin above.
        unsafe { b::drm_gem_shmem_unpin(shmem) };
        return if ok {
            EINVAL.to_errno()
        } else {
            ENODEV.to_errno()
        };
    }
    maps.maps[slot] = Map {
        obj: obj as usize,
        gm,
        pages,
        refs: 1,
    };
    g.blt.publish(obj as usize, gm, pages);
    0
}

/// Drop a reference to `fb`'s mapping; the last one unmaps and unpins.
///
/// # Safety
/// `drm` and `fb` are live objects of this driver, `fb` mapped by [`map_fb`].
unsafe fn unmap_fb(drm: *mut b::drm_device, fb: *mut b::drm_framebuffer) {
    // SAFETY: the caller's contract.
    let g = unsafe { gpu(drm) };
    // SAFETY: as in `map_fb`.
    let obj = unsafe { b::drm_gem_fb_get_obj(fb, 0) };
    let mut maps = g.maps.lock();
    let Some(i) = maps.find(obj as usize) else {
        return;
    };
    maps.maps[i].refs -= 1;
    if maps.maps[i].refs > 0 {
        return;
    }
    let m = maps.maps[i];
    maps.maps[i] = Map::default();
    // No blit may write it once its pages go.
    g.blt.withdraw(obj as usize);
    with_hw(drm, || {
        for p in 0..m.pages {
            g.write_pte(m.gm / PAGE + p, 0);
        }
    });
    // SAFETY: `obj` is the shmem object pinned by `map_fb`.
    unsafe { b::drm_gem_shmem_unpin(b::gvt_drm_to_shmem(obj)) };
}

/// Where `fb`'s object is mapped.
fn fb_gm(g: &Gpu, fb: *mut b::drm_framebuffer) -> Option<u64> {
    // SAFETY: `fb` is a live GEM framebuffer of a plane state.
    let obj = unsafe { b::drm_gem_fb_get_obj(fb, 0) };
    let maps = g.maps.lock();
    maps.find(obj as usize).map(|i| maps.maps[i].gm)
}

// ---- the primary plane -----------------------------------------------------

unsafe extern "C" fn plane_prepare_fb(
    plane: *mut b::drm_plane,
    state: *mut b::drm_plane_state,
) -> c_int {
    // SAFETY: the atomic helpers pass live plane and state objects.
    let fb = unsafe { (*state).fb };
    if fb.is_null() {
        return 0;
    }
    // SAFETY: as above (implicit fences of the GEM object).
    let ret = unsafe { b::drm_gem_plane_helper_prepare_fb(plane, state) };
    if ret != 0 {
        return ret;
    }
    // SAFETY: the plane belongs to a device of this driver.
    unsafe { map_fb((*plane).dev, fb) }
}

unsafe extern "C" fn plane_cleanup_fb(plane: *mut b::drm_plane, state: *mut b::drm_plane_state) {
    // SAFETY: the atomic helpers pass live plane and state objects; a state
    // gets `cleanup_fb` only after a successful `prepare_fb`.
    unsafe {
        let fb = (*state).fb;
        if !fb.is_null() {
            unmap_fb((*plane).dev, fb);
        }
    }
}

unsafe extern "C" fn plane_atomic_check(
    plane: *mut b::drm_plane,
    state: *mut b::drm_atomic_commit,
) -> c_int {
    // SAFETY: the atomic helpers pass a live plane and commit.
    let new = unsafe { b::gvt_drm_new_plane_state(state, plane) };
    // SAFETY: `new` is the plane's new state in `state`.
    let crtc = unsafe { (*new).crtc };
    let crtc_state = if crtc.is_null() {
        ptr::null_mut()
    } else {
        // SAFETY: `crtc` is in the commit (the plane's CRTC).
        unsafe { b::gvt_drm_new_crtc_state(state, crtc) }
    };
    const NO_SCALING: c_int = 1 << 16;
    // SAFETY: live states from the commit.
    let ret = unsafe {
        b::drm_atomic_helper_check_plane_state(new, crtc_state, NO_SCALING, NO_SCALING, false, true)
    };
    // SAFETY: `new` is live.
    let (visible, fb) = unsafe { ((*new).visible, (*new).fb) };
    if ret != 0 || !visible || fb.is_null() {
        return ret;
    }
    // SAFETY: a visible plane state's framebuffer is live.
    let (pitch, offset, w, h) = unsafe {
        (
            (*fb).pitches[0],
            (*fb).offsets[0],
            (*fb).width,
            (*fb).height,
        )
    };
    // SAFETY: `new` is live.
    let (sx, sy) = unsafe { ((*new).src.x1 >> 16, (*new).src.y1 >> 16) };
    // gvt-sim scans out from a 4 KiB aligned surface with no x/y offset
    // register: the framebuffer's origin only.
    if pitch % STRIDE_ALIGN != 0 || pitch > MAX_STRIDE || offset != 0 || sx != 0 || sy != 0 {
        return EINVAL.to_errno();
    }
    if w > MAX_W || h > MAX_H {
        return EINVAL.to_errno();
    }
    0
}

unsafe extern "C" fn plane_atomic_update(
    plane: *mut b::drm_plane,
    state: *mut b::drm_atomic_commit,
) {
    // SAFETY: the atomic helpers pass a live plane and commit.
    let (drm, new) = unsafe { ((*plane).dev, b::gvt_drm_new_plane_state(state, plane)) };
    // SAFETY: a device of this driver.
    let g = unsafe { gpu(drm) };
    // SAFETY: `new` is live for the commit.
    let (visible, fb) = unsafe { ((*new).visible, (*new).fb) };
    if !visible || fb.is_null() {
        with_hw(drm, || g.wr32(DSPACNTR, 0));
        return;
    }
    // SAFETY: a visible state's fb and its format info are live.
    let (pitch, fourcc) = unsafe { ((*fb).pitches[0], (*(*fb).format).format) };
    // SAFETY: `new` is live; `dst` is the CRTC area (the whole mode).
    let (w, h) = unsafe {
        (
            ((*new).dst.x2 - (*new).dst.x1) as u32,
            ((*new).dst.y2 - (*new).dst.y1) as u32,
        )
    };
    let (Some(gm), Some(fmt)) = (fb_gm(g, fb), dspcntr_format(fourcc)) else {
        pr_err!("gvt_drm: plane update without a mapped framebuffer\n");
        return;
    };
    with_hw(drm, || {
        g.wr32(PIPEASRC, (w.saturating_sub(1) << 16) | h.saturating_sub(1));
        g.wr32(DSPASTRIDE, pitch);
        g.wr32(DSPACNTR, DSPCNTR_ENABLE | (fmt << DSPCNTR_FORMAT_SHIFT));
        g.wr32(DSPASURF, gm as u32);
    });
}

unsafe extern "C" fn plane_atomic_disable(
    plane: *mut b::drm_plane,
    _state: *mut b::drm_atomic_commit,
) {
    // SAFETY: the atomic helpers pass a live plane of this driver.
    let drm = unsafe { (*plane).dev };
    // SAFETY: as above.
    let g = unsafe { gpu(drm) };
    with_hw(drm, || g.wr32(DSPACNTR, 0));
}

// ---- the cursor plane -----------------------------------------------------

unsafe extern "C" fn cursor_atomic_check(
    plane: *mut b::drm_plane,
    state: *mut b::drm_atomic_commit,
) -> c_int {
    // SAFETY: the atomic helpers pass a live plane and commit.
    let new = unsafe { b::gvt_drm_new_plane_state(state, plane) };
    // SAFETY: `new` is the plane's new state in `state`.
    let crtc = unsafe { (*new).crtc };
    let crtc_state = if crtc.is_null() {
        ptr::null_mut()
    } else {
        // SAFETY: `crtc` is in the commit (the plane's CRTC).
        unsafe { b::gvt_drm_new_crtc_state(state, crtc) }
    };
    const NO_SCALING: c_int = 1 << 16;
    // SAFETY: live states from the commit.  A cursor may hang off any edge
    // (can_position), and be updated while the CRTC is off.
    let ret = unsafe {
        b::drm_atomic_helper_check_plane_state(new, crtc_state, NO_SCALING, NO_SCALING, true, true)
    };
    // SAFETY: `new` is live.
    let fb = unsafe { (*new).fb };
    if ret != 0 || fb.is_null() {
        return ret;
    }
    // SAFETY: `new` and its framebuffer are live.
    let (w, h, pitch, offset, cw, ch, sx, sy, sw, sh, x, y) = unsafe {
        (
            (*fb).width,
            (*fb).height,
            (*fb).pitches[0],
            (*fb).offsets[0],
            (*new).crtc_w,
            (*new).crtc_h,
            (*new).src_x,
            (*new).src_y,
            (*new).src_w >> 16,
            (*new).src_h >> 16,
            (*new).crtc_x,
            (*new).crtc_y,
        )
    };
    // gvt-sim scans out a whole square n×n ARGB image, n·4 bytes a row,
    // from a 4 KiB aligned surface: the framebuffer whole, unscaled.
    let n = w;
    if h != n
        || curacntr_mode(n).is_none()
        || pitch != n * 4
        || offset != 0
        || (sx, sy, sw, sh) != (0, 0, n, n)
        || (cw, ch) != (n, n)
        || curapos(x, y).is_none()
    {
        return EINVAL.to_errno();
    }
    0
}

unsafe extern "C" fn cursor_atomic_update(
    plane: *mut b::drm_plane,
    state: *mut b::drm_atomic_commit,
) {
    // SAFETY: the atomic helpers pass a live plane and commit.
    let (drm, new) = unsafe { ((*plane).dev, b::gvt_drm_new_plane_state(state, plane)) };
    // SAFETY: a device of this driver.
    let g = unsafe { gpu(drm) };
    // SAFETY: `new` is live for the commit.
    let (visible, fb, x, y) = unsafe { ((*new).visible, (*new).fb, (*new).crtc_x, (*new).crtc_y) };
    if !visible || fb.is_null() {
        with_hw(drm, || g.wr32(CURACNTR, 0));
        return;
    }
    // SAFETY: a visible state's framebuffer is live.
    let n = unsafe { (*fb).width };
    let (Some(gm), Some(mode), Some(pos)) = (fb_gm(g, fb), curacntr_mode(n), curapos(x, y)) else {
        pr_err!("gvt_drm: cursor update without a mapped framebuffer\n");
        return;
    };
    with_hw(drm, || {
        g.wr32(CURAPOS, pos);
        g.wr32(CURACNTR, mode);
        g.wr32(CURABASE, gm as u32);
    });
}

unsafe extern "C" fn cursor_atomic_disable(
    plane: *mut b::drm_plane,
    _state: *mut b::drm_atomic_commit,
) {
    // SAFETY: the atomic helpers pass a live plane of this driver.
    let drm = unsafe { (*plane).dev };
    // SAFETY: as above.
    let g = unsafe { gpu(drm) };
    with_hw(drm, || g.wr32(CURACNTR, 0));
}

// ---- CRTC, encoder, connector ---------------------------------------------

unsafe extern "C" fn crtc_atomic_check(
    crtc: *mut b::drm_crtc,
    state: *mut b::drm_atomic_commit,
) -> c_int {
    // SAFETY: the atomic helpers pass a live CRTC and commit.
    unsafe {
        let cs = b::gvt_drm_new_crtc_state(state, crtc);
        // An enabled CRTC scans out its primary plane; a disabled one has
        // none (the helper refuses a plane mask without one, so asking it
        // then refused every CRTC disable: legacy SETCRTC with no fb,
        // atomic commits that turn the pipe off; IGT found it).
        if !(*cs).enable {
            return 0;
        }
        b::drm_atomic_helper_check_crtc_primary_plane(cs)
    }
}

unsafe extern "C" fn crtc_enable_vblank(crtc: *mut b::drm_crtc) -> c_int {
    // SAFETY: the vblank core passes a live CRTC of this driver.
    let drm = unsafe { (*crtc).dev };
    // SAFETY: as above.
    let g = unsafe { gpu(drm) };
    let ok = with_hw(drm, || {
        g.wr32(DEIIR, DE_PIPEA_VBLANK);
        g.wr32(DEIMR, !DE_PIPEA_VBLANK);
        g.wr32(DEIER, DE_PIPEA_VBLANK);
    });
    if ok {
        0
    } else {
        ENODEV.to_errno()
    }
}

unsafe extern "C" fn crtc_disable_vblank(crtc: *mut b::drm_crtc) {
    // SAFETY: the vblank core passes a live CRTC of this driver.
    let drm = unsafe { (*crtc).dev };
    // SAFETY: as above.
    let g = unsafe { gpu(drm) };
    with_hw(drm, || {
        g.wr32(DEIER, 0);
        g.wr32(DEIMR, !0);
    });
}

/// The hardware frame counter (`PIPE_FRMCOUNT_G4X`): vblanks of pipe A,
/// counted by gvt-sim from the host's clock whether or not the guest took
/// their interrupts; it stands still while the pipe is off.
unsafe extern "C" fn crtc_get_vblank_counter(crtc: *mut b::drm_crtc) -> u32 {
    // SAFETY: the vblank core passes a live CRTC of this driver.
    let drm = unsafe { (*crtc).dev };
    // SAFETY: as above.
    let g = unsafe { gpu(drm) };
    let mut n = 0;
    with_hw(drm, || n = g.rd32(PIPEA_FRMCOUNT));
    n
}

/// The time of the latest vblank, in the guest's clock.
///
/// gvt-sim gives it in the host's clock (`PIPE_FRMTMSTMP`, µs), brought up
/// to date when read; the guest's clock is offset from it (another
/// machine's monotonic clock).  Every read is a sample of that offset:
/// `now − vblank` is the offset plus how late the guest reads it, so the
/// lowest sample is the best estimate ([`ClockOffset`]); the timestamp is
/// the host's vblank time plus the estimate.  Vblank intervals are then the
/// host's exactly (the display's clock), whenever the guest takes the
/// interrupt, and a timestamp is never later than the read.  The vblank
/// core reads the counter before and after, so the time belongs to the
/// count it reports.
unsafe extern "C" fn crtc_get_vblank_timestamp(
    crtc: *mut b::drm_crtc,
    max_error: *mut c_int,
    vblank_time: *mut b::ktime_t,
    _in_vblank_irq: bool,
) -> bool {
    // SAFETY: the vblank core passes a live CRTC of this driver.
    let drm = unsafe { (*crtc).dev };
    // SAFETY: as above.
    let g = unsafe { gpu(drm) };
    let mut t_host = 0u32;
    if !with_hw(drm, || t_host = g.rd32(PIPEA_FRMTMSTMP)) {
        return false;
    }
    // SAFETY: reads the monotonic clock; callable in any context.
    let now = unsafe { b::ktime_get() };
    let now_us = (now / 1000) as u64;
    let late_fp = g.clock.sample((now_us as u32).wrapping_sub(t_host));
    // `late_fp` µs (32.32) before now; sub-µs part of now kept.
    let late_ns = ((u128::from(late_fp) * 1000) >> 32) as i64;
    // SAFETY: out-parameters of the vblank core.
    unsafe {
        *vblank_time = now - late_ns;
        *max_error = 1000;
    }
    true
}

unsafe extern "C" fn crtc_atomic_enable(crtc: *mut b::drm_crtc, _state: *mut b::drm_atomic_commit) {
    // SAFETY: the atomic helpers pass a live CRTC; vblank is initialised
    // when the device has it.
    unsafe {
        if b::drm_dev_has_vblank((*crtc).dev) {
            b::drm_crtc_vblank_on(crtc);
        }
    }
}

unsafe extern "C" fn crtc_atomic_disable(
    crtc: *mut b::drm_crtc,
    _state: *mut b::drm_atomic_commit,
) {
    // SAFETY: as above.
    unsafe {
        if b::drm_dev_has_vblank((*crtc).dev) {
            b::drm_crtc_vblank_off(crtc);
        }
    }
}

unsafe extern "C" fn crtc_atomic_flush(crtc: *mut b::drm_crtc, state: *mut b::drm_atomic_commit) {
    // SAFETY: the atomic helpers pass a live CRTC and commit; the event is
    // taken out of the state (sent once, by the vblank core).
    unsafe {
        let cs = b::gvt_drm_new_crtc_state(state, crtc);
        let e = (*cs).event;
        if !e.is_null() && b::drm_dev_has_vblank((*crtc).dev) {
            (*cs).event = ptr::null_mut();
            b::gvt_drm_crtc_send_event(crtc, e);
        }
    }
}

/// The vGPU's interrupt (MSI): pipe A vblank, the blitter's user
/// interrupt (a blit's seqno landed) and its error interrupt (refused,
/// faulted or hung: the waiter resets the blitter).
unsafe extern "C" fn irq_handler(_irq: c_int, data: *mut c_void) -> b::irqreturn_t {
    let gd = data.cast::<b::gvt_drm_dev>();
    // SAFETY: `data` is the device `gvt_drm_irq_init` registered; the IRQ is
    // freed at unbind before BAR0 is unmapped and before the device goes.
    let (drm, crtc) = unsafe { (ptr::addr_of_mut!((*gd).drm), ptr::addr_of_mut!((*gd).crtc)) };
    // SAFETY: as above.
    let g = unsafe { gpu(drm) };
    let mut handled = false;
    if g.blt.cpu.load(Ordering::Relaxed) != 0 {
        let gt = g.rd32(GTIIR) & (GT_BCS_USER | GT_BCS_ERROR);
        if gt != 0 {
            g.wr32(GTIIR, gt);
            if gt & GT_BCS_USER != 0 {
                g.blt.irq_user.fetch_add(1, Ordering::Relaxed);
            }
            if gt & GT_BCS_ERROR != 0 {
                g.blt.irq_error.fetch_add(1, Ordering::Relaxed);
                g.blt.error.store(true, Ordering::Release);
            }
            // SAFETY: `gd` is live (above); wakes the blit waiter.
            unsafe { b::gvt_drm_bcs_wake(gd) };
            handled = true;
        }
    }
    if g.vblank {
        let iir = g.rd32(DEIIR) & DE_PIPEA_VBLANK;
        if iir != 0 {
            g.wr32(DEIIR, iir);
            // SAFETY: the CRTC is live and vblank initialised.
            unsafe { b::drm_crtc_handle_vblank(crtc) };
            handled = true;
        }
    }
    if handled {
        b::irqreturn::IRQ_HANDLED
    } else {
        b::irqreturn::IRQ_NONE
    }
}

unsafe extern "C" fn crtc_mode_valid(
    _crtc: *mut b::drm_crtc,
    mode: *const b::drm_display_mode,
) -> b::drm_mode_status {
    // SAFETY: the probe helpers pass a live mode.
    let (w, h) = unsafe { (u32::from((*mode).hdisplay), u32::from((*mode).vdisplay)) };
    if w > MAX_W || h > MAX_H || w * 4 > MAX_STRIDE {
        b::drm_mode_status_MODE_BAD
    } else {
        b::drm_mode_status_MODE_OK
    }
}

/// Read the monitor's EDID from the guest EDID page; `None` while
/// disconnected or if it is not a whole number of 128-byte blocks.
fn read_edid(g: &Gpu, drm: *mut b::drm_device, buf: &mut [u8; EDID_MAX]) -> Option<usize> {
    let mut n = None;
    with_hw(drm, || {
        if g.rd32(EDID_STATUS) & 1 == 0 {
            return;
        }
        let size = g.rd32(EDID_SIZE) as usize;
        if size == 0 || size > EDID_MAX || size % 128 != 0 {
            return;
        }
        for (i, c) in buf[..size].chunks_mut(4).enumerate() {
            c.copy_from_slice(&g.rd32(EDID_PAGE + 4 * i as u32).to_le_bytes());
        }
        n = Some(size);
    });
    n
}

unsafe extern "C" fn connector_get_modes(conn: *mut b::drm_connector) -> c_int {
    // SAFETY: the probe helpers pass a live connector of this driver.
    let drm = unsafe { (*conn).dev };
    // SAFETY: as above.
    let g = unsafe { gpu(drm) };
    let mut buf = [0u8; EDID_MAX];
    let mut count = 0;
    let (mut size, mut valid, mut upd) = (None, false, 0);
    if let Some(n) = read_edid(g, drm, &mut buf) {
        size = Some(n);
        // SAFETY: `buf[..n]` is readable; drm_edid_alloc copies it.
        let edid = unsafe { b::drm_edid_alloc(buf.as_ptr().cast(), n) };
        if !edid.is_null() {
            // SAFETY: `conn` is live and `edid` a valid drm_edid we free.
            unsafe {
                valid = b::drm_edid_valid(edid);
                upd = b::drm_edid_connector_update(conn, edid);
                count = b::drm_edid_connector_add_modes(conn);
                b::drm_edid_free(edid);
            }
        }
    }
    if count == 0 {
        pr_info!(
            "gvt_drm: no modes from the monitor's EDID ({:?} bytes, header {:02x?}, valid {}, update {}): the fixed list\n",
            size,
            &buf[..8],
            valid,
            upd
        );
        // SAFETY: `conn` is live (no EDID: a fixed list, 1024x768 preferred).
        unsafe {
            b::drm_edid_connector_update(conn, ptr::null());
            count = b::drm_add_modes_noedid(conn, 1920, 1200);
            b::drm_set_preferred_mode(conn, 1024, 768);
        }
    }
    count
}

/// `Gpu::hotplugs` before the connector was first probed.
const NO_HOTPLUGS: u64 = 1 << 32;

/// The connector's status, polled by DRM's output poll helper every 10 s
/// (`DRM_CONNECTOR_POLL_CONNECT | _DISCONNECT`: gvt-sim has no hotplug
/// interrupt, its EDID page has a hotplug counter).  When the counter moved
/// since the last look, the VMM plugged, unplugged or changed the monitor
/// (vfio.h's EDID region: link down, new blob, link up): the connector
/// takes the new EDID here, which moves its epoch counter when the EDID
/// differs, so the poll helper sends a hotplug uevent (and the fbdev
/// emulation picks the new mode) even when the status stays connected.
unsafe extern "C" fn connector_detect_ctx(
    conn: *mut b::drm_connector,
    _ctx: *mut b::drm_modeset_acquire_ctx,
    _force: bool,
) -> c_int {
    // SAFETY: the probe helpers pass a live connector of this driver.
    let drm = unsafe { (*conn).dev };
    // SAFETY: as above.
    let g = unsafe { gpu(drm) };
    let (mut connected, mut count) = (false, 0u32);
    if !with_hw(drm, || {
        connected = g.rd32(EDID_STATUS) & 1 != 0;
        count = g.rd32(EDID_HOTPLUGS);
    }) {
        return b::drm_connector_status_connector_status_disconnected as c_int;
    }
    let last = g.hotplugs.swap(u64::from(count), Ordering::Relaxed);
    if last != NO_HOTPLUGS && last != u64::from(count) {
        let mut buf = [0u8; EDID_MAX];
        let size = read_edid(g, drm, &mut buf);
        let edid = match size {
            // SAFETY: `buf[..size]` is readable; drm_edid_alloc copies it.
            Some(size) => unsafe { b::drm_edid_alloc(buf.as_ptr().cast(), size) },
            None => ptr::null(),
        };
        // The first detailed timing (the preferred mode), for the log.
        let (w, h) = (
            u32::from(buf[56]) | (u32::from(buf[58] >> 4) << 8),
            u32::from(buf[59]) | (u32::from(buf[61] >> 4) << 8),
        );
        // SAFETY: the helpers call detect with mode_config.mutex held, as
        // drm_edid_connector_update needs; `edid` is ours (or null).
        unsafe {
            b::drm_edid_connector_update(conn, edid);
            if !edid.is_null() {
                b::drm_edid_free(edid);
            }
        }
        pr_info!(
            "gvt_drm: hotplug {} ({}): monitor {}, EDID {} bytes, first timing {}x{}\n",
            count,
            last,
            if connected {
                "connected"
            } else {
                "disconnected"
            },
            size.unwrap_or(0),
            w,
            h
        );
    }
    if connected {
        b::drm_connector_status_connector_status_connected as c_int
    } else {
        b::drm_connector_status_connector_status_disconnected as c_int
    }
}

// ---- the function tables ---------------------------------------------------

/// All-zero (every hook `None`, every pointer null) C table, to be filled.
const fn zeroed<T>() -> T {
    // SAFETY: only used for tables of optional function pointers (and null
    // pointers), for which all-zero is a valid value.
    unsafe { core::mem::zeroed() }
}

static MODE_CONFIG_FUNCS: b::drm_mode_config_funcs = b::drm_mode_config_funcs {
    fb_create: Some(b::drm_gem_fb_create),
    atomic_check: Some(b::drm_atomic_helper_check),
    atomic_commit: Some(b::drm_atomic_helper_commit),
    ..zeroed()
};

static PLANE_FUNCS: b::drm_plane_funcs = b::drm_plane_funcs {
    update_plane: Some(b::drm_atomic_helper_update_plane),
    disable_plane: Some(b::drm_atomic_helper_disable_plane),
    destroy: Some(b::drm_plane_cleanup),
    reset: Some(b::drm_atomic_helper_plane_reset),
    atomic_duplicate_state: Some(b::drm_atomic_helper_plane_duplicate_state),
    atomic_destroy_state: Some(b::drm_atomic_helper_plane_destroy_state),
    ..zeroed()
};

static PLANE_HELPERS: b::drm_plane_helper_funcs = b::drm_plane_helper_funcs {
    prepare_fb: Some(plane_prepare_fb),
    cleanup_fb: Some(plane_cleanup_fb),
    atomic_check: Some(plane_atomic_check),
    atomic_update: Some(plane_atomic_update),
    atomic_disable: Some(plane_atomic_disable),
    ..zeroed()
};

static CURSOR_HELPERS: b::drm_plane_helper_funcs = b::drm_plane_helper_funcs {
    prepare_fb: Some(plane_prepare_fb),
    cleanup_fb: Some(plane_cleanup_fb),
    atomic_check: Some(cursor_atomic_check),
    atomic_update: Some(cursor_atomic_update),
    atomic_disable: Some(cursor_atomic_disable),
    ..zeroed()
};

static CRTC_FUNCS: b::drm_crtc_funcs = b::drm_crtc_funcs {
    reset: Some(b::drm_atomic_helper_crtc_reset),
    set_config: Some(b::drm_atomic_helper_set_config),
    page_flip: Some(b::drm_atomic_helper_page_flip),
    atomic_duplicate_state: Some(b::drm_atomic_helper_crtc_duplicate_state),
    atomic_destroy_state: Some(b::drm_atomic_helper_crtc_destroy_state),
    enable_vblank: Some(crtc_enable_vblank),
    disable_vblank: Some(crtc_disable_vblank),
    get_vblank_counter: Some(crtc_get_vblank_counter),
    get_vblank_timestamp: Some(crtc_get_vblank_timestamp),
    ..zeroed()
};

static CRTC_HELPERS: b::drm_crtc_helper_funcs = b::drm_crtc_helper_funcs {
    mode_valid: Some(crtc_mode_valid),
    atomic_check: Some(crtc_atomic_check),
    atomic_flush: Some(crtc_atomic_flush),
    atomic_enable: Some(crtc_atomic_enable),
    atomic_disable: Some(crtc_atomic_disable),
    ..zeroed()
};

static CONNECTOR_FUNCS: b::drm_connector_funcs = b::drm_connector_funcs {
    fill_modes: Some(b::drm_helper_probe_single_connector_modes),
    reset: Some(b::drm_atomic_helper_connector_reset),
    atomic_duplicate_state: Some(b::drm_atomic_helper_connector_duplicate_state),
    atomic_destroy_state: Some(b::drm_atomic_helper_connector_destroy_state),
    ..zeroed()
};

static CONNECTOR_HELPERS: b::drm_connector_helper_funcs = b::drm_connector_helper_funcs {
    get_modes: Some(connector_get_modes),
    detect_ctx: Some(connector_detect_ctx),
    ..zeroed()
};

// ---- probe / unbind -------------------------------------------------------

fn check(ret: c_int, what: &str) -> Result {
    if ret == 0 {
        Ok(())
    } else {
        pr_err!("gvt_drm: {} failed: {}\n", what, ret);
        Err(Error::from_errno(ret))
    }
}

/// Frees the [`Gpu`] when the DRM device is released (drmm action).
unsafe extern "C" fn gpu_release(_drm: *mut b::drm_device, data: *mut c_void) {
    // SAFETY: `data` is the `Gpu` box leaked in `probe`; the DRM device is
    // being released, so no callback can use it any more.
    drop(unsafe { Pin::new_unchecked(KBox::from_raw(data.cast::<Gpu>())) });
}

/// Set up the KMS objects and register the DRM device.
///
/// # Safety
/// `gd` is a fresh `gvt_drm_dev` whose `rs` is set.
unsafe fn kms_init(gd: *mut b::gvt_drm_dev, vblank: bool, blit: bool) -> Result {
    // SAFETY: `gd` is live and not yet registered: we are its only user.
    unsafe {
        let drm = ptr::addr_of_mut!((*gd).drm);
        check(b::drmm_mode_config_init(drm), "drmm_mode_config_init")?;
        let mc = ptr::addr_of_mut!((*drm).mode_config);
        (*mc).min_width = 1;
        (*mc).min_height = 1;
        (*mc).max_width = MAX_W as _;
        (*mc).max_height = MAX_H as _;
        (*mc).preferred_depth = 24;
        (*mc).funcs = &MODE_CONFIG_FUNCS;

        let plane = ptr::addr_of_mut!((*gd).plane);
        check(
            b::drm_universal_plane_init(
                drm,
                plane,
                1,
                &PLANE_FUNCS,
                FORMATS.as_ptr(),
                FORMATS.len() as _,
                ptr::null(),
                b::drm_plane_type_DRM_PLANE_TYPE_PRIMARY,
                ptr::null(),
            ),
            "drm_universal_plane_init",
        )?;
        (*plane).helper_private = &PLANE_HELPERS;

        let cursor = ptr::addr_of_mut!((*gd).cursor);
        check(
            b::drm_universal_plane_init(
                drm,
                cursor,
                1,
                &PLANE_FUNCS,
                CURSOR_FORMATS.as_ptr(),
                CURSOR_FORMATS.len() as _,
                ptr::null(),
                b::drm_plane_type_DRM_PLANE_TYPE_CURSOR,
                ptr::null(),
            ),
            "drm_universal_plane_init (cursor)",
        )?;
        (*cursor).helper_private = &CURSOR_HELPERS;
        // Its alpha: premultiplied (DRM's default for ARGB; the only mode).
        check(
            b::drm_plane_create_blend_mode_property(cursor, 1 << b::DRM_MODE_BLEND_PREMULTI),
            "drm_plane_create_blend_mode_property",
        )?;
        // The largest cursor (DRM_CAP_CURSOR_WIDTH/HEIGHT).
        (*mc).cursor_width = CURSOR_SIZES[2];
        (*mc).cursor_height = CURSOR_SIZES[2];

        let crtc = ptr::addr_of_mut!((*gd).crtc);
        check(
            b::drmm_crtc_init_with_planes(drm, crtc, plane, cursor, &CRTC_FUNCS, ptr::null()),
            "drmm_crtc_init_with_planes",
        )?;
        (*crtc).helper_private = &CRTC_HELPERS;

        let enc = ptr::addr_of_mut!((*gd).encoder);
        check(
            b::drmm_encoder_init(
                drm,
                enc,
                ptr::null(),
                b::DRM_MODE_ENCODER_VIRTUAL as _,
                ptr::null(),
            ),
            "drmm_encoder_init",
        )?;
        (*enc).possible_crtcs = 1;

        let conn = ptr::addr_of_mut!((*gd).connector);
        check(
            b::drmm_connector_init(
                drm,
                conn,
                &CONNECTOR_FUNCS,
                b::DRM_MODE_CONNECTOR_VIRTUAL as _,
                ptr::null_mut(),
            ),
            "drmm_connector_init",
        )?;
        (*conn).helper_private = &CONNECTOR_HELPERS;
        // The EDID property: the DRM core attaches it to every connector
        // type but virtual ones, and drm_edid_connector_update() stores the
        // EDID (which drm_edid_connector_add_modes() reads the modes from)
        // only through it (without it: -EINVAL, no modes from the EDID).
        b::drm_connector_attach_edid_property(conn);
        // No hotplug interrupt: DRM's output poll helper asks
        // `connector_detect_ctx` every 10 s (started by
        // drm_kms_helper_poll_init below, stopped at unbind).
        (*conn).polled = (b::DRM_CONNECTOR_POLL_CONNECT | b::DRM_CONNECTOR_POLL_DISCONNECT) as _;
        check(
            b::drm_connector_attach_encoder(conn, enc),
            "drm_connector_attach_encoder",
        )?;

        if vblank {
            // The hardware counter is 32 bits wide.
            (*drm).max_vblank_count = u32::MAX;
            check(b::drm_vblank_init(drm, 1), "drm_vblank_init")?;
        }
        b::drm_mode_config_reset(drm);
        if vblank || blit {
            check(b::gvt_drm_irq_init(gd, Some(irq_handler)), "MSI set-up")?;
        }
        let ret = b::drm_dev_register(drm, 0);
        if ret != 0 {
            b::gvt_drm_irq_fini(gd);
        }
        check(ret, "drm_dev_register")?;
        b::drm_kms_helper_poll_init(drm);
    }
    Ok(())
}

/// The bound device: the DRM device (devm/drmm managed).
struct Bound {
    gd: *mut b::gvt_drm_dev,
}

// SAFETY: `gd` is only used from unbind (the driver core's thread), on the
// device object the DRM core keeps alive until release.
unsafe impl Send for Bound {}

struct GvtDrm;

/// `1234:6776`.  The kernel crate has no `Vendor` for QEMU's 0x1234 (no
/// PCI_VENDOR_ID in pci_ids.h), so the entry is built as C's PCI_DEVICE().
const VGPU_ID: pci::DeviceId = {
    let raw = kernel::bindings::pci_device_id {
        vendor: 0x1234,
        device: 0x6776,
        subvendor: !0,
        subdevice: !0,
        class: 0,
        class_mask: 0,
        driver_data: 0,
        override_only: 0,
    };
    // SAFETY: `pci::DeviceId` is `#[repr(transparent)]` over
    // `struct pci_device_id` and adds no invariant (its own `from_id`
    // builds exactly this value).
    unsafe { core::mem::transmute::<kernel::bindings::pci_device_id, pci::DeviceId>(raw) }
};

kernel::pci_device_table!(PCI_TABLE, <GvtDrm as pci::Driver>::IdInfo, [(VGPU_ID, ())]);

impl pci::Driver for GvtDrm {
    type IdInfo = ();
    type Data<'bound> = Bound;
    const ID_TABLE: pci::IdTable<Self::IdInfo> = &PCI_TABLE;

    fn probe<'bound>(
        pdev: &'bound pci::Device<Core<'_>>,
        _info: Option<&'bound Self::IdInfo>,
    ) -> impl PinInit<Self::Data<'bound>, Error> + 'bound {
        probe(pdev)
    }

    fn unbind<'bound>(_pdev: &'bound pci::Device<Core<'_>>, this: Pin<&Self::Data<'bound>>) {
        // SAFETY: `gd` is the device probe registered; debugfs goes first
        // (its removal waits for a running bench), then the blitter stops
        // (BAR0 is still mapped), then unplug (no new hardware access),
        // then turn the display off.
        unsafe {
            let drm = ptr::addr_of_mut!((*this.gd).drm);
            b::gvt_drm_debugfs_fini(this.gd);
            b::drm_kms_helper_poll_fini(drm);
            gpu(drm).blt_fini();
            b::drm_dev_unplug(drm);
            b::drm_atomic_helper_shutdown(drm);
            b::gvt_drm_irq_fini(this.gd);
        }
    }
}

fn probe(pdev: &pci::Device<Core<'_>>) -> Result<Bound> {
    pdev.enable_device_mem()?;
    pdev.set_master();
    // SAFETY: `pci::Device` is `#[repr(transparent)]` over `struct pci_dev`
    // (the kernel crate's own probe callback casts the other way).
    let raw: *mut b::pci_dev = (pdev as *const pci::Device<Core<'_>>).cast_mut().cast();
    // SAFETY: `raw` is the device being probed.
    check(unsafe { b::gvt_drm_set_dma_mask(raw, 40) }, "dma_set_mask")?;
    // SAFETY: as above; the mapping lives until the device is unbound.
    let mmio = unsafe { b::gvt_drm_map_bar0(raw) };
    if is_err(mmio) {
        dev_err!(pdev, "cannot map BAR0 ({})\n", err_of(mmio));
        return Err(Error::from_errno(err_of(mmio)));
    }

    // PVINFO: a gvt-rs vGPU (the bare gvt-sim model has no PVINFO and is
    // never exposed without the mediator today).
    let rd32 = |off: u32| {
        // SAFETY: BAR0 is mapped (16 MiB) and `off` a PVINFO field.
        unsafe { b::gvt_drm_rd32(mmio, off) }
    };
    // SAFETY: as above.
    let magic = unsafe { b::gvt_drm_rd64(mmio, PVINFO) };
    if magic != VGT_MAGIC {
        dev_err!(pdev, "no PVINFO magic ({:#x}): not a gvt-rs vGPU\n", magic);
        return Err(ENODEV);
    }
    let version = rd32(PV_VERSION_MAJOR) & 0xffff;
    let vgt_id = rd32(PV_VGT_ID);
    let ap = Slice {
        base: u64::from(rd32(PV_MAPPABLE_BASE)),
        size: u64::from(rd32(PV_MAPPABLE_SIZE)),
    };
    let high = Slice {
        base: u64::from(rd32(PV_NONMAPPABLE_BASE)),
        size: u64::from(rd32(PV_NONMAPPABLE_SIZE)),
    };
    dev_info!(
        pdev,
        "gvt-rs vGPU {} (PVINFO v{}): aperture GM {:#x}+{:#x}, high GM {:#x}+{:#x}\n",
        vgt_id,
        version,
        ap.base,
        ap.size,
        high.base,
        high.size
    );

    // SAFETY: `raw` is the device being probed.
    let gd = unsafe { b::gvt_drm_dev_alloc(raw) };
    if is_err(gd) {
        return Err(Error::from_errno(err_of(gd)));
    }
    let gpu = KBox::pin_init(
        pin_init!(Gpu {
            mmio: mmio as usize,
            gd: gd as usize,
            vblank: module_parameters::vblank.value() != 0,
            blt: Blitter::default(),
            maps <- new_mutex!(GmMaps {
                slices: [high, ap],
                maps: [Map::default(); MAX_MAPS],
            }),
            clock: ClockOffset(AtomicU64::new(0)),
            hotplugs: AtomicU64::new(NO_HOTPLUGS),
        }),
        GFP_KERNEL,
    )?;
    // SAFETY: the box is freed only by `gpu_release`, which rebuilds the pin.
    let gpu = KBox::into_raw(unsafe { Pin::into_inner_unchecked(gpu) });
    // SAFETY: `gd` is fresh and ours; `gpu_release` runs at its release.
    unsafe {
        (*gd).mmio = mmio;
        (*gd).rs = gpu.cast();
        let drm = ptr::addr_of_mut!((*gd).drm);
        check(
            b::__drmm_add_action_or_reset(
                drm,
                Some(gpu_release),
                gpu.cast(),
                c"gvt_drm gpu".as_ptr().cast(),
            ),
            "drmm_add_action",
        )?;
        let blit = module_parameters::blit.value() != 0;
        kms_init(gd, module_parameters::vblank.value() != 0, blit)?;
        // The blitter, before the fbdev emulation (fbcon's fills and copies
        // go to it when it is up).
        if blit && (*gd).irq != 0 {
            match (*gpu).blt_init(gd) {
                Ok(()) => (*gd).fb_accel = true,
                Err(e) => pr_warn!(
                    "gvt_drm: no blitter ({}): fbcon draws on the CPU\n",
                    e.to_errno()
                ),
            }
        }
        // The display is ready (i915's VGT_DRV_DISPLAY_READY): the mediator
        // shows a plane only after this.
        b::gvt_drm_wr32(mmio, PV_DISPLAY_READY, 1);
        b::gvt_drm_client_setup(drm);
        b::gvt_drm_debugfs_init(gd);
    }
    // SAFETY: registered above: `primary` is its card minor.
    let minor = unsafe { (*(*gd).drm.primary).index };
    dev_info!(pdev, "gvt_drm: /dev/dri/card{} on vGPU {}\n", minor, vgt_id);
    Ok(Bound { gd })
}

kernel::module_pci_driver! {
    type: GvtDrm,
    name: "gvt_drm",
    authors: ["gvt-rs developers"],
    description: "DRM/KMS driver for the gvt-sim vGPU (gvt-rs guests)",
    license: "GPL",
    params: {
        vblank: u32 {
            default: 1,
            description: "vblank interrupts (pipe A vblank over MSI) for events and waits (0: events sent at commit)",
        },
        blit: u32 {
            default: 1,
            description: "the mediated blitter (a BCS ring, user interrupts over MSI) for fbcon's fills and copies and debugfs blit_bench / blit_fill (0: the CPU draws everything)",
        },
    },
}
