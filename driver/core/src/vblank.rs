//! Vertical blank emulation (paper §3.2 "Display management": the vGPU's
//! display is virtual, so its refresh is too; GVT-g drives it with a per-vGPU
//! 16 ms hrtimer, `vblank_timer_fn` → `emulate_vblank_on_pipe`).
//!
//! A guest paces its rendering and flips by watching the pipe's frame counter.
//! gvt-sim keeps Intel's G4X+ pipe A counters in the vGPU's vreg file (plain
//! virtual registers: unknown to [`super::regs`]'s table, so the MMIO
//! dispatcher returns what is stored there, and this module stores it):
//!
//! | register | offset | content |
//! |---|---|---|
//! | `PIPE_FRMCOUNT_G4X(PIPE_A)` | 0x70040 | vblanks since the vGPU was created (low 32 bits) |
//! | `PIPE_FLIPCOUNT_G4X(PIPE_A)` | 0x70044 | DSPASURF writes (flips) |
//! | `PIPE_FRMTMSTMP(PIPE_A)` | 0x70048 | time of the latest vblank, µs (low 32 bits) |
//! | `DSPSURFLIVE(PLANE_A)` | 0x701AC | the surface being scanned out |
//!
//! The model is a pure function of time: vblank *n* happens at
//! `epoch + n × period` (re-anchored when the period changes, so the count
//! stays continuous), the period being the monitor mode's frame time
//! ([`super::edid::Mode::frame_period_ns`], 16.68 ms for 1920x1200 CVT-RB).
//! gvt-sim has no `PIPECONF`: the pipe runs while the primary plane is
//! enabled (`DSPACNTR` bit 31), and the counter stands still while it is not
//! ([`Vblank::set_running`]; a re-enabled pipe has its next vblank one period
//! later).  Counts never go backwards, whatever clock values the caller passes.
//!
//! **The vblank interrupt** (i915's Ivybridge display-engine block, in
//! [`super::regs`]): `DEISR` 0x44000 (reads 0), `DEIMR` 0x44004, `DEIIR`
//! 0x44008 (write one to clear), `DEIER` 0x4400C, with the pipe A vblank on
//! bit 0 (`DE_PIPEA_VBLANK_IVB`, [`super::irq::DE_PIPEA_VBLANK`]).  The same
//! IIR/IMR/IER semantics as the GT block ([`super::irq::GtIrq`]); a tick that
//! finds new vblanks latches the bit once (vblanks while it is pending merge,
//! as on hardware), and the vGPU's MSI or INTx carries it.  A flip takes effect at once (as
//! in GVT-g: `DSPSURFLIVE` and the flip counter update on the `DSPASURF`
//! write).
//!
//! **What the kernel does.**  On vGPU creation `Vblank::new(now, period)`;
//! on every `TrapEvent::Display { reg: PlaneSurf, value }` [`Vblank::flip`];
//! on an EDID hotplug with a new mode [`Vblank::set_period`]; and
//! [`Vblank::tick`] either from a per-vGPU hrtimer armed for
//! [`Vblank::next_vblank_ns`] (GVT-g's way; `tick`'s return value is the number
//! of vblanks to signal if a vblank interrupt is wired) or lazily, just before
//! it dispatches a guest read of `0x70040..=0x7004B` (no timer for idle VMs).
//! Both keep the guest's view exact because the counter is computed from the
//! clock, not incremented per timer shot.

use super::regs::{self, DSPACNTR};

/// `PIPE_FRMCOUNT_G4X(PIPE_A)`.
pub const PIPEA_FRMCOUNT: u32 = 0x70040;
/// `PIPE_FLIPCOUNT_G4X(PIPE_A)`.
pub const PIPEA_FLIPCOUNT: u32 = 0x70044;
/// `PIPE_FRMTMSTMP(PIPE_A)`.
pub const PIPEA_FRMTMSTMP: u32 = 0x70048;
/// `DSPSURFLIVE(PLANE_A)`.
pub const DSPASURFLIVE: u32 = DSPACNTR + 0x2C;
/// Shortest period accepted (1 kHz).
pub const MIN_PERIOD_NS: u64 = 1_000_000;
/// Longest period accepted (1 Hz).
pub const MAX_PERIOD_NS: u64 = 1_000_000_000;
/// 60 Hz, for a vGPU without a monitor mode.
pub const DEFAULT_PERIOD_NS: u64 = 16_666_667;

/// One vGPU's vblank clock and counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vblank {
    period_ns: u64,
    /// Time of vblank number `base`.
    epoch_ns: u64,
    base: u64,
    /// Latest time seen (the clock is clamped to it: never backwards).
    last_ns: u64,
    /// Frame count written by the latest tick.
    reported: u64,
    flips: u32,
    /// The pipe runs (the plane is enabled): frames advance with time.
    running: bool,
}

