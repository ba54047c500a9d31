// SPDX-License-Identifier: GPL-2.0
//! DMA ranges under invalidation: no pin into them while VFIO unmaps them.
//!
//! VFIO type1 unmaps a range with pinned pages by dropping its container
//! lock, calling every device's `dma_unmap` in turn, retaking the lock and
//! looking again; it retries while any pin is left and hits
//! `BUG_ON(++retries > 10)` after ten retries of the same range
//! (drivers/vfio/vfio_iommu_type1.c, `vfio_dma_do_unmap`).  A VMM thread
//! writing GGTT PTEs (or render TAILs) of vGPU A in a loop could re-pin a
//! frame of the range after A's callback evicted it, while B's callback
//! still runs: a hostile VMM takes the host down.
//!
//! So each `dma_unmap` callback registers its range here *before* it takes
//! its vGPU's `state` lock (a pin already under way finishes first, under
//! that lock, and is then evicted), and a pin by a task of the same VMM (same
//! mm) into a registered range is refused (the PTE goes to scratch, counted
//! in `pins_refused_unmapping`):
//! - while any callback for the range runs (VFIO notifies the devices of a
//!   container one after the other; the range is one entry for all of them);
//! - after the last one returned, only if VFIO came back with the same range
//!   for a vGPU it notified already, within [`RETRY_WINDOW_NS`] (a retry:
//!   some pin slipped in between our callbacks and VFIO retaking its lock):
//!   then for a grace period that
//!   doubles with each retry ([`grace_ns`]), so VFIO gets its lock back before
//!   the next pin is allowed, and the tenth retry never comes.
//!
//! An honest VMM never causes a retry: its unmap costs nothing more, and it
//! may map new memory at the same IOVA and pin it at once.  Another VMM's
//! pins are never refused.  What stays conservative: the key is the VMM
//! (its mm), not its container, so a VMM with two containers loses pins into
//! one while it unmaps the same IOVA range of the other (for the length of
//! the callbacks); a VMM that unmaps, maps, pins and unmaps the same range of
//! the same vGPU again within [`RETRY_WINDOW_NS`] looks like a retry and
//! loses pins into it for 20 ms.  A real retry comes right after VFIO retakes its lock; a
//! hostile VMM that delays that (a slow pin holding the container lock) has
//! its own re-pin queued behind VFIO on the same lock.  The table holds [`SLOTS`] ranges; a callback that
//! finds it full of callbacks in flight waits for one to finish (callbacks
//! never wait for a pin, pins never wait here: no cycle).

use core::sync::atomic::{AtomicU64, Ordering};

use kernel::new_mutex;
use kernel::prelude::*;
use kernel::sync::Mutex;

use crate::gvt_core::mem::Gfn;
use crate::kapi::{current_mm, now_ns, sleep_ms};

/// A callback for a range that ended less than this ago, called again for
/// the same range, is VFIO's retry.
pub(crate) const RETRY_WINDOW_NS: u64 = 10_000_000;
/// Ranges tracked at once.
pub(crate) const SLOTS: usize = 64;

/// How long pins stay refused after the callbacks of retry round `rounds`
/// returned: none for the first round, then 10 ms doubling per retry
/// (capped at about 10 s).
pub(crate) const fn grace_ns(rounds: u32) -> u64 {
    if rounds == 0 {
        0
    } else {
        let k = if rounds > 10 { 10 } else { rounds };
        10_000_000u64 << k
    }
}

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
    /// VFIO's retries of this range seen so far.
    rounds: u32,
    /// The vGPUs (bit per scheduler slot) notified in the current round: a
    /// vGPU notified again is VFIO's retry (another container of the same
    /// VMM unmapping the same IOVAs notifies other vGPUs).
    seen: u32,
}

impl Range {
    /// Pins into it are refused now.
    fn refusing(&self, now: u64) -> bool {
        self.mm != 0
            && (self.in_flight > 0 || now.saturating_sub(self.done_ns) < grace_ns(self.rounds))
    }
    /// A new callback for it now would be a retry.
    fn recent(&self, now: u64) -> bool {
        self.mm != 0 && (self.in_flight > 0 || now.saturating_sub(self.done_ns) < RETRY_WINDOW_NS)
    }
}

/// The ranges under invalidation (one per parent, shared by its vGPUs).
#[pin_data]
pub(crate) struct Registry {
    #[pin]
    t: Mutex<[Range; SLOTS]>,
}

impl Registry {
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self { t <- new_mutex!([Range::default(); SLOTS]) })
    }
}

