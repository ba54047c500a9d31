// SPDX-License-Identifier: GPL-2.0
//! DMA ranges under invalidation: no pin into them until VFIO is done.
//!
//! VFIO type1 unmaps a range with pinned pages by dropping its container
//! lock, calling every device's `dma_unmap` in turn, retaking the lock and
//! looking again; it retries while any pin is left and hits
//! `BUG_ON(++retries > 10)` (drivers/vfio/vfio_iommu_type1.c,
//! `vfio_dma_do_unmap`).  A VMM thread writing GGTT PTEs (or render TAILs)
//! of vGPU A in a loop could re-pin a frame of the range after A's callback
//! evicted it, while B's callback still runs: a hostile VMM takes the host
//! down.  So each `dma_unmap` registers its range here *before* it takes
//! its vGPU's `state` lock (a pin already under way finishes first, under
//! that lock, and is then evicted), and every pin by a task of the same VMM
//! (same mm) into a registered range is refused (the PTE goes to scratch,
//! counted as a refused pin) while any callback for it runs and for
//! [`GRACE_NS`] after the last one returned: the time type1 needs to retake
//! its lock and remove the range.  Another VMM's pins are never refused.
//!
//! The cost of being conservative: a VMM that unmaps a range and maps new
//! memory at the same IOVA within [`GRACE_NS`] sees GGTT entries written in
//! that window go to scratch (its guest rewrites them on its next use).

use core::sync::atomic::{AtomicU64, Ordering};

use kernel::sync::Mutex;

use crate::gpu::KClock;
use crate::gvt_core::mem::Gfn;
use crate::gvt_core::sched::Clock as _;
use crate::parent;
use crate::vfio;

/// How long a range stays refused after its last callback returned.
pub(crate) const GRACE_NS: u64 = 100_000_000;
/// Ranges tracked at once; with all in use, every pin is refused until one
/// frees (conservative, never unsafe).
pub(crate) const SLOTS: usize = 16;

#[derive(Clone, Copy, Default)]
pub(crate) struct Range {
    /// The unmapping VMM (`current->mm`), 0: slot free.
    mm: usize,
    first: Gfn,
    end: Gfn,
    /// Callbacks for this range now running.
    in_flight: u32,
    /// When the last one returned.
    done_ns: u64,
}

pub(crate) type Registry = Mutex<[Range; SLOTS]>;

/// Pins refused because their frame was being unmapped (module-wide,
/// reported in every vGPU's `gvt/stats` as `pins_refused_unmapping`).
pub(crate) static REFUSED: AtomicU64 = AtomicU64::new(0);

fn current_mm() -> usize {
    // SAFETY: reads `current->mm`.
    unsafe { vfio::gvt_rs_current_mm() as usize }
}

fn live(r: &Range, now: u64) -> bool {
    r.mm != 0 && (r.in_flight > 0 || now.saturating_sub(r.done_ns) < GRACE_NS)
}

/// A `dma_unmap` callback in progress; ends on drop.
pub(crate) struct Guard {
    slot: Option<usize>,
}

/// Register `[iova, iova + len)` of the calling VMM as under invalidation.
pub(crate) fn begin(iova: u64, len: u64) -> Guard {
    let mm = current_mm();
    let first = iova >> 12;
    let end = iova.saturating_add(len).saturating_add(4095) >> 12;
    if mm == 0 || end <= first {
        return Guard { slot: None };
    }
    let now = KClock.now_ns();
    let mut t = parent::get().invalidating.lock();
    // The same range again (type1's retry, or the next device): share it.
    if let Some(i) = t.iter().position(|r| r.mm == mm && r.first == first && r.end == end && live(r, now)) {
        if let Some(r) = t.get_mut(i) {
            r.in_flight += 1;
        }
        return Guard { slot: Some(i) };
    }
    let free = t.iter().position(|r| !live(r, now));
    if let Some(r) = free.and_then(|i| t.get_mut(i)) {
        *r = Range { mm, first, end, in_flight: 1, done_ns: 0 };
    }
    Guard { slot: free }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let Some(i) = self.slot else { return };
        let mut t = parent::get().invalidating.lock();
        if let Some(r) = t.get_mut(i) {
            r.in_flight = r.in_flight.saturating_sub(1);
            r.done_ns = KClock.now_ns();
        }
    }
}

/// Whether the calling task may pin guest frame `gfn` now.
pub(crate) fn may_pin(gfn: Gfn) -> bool {
    let mm = current_mm();
    let now = KClock.now_ns();
    let t = parent::get().invalidating.lock();
    let all_busy = t.iter().all(|r| live(r, now));
    // A full table may have left an unmap unregistered: refuse everyone's
    // pins until a slot frees (at most GRACE_NS after a callback ends).
    let refused = all_busy || t.iter().any(|r| live(r, now) && r.mm == mm && gfn >= r.first && gfn < r.end);
    drop(t);
    if refused {
        REFUSED.fetch_add(1, Ordering::Relaxed);
    }
    !refused
}