fn clamp_period(p: u64) -> u64 {
    p.clamp(MIN_PERIOD_NS, MAX_PERIOD_NS)
}

fn put(vregs: &mut [u32], off: u32, v: u32) {
    if let Some(d) = regs::vreg_mut(vregs, off) {
        *d = v;
    }
}

impl Vblank {
    /// Counting from 0 at `now_ns`, one vblank per `period_ns` (clamped to
    /// [`MIN_PERIOD_NS`]..=[`MAX_PERIOD_NS`]).
    pub fn new(now_ns: u64, period_ns: u64) -> Self {
        Vblank {
            period_ns: clamp_period(period_ns),
            epoch_ns: now_ns,
            base: 0,
            last_ns: now_ns,
            reported: 0,
            flips: 0,
            running: true,
        }
    }

    /// Like [`Vblank::new`], with the pipe stopped (a vGPU's plane starts
    /// disabled).
    pub fn stopped(now_ns: u64, period_ns: u64) -> Self {
        Vblank {
            running: false,
            ..Self::new(now_ns, period_ns)
        }
    }

    /// A clock resumed on another vGPU (migration restore): `frames`
    /// vblanks and `flips` flips so far, the next vblank one period after
    /// `now_ns` if `running`.
    pub fn resumed(now_ns: u64, period_ns: u64, frames: u64, flips: u32, running: bool) -> Self {
        Vblank {
            period_ns: clamp_period(period_ns),
            epoch_ns: now_ns,
            base: frames,
            last_ns: now_ns,
            reported: frames,
            flips,
            running,
        }
    }

    /// Whether the pipe runs (frames advance).
    pub fn running(&self) -> bool {
        self.running
    }

    /// Start or stop the pipe at `now_ns`.  Stopping keeps every vblank up
    /// to `now_ns` (the next [`Vblank::tick`] still reports them); starting
    /// puts the next vblank one period after `now_ns`.
    pub fn set_running(&mut self, now_ns: u64, on: bool) {
        if on == self.running {
            return;
        }
        let t = now_ns.max(self.last_ns);
        if on {
            self.epoch_ns = t;
        } else {
            let f = self.frames_at(t);
            self.epoch_ns = self.last_vblank_ns(t);
            self.base = f;
        }
        self.last_ns = t;
        self.running = on;
    }

    pub fn period_ns(&self) -> u64 {
        self.period_ns
    }
    /// Flips so far.
    pub fn flips(&self) -> u32 {
        self.flips
    }

    /// Vblanks up to `now_ns` (or up to the latest time seen, if later).
    pub fn frames_at(&self, now_ns: u64) -> u64 {
        if !self.running {
            return self.base;
        }
        let t = now_ns.max(self.last_ns);
        // `period_ns` is never 0 (clamped); no panic path either way.
        self.base.saturating_add(
            t.saturating_sub(self.epoch_ns)
                .checked_div(self.period_ns)
                .unwrap_or(0),
        )
    }

    /// Time of the latest vblank at or before `now_ns`.
    pub fn last_vblank_ns(&self, now_ns: u64) -> u64 {
        let n = self.frames_at(now_ns).saturating_sub(self.base);
        self.epoch_ns
            .saturating_add(n.saturating_mul(self.period_ns))
    }

    /// Time of the first vblank after `now_ns` (arm the timer for it);
    /// `u64::MAX` while the pipe is stopped.
    pub fn next_vblank_ns(&self, now_ns: u64) -> u64 {
        if !self.running {
            return u64::MAX;
        }
        self.last_vblank_ns(now_ns).saturating_add(self.period_ns)
    }

    /// Change the period at `now_ns` (a new monitor mode): the count goes on
    /// from where it is, the next vblank is one new period after the latest.
    pub fn set_period(&mut self, now_ns: u64, period_ns: u64) {
        let t = now_ns.max(self.last_ns);
        let f = self.frames_at(t);
        self.epoch_ns = self.last_vblank_ns(t);
        self.base = f;
        self.last_ns = t;
        self.period_ns = clamp_period(period_ns);
    }

    /// Bring the guest-visible counters up to `now_ns`; returns how many
    /// vblanks happened since the previous tick.
    pub fn tick(&mut self, now_ns: u64, vregs: &mut [u32]) -> u64 {
        let t = now_ns.max(self.last_ns);
        self.last_ns = t;
        let f = self.frames_at(t);
        let new = f.saturating_sub(self.reported);
        self.reported = f;
        put(vregs, PIPEA_FRMCOUNT, f as u32);
        put(
            vregs,
            PIPEA_FRMTMSTMP,
            (self.last_vblank_ns(t) / 1000) as u32,
        );
        new
    }