/// Pins refused because their frame was being unmapped (module-wide,
/// reported in every vGPU's `gvt/stats` as `pins_refused_unmapping`).
pub(crate) static REFUSED: AtomicU64 = AtomicU64::new(0);
/// VFIO retries seen (`gvt/stats` `unmap_retries`).
pub(crate) static RETRIES: AtomicU64 = AtomicU64::new(0);
/// Until when any entry may refuse a pin (`u64::MAX` while a callback runs):
/// the pin path (every GGTT write of every vGPU) skips the table's lock
/// when it is past.  Raised under the lock before a range starts refusing,
/// recomputed under it when a callback ends.
static REFUSING_UNTIL: AtomicU64 = AtomicU64::new(0);

/// The latest time any entry of `t` refuses pins.
fn refusing_until(t: &[Range; SLOTS]) -> u64 {
    t.iter()
        .filter(|r| r.mm != 0)
        .map(|r| {
            if r.in_flight > 0 {
                u64::MAX
            } else {
                r.done_ns.saturating_add(grace_ns(r.rounds))
            }
        })
        .max()
        .unwrap_or(0)
}

/// A `dma_unmap` callback in progress; ends on drop.
pub(crate) struct Guard<'a> {
    reg: &'a Registry,
    slot: Option<usize>,
}

impl Registry {
    /// Register `[iova, iova + len)` of the calling VMM as under invalidation,
    /// for the callback of the vGPU in scheduler slot `slot`.
    pub(crate) fn begin(&self, iova: u64, len: u64, slot: u16) -> Guard<'_> {
        let bit = 1u32.checked_shl(u32::from(slot)).unwrap_or(0);
        let mm = current_mm();
        let first = iova >> 12;
        let end = iova.saturating_add(len).saturating_add(4095) >> 12;
        if mm == 0 || end <= first {
            // Container teardown (no VMM task): nothing of that VMM pins any more.
            return Guard {
                reg: self,
                slot: None,
            };
        }
        loop {
            let now = now_ns();
            let mut t = self.t.lock();
            REFUSING_UNTIL.store(u64::MAX, Ordering::SeqCst);
            let same = t
                .iter()
                .position(|r| r.mm == mm && r.first == first && r.end == end && r.recent(now));
            if let Some(r) = same.and_then(|i| t.get_mut(i)) {
                if r.seen & bit != 0 {
                    // VFIO is back for the same range and this vGPU: a pin
                    // slipped in after the previous round.
                    r.rounds = r.rounds.saturating_add(1);
                    r.seen = 0;
                    RETRIES.fetch_add(1, Ordering::Relaxed);
                }
                r.seen |= bit;
                r.in_flight += 1;
                return Guard {
                    reg: self,
                    slot: same,
                };
            }
            // A free slot, else the one idle longest (its retry history goes).
            let idle = |r: &Range| r.in_flight == 0 && !r.refusing(now);
            let pick = t.iter().position(|r| r.mm == 0).or_else(|| {
                t.iter()
                    .enumerate()
                    .filter(|(_, r)| idle(r))
                    .min_by_key(|(_, r)| r.done_ns)
                    .map(|(i, _)| i)
            });
            if let Some(r) = pick.and_then(|i| t.get_mut(i)) {
                *r = Range {
                    mm,
                    first,
                    end,
                    in_flight: 1,
                    done_ns: 0,
                    rounds: 0,
                    seen: bit,
                };
                return Guard {
                    reg: self,
                    slot: pick,
                };
            }
            REFUSING_UNTIL.store(refusing_until(&t), Ordering::SeqCst);
            drop(t);
            // Every slot is a callback in flight or a retried range in its
            // grace period: wait for one (they end without us).
            // (Process context, no lock held.)
            sleep_ms(1);
        }
    }

    /// Whether the calling task may pin guest frame `gfn` now.
    pub(crate) fn may_pin(&self, gfn: Gfn) -> bool {
        let now = now_ns();
        // Nothing is being unmapped (the common case): no lock.  A callback
        // that starts after this load evicts this pin later, under the vGPU's
        // lock, which the pin holds until it is recorded.
        if now >= REFUSING_UNTIL.load(Ordering::SeqCst) {
            return true;
        }
        let mm = current_mm();
        let t = self.t.lock();
        let refused = t
            .iter()
            .any(|r| r.mm == mm && gfn >= r.first && gfn < r.end && r.refusing(now));
        drop(t);
        if refused {
            REFUSED.fetch_add(1, Ordering::Relaxed);
        }
        !refused
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        let Some(i) = self.slot else { return };
        let mut t = self.reg.t.lock();
        if let Some(r) = t.get_mut(i) {
            r.in_flight = r.in_flight.saturating_sub(1);
            r.done_ns = now_ns();
        }
        REFUSING_UNTIL.store(refusing_until(&t), Ordering::SeqCst);
    }
}
