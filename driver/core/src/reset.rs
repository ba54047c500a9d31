//! Hang detection and recovery (paper §3.5.1, "Denial-of-service attack",
//! and seed 003: on a timeout only the guilty context should die).
//!
//! * [`Watchdog`]: per engine and vGPU, the engine time the vGPU has used
//!   since its last retired submission.  Time is counted only while the vGPU
//!   owns the engine, so preemption and other vGPUs' slices never make an
//!   innocent submission look stuck.  Past `timeout_ns` the vGPU is guilty.
//!   The flow-control bound (`sched`) limits a legitimate submission's length;
//!   the timeout must exceed its worst-case execution time.
//! * [`reset_engine`]: per-engine reset through `GDRST` (0x941C), Intel's
//!   gen6+ domain bits (render bit 1, blitter bit 3); the bit self-clears when
//!   the reset is done.  Only the hung engine is reset, so the other engine's
//!   owner keeps running, and every vGPU whose context was saved before the
//!   hang is restored intact later (the context store keeps their images).
//! * [`HangTracker`]: per-vGPU hang counter and limit (the kernel module
//!   parameter; per vGPU adjustable).  At the limit the vGPU is **Failed**:
//!   its work is dropped and its submissions refused until the vGPU is reset
//!   or destroyed.  Each hang produces a [`HangEvent`] the glue turns into
//!   a virtual error interrupt ([`HangEvent::iir_bits`]) and register status
//!   ([`HangEvent::eir`]) for the guest driver's own hang recovery — the
//!   paper's "emulates a GPU hang event, allowing each VM to detect and
//!   recover" — but only the guilty vGPU sees it.

use super::backend::{Backend, EngineId};
use super::irq::GtEvent;
use super::regs::Gdrst;

/// Graphics device reset control (declared in [`super::regs`]).
pub use super::regs::GDRST;
/// Full-chip reset domain.
pub const GDRST_FULL: u32 = Gdrst::FULL;
/// Render engine reset domain.
pub const GDRST_RENDER: u32 = Gdrst::RENDER;
/// Blitter engine reset domain.
pub const GDRST_BLT: u32 = Gdrst::BLITTER;

/// GT IIR bit of an engine's command-streamer error (Intel gen6+):
/// `GT_RENDER_CS_MASTER_ERROR_INTERRUPT`, `GT_BLT_CS_ERROR_INTERRUPT`.
pub const fn engine_error_iir_bit(e: EngineId) -> u32 {
    GtEvent::Hang(e).bit()
}

/// Per-ring error identity register (Intel `RING_EIR`) the glue shows a
/// guilty vGPU.
pub use super::regs::ring::EIR as RING_EIR;
/// `RING_EIR` value reported for a hang (our choice: bit 0, "instruction
/// error / no progress").
pub const EIR_HANG: u32 = 1 << 0;

/// The GDRST domain bit of an engine.
pub const fn reset_bit(e: EngineId) -> u32 {
    Gdrst::engine_bit(e)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetError {
    /// GDRST did not clear within the poll budget.
    Timeout,
}

/// Reset engine `e`: set its GDRST bit, poll until the hardware clears it.
/// Returns the number of polls it took.
pub fn reset_engine<B: Backend>(b: &mut B, e: EngineId, max_polls: u32) -> Result<u32, ResetError> {
    let bit = reset_bit(e);
    b.write_reg(GDRST, bit);
    for i in 0..max_polls.max(1) {
        if b.read_reg(GDRST) & bit == 0 {
            return Ok(i.saturating_add(1));
        }
    }
    Err(ResetError::Timeout)
}

/// Per-engine, per-vGPU no-progress timer.
pub struct Watchdog<const N: usize> {
    stall_ns: [[u64; N]; EngineId::COUNT],
    timeout_ns: u64,
}

impl<const N: usize> Watchdog<N> {
    pub const fn new(timeout_ns: u64) -> Self {
        Self {
            stall_ns: [[0; N]; EngineId::COUNT],
            timeout_ns,
        }
    }
    pub fn timeout_ns(&self) -> u64 {
        self.timeout_ns
    }
    /// Account one run of `slot` on `e`: `consumed_ns` of engine time,
    /// `retired` submissions completed, `since_retire_ns` of it after the last
    /// completion.  Returns true when the slot is now guilty of a hang.
    pub fn observe(
        &mut self,
        e: EngineId,
        slot: usize,
        consumed_ns: u64,
        retired: u32,
        since_retire_ns: u64,
    ) -> bool {
        let t = match self
            .stall_ns
            .get_mut(e.index())
            .and_then(|a| a.get_mut(slot))
        {
            Some(t) => t,
            None => return false,
        };
        *t = if retired > 0 {
            since_retire_ns.min(consumed_ns)
        } else {
            t.saturating_add(consumed_ns)
        };
        *t >= self.timeout_ns
    }
    /// Engine time `slot` has been without progress on `e`.
    pub fn stalled_ns(&self, e: EngineId, slot: usize) -> u64 {
        self.stall_ns
            .get(e.index())
            .and_then(|a| a.get(slot))
            .copied()
            .unwrap_or(0)
    }
    /// Forget `slot` on `e` (its work was dropped, or it went idle).
    pub fn clear(&mut self, e: EngineId, slot: usize) {
        if let Some(t) = self
            .stall_ns
            .get_mut(e.index())
            .and_then(|a| a.get_mut(slot))
        {
            *t = 0;
        }
    }
}

/// One hang, as the guilty vGPU is told about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HangEvent {
    pub slot: usize,
    pub engine: EngineId,
    /// Hangs of this vGPU since its last reset, this one included.
    pub count: u32,
    /// The vGPU reached its limit and is now Failed.
    pub failed: bool,
    /// Clock time of the detection.
    pub at_ns: u64,
    /// Whether the engine reset completed (GDRST cleared).
    pub reset_ok: bool,
}