    /// A DSPASURF write of `surf` (a flip): live surface and flip counter.
    pub fn flip(&mut self, surf: u32, vregs: &mut [u32]) {
        self.flips = self.flips.wrapping_add(1);
        put(vregs, PIPEA_FLIPCOUNT, self.flips);
        put(vregs, DSPASURFLIVE, surf);
    }

    /// Write every counter (after a vGPU reset cleared the vregs).
    pub fn restore(&self, vregs: &mut [u32]) {
        let t = self.last_ns;
        put(vregs, PIPEA_FRMCOUNT, self.reported as u32);
        put(
            vregs,
            PIPEA_FRMTMSTMP,
            (self.last_vblank_ns(t) / 1000) as u32,
        );
        put(vregs, PIPEA_FLIPCOUNT, self.flips);
    }
}

#[cfg(test)]
mod tests {
    use super::super::edid::Mode;
    use super::super::regs::{lookup, VREG_DWORDS};
    use super::*;
    use proptest::prelude::*;
    use std::vec;

    const MS: u64 = 1_000_000;

    fn rd(v: &[u32], off: u32) -> u32 {
        regs::vreg_get(v, off)
    }

    #[test]
    fn counters_are_plain_vregs_the_dispatcher_leaves_alone() {
        for off in [
            PIPEA_FRMCOUNT,
            PIPEA_FLIPCOUNT,
            PIPEA_FRMTMSTMP,
            DSPASURFLIVE,
        ] {
            assert!(
                lookup(off).is_none(),
                "{off:#x} must not be a mediated register"
            );
        }
        assert_eq!(DSPASURFLIVE, 0x701AC);
    }

    #[test]
    fn frames_follow_the_clock() {
        let t0 = 5_000 * MS;
        let mut vb = Vblank::new(t0, 16 * MS);
        let mut v = vec![0u32; VREG_DWORDS];
        assert_eq!(vb.tick(t0, &mut v), 0);
        assert_eq!(vb.tick(t0 + 15 * MS, &mut v), 0);
        assert_eq!(vb.tick(t0 + 16 * MS, &mut v), 1);
        assert_eq!(rd(&v, PIPEA_FRMCOUNT), 1);
        assert_eq!(rd(&v, PIPEA_FRMTMSTMP), ((t0 + 16 * MS) / 1000) as u32);
        assert_eq!(vb.next_vblank_ns(t0 + 20 * MS), t0 + 32 * MS);
        // a late timer: all the missed vblanks at once
        assert_eq!(vb.tick(t0 + 100 * MS, &mut v), 5);
        assert_eq!(rd(&v, PIPEA_FRMCOUNT), 6);
        assert_eq!(rd(&v, PIPEA_FRMTMSTMP), ((t0 + 96 * MS) / 1000) as u32);
        // the clock going backwards changes nothing
        assert_eq!(vb.tick(t0, &mut v), 0);
        assert_eq!(rd(&v, PIPEA_FRMCOUNT), 6);
    }

    #[test]
    fn period_changes_keep_the_count_continuous() {
        let mut vb = Vblank::new(0, 10 * MS);
        let mut v = vec![0u32; VREG_DWORDS];
        vb.tick(35 * MS, &mut v);
        assert_eq!(rd(&v, PIPEA_FRMCOUNT), 3);
        vb.set_period(35 * MS, 20 * MS);
        assert_eq!(vb.frames_at(35 * MS), 3);
        assert_eq!(
            vb.next_vblank_ns(35 * MS),
            50 * MS,
            "one new period after the latest vblank (30 ms)"
        );
        assert_eq!(vb.tick(49 * MS, &mut v), 0);
        assert_eq!(vb.tick(50 * MS, &mut v), 1);
        // a mode's frame time: 1920x1200 CVT-RB is 2080 x 1235 at 154 MHz
        let m = Mode::cvt_rb(1920, 1200, 60).unwrap();
        assert_eq!(m.frame_period_ns(), Some(16_680_519));
        vb.set_period(50 * MS, m.frame_period_ns().unwrap());
        assert_eq!(vb.frames_at(50 * MS + 16_680_519), 5);
        // absurd periods are clamped, never a division by zero
        vb.set_period(60 * MS, 0);
        assert_eq!(vb.period_ns(), MIN_PERIOD_NS);
        vb.set_period(60 * MS, u64::MAX);
        assert_eq!(vb.period_ns(), MAX_PERIOD_NS);
    }

    #[test]
    fn flips_update_the_live_surface_and_counter() {
        let mut vb = Vblank::new(0, DEFAULT_PERIOD_NS);
        let mut v = vec![0u32; VREG_DWORDS];
        vb.flip(0x10_0000, &mut v);
        vb.flip(0x20_0000, &mut v);
        assert_eq!(
            (rd(&v, PIPEA_FLIPCOUNT), rd(&v, DSPASURFLIVE)),
            (2, 0x20_0000)
        );
        vb.tick(100 * MS, &mut v);
        let mut fresh = vec![0u32; VREG_DWORDS];
        vb.restore(&mut fresh);
        for off in [PIPEA_FRMCOUNT, PIPEA_FLIPCOUNT, PIPEA_FRMTMSTMP] {
            assert_eq!(rd(&fresh, off), rd(&v, off), "{off:#x}");
        }
        vb.flip(1, &mut [0u32; 4]); // a short vreg slice is fine
        assert_eq!(vb.flips(), 3);
    }

    #[test]
    fn a_stopped_pipe_does_not_count() {
        let mut vb = Vblank::stopped(0, 10 * MS);
        let mut v = vec![0u32; VREG_DWORDS];
        assert!(!vb.running());
        assert_eq!(vb.tick(1_000 * MS, &mut v), 0, "stopped from the start");
        assert_eq!(vb.next_vblank_ns(1_000 * MS), u64::MAX);
        vb.set_running(1_000 * MS, true);
        assert_eq!(
            vb.next_vblank_ns(1_000 * MS),
            1_010 * MS,
            "one period after the start"
        );
        assert_eq!(vb.tick(1_035 * MS, &mut v), 3);
        // Stopped at 1047 ms: the vblank at 1040 ms still counts, nothing after.
        vb.set_running(1_047 * MS, false);
        assert_eq!(vb.tick(5_000 * MS, &mut v), 1);
        assert_eq!(rd(&v, PIPEA_FRMCOUNT), 4);
        assert_eq!(
            rd(&v, PIPEA_FRMTMSTMP),
            (1_040 * MS / 1000) as u32,
            "the latest vblank's time"
        );
        assert_eq!(vb.tick(9_000 * MS, &mut v), 0);
        // Stopping twice or starting twice changes nothing.
        vb.set_running(9_000 * MS, false);
        vb.set_running(9_000 * MS, true);
        vb.set_running(9_001 * MS, true);
        assert_eq!(vb.tick(9_019 * MS, &mut v), 1);
        assert_eq!(vb.tick(9_020 * MS, &mut v), 1);
        assert_eq!(rd(&v, PIPEA_FRMCOUNT), 6);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Run(u64, bool),
        Tick(u64),
        Period(u64, u64),
        Flip(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            any::<u64>().prop_map(Op::Tick),
            (0u64..1 << 40).prop_map(Op::Tick),
            (0u64..1 << 40, any::<u64>()).prop_map(|(t, p)| Op::Period(t, p)),
            (0u64..1 << 40, MS..50 * MS).prop_map(|(t, p)| Op::Period(t, p)),
            any::<u32>().prop_map(Op::Flip),
            (0u64..1 << 40, any::<bool>()).prop_map(|(t, on)| Op::Run(t, on)),
        ]
    }

    proptest! {
        /// Whatever the clock and periods: no panic, the frame count never
        /// decreases, each tick reports exactly the increase, and the
        /// timestamp is that of a vblank not after the latest time seen.
        #[test]
        fn counts_are_monotonic(start in any::<u64>(), period in any::<u64>(), ops in proptest::collection::vec(op(), 0..80)) {
            let mut vb = Vblank::new(start, period);
            let mut v = vec![0u32; VREG_DWORDS];
            let mut frames = 0u64;
            let mut flips = 0u32;
            for o in ops {
                match o {
                    Op::Tick(t) => {
                        let new = vb.tick(t, &mut v);
                        let f = vb.frames_at(0);
                        prop_assert_eq!(f, frames + new);
                        frames = f;
                        prop_assert_eq!(rd(&v, PIPEA_FRMCOUNT), f as u32);
                        prop_assert!(vb.last_vblank_ns(0) <= vb.last_ns);
                        prop_assert!(vb.next_vblank_ns(0) > vb.last_ns || vb.next_vblank_ns(0) == u64::MAX);
                    }
                    Op::Period(t, p) => {
                        vb.set_period(t, p);
                        prop_assert!(vb.frames_at(0) >= frames);
                        prop_assert!((MIN_PERIOD_NS..=MAX_PERIOD_NS).contains(&vb.period_ns()));
                    }
                    Op::Run(t, on) => {
                        vb.set_running(t, on);
                        prop_assert_eq!(vb.running(), on);
                        prop_assert!(vb.frames_at(0) >= frames);
                        if !on {
                            let f = vb.frames_at(0);
                            prop_assert_eq!(vb.frames_at(u64::MAX), f, "a stopped pipe does not count");
                        }
                    }
                    Op::Flip(s) => {
                        vb.flip(s, &mut v);
                        flips = flips.wrapping_add(1);
                        prop_assert_eq!((rd(&v, PIPEA_FLIPCOUNT), rd(&v, DSPASURFLIVE)), (flips, s));
                    }
                }
            }
        }
    }
}