impl HangEvent {
    /// Bits to set in the vGPU's virtual GT IIR (error interrupt).
    pub const fn iir_bits(&self) -> u32 {
        engine_error_iir_bit(self.engine)
    }
    /// Value for the vGPU's virtual `RING_EIR` of [`HangEvent::engine`].
    pub const fn eir(&self) -> u32 {
        EIR_HANG
    }
}

/// Per-vGPU hang counters, limits and the Failed state.
pub struct HangTracker<const N: usize> {
    count: [u32; N],
    limit: [u32; N],
    failed: [bool; N],
    pending: [Option<HangEvent>; N],
    default_limit: u32,
}

impl<const N: usize> HangTracker<N> {
    /// `default_limit`: hangs after which a vGPU is Failed (at least 1).
    pub const fn new(default_limit: u32) -> Self {
        let l = if default_limit == 0 { 1 } else { default_limit };
        Self {
            count: [0; N],
            limit: [l; N],
            failed: [false; N],
            pending: [None; N],
            default_limit: l,
        }
    }
    pub fn default_limit(&self) -> u32 {
        self.default_limit
    }
    /// Per-vGPU limit (the per-VM threshold); at least 1.
    pub fn set_limit(&mut self, slot: usize, limit: u32) {
        if let Some(l) = self.limit.get_mut(slot) {
            *l = limit.max(1);
        }
    }
    pub fn limit(&self, slot: usize) -> u32 {
        self.limit.get(slot).copied().unwrap_or(self.default_limit)
    }
    pub fn count(&self, slot: usize) -> u32 {
        self.count.get(slot).copied().unwrap_or(0)
    }
    pub fn is_failed(&self, slot: usize) -> bool {
        self.failed.get(slot).copied().unwrap_or(false)
    }
    /// Record a hang of `slot` on `e`; returns the event (also kept until
    /// [`HangTracker::take_event`]).
    pub fn record(
        &mut self,
        slot: usize,
        e: EngineId,
        at_ns: u64,
        reset_ok: bool,
    ) -> Option<HangEvent> {
        let c = self.count.get_mut(slot)?;
        *c = c.saturating_add(1);
        let count = *c;
        let failed = count >= self.limit(slot);
        if failed {
            if let Some(f) = self.failed.get_mut(slot) {
                *f = true;
            }
        }
        let ev = HangEvent {
            slot,
            engine: e,
            count,
            failed,
            at_ns,
            reset_ok,
        };
        if let Some(p) = self.pending.get_mut(slot) {
            *p = Some(ev);
        }
        Some(ev)
    }
    /// The last hang event not yet delivered to the vGPU.
    pub fn take_event(&mut self, slot: usize) -> Option<HangEvent> {
        self.pending.get_mut(slot).and_then(|p| p.take())
    }
    /// vGPU reset or (re)created: counter 0, not Failed, limit back to the default.
    pub fn reset_slot(&mut self, slot: usize) {
        if let (Some(c), Some(f), Some(p), Some(l)) = (
            self.count.get_mut(slot),
            self.failed.get_mut(slot),
            self.pending.get_mut(slot),
            self.limit.get_mut(slot),
        ) {
            *c = 0;
            *f = false;
            *p = None;
            *l = self.default_limit;
        }
    }
    /// Set the counter (migration restore): Failed if it reaches the limit.
    pub fn restore_count(&mut self, slot: usize, count: u32) {
        let failed = count >= self.limit(slot);
        if let (Some(c), Some(f)) = (self.count.get_mut(slot), self.failed.get_mut(slot)) {
            *c = count;
            *f = failed;
        }
    }
    /// vGPU reset that keeps the operator's per-vGPU limit.
    pub fn clear_failure(&mut self, slot: usize) {
        if let (Some(c), Some(f), Some(p)) = (
            self.count.get_mut(slot),
            self.failed.get_mut(slot),
            self.pending.get_mut(slot),
        ) {
            *c = 0;
            *f = false;
            *p = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::backend::Pte;
    use super::*;

    struct Gdrst {
        val: u32,
        polls_left: u32,
        resets: [u32; 2],
    }
    impl Backend for Gdrst {
        fn read_reg(&mut self, off: u32) -> u32 {
            assert_eq!(off, GDRST);
            if self.polls_left == 0 {
                self.val = 0;
            } else {
                self.polls_left -= 1;
            }
            self.val
        }
        fn write_reg(&mut self, off: u32, v: u32) {
            assert_eq!(off, GDRST);
            if v & GDRST_RENDER != 0 {
                self.resets[0] += 1;
            }
            if v & GDRST_BLT != 0 {
                self.resets[1] += 1;
            }
            self.val = v;
        }
        fn ggtt_entries(&self) -> u32 {
            0
        }
        fn write_ggtt(&mut self, _: u32, _: Pte) {}
        fn read_ggtt(&self, _: u32) -> Pte {
            Pte(0)
        }
    }

    #[test]
    fn reset_uses_per_engine_bit_and_polls() {
        let mut b = Gdrst {
            val: 0,
            polls_left: 3,
            resets: [0; 2],
        };
        assert_eq!(reset_engine(&mut b, EngineId::Bcs, 10), Ok(4));
        assert_eq!(b.resets, [0, 1]);
        b.polls_left = 100;
        assert_eq!(
            reset_engine(&mut b, EngineId::Rcs, 10),
            Err(ResetError::Timeout)
        );
        assert_eq!(b.resets, [1, 1]);
    }

    #[test]
    fn watchdog_counts_only_time_without_retirement() {
        let mut w = Watchdog::<4>::new(10_000);
        assert!(!w.observe(EngineId::Rcs, 1, 6_000, 0, 6_000));
        assert!(!w.observe(EngineId::Bcs, 1, 9_000, 0, 9_000), "per engine");
        // A retirement restarts the timer at the time spent after it.
        assert!(!w.observe(EngineId::Rcs, 1, 6_000, 1, 2_000));
        assert_eq!(w.stalled_ns(EngineId::Rcs, 1), 2_000);
        assert!(!w.observe(EngineId::Rcs, 1, 7_000, 0, 7_000));
        assert!(w.observe(EngineId::Rcs, 1, 1_000, 0, 1_000));
        w.clear(EngineId::Rcs, 1);
        assert_eq!(w.stalled_ns(EngineId::Rcs, 1), 0);
        assert!(
            !w.observe(EngineId::Rcs, 9, u64::MAX, 0, 0),
            "bad slot ignored"
        );
    }

    #[test]
    fn tracker_fails_at_limit_and_resets() {
        let mut t = HangTracker::<4>::new(3);
        t.set_limit(2, 1);
        let e = t.record(0, EngineId::Rcs, 5, true).unwrap();
        assert_eq!((e.count, e.failed), (1, false));
        assert_eq!(e.iir_bits(), 1 << 3);
        assert_eq!(t.take_event(0), Some(e));
        assert_eq!(t.take_event(0), None);
        t.record(0, EngineId::Bcs, 6, true);
        assert!(!t.is_failed(0));
        let e = t.record(0, EngineId::Bcs, 7, true).unwrap();
        assert!(e.failed && t.is_failed(0));
        assert_eq!(e.iir_bits(), 1 << 25);
        assert!(
            t.record(2, EngineId::Rcs, 8, true).unwrap().failed,
            "per-vGPU limit"
        );
        assert!(!t.is_failed(1));
        t.clear_failure(2);
        assert!(!t.is_failed(2));
        assert_eq!(t.limit(2), 1);
        t.reset_slot(2);
        assert_eq!(t.limit(2), 3);
        assert!(t.record(9, EngineId::Rcs, 0, true).is_none());
    }
}
