//! GPU scheduler *mechanism* (paper §3.2 "Render engine scheduling", §3.7
//! "Scheduling dependency"): shares the two engines among vGPUs.  Who runs
//! next and for how long is the policy's business
//! ([`super::sched_policy::CreditPolicy`], one per engine); this file does
//! the rest:
//!
//! * **Rounds.** [`Scheduler::round`] makes one decision per engine, switches
//!   contexts where the owner changes ([`super::ctx`]), runs each engine for
//!   the chosen slice through the [`Engines`] trait and charges what the
//!   engine reports having used.  An engine nobody has work for stays idle;
//!   an idle engine goes to whoever has work (work-conserving).  The caller
//!   (a kernel thread; the test harness) calls `round` in a loop and sleeps
//!   when it reports `idle`.
//! * **Preemption.** [`Preemption::Command`]: the engine (gvt-sim) may stop
//!   between any two engine steps — command boundaries, and inside a blit
//!   every [`super::engine::STEP_BYTES`] — so a slice overruns by at most one
//!   step ([`super::engine::CostModel::max_step_ns`]); the mediated GPU
//!   keeps each context's execution state across switches
//!   ([`super::gpu`]).
//!   [`Preemption::Batch`]: for hardware that cannot stop inside a batch
//!   buffer the engine stops only between batches; when the slice ends inside
//!   one the engine reports [`StopReason::MidBatch`] and keeps its owner
//!   (non-preemptive) until the batch ends.  The overrun is carried as debt
//!   by the policy, so shares still converge, with a drift of up to one batch
//!   per decision instead of one command.
//! * **Flow control** (paper: "the piled commands, at any time, are within a
//!   certain limit"): [`Scheduler::admit`] refuses a submission that would
//!   take a vGPU's queued-but-not-executed work on an engine past
//!   `max_pending_cmds` commands or `max_pending_submissions` submissions.  The
//!   glue then holds the guest's TAIL update back (back-pressure) and retries
//!   after retirements.  This bounds both the time drift of the batch mode and
//!   the longest legitimate submission (see the watchdog in [`super::reset`]).
//! * **Gang scheduling** (§3.7): a vGPU whose render and blitter streams
//!   depend on each other (the auditor saw semaphores; [`Scheduler::set_gang`])
//!   only runs while it holds *both* engines, and is charged the slice on
//!   both.  Other vGPUs are scheduled per engine: the paper's proposed hybrid.
//!   [`SchedConfig::gang_by_default`] gives the paper's (and GVT-g's) all-gang
//!   behaviour.  The engine that decides first alternates between rounds.
//! * **Hangs** ([`super::reset`]): a vGPU that makes no progress for
//!   `hang_timeout_ns` of its own engine time is guilty; the engine is reset
//!   (GDRST, that engine only), only the guilty vGPU's work is dropped, it gets
//!   a [`HangEvent`]; past its limit it is Failed.  Everybody else's contexts
//!   were saved at switch-out and resume intact.
//!
//! Fixed capacity `N` (e.g. 8 or 64 vGPU slots), no allocation, every decision
//! O(N).  `Scheduler<64>` is ~25 KiB: the kernel allocates it on the heap.

use super::backend::{Backend, EngineId};
use super::ctx::{ContextStore, CtxConfig, CtxError, SwitchStats};
use super::reset::{self, HangEvent, HangTracker, Watchdog};
use super::sched_policy::{CreditPolicy, PolicyError, DEFAULT_PERIOD_NS, GVTG_QUANTUM_NS};
use super::services::Clock;
use super::stats::{RejectClass, VgpuState, VgpuStats};

/// A slot of the scheduler: the index of one vGPU's queues, credits and
/// contexts (and of [`super::gpu::Gpu`]'s per-vGPU state); not the vGPU's
/// own id (`vgpu::Vgpu::id`, what PVINFO shows the guest).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlotId(pub u16);

impl SlotId {
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// Where the engine may be stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preemption {
    /// At any command boundary (gvt-sim).
    Command,
    /// Only between batch buffers / ring-level commands.
    Batch,
}

/// How much one run may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunBudget {
    /// Engine time; the engine stops at the first allowed boundary once it
    /// is used (so it may overrun by one engine step; with
    /// [`Preemption::Batch`], by the rest of a batch).
    pub ns: u64,
    /// Most commands to execute.
    pub max_cmds: u32,
    pub preemption: Preemption,
    /// The previous run stopped inside a batch ([`StopReason::MidBatch`]):
    /// only finish that batch — stop at its end, start nothing new — or
    /// return `MidBatch` again when `ns` is used up.
    pub finish_batch: bool,
}

/// Why a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The vGPU has no more queued work on this engine.
    Drained,
    /// Budget used; stopped at an allowed boundary; work remains.
    Preempted,
    /// Budget used inside a batch that cannot be preempted: the engine is
    /// still busy with this vGPU and cannot be switched.
    MidBatch,
}

/// What a run did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunReport {
    /// Engine time used.
    pub consumed_ns: u64,
    /// Commands executed.
    pub cmds: u32,
    /// Submissions completed.
    pub retired: u32,
    /// Time used after the last completion (== `consumed_ns` if none).
    pub since_retire_ns: u64,
    pub stop: StopReason,
}

/// What the scheduler needs from the engines of the physical GPU, beyond
/// register access (context switch, reset) through [`Backend`].
pub trait Engines: Backend {
    /// Whether `v` has queued work on `e`.
    fn has_work(&self, e: EngineId, v: SlotId) -> bool;
    /// Run `v`'s queued work on `e` (whose context is loaded) within `budget`.
    fn run(&mut self, e: EngineId, v: SlotId, budget: RunBudget) -> RunReport;
    /// Discard all of `v`'s queued work on `e` (its in-flight submission
    /// included); returns the submissions dropped.
    fn drop_work(&mut self, e: EngineId, v: SlotId) -> u32;
}

/// Scheduler parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedConfig {
    /// Longest slice before the next decision (paper 16 ms, GVT-g 1 ms).
    pub quantum_ns: u64,
    /// Weight balancing period (GVT-g 100 ms).
    pub period_ns: u64,
    pub preemption: Preemption,
    /// Flow control: most queued commands per vGPU and engine.
    pub max_pending_cmds: u32,
    /// Flow control: most queued submissions per vGPU and engine.
    pub max_pending_submissions: u32,
    /// Engine time without a retirement after which a vGPU is hung.
    pub hang_timeout_ns: u64,
    /// Hangs after which a vGPU is Failed (kernel module parameter).
    pub hang_limit: u32,
    /// New vGPUs are gang-scheduled (paper/GVT-g behaviour).
    pub gang_by_default: bool,
    pub ctx: CtxConfig,
    /// Most GDRST polls per engine reset.
    pub reset_max_polls: u32,
}

impl SchedConfig {
    pub const DEFAULT: SchedConfig = SchedConfig {
        quantum_ns: GVTG_QUANTUM_NS,
        period_ns: DEFAULT_PERIOD_NS,
        preemption: Preemption::Command,
        max_pending_cmds: 1024,
        max_pending_submissions: 64,
        hang_timeout_ns: 500_000_000,
        hang_limit: 3,
        gang_by_default: false,
        ctx: CtxConfig::DEFAULT,
        reset_max_polls: 1000,
    };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchedError {
    /// Every slot is in use.
    NoSlot,
    /// No such vGPU.
    BadVgpu,
    /// Weight outside 1..=100.
    BadWeight,
    /// The vGPU is Failed (too many hangs).
    Failed,
    /// Flow control: too much queued, retry after retirements.
    Backpressure,
    /// The submission alone exceeds the flow-control bound: never admissible.
    TooLarge,
    /// Context register access refused.
    Ctx(CtxError),
}

impl From<PolicyError> for SchedError {
    fn from(e: PolicyError) -> Self {
        match e {
            PolicyError::BadWeight => SchedError::BadWeight,
            _ => SchedError::BadVgpu,
        }
    }
}

/// One engine's part of a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineRun {
    pub vgpu: SlotId,
    /// Engine time the vGPU used.
    pub consumed_ns: u64,
    /// Engine time charged (gang vGPUs: the round's slice on both engines).
    pub charged_ns: u64,
    /// A context switch preceded the run.
    pub switched: bool,
    /// The vGPU had no credit left (running on spare time).
    pub spare: bool,
    pub stop: StopReason,
}

/// What one [`Scheduler::round`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoundReport {
    pub ran: [Option<EngineRun>; EngineId::COUNT],
    /// Longest engine run (engines run in parallel).
    pub wall_ns: u64,
    pub hangs: [Option<HangEvent>; EngineId::COUNT],
    /// Nothing to run anywhere.
    pub idle: bool,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    present: bool,
    gang: bool,
    pending_cmds: [u32; EngineId::COUNT],
    pending_subs: [u32; EngineId::COUNT],
}

const EMPTY_SLOT: Slot = Slot {
    present: false,
    gang: false,
    pending_cmds: [0; EngineId::COUNT],
    pending_subs: [0; EngineId::COUNT],
};

const fn other(e: EngineId) -> EngineId {
    match e {
        EngineId::Rcs => EngineId::Bcs,
        EngineId::Bcs => EngineId::Rcs,
    }
}

/// The GPU scheduler for `N` vGPU slots.
pub struct Scheduler<const N: usize> {
    cfg: SchedConfig,
    slots: [Slot; N],
    policy: [CreditPolicy<N>; EngineId::COUNT],
    ctx: ContextStore<N>,
    watchdog: Watchdog<N>,
    hangs: HangTracker<N>,
    stats: [VgpuStats; N],
    /// Engine held by a vGPU inside a non-preemptible batch.
    locked: [Option<usize>; EngineId::COUNT],
    rounds: u64,
    decisions: u64,
    resets: [u64; EngineId::COUNT],
    reset_failures: u64,
}

impl<const N: usize> Scheduler<N> {
    pub const fn new(cfg: SchedConfig) -> Self {
        Self {
            cfg,
            slots: [EMPTY_SLOT; N],
            policy: [
                CreditPolicy::new(cfg.period_ns, cfg.quantum_ns),
                CreditPolicy::new(cfg.period_ns, cfg.quantum_ns),
            ],
            ctx: ContextStore::new(cfg.ctx),
            watchdog: Watchdog::new(cfg.hang_timeout_ns),
            hangs: HangTracker::new(cfg.hang_limit),
            stats: [VgpuStats::EMPTY; N],
            locked: [None; EngineId::COUNT],
            rounds: 0,
            decisions: 0,
            resets: [0; EngineId::COUNT],
            reset_failures: 0,
        }
    }

    pub fn config(&self) -> &SchedConfig {
        &self.cfg
    }

    fn slot(&self, v: SlotId) -> Option<&Slot> {
        self.slots.get(v.index()).filter(|s| s.present)
    }

    /// Create a vGPU in the first free slot.
    pub fn create_vgpu(&mut self, weight: u32) -> Result<SlotId, SchedError> {
        let i = self
            .slots
            .iter()
            .position(|s| !s.present)
            .ok_or(SchedError::NoSlot)?;
        let id = SlotId(u16::try_from(i).map_err(|_| SchedError::NoSlot)?);
        for p in self.policy.iter_mut() {
            p.add(i, weight)?;
        }
        if let Some(s) = self.slots.get_mut(i) {
            *s = Slot {
                present: true,
                gang: self.cfg.gang_by_default,
                ..EMPTY_SLOT
            };
        }
        self.ctx.clear(i);
        self.hangs.reset_slot(i);
        for e in EngineId::ALL {
            self.watchdog.clear(e, i);
        }
        if let Some(st) = self.stats.get_mut(i) {
            *st = VgpuStats::EMPTY;
            st.state = VgpuState::Idle;
        }
        Ok(id)
    }

    /// Destroy a vGPU: its contexts are switched out (or its engine reset if
    /// it is stuck in a batch), its work dropped, its slot freed.
    pub fn destroy_vgpu<E: Engines, C: Clock>(
        &mut self,
        eng: &mut E,
        clock: &C,
        v: SlotId,
    ) -> Result<(), SchedError> {
        self.slot(v).ok_or(SchedError::BadVgpu)?;
        let i = v.index();
        for e in EngineId::ALL {
            self.evict(eng, clock, e, i);
        }
        for p in self.policy.iter_mut() {
            p.remove(i);
        }
        self.ctx.clear(i);
        self.hangs.reset_slot(i);
        if let Some(s) = self.slots.get_mut(i) {
            *s = EMPTY_SLOT;
        }
        if let Some(st) = self.stats.get_mut(i) {
            *st = VgpuStats::EMPTY;
        }
        Ok(())
    }

    /// vGPU reset (device reset from the VMM, or the operator clearing a
    /// Failed vGPU): all its work is dropped, its ring state cleared, its hang
    /// counter zeroed; it may submit again.  Other vGPUs are unaffected.
    pub fn reset_vgpu<E: Engines, C: Clock>(
        &mut self,
        eng: &mut E,
        clock: &C,
        v: SlotId,
    ) -> Result<(), SchedError> {
        self.slot(v).ok_or(SchedError::BadVgpu)?;
        let i = v.index();
        for e in EngineId::ALL {
            self.evict(eng, clock, e, i);
        }
        self.ctx.clear(i);
        self.hangs.clear_failure(i);
        for p in self.policy.iter_mut() {
            p.forget(i);
        }
        if let Some(st) = self.stats.get_mut(i) {
            st.hangs = 0;
        }
        Ok(())
    }

    /// Drop `v`'s work on `e` only (the guest reset that engine through
    /// GDRST): `v` is switched out (or `e` reset if it is stuck in a batch)
    /// and its queued work discarded.  Unlike [`Scheduler::reset_vgpu`] its
    /// hang count and Failed state stay: a guest cannot clear them itself.
    pub fn reset_engine_work<E: Engines, C: Clock>(
        &mut self,
        eng: &mut E,
        clock: &C,
        v: SlotId,
        e: EngineId,
    ) -> Result<(), SchedError> {
        self.slot(v).ok_or(SchedError::BadVgpu)?;
        self.evict(eng, clock, e, v.index());
        Ok(())
    }

    /// Change a weight (1..=100); effective within one period.
    pub fn set_weight(&mut self, v: SlotId, weight: u32) -> Result<(), SchedError> {
        self.slot(v).ok_or(SchedError::BadVgpu)?;
        for p in self.policy.iter_mut() {
            p.set_weight(v.index(), weight)?;
        }
        Ok(())
    }

    pub fn weight(&self, v: SlotId) -> Option<u32> {
        self.slot(v)?;
        self.policy.first().and_then(|p| p.weight(v.index()))
    }

    /// Mark `v`'s render and blitter streams as dependent (gang-scheduled)
    /// or independent.  Takes effect at the next decision.
    pub fn set_gang(&mut self, v: SlotId, gang: bool) -> Result<(), SchedError> {
        self.slot(v).ok_or(SchedError::BadVgpu)?;
        if let Some(s) = self.slots.get_mut(v.index()) {
            s.gang = gang;
        }
        Ok(())
    }

    /// Per-vGPU hang limit (the per-VM threshold).
    pub fn set_hang_limit(&mut self, v: SlotId, limit: u32) -> Result<(), SchedError> {
        self.slot(v).ok_or(SchedError::BadVgpu)?;
        self.hangs.set_limit(v.index(), limit);
        Ok(())
    }

    pub fn hang_limit(&self, v: SlotId) -> Option<u32> {
        self.slot(v)?;
        Some(self.hangs.limit(v.index()))
    }

    /// Hangs of `v` since it was created or reset.
    pub fn hang_count(&self, v: SlotId) -> Option<u32> {
        self.slot(v)?;
        Some(self.hangs.count(v.index()))
    }

    /// Put back `v`'s hang count (migration restore); Failed if it reaches
    /// the limit.
    pub fn restore_hang_count(&mut self, v: SlotId, count: u32) -> Result<(), SchedError> {
        self.slot(v).ok_or(SchedError::BadVgpu)?;
        self.hangs.restore_count(v.index(), count);
        Ok(())
    }

    pub fn is_failed(&self, v: SlotId) -> bool {
        self.hangs.is_failed(v.index())
    }

    /// Flow control: admit a submission of `cmds` audited commands of `v`
    /// on `e`.  On `Backpressure` the caller keeps the guest's TAIL update
    /// pending and retries after the vGPU's work retires.
    pub fn admit(&mut self, v: SlotId, e: EngineId, cmds: u32) -> Result<(), SchedError> {
        let i = v.index();
        let (max_c, max_s) = (self.cfg.max_pending_cmds, self.cfg.max_pending_submissions);
        let failed = self.hangs.is_failed(i);
        let s = match self.slots.get_mut(i).filter(|s| s.present) {
            Some(s) => s,
            None => return Err(SchedError::BadVgpu),
        };
        let st = self.stats.get_mut(i);
        let res = if failed {
            Err((SchedError::Failed, RejectClass::Failed))
        } else if cmds > max_c {
            Err((SchedError::TooLarge, RejectClass::Malformed))
        } else {
            let pc = s.pending_cmds.get(e.index()).copied().unwrap_or(u32::MAX);
            let ps = s.pending_subs.get(e.index()).copied().unwrap_or(u32::MAX);
            if pc.saturating_add(cmds) > max_c || ps >= max_s {
                Err((SchedError::Backpressure, RejectClass::Backpressure))
            } else {
                if let Some(c) = s.pending_cmds.get_mut(e.index()) {
                    *c = pc.saturating_add(cmds);
                }
                if let Some(c) = s.pending_subs.get_mut(e.index()) {
                    *c = ps.saturating_add(1);
                }
                Ok(())
            }
        };
        if let Some(st) = st {
            match res {
                Ok(()) => st.submissions = st.submissions.saturating_add(1),
                Err((_, class)) => st.count_reject(class),
            }
        }
        res.map_err(|(err, _)| err)
    }

    /// Commands and submissions of `v` admitted on `e` and not yet executed.
    pub fn pending(&self, v: SlotId, e: EngineId) -> (u32, u32) {
        match self.slot(v) {
            Some(s) => (
                s.pending_cmds.get(e.index()).copied().unwrap_or(0),
                s.pending_subs.get(e.index()).copied().unwrap_or(0),
            ),
            None => (0, 0),
        }
    }

    /// Policy credit of `v` on `e` (ns; negative: debt).
    pub fn credit(&self, v: SlotId, e: EngineId) -> Option<i64> {
        self.slot(v)?;
        self.policy.get(e.index()).and_then(|p| p.credit(v.index()))
    }

    /// Whose context is loaded on `e`.
    pub fn owner(&self, e: EngineId) -> Option<SlotId> {
        self.ctx
            .owner(e)
            .and_then(|i| u16::try_from(i).ok())
            .map(SlotId)
    }

    /// Write a context register of `v` on `e` (shadow ring START/CTL/TAIL,
    /// PPGTT root, ...): into its image, and to the hardware if it owns `e`.
    pub fn write_ctx_reg<B: Backend>(
        &mut self,
        b: &mut B,
        v: SlotId,
        e: EngineId,
        off: u32,
        val: u32,
    ) -> Result<(), SchedError> {
        self.slot(v).ok_or(SchedError::BadVgpu)?;
        self.ctx
            .write_reg(b, e, v.index(), off, val)
            .map_err(SchedError::Ctx)
    }

    /// Read a context register of `v` on `e`.
    pub fn read_ctx_reg<B: Backend>(
        &self,
        b: &mut B,
        v: SlotId,
        e: EngineId,
        off: u32,
    ) -> Option<u32> {
        self.slot(v)?;
        self.ctx.read_reg(b, e, v.index(), off)
    }

    pub fn ctx_stats(&self, e: EngineId) -> SwitchStats {
        self.ctx.stats(e)
    }

    /// Scheduling state of `v`.
    pub fn state(&self, v: SlotId) -> VgpuState {
        let s = match self.slot(v) {
            Some(s) => s,
            None => return VgpuState::Absent,
        };
        if self.hangs.is_failed(v.index()) {
            return VgpuState::Failed;
        }
        let queued = s.pending_subs.iter().any(|p| *p > 0);
        let owns = EngineId::ALL
            .iter()
            .any(|e| self.ctx.owner(*e) == Some(v.index()));
        let locked = self.locked.iter().any(|l| *l == Some(v.index()));
        if locked || (owns && queued) {
            VgpuState::Running
        } else if queued {
            VgpuState::Runnable
        } else {
            VgpuState::Idle
        }
    }

    /// Counters of `v` (state filled in now).
    pub fn stats(&self, v: SlotId) -> Option<VgpuStats> {
        self.slot(v)?;
        let mut st = self.stats.get(v.index()).copied()?;
        st.state = self.state(v);
        Some(st)
    }

    /// Charge `ns` of mediator work done on `v`'s behalf for engine `e`
    /// (e.g. re-shadowing its PPGTT before a render submission) to `v`'s
    /// engine time: its credit on `e` pays for it, and it shows in its
    /// `engine_ns` and `mediation_ns` counters.
    pub fn charge_mediation(&mut self, v: SlotId, e: EngineId, ns: u64) {
        if ns == 0 || self.slot(v).is_none() {
            return;
        }
        if let Some(p) = self.policy.get_mut(e.index()) {
            p.charge(v.index(), ns);
        }
        if let Some(st) = self.stats.get_mut(v.index()) {
            st.add_engine_time(e, ns);
            st.mediation_ns = st.mediation_ns.saturating_add(ns);
        }
    }

    /// Counters of `v` for the trap handlers and the auditor.
    pub fn stats_mut(&mut self, v: SlotId) -> Option<&mut VgpuStats> {
        self.slot(v)?;
        self.stats.get_mut(v.index())
    }

    /// The hang event not yet delivered to `v` (the glue raises the virtual
    /// error interrupt and shows the status in `v`'s registers).
    pub fn take_hang_event(&mut self, v: SlotId) -> Option<HangEvent> {
        self.slot(v)?;
        self.hangs.take_event(v.index())
    }

    /// Rounds run, decisions taken, engine resets per engine, failed resets.
    pub fn counters(&self) -> (u64, u64, [u64; EngineId::COUNT], u64) {
        (
            self.rounds,
            self.decisions,
            self.resets,
            self.reset_failures,
        )
    }

    /// One scheduling round: decide, switch, run, charge, watch.
    pub fn round<E: Engines, C: Clock>(&mut self, eng: &mut E, clock: &C) -> RoundReport {
        let now = clock.now_ns();
        self.rounds = self.rounds.wrapping_add(1);
        let mut report = RoundReport {
            ran: [None; EngineId::COUNT],
            wall_ns: 0,
            hangs: [None; EngineId::COUNT],
            idle: true,
        };

        // Who has work where (gang vGPUs want both engines if they have any).
        let mut work = [[false; N]; EngineId::COUNT];
        let mut eff = [[false; N]; EngineId::COUNT];
        for (i, s) in self.slots.iter().enumerate() {
            if !s.present || self.hangs.is_failed(i) {
                continue;
            }
            let id = SlotId(i as u16);
            let mut any = false;
            for e in EngineId::ALL {
                let w = eng.has_work(e, id);
                if let Some(x) = work.get_mut(e.index()).and_then(|a| a.get_mut(i)) {
                    *x = w;
                }
                any |= w;
            }
            for e in EngineId::ALL {
                let w = if s.gang {
                    any
                } else {
                    work.get(e.index())
                        .and_then(|a| a.get(i))
                        .copied()
                        .unwrap_or(false)
                };
                if let Some(x) = eff.get_mut(e.index()).and_then(|a| a.get_mut(i)) {
                    *x = w;
                }
            }
        }
        for e in EngineId::ALL {
            if let (Some(p), Some(w)) = (self.policy.get_mut(e.index()), eff.get(e.index())) {
                let mut was_active = [false; N];
                for (i, a) in was_active.iter_mut().enumerate() {
                    *a = p.active(i);
                }
                if p.tick(now, w) {
                    // Had work this period, none at the refill: counted (a
                    // fairness diagnosis, see `VgpuStats`).
                    for (i, st) in self.stats.iter_mut().enumerate() {
                        let idle = !w.get(i).copied().unwrap_or(false);
                        if idle && was_active.get(i).copied().unwrap_or(false) {
                            st.refills_without_work = st.refills_without_work.saturating_add(1);
                        }
                    }
                }
            }
        }

        // Decide: (slot, slice, spare) per engine.  An engine locked inside a
        // batch stays with its owner, which may only finish that batch.
        let mut assign: [Option<(usize, u64, bool)>; EngineId::COUNT] = [None; EngineId::COUNT];
        let was_locked = self.locked;
        for e in EngineId::ALL {
            if let Some(v) = self.locked.get(e.index()).copied().flatten() {
                let live = self.slots.get(v).is_some_and(|s| s.present) && !self.hangs.is_failed(v);
                if live && self.ctx.owner(e) == Some(v) {
                    if let Some(a) = assign.get_mut(e.index()) {
                        *a = Some((v, self.cfg.quantum_ns, false));
                    }
                } else if let Some(l) = self.locked.get_mut(e.index()) {
                    *l = None;
                }
            }
        }
        // A gang vGPU locked on one engine keeps the other one too.
        for e in EngineId::ALL {
            let o = other(e);
            if let Some((v, q, _)) = assign.get(e.index()).copied().flatten() {
                let gang = self.slots.get(v).is_some_and(|s| s.gang);
                if gang && assign.get(o.index()).copied().flatten().is_none() {
                    if let Some(a) = assign.get_mut(o.index()) {
                        *a = Some((v, q, false));
                    }
                }
            }
        }
        let order = if self.rounds % 2 == 0 {
            [EngineId::Rcs, EngineId::Bcs]
        } else {
            [EngineId::Bcs, EngineId::Rcs]
        };
        for e in order {
            if assign.get(e.index()).copied().flatten().is_some() {
                continue;
            }
            let o = other(e);
            let other_free = assign.get(o.index()).copied().flatten().is_none();
            let mut elig = [false; N];
            for (i, x) in elig.iter_mut().enumerate() {
                let gang = self.slots.get(i).is_some_and(|s| s.gang);
                let wants = eff
                    .get(e.index())
                    .and_then(|a| a.get(i))
                    .copied()
                    .unwrap_or(false);
                *x = wants && (!gang || other_free);
            }
            let pick = match self.policy.get_mut(e.index()) {
                Some(p) => p.pick(now, &elig),
                None => None,
            };
            if let Some(pk) = pick {
                self.decisions = self.decisions.wrapping_add(1);
                if let Some(st) = self.stats.get_mut(pk.slot) {
                    st.picks = st.picks.saturating_add(1);
                }
                if let Some(a) = assign.get_mut(e.index()) {
                    *a = Some((pk.slot, pk.slice_ns, pk.spare));
                }
                if self.slots.get(pk.slot).is_some_and(|s| s.gang) {
                    if let Some(p) = self.policy.get_mut(o.index()) {
                        p.note_run(pk.slot);
                    }
                    if let Some(a) = assign.get_mut(o.index()) {
                        *a = Some((pk.slot, pk.slice_ns, pk.spare));
                    }
                }
            }
        }

        // Switch contexts.
        let mut switched = [false; EngineId::COUNT];
        for e in EngineId::ALL {
            let v = match assign.get(e.index()).copied().flatten() {
                Some((v, _, _)) => v,
                None => continue,
            };
            if self.ctx.owner(e) == Some(v) {
                continue;
            }
            let mut res = self.ctx.switch(eng, clock, e, Some(v));
            if res == Err(CtxError::FlushTimeout) {
                // The outgoing context does not stop: it is hung.
                if let Some(out) = self.ctx.owner(e) {
                    let ev = self.hang(eng, clock, e, out);
                    if let Some(h) = report.hangs.get_mut(e.index()) {
                        *h = ev;
                    }
                }
                res = self.ctx.switch(eng, clock, e, Some(v));
            }
            if res.is_ok() {
                if let Some(s) = switched.get_mut(e.index()) {
                    *s = true;
                }
                if let Some(st) = self.stats.get_mut(v) {
                    st.ctx_switches = st.ctx_switches.saturating_add(1);
                }
            }
        }

        // Run.
        let mut runs: [Option<(usize, RunReport, bool)>; EngineId::COUNT] = [None; EngineId::COUNT];
        for e in EngineId::ALL {
            let (v, slice, spare) = match assign.get(e.index()).copied().flatten() {
                Some(a) => a,
                None => continue,
            };
            let live = self.slots.get(v).is_some_and(|s| s.present) && !self.hangs.is_failed(v);
            if !live || self.ctx.owner(e) != Some(v) {
                continue;
            }
            let has = work
                .get(e.index())
                .and_then(|a| a.get(v))
                .copied()
                .unwrap_or(false);
            let rep = if has {
                let finish_batch = was_locked.get(e.index()).copied().flatten() == Some(v);
                let budget = RunBudget {
                    ns: slice,
                    max_cmds: u32::MAX,
                    preemption: self.cfg.preemption,
                    finish_batch,
                };
                eng.run(e, SlotId(v as u16), budget)
            } else {
                // A gang vGPU holding an engine it has no work on.
                RunReport {
                    consumed_ns: 0,
                    cmds: 0,
                    retired: 0,
                    since_retire_ns: 0,
                    stop: StopReason::Drained,
                }
            };
            if let Some(r) = runs.get_mut(e.index()) {
                *r = Some((v, rep, spare));
            }
        }
        let wall = runs
            .iter()
            .flatten()
            .map(|(_, r, _)| r.consumed_ns)
            .max()
            .unwrap_or(0);
        report.wall_ns = wall;

        // Charge, account, watch.
        for e in EngineId::ALL {
            let (v, rep, spare) = match runs.get(e.index()).copied().flatten() {
                Some(r) => r,
                None => continue,
            };
            report.idle = false;
            let gang_both = runs
                .get(other(e).index())
                .copied()
                .flatten()
                .is_some_and(|(o, _, _)| o == v);
            let charged = if gang_both { wall } else { rep.consumed_ns };
            if let Some(p) = self.policy.get_mut(e.index()) {
                p.charge(v, charged);
            }
            if let Some(st) = self.stats.get_mut(v) {
                st.add_engine_time(e, charged);
            }
            if let Some(s) = self.slots.get_mut(v) {
                if let Some(c) = s.pending_cmds.get_mut(e.index()) {
                    *c = c.saturating_sub(rep.cmds);
                }
                if let Some(c) = s.pending_subs.get_mut(e.index()) {
                    *c = c.saturating_sub(rep.retired);
                }
            }
            // Still the owner? (A gang vGPU hung on the other engine was
            // evicted from this one during this loop.)
            let owns = self.ctx.owner(e) == Some(v);
            if let Some(l) = self.locked.get_mut(e.index()) {
                *l = if owns && rep.stop == StopReason::MidBatch {
                    Some(v)
                } else {
                    None
                };
            }
            if let Some(r) = report.ran.get_mut(e.index()) {
                *r = Some(EngineRun {
                    vgpu: SlotId(v as u16),
                    consumed_ns: rep.consumed_ns,
                    charged_ns: charged,
                    switched: switched.get(e.index()).copied().unwrap_or(false),
                    spare,
                    stop: rep.stop,
                });
            }
            if !owns || rep.stop == StopReason::Drained {
                self.watchdog.clear(e, v);
            } else if self
                .watchdog
                .observe(e, v, rep.consumed_ns, rep.retired, rep.since_retire_ns)
            {
                let ev = self.hang(eng, clock, e, v);
                if let Some(h) = report.hangs.get_mut(e.index()) {
                    *h = ev;
                }
            }
        }
        report
    }

    /// `v` is guilty of a hang on `e`: reset `e`, drop `v`'s work there (and
    /// everywhere if it is gang-scheduled or now Failed), record the event.
    fn hang<E: Engines, C: Clock>(
        &mut self,
        eng: &mut E,
        clock: &C,
        e: EngineId,
        v: usize,
    ) -> Option<HangEvent> {
        let ok = self.reset_engine(eng, e, Some(v));
        self.drop_work(eng, e, v);
        if let Some(st) = self.stats.get_mut(v) {
            st.hangs = st.hangs.saturating_add(1);
            st.hangs_total = st.hangs_total.saturating_add(1);
        }
        let ev = self.hangs.record(v, e, clock.now_ns(), ok);
        let gang = self.slots.get(v).is_some_and(|s| s.gang);
        if gang || ev.is_some_and(|x| x.failed) {
            self.evict(eng, clock, other(e), v);
        }
        ev
    }

    /// Reset engine `e` through GDRST; `guilty`'s ring is emptied.
    fn reset_engine<E: Engines>(
        &mut self,
        eng: &mut E,
        e: EngineId,
        guilty: Option<usize>,
    ) -> bool {
        let ok = reset::reset_engine(eng, e, self.cfg.reset_max_polls).is_ok();
        if let Some(r) = self.resets.get_mut(e.index()) {
            *r = r.saturating_add(1);
        }
        if !ok {
            self.reset_failures = self.reset_failures.saturating_add(1);
        }
        self.ctx.engine_reset(e, guilty);
        if let Some(l) = self.locked.get_mut(e.index()) {
            *l = None;
        }
        ok
    }

    /// Take `v` off `e` and drop its work there.
    fn evict<E: Engines, C: Clock>(&mut self, eng: &mut E, clock: &C, e: EngineId, v: usize) {
        if self.ctx.owner(e) == Some(v) {
            let stuck = self.locked.get(e.index()).copied().flatten() == Some(v);
            if stuck || self.ctx.switch(eng, clock, e, None).is_err() {
                self.reset_engine(eng, e, Some(v));
            }
        }
        self.ctx.discard_ring(e, v);
        self.drop_work(eng, e, v);
    }

    fn drop_work<E: Engines>(&mut self, eng: &mut E, e: EngineId, v: usize) {
        eng.drop_work(e, SlotId(v as u16));
        if let Some(s) = self.slots.get_mut(v) {
            if let Some(c) = s.pending_cmds.get_mut(e.index()) {
                *c = 0;
            }
            if let Some(c) = s.pending_subs.get_mut(e.index()) {
                *c = 0;
            }
        }
        self.watchdog.clear(e, v);
    }
}

#[cfg(test)]
mod tests {
    use super::super::backend::Pte;
    use super::super::ctx::{
        CTL_ENABLE, MI_MODE_IDLE, MI_MODE_STOP_RING, RING_CTL, RING_GFX_MODE, RING_HEAD,
        RING_MI_MODE,
    };
    use super::super::ctx::{RING_PP_DIR_BASE, RING_START, RING_TAIL};
    use super::super::reset::GDRST;
    use super::super::sched_policy::PAPER_QUANTUM_NS;
    use super::*;
    use core::cell::Cell;
    use std::collections::{BTreeMap, VecDeque};
    use std::format;
    use std::string::String;
    use std::vec;
    use std::vec::Vec;

    const P: u64 = DEFAULT_PERIOD_NS;

    struct SimClock(Cell<u64>);
    impl Clock for SimClock {
        fn now_ns(&self) -> u64 {
            self.0.get()
        }
    }
    impl SimClock {
        fn advance(&self, dt: u64) {
            self.0.set(self.0.get() + dt);
        }
        fn now(&self) -> u64 {
            self.0.get()
        }
    }

    /// xorshift64*: seeded, reproducible workloads.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn range(&mut self, lo: u64, hi: u64) -> u64 {
            lo + self.next() % (hi - lo + 1)
        }
    }

    #[derive(Clone)]
    struct Sub {
        id: u64,
        /// (cost ns, batch number: 0 = ring-level command).
        cmds: Vec<(u64, u32)>,
        pos: usize,
        /// A batch that loops forever: never retires.
        hang: bool,
    }

    fn ring_addr(v: usize) -> u32 {
        0x0100_0000 + (v as u32) * 0x10_000
    }
    fn pd_addr(v: usize) -> u32 {
        0x4000_0000 + (v as u32) * 0x1000
    }

    /// A two-engine GPU model.  The engine runs whatever context its
    /// registers hold; `run(e, v)` checks those registers are exactly `v`'s
    /// (ring START, PPGTT root, HEAD where `v` stopped, TAIL as last
    /// submitted, ring enabled, not stopped): any mismatch is a violation,
    /// so context save/restore and reset recovery are verified on every run.
    struct SimGpu {
        regs: BTreeMap<u32, u32>,
        gdrst: u32,
        gdrst_polls: u32,
        q: [Vec<VecDeque<Sub>>; 2],
        head: [Vec<u32>; 2],
        tail: [Vec<u32>; 2],
        mid_batch: [bool; 2],
        used: [Vec<u64>; 2],
        /// Retired submission ids per engine and vGPU.
        retired: [Vec<Vec<u64>>; 2],
        dropped: Vec<u64>,
        resets: [u32; 2],
        violations: Vec<String>,
        /// (time, vgpu, ns) per run, for windowed shares: engine 0 only.
        trace: Vec<(u64, usize, u64)>,
        now: u64,
    }

    impl SimGpu {
        fn new(n: usize) -> Self {
            let qs = || (0..n).map(|_| VecDeque::new()).collect::<Vec<_>>();
            SimGpu {
                regs: BTreeMap::new(),
                gdrst: 0,
                gdrst_polls: 0,
                q: [qs(), qs()],
                head: [vec![0; n], vec![0; n]],
                tail: [vec![0; n], vec![0; n]],
                mid_batch: [false; 2],
                used: [vec![0; n], vec![0; n]],
                retired: [vec![Vec::new(); n], vec![Vec::new(); n]],
                dropped: vec![0; n],
                resets: [0; 2],
                violations: Vec::new(),
                trace: Vec::new(),
                now: 0,
            }
        }
        fn reg(&self, off: u32) -> u32 {
            self.regs.get(&off).copied().unwrap_or(0)
        }
        fn engine_of(off: u32) -> Option<usize> {
            if (0x2000..0x3000).contains(&off) {
                Some(0)
            } else if (0x22000..0x23000).contains(&off) {
                Some(1)
            } else {
                None
            }
        }
        fn reset(&mut self, e: usize) {
            let base = EngineId::ALL[e].mmio_base();
            self.regs.retain(|k, _| !(base..base + 0x1000).contains(k));
            self.mid_batch[e] = false;
            self.resets[e] += 1;
        }
        fn total_used(&self, e: usize) -> u64 {
            self.used[e].iter().sum()
        }
    }

    impl Backend for SimGpu {
        fn read_reg(&mut self, off: u32) -> u32 {
            if off == GDRST {
                // Reset completes after a couple of polls.
                if self.gdrst_polls == 0 {
                    self.gdrst = 0;
                } else {
                    self.gdrst_polls -= 1;
                }
                return self.gdrst;
            }
            let v = self.reg(off);
            if let Some(e) = Self::engine_of(off) {
                if off & 0xfff == RING_MI_MODE {
                    let idle = v & MI_MODE_STOP_RING != 0 && !self.mid_batch[e];
                    return v | if idle { MI_MODE_IDLE } else { 0 };
                }
            }
            v
        }
        fn write_reg(&mut self, off: u32, v: u32) {
            if off == GDRST {
                self.gdrst = v;
                self.gdrst_polls = 2;
                for e in 0..2 {
                    if v & reset::reset_bit(EngineId::ALL[e]) != 0 {
                        self.reset(e);
                    }
                }
                return;
            }
            let low = off & 0xfff;
            let v = if Self::engine_of(off).is_some()
                && (low == RING_MI_MODE || low == RING_GFX_MODE)
            {
                let m = v >> 16;
                (self.reg(off) & !m) | (v & m & 0xffff)
            } else {
                v
            };
            self.regs.insert(off, v);
        }
        fn ggtt_entries(&self) -> u32 {
            0
        }
        fn write_ggtt(&mut self, _: u32, _: Pte) {}
        fn read_ggtt(&self, _: u32) -> Pte {
            Pte(0)
        }
    }

    impl Engines for SimGpu {
        fn has_work(&self, e: EngineId, v: SlotId) -> bool {
            self.q[e.index()]
                .get(v.index())
                .is_some_and(|q| !q.is_empty())
        }
        fn run(&mut self, eid: EngineId, vid: SlotId, b: RunBudget) -> RunReport {
            let (e, v) = (eid.index(), vid.index());
            let base = eid.mmio_base();
            let mut bad = Vec::new();
            if self.reg(base + RING_START) != ring_addr(v) {
                bad.push("START");
            }
            if self.reg(base + RING_CTL) & CTL_ENABLE == 0 {
                bad.push("CTL");
            }
            if eid == EngineId::Rcs && self.reg(base + RING_PP_DIR_BASE) != pd_addr(v) {
                bad.push("PP_DIR_BASE");
            }
            if self.reg(base + RING_HEAD) != self.head[e][v] {
                bad.push("HEAD");
            }
            if self.reg(base + RING_TAIL) != self.tail[e][v] {
                bad.push("TAIL");
            }
            if self.reg(base + RING_MI_MODE) & MI_MODE_STOP_RING != 0 {
                bad.push("STOPPED");
            }
            if !bad.is_empty() {
                self.violations
                    .push(format!("t={} e{e} v{v}: {bad:?}", self.now));
            }
            let (mut consumed, mut cmds, mut retired, mut since) = (0u64, 0u32, 0u32, 0u64);
            let stop = loop {
                let q = &mut self.q[e][v];
                let Some(sub) = q.front_mut() else {
                    break StopReason::Drained;
                };
                if sub.hang {
                    // The looping batch eats the whole budget.
                    let left = b.ns.saturating_sub(consumed).max(1);
                    consumed += left;
                    since += left;
                    cmds += 1;
                    self.mid_batch[e] = b.preemption == Preemption::Batch;
                    break if self.mid_batch[e] {
                        StopReason::MidBatch
                    } else {
                        StopReason::Preempted
                    };
                }
                let (cost, batch) = sub.cmds[sub.pos];
                let prev_batch = sub.cmds.get(sub.pos.wrapping_sub(1)).map_or(0, |c| c.1);
                let boundary = b.preemption == Preemption::Command
                    || sub.pos == 0
                    || prev_batch == 0
                    || prev_batch != batch;
                if consumed > 0 && b.finish_batch && boundary {
                    self.mid_batch[e] = false;
                    break StopReason::Preempted;
                }
                if consumed > 0 && (consumed + cost > b.ns || cmds >= b.max_cmds) {
                    self.mid_batch[e] = !boundary;
                    break if boundary {
                        StopReason::Preempted
                    } else {
                        StopReason::MidBatch
                    };
                }
                consumed += cost;
                since += cost;
                cmds += 1;
                sub.pos += 1;
                self.head[e][v] = self.head[e][v].wrapping_add(4);
                if sub.pos == sub.cmds.len() {
                    retired += 1;
                    since = 0;
                    self.retired[e][v].push(sub.id);
                    q.pop_front();
                }
            };
            if stop == StopReason::Drained {
                self.mid_batch[e] = false;
            }
            self.regs.insert(base + RING_HEAD, self.head[e][v]);
            self.used[e][v] += consumed;
            if e == 0 {
                self.trace.push((self.now, v, consumed));
            }
            RunReport {
                consumed_ns: consumed,
                cmds,
                retired,
                since_retire_ns: since,
                stop,
            }
        }
        fn drop_work(&mut self, e: EngineId, v: SlotId) -> u32 {
            let (e, v) = (e.index(), v.index());
            let n = self.q[e][v].len() as u32;
            self.q[e][v].clear();
            self.dropped[v] += n as u64;
            self.head[e][v] = self.tail[e][v];
            n
        }
    }

    struct Rig<const N: usize> {
        s: Scheduler<N>,
        g: SimGpu,
        clk: SimClock,
        ids: Vec<SlotId>,
        next_id: u64,
        submitted: [Vec<Vec<u64>>; 2],
        hang_events: Vec<HangEvent>,
    }

    impl<const N: usize> Rig<N> {
        fn new(cfg: SchedConfig, weights: &[u32]) -> Self {
            let mut s = Scheduler::<N>::new(cfg);
            let mut g = SimGpu::new(weights.len());
            let mut ids = Vec::new();
            for w in weights {
                let id = s.create_vgpu(*w).unwrap();
                let v = id.index();
                for e in EngineId::ALL {
                    s.write_ctx_reg(&mut g, id, e, RING_START, ring_addr(v))
                        .unwrap();
                    s.write_ctx_reg(&mut g, id, e, RING_CTL, CTL_ENABLE | (31 << 12))
                        .unwrap();
                }
                s.write_ctx_reg(&mut g, id, EngineId::Rcs, RING_PP_DIR_BASE, pd_addr(v))
                    .unwrap();
                ids.push(id);
            }
            let n = weights.len();
            Rig {
                s,
                g,
                clk: SimClock(Cell::new(0)),
                ids,
                next_id: 0,
                submitted: [vec![Vec::new(); n], vec![Vec::new(); n]],
                hang_events: Vec::new(),
            }
        }
        /// Submit through flow control; false when refused.
        fn submit(
            &mut self,
            v: usize,
            e: EngineId,
            cmds: Vec<(u64, u32)>,
            hang: bool,
        ) -> Result<(), SchedError> {
            let id = self.ids[v];
            self.s.admit(id, e, cmds.len() as u32)?;
            let ei = e.index();
            self.g.tail[ei][v] = self.g.tail[ei][v].wrapping_add(4 * cmds.len() as u32);
            let tail = self.g.tail[ei][v];
            self.s
                .write_ctx_reg(&mut self.g, id, e, RING_TAIL, tail)
                .unwrap();
            self.next_id += 1;
            if !hang {
                self.submitted[ei][v].push(self.next_id);
            }
            self.g.q[ei][v].push_back(Sub {
                id: self.next_id,
                cmds,
                pos: 0,
                hang,
            });
            Ok(())
        }
        /// Keep `v` backlogged on `e` with random work until flow control says no.
        fn fill(&mut self, rng: &mut Rng, v: usize, e: EngineId, batch: bool) {
            loop {
                let n = rng.range(1, 16) as usize;
                let mut cmds = Vec::with_capacity(n);
                let mut b = 0;
                for i in 0..n {
                    if batch && i % 8 == 0 {
                        b = rng.range(1, 1 << 30) as u32;
                    }
                    cmds.push((rng.range(2_000, 100_000), if batch { b } else { 0 }));
                }
                if self.submit(v, e, cmds, false).is_err() {
                    break;
                }
            }
        }
        fn round(&mut self) -> RoundReport {
            self.g.now = self.clk.now();
            let r = self.s.round(&mut self.g, &self.clk);
            for h in r.hangs.iter().flatten() {
                self.hang_events.push(*h);
            }
            self.clk
                .advance(if r.idle { 50_000 } else { r.wall_ns.max(1) });
            r
        }
        /// Engine-0 time per vGPU in the window [t0, t1).
        fn window(&self, t0: u64, t1: u64) -> Vec<u64> {
            let mut u = vec![0u64; self.ids.len()];
            for (t, v, ns) in &self.g.trace {
                if *t >= t0 && *t < t1 {
                    u[*v] += ns;
                }
            }
            u
        }
        /// Every submission of `v` retired, in order, on each engine.
        fn assert_all_retired(&self, v: usize) {
            for e in 0..2 {
                let (r, s) = (&self.g.retired[e][v], &self.submitted[e][v]);
                assert!(
                    r == s,
                    "v{v} engine {e}: {} retired of {} submitted (first diff at {:?})",
                    r.len(),
                    s.len(),
                    r.iter().zip(s.iter()).position(|(a, b)| a != b)
                );
            }
        }
        fn assert_clean(&self) {
            assert!(
                self.g.violations.is_empty(),
                "context violations: {:?}",
                &self.g.violations[..self.g.violations.len().min(5)]
            );
        }
    }

    fn shares(used: &[u64]) -> Vec<f64> {
        let t: u64 = used.iter().sum();
        used.iter().map(|u| *u as f64 / t as f64).collect()
    }

    fn jain(x: &[f64]) -> f64 {
        let s: f64 = x.iter().sum();
        let s2: f64 = x.iter().map(|v| v * v).sum();
        s * s / (x.len() as f64 * s2)
    }

    fn cfg(quantum: u64, pre: Preemption) -> SchedConfig {
        SchedConfig {
            quantum_ns: quantum,
            preemption: pre,
            max_pending_cmds: 64,
            max_pending_submissions: 16,
            ..SchedConfig::DEFAULT
        }
    }

    /// Backlogged vGPUs with the given weights on the render engine for
    /// `periods`; returns (max relative share error, total engine time used
    /// / elapsed, rig).
    fn backlogged<const N: usize>(
        weights: &[u32],
        c: SchedConfig,
        periods: u64,
        seed: u64,
    ) -> (f64, f64, Rig<N>) {
        let mut rig = Rig::<N>::new(c, weights);
        let mut rng = Rng(seed | 1);
        let batch = c.preemption == Preemption::Batch;
        while rig.clk.now() < periods * P {
            for v in 0..weights.len() {
                rig.fill(&mut rng, v, EngineId::Rcs, batch);
            }
            rig.round();
        }
        rig.assert_clean();
        let sh = shares(&rig.g.used[0]);
        let wsum: u32 = weights.iter().sum();
        let mut worst: f64 = 0.0;
        for (i, w) in weights.iter().enumerate() {
            let want = *w as f64 / wsum as f64;
            worst = worst.max((sh[i] - want).abs() / want);
        }
        let util = rig.g.total_used(0) as f64 / rig.clk.now() as f64;
        (worst, util, rig)
    }

    #[test]
    fn shares_follow_weights_within_2_percent() {
        let mut rng = Rng(0x5eed);
        for (n, quantum) in [
            (2usize, PAPER_QUANTUM_NS),
            (3, GVTG_QUANTUM_NS),
            (7, PAPER_QUANTUM_NS),
            (7, GVTG_QUANTUM_NS),
            (16, GVTG_QUANTUM_NS),
        ] {
            let weights: Vec<u32> = (0..n).map(|_| rng.range(1, 100) as u32).collect();
            let (worst, util, _) =
                backlogged::<16>(&weights, cfg(quantum, Preemption::Command), 100, rng.next());
            assert!(
                worst <= 0.02,
                "n={n} q={quantum} weights {weights:?}: worst relative error {worst}"
            );
            assert!(util > 0.999, "work-conserving: engine busy {util}");
        }
    }

    #[test]
    fn sixty_four_vgpus_share_by_weight() {
        let mut rng = Rng(64);
        let weights: Vec<u32> = (0..64).map(|_| rng.range(10, 100) as u32).collect();
        let (worst, util, rig) =
            backlogged::<64>(&weights, cfg(GVTG_QUANTUM_NS, Preemption::Command), 100, 7);
        assert!(worst <= 0.02, "worst relative error {worst}");
        assert!(util > 0.999);
        assert!(rig.s.ctx_stats(EngineId::Rcs).switches > 1000);
    }

    #[test]
    fn equal_weights_are_fair_by_jain_index() {
        for n in [2usize, 7, 64] {
            let w = vec![10u32; n];
            let (_, _, rig) =
                backlogged::<64>(&w, cfg(GVTG_QUANTUM_NS, Preemption::Command), 50, n as u64);
            let j = jain(&shares(&rig.g.used[0]));
            assert!(j >= 0.99, "n={n}: Jain {j}");
            // Over every single period too, while a period holds many quanta
            // per vGPU (64 vGPUs get 1.6 ms per period: 1 or 2 quanta).
            for k in (1..50).filter(|_| n <= 7) {
                let jw = jain(&shares(&rig.window(k * P, (k + 1) * P)));
                assert!(jw >= 0.99, "n={n} period {k}: Jain {jw}");
            }
        }
    }

    #[test]
    fn batch_boundary_mode_converges() {
        // Batches of up to 8 commands (<= 800 us) cannot be cut; shares still
        // converge, with a looser bound: drift per decision is a batch.
        let mut rng = Rng(0xba7c);
        for n in [2usize, 7] {
            let weights: Vec<u32> = (0..n).map(|_| rng.range(1, 100) as u32).collect();
            let (worst, util, rig) = backlogged::<8>(
                &weights,
                cfg(GVTG_QUANTUM_NS, Preemption::Batch),
                200,
                rng.next(),
            );
            assert!(worst <= 0.05, "n={n} weights {weights:?}: worst {worst}");
            assert!(util > 0.999);
            let locked_runs = rig.g.trace.len();
            assert!(locked_runs > 0);
        }
    }

    #[test]
    fn idle_vgpus_consume_nothing_and_time_goes_to_the_busy() {
        let weights = [50u32, 50, 20, 80];
        let mut rig = Rig::<8>::new(cfg(GVTG_QUANTUM_NS, Preemption::Command), &weights);
        let mut rng = Rng(3);
        while rig.clk.now() < 30 * P {
            rig.fill(&mut rng, 0, EngineId::Rcs, false);
            rig.fill(&mut rng, 2, EngineId::Rcs, false);
            rig.round();
        }
        rig.assert_clean();
        assert_eq!(rig.g.used[0][1], 0);
        assert_eq!(rig.g.used[0][3], 0);
        assert_eq!(rig.s.stats(rig.ids[1]).unwrap().engine_ns, [0, 0]);
        let sh = shares(&rig.g.used[0]);
        // Only 0 (50) and 2 (20) compete: 5/7 and 2/7.
        assert!((sh[0] - 5.0 / 7.0).abs() < 0.02 * 5.0 / 7.0, "{sh:?}");
        assert!(rig.g.total_used(0) as f64 / rig.clk.now() as f64 > 0.999);
        assert_eq!(rig.s.state(rig.ids[1]), VgpuState::Idle);
        // A vGPU that wakes up after a long idle time gets its share at once,
        // without bursting on banked credit.
        let t0 = rig.clk.now();
        while rig.clk.now() < t0 + 10 * P {
            rig.fill(&mut rng, 0, EngineId::Rcs, false);
            rig.fill(&mut rng, 2, EngineId::Rcs, false);
            rig.fill(&mut rng, 1, EngineId::Rcs, false);
            rig.round();
        }
        let w = shares(&rig.window(t0 + P, t0 + 10 * P));
        let want = [50.0 / 120.0, 50.0 / 120.0, 20.0 / 120.0];
        for (i, v) in [0usize, 1, 2].iter().enumerate() {
            assert!(
                (w[*v] - want[i]).abs() < 0.05 * want[i],
                "after wake-up {w:?}"
            );
        }
        let first = rig.window(t0, t0 + P);
        let f = shares(&first);
        assert!(f[1] < 0.5, "no burst beyond one allocation: {f:?}");
    }

    #[test]
    fn weight_change_takes_effect_within_one_period() {
        let mut rig = Rig::<4>::new(cfg(GVTG_QUANTUM_NS, Preemption::Command), &[10, 10]);
        let mut rng = Rng(11);
        let t_change = 10 * P + P / 3;
        let mut changed = false;
        assert_eq!(rig.s.set_weight(rig.ids[0], 0), Err(SchedError::BadWeight));
        assert_eq!(
            rig.s.set_weight(rig.ids[0], 101),
            Err(SchedError::BadWeight)
        );
        assert_eq!(rig.s.set_weight(SlotId(3), 5), Err(SchedError::BadVgpu));
        while rig.clk.now() < 20 * P {
            if !changed && rig.clk.now() >= t_change {
                rig.s.set_weight(rig.ids[0], 30).unwrap();
                changed = true;
            }
            rig.fill(&mut rng, 0, EngineId::Rcs, false);
            rig.fill(&mut rng, 1, EngineId::Rcs, false);
            rig.round();
        }
        rig.assert_clean();
        assert_eq!(rig.s.weight(rig.ids[0]), Some(30));
        let before = shares(&rig.window(2 * P, 10 * P));
        assert!((before[0] - 0.5).abs() < 0.01, "{before:?}");
        // The first whole period after the change already shows 3:1.
        let after = shares(&rig.window(t_change + P, t_change + 2 * P));
        assert!((after[0] - 0.75).abs() < 0.02, "{after:?}");
        let later = shares(&rig.window(t_change + P, 20 * P));
        assert!((later[0] - 0.75).abs() < 0.75 * 0.02, "{later:?}");
    }

    #[test]
    fn flow_control_bounds_queued_work() {
        let mut rig = Rig::<4>::new(cfg(GVTG_QUANTUM_NS, Preemption::Command), &[10, 10]);
        let c = |n: usize| vec![(1_000u64, 0u32); n];
        assert_eq!(
            rig.submit(0, EngineId::Rcs, c(65), false),
            Err(SchedError::TooLarge)
        );
        for _ in 0..4 {
            rig.submit(0, EngineId::Rcs, c(16), false).unwrap();
        }
        assert_eq!(rig.s.pending(rig.ids[0], EngineId::Rcs), (64, 4));
        assert_eq!(
            rig.submit(0, EngineId::Rcs, c(1), false),
            Err(SchedError::Backpressure)
        );
        // Per engine: the blitter queue is separate.
        rig.submit(0, EngineId::Bcs, c(1), false).unwrap();
        let st = rig.s.stats(rig.ids[0]).unwrap();
        assert_eq!(st.submissions, 5);
        assert_eq!(st.rejections[RejectClass::Backpressure as usize], 1);
        assert_eq!(st.rejections[RejectClass::Malformed as usize], 1);
        assert_eq!(st.state, VgpuState::Runnable);
        // Retirement releases the back-pressure.
        rig.round();
        assert!(rig.s.pending(rig.ids[0], EngineId::Rcs).0 < 64);
        rig.submit(0, EngineId::Rcs, c(1), false).unwrap();
        while !rig.round().idle {}
        assert_eq!(rig.s.pending(rig.ids[0], EngineId::Rcs), (0, 0));
        assert_eq!(rig.s.pending(rig.ids[0], EngineId::Bcs), (0, 0));
        rig.assert_all_retired(0);
        rig.assert_clean();
    }

    /// Drive a rig where `bad` keeps submitting looping batches; the others
    /// are backlogged.  Returns the rig after `periods`.
    fn hang_scenario(
        pre: Preemption,
        limit: u32,
        periods: u64,
        two_engines: bool,
    ) -> (Rig<8>, u64) {
        let mut c = cfg(GVTG_QUANTUM_NS, pre);
        c.hang_timeout_ns = 20_000_000;
        c.hang_limit = limit;
        let mut rig = Rig::<8>::new(c, &[10, 10, 10, 10]);
        let bad = 3;
        let mut rng = Rng(99);
        let mut t_failed = None;
        while rig.clk.now() < periods * P {
            for v in 0..3 {
                rig.fill(&mut rng, v, EngineId::Rcs, pre == Preemption::Batch);
            }
            if two_engines {
                rig.fill(&mut rng, 1, EngineId::Bcs, false);
            }
            if !rig.g.has_work(EngineId::Rcs, rig.ids[bad]) {
                match rig.submit(bad, EngineId::Rcs, vec![(1_000, 1)], true) {
                    Ok(()) => {}
                    Err(e) => assert_eq!(e, SchedError::Failed),
                }
            }
            let r = rig.round();
            for h in r.hangs.iter().flatten() {
                if h.failed {
                    t_failed = Some(h.at_ns);
                }
            }
        }
        // Drain: stop feeding, everything admitted must retire.
        while !rig.round().idle {}
        (rig, t_failed.expect("the bad vGPU failed"))
    }

    #[test]
    fn hanging_vgpu_is_reset_then_failed_and_others_lose_nothing() {
        for pre in [Preemption::Command, Preemption::Batch] {
            let (mut rig, t_failed) = hang_scenario(pre, 3, 30, false);
            rig.assert_clean();
            let bad = rig.ids[3];
            assert_eq!(rig.hang_events.len(), 3, "{pre:?}");
            assert!(rig
                .hang_events
                .iter()
                .all(|h| h.slot == 3 && h.engine == EngineId::Rcs && h.reset_ok));
            assert_eq!(
                rig.hang_events.iter().map(|h| h.count).collect::<Vec<_>>(),
                vec![1, 2, 3]
            );
            assert_eq!(
                rig.hang_events.iter().map(|h| h.failed).collect::<Vec<_>>(),
                vec![false, false, true]
            );
            assert!(rig.s.is_failed(bad));
            assert_eq!(rig.s.state(bad), VgpuState::Failed);
            assert_eq!(
                rig.g.resets,
                [3, 0],
                "only the render engine, once per hang"
            );
            let ev = rig.s.take_hang_event(bad).unwrap();
            assert_eq!((ev.count, ev.failed, ev.iir_bits()), (3, true, 1 << 3));
            assert_eq!(rig.s.take_hang_event(bad), None);
            for v in 0..3 {
                assert_eq!(
                    rig.s.take_hang_event(rig.ids[v]),
                    None,
                    "innocents see no hang"
                );
                assert_eq!(rig.g.dropped[v], 0);
                rig.assert_all_retired(v);
                assert_eq!(rig.s.stats(rig.ids[v]).unwrap().hangs, 0);
            }
            // Others' throughput recovers within one period of the failure.
            let w = rig.window(t_failed + P, t_failed + 2 * P);
            let total: u64 = w.iter().sum();
            assert_eq!(w[3], 0);
            assert!(
                total as f64 >= 0.99 * P as f64,
                "{pre:?}: engine busy {total}"
            );
            // Nobody is starved in that first period (vGPUs that the hung
            // batch kept waiting may first catch up on carried credit)...
            for (v, wv) in w.iter().enumerate().take(3) {
                let s = *wv as f64 / total as f64;
                assert!(
                    s > 0.25,
                    "{pre:?}: v{v} share {s} in the period after the failure"
                );
            }
            // ... and from then on the three share equally.
            let later = rig.window(t_failed + 2 * P, 30 * P);
            let lt: u64 = later.iter().sum();
            for (v, lv) in later.iter().enumerate().take(3) {
                let s = *lv as f64 / lt as f64;
                assert!(
                    (s - 1.0 / 3.0).abs() < 0.02,
                    "{pre:?}: v{v} share {s} after recovery"
                );
            }
            let st = rig.s.stats(bad).unwrap();
            assert_eq!(
                (st.hangs, st.hangs_total, st.state),
                (3, 3, VgpuState::Failed)
            );
            assert!(st.rejections[RejectClass::Failed as usize] > 0);
            // A vGPU reset brings it back.
            let (g, clk) = (&mut rig.g, &rig.clk);
            rig.s.reset_vgpu(g, clk, bad).unwrap();
            assert!(!rig.s.is_failed(bad));
            assert_eq!(rig.s.state(bad), VgpuState::Idle);
            // The guest re-initialises its ring after the reset.
            for e in EngineId::ALL {
                rig.g.head[e.index()][3] = 0;
                rig.g.tail[e.index()][3] = 0;
                rig.s
                    .write_ctx_reg(&mut rig.g, bad, e, RING_START, ring_addr(3))
                    .unwrap();
                rig.s
                    .write_ctx_reg(&mut rig.g, bad, e, RING_CTL, CTL_ENABLE)
                    .unwrap();
            }
            rig.s
                .write_ctx_reg(&mut rig.g, bad, EngineId::Rcs, RING_PP_DIR_BASE, pd_addr(3))
                .unwrap();
            rig.submitted[0][3].clear();
            rig.g.retired[0][3].clear();
            rig.submit(3, EngineId::Rcs, vec![(5_000, 0); 3], false)
                .unwrap();
            while !rig.round().idle {}
            rig.assert_all_retired(3);
            rig.assert_clean();
        }
    }

    #[test]
    fn hang_on_render_leaves_the_blitter_alone() {
        let (rig, _) = hang_scenario(Preemption::Command, 2, 10, true);
        rig.assert_clean();
        assert_eq!(rig.hang_events.len(), 2);
        assert_eq!(rig.g.resets, [2, 0]);
        assert!(
            rig.g.used[1][1] > 9 * P,
            "blitter kept running v1: {}",
            rig.g.used[1][1]
        );
        rig.assert_all_retired(1);
    }

    #[test]
    fn per_vgpu_hang_limit() {
        let mut c = cfg(GVTG_QUANTUM_NS, Preemption::Command);
        c.hang_timeout_ns = 5_000_000;
        c.hang_limit = 5;
        let mut rig = Rig::<4>::new(c, &[10, 10]);
        rig.s.set_hang_limit(rig.ids[1], 1).unwrap();
        assert_eq!(rig.s.hang_limit(rig.ids[0]), Some(5));
        rig.submit(1, EngineId::Bcs, vec![(1_000, 1)], true)
            .unwrap();
        rig.submit(0, EngineId::Bcs, vec![(1_000, 1)], true)
            .unwrap();
        for _ in 0..200 {
            rig.round();
        }
        assert!(
            rig.s.is_failed(rig.ids[1]),
            "limit 1: failed at the first hang"
        );
        assert!(!rig.s.is_failed(rig.ids[0]));
        assert_eq!(rig.s.stats(rig.ids[0]).unwrap().hangs, 1);
        assert_eq!(
            rig.submit(1, EngineId::Rcs, vec![(1, 0)], false),
            Err(SchedError::Failed)
        );
        rig.assert_clean();
    }

    #[test]
    fn independent_engines_run_in_parallel() {
        let mut rig = Rig::<4>::new(cfg(GVTG_QUANTUM_NS, Preemption::Command), &[10, 10, 10]);
        let mut rng = Rng(5);
        while rig.clk.now() < 20 * P {
            rig.fill(&mut rng, 0, EngineId::Rcs, false);
            rig.fill(&mut rng, 1, EngineId::Rcs, false);
            rig.fill(&mut rng, 2, EngineId::Bcs, false);
            rig.round();
        }
        rig.assert_clean();
        let t = rig.clk.now() as f64;
        // v2 has the blitter to itself; v0 and v1 split the render engine.
        assert!(rig.g.used[1][2] as f64 > 0.98 * t);
        let sh = shares(&rig.g.used[0]);
        assert!(
            (sh[0] - 0.5).abs() < 0.01 && (sh[1] - 0.5).abs() < 0.01,
            "{sh:?}"
        );
    }

    #[test]
    fn gang_vgpu_holds_both_engines() {
        let mut rig = Rig::<4>::new(cfg(GVTG_QUANTUM_NS, Preemption::Command), &[10, 10, 10]);
        rig.s.set_gang(rig.ids[0], true).unwrap();
        let mut rng = Rng(6);
        let mut gang_runs = 0;
        while rig.clk.now() < 40 * P {
            rig.fill(&mut rng, 0, EngineId::Rcs, false);
            rig.fill(&mut rng, 0, EngineId::Bcs, false);
            rig.fill(&mut rng, 1, EngineId::Rcs, false);
            rig.fill(&mut rng, 2, EngineId::Bcs, false);
            let r = rig.round();
            for e in EngineId::ALL {
                if let Some(run) = r.ran[e.index()] {
                    if run.vgpu == rig.ids[0] {
                        gang_runs += 1;
                        let o = other(e);
                        assert_eq!(
                            r.ran[o.index()].map(|x| x.vgpu),
                            Some(rig.ids[0]),
                            "gang vGPU alone on one engine"
                        );
                    }
                }
            }
        }
        rig.assert_clean();
        assert!(gang_runs > 100);
        // Equal weights: on each engine the gang vGPU gets ~half, charged on both.
        let t = rig.clk.now() as f64;
        for e in 0..2 {
            let g = rig.g.used[e][0] as f64 / t;
            let o = rig.g.used[e][1 + e] as f64 / t;
            assert!(
                (g - 0.5).abs() < 0.03 && (o - 0.5).abs() < 0.03,
                "engine {e}: gang {g}, other {o}"
            );
        }
    }

    #[test]
    fn all_gang_mode_is_one_owner_for_the_gpu() {
        let mut c = cfg(PAPER_QUANTUM_NS, Preemption::Command);
        c.gang_by_default = true;
        let mut rig = Rig::<4>::new(c, &[10, 20, 30]);
        let mut rng = Rng(8);
        while rig.clk.now() < 60 * P {
            rig.fill(&mut rng, 0, EngineId::Rcs, false);
            rig.fill(&mut rng, 1, EngineId::Bcs, false);
            rig.fill(&mut rng, 2, EngineId::Rcs, false);
            rig.fill(&mut rng, 2, EngineId::Bcs, false);
            let r = rig.round();
            if let (Some(a), Some(b)) = (r.ran[0], r.ran[1]) {
                assert_eq!(a.vgpu, b.vgpu);
            }
        }
        rig.assert_clean();
        // Time holding the GPU follows the weights (charged = held).
        let held: Vec<u64> = rig
            .ids
            .iter()
            .map(|id| rig.s.stats(*id).unwrap().engine_ns[0])
            .collect();
        let sh = shares(&held);
        for (i, w) in [10.0, 20.0, 30.0].iter().enumerate() {
            assert!((sh[i] - w / 60.0).abs() < 0.02 * w / 60.0, "{sh:?}");
        }
    }

    #[test]
    fn destroy_frees_the_slot_and_switches_out() {
        let mut rig = Rig::<2>::new(cfg(GVTG_QUANTUM_NS, Preemption::Batch), &[10, 10]);
        assert_eq!(rig.s.create_vgpu(10), Err(SchedError::NoSlot));
        // v0 stuck inside a looping batch: destroy must reset the engine.
        rig.submit(0, EngineId::Rcs, vec![(1, 1)], true).unwrap();
        rig.round();
        assert_eq!(rig.s.owner(EngineId::Rcs), Some(rig.ids[0]));
        assert_eq!(rig.s.state(rig.ids[0]), VgpuState::Running);
        let (g, clk) = (&mut rig.g, &rig.clk);
        rig.s.destroy_vgpu(g, clk, rig.ids[0]).unwrap();
        assert_eq!(rig.g.resets, [1, 0]);
        assert_eq!(rig.s.owner(EngineId::Rcs), None);
        assert_eq!(rig.s.state(rig.ids[0]), VgpuState::Absent);
        assert_eq!(
            rig.s.admit(rig.ids[0], EngineId::Rcs, 1),
            Err(SchedError::BadVgpu)
        );
        assert!(rig.s.stats(rig.ids[0]).is_none());
        let id = rig.s.create_vgpu(50).unwrap();
        assert_eq!(id, rig.ids[0]);
        assert_eq!(rig.s.stats(id).unwrap().ctx_switches, 0);
        // v1 unaffected.
        rig.submit(1, EngineId::Rcs, vec![(10_000, 0); 4], false)
            .unwrap();
        while !rig.round().idle {}
        rig.assert_all_retired(1);
        rig.assert_clean();
    }

    /// 64 vGPUs that get work one after another, 2.5 ms apart (as one
    /// feeder thread sweeps them): the one whose first work meets the first
    /// refill (vGPU 40, at 100 ms) gets its share like the others.  Before
    /// the refill levelled waking slots it got ~0.66 of it for tens of
    /// seconds (the 64-vGPU VM test's outliers).
    #[test]
    fn a_vgpu_waking_at_a_refill_gets_its_share() {
        let w = [10u32; 64];
        let mut rig = Rig::<64>::new(cfg(GVTG_QUANTUM_NS, Preemption::Command), &w);
        let mut rng = Rng(3);
        let warm = 500 * 1_000_000;
        let mut used0 = vec![0u64; 64];
        while rig.clk.now() < warm + 10 * P * 10 {
            let now = rig.clk.now();
            for v in 0..64 {
                if now >= v as u64 * 2_500_000 {
                    rig.fill(&mut rng, v, EngineId::Bcs, false);
                }
            }
            if now < warm {
                used0 = rig.g.used[1].clone();
            }
            rig.round();
            rig.clk.advance(rng.range(0, 1_500_000));
        }
        let d: Vec<f64> = (0..64)
            .map(|v| (rig.g.used[1][v] - used0[v]) as f64)
            .collect();
        let mean = d.iter().sum::<f64>() / 64.0;
        for (v, x) in d.iter().enumerate() {
            assert!(
                (x / mean - 1.0).abs() < 0.02,
                "vGPU {v}: {:.3} of the mean",
                x / mean
            );
        }
    }

    /// A vGPU that had work during a period and none at its refill is
    /// counted; one that had work throughout, or none at all, is not.
    #[test]
    fn stats_count_refills_without_work() {
        let mut rig = Rig::<4>::new(cfg(GVTG_QUANTUM_NS, Preemption::Command), &[10, 10, 10]);
        let mut rng = Rng(7);
        // The first round starts the period (its refill finds nobody).
        rig.round();
        // v0: a little work, done long before the period ends; v1: kept
        // backlogged across the boundary; v2: never any work.
        rig.submit(0, EngineId::Bcs, vec![(10_000, 0)], false)
            .unwrap();
        while rig.clk.now() < P + P / 2 {
            rig.fill(&mut rng, 1, EngineId::Bcs, false);
            rig.round();
        }
        let n = |rig: &Rig<4>, v: usize| rig.s.stats(rig.ids[v]).unwrap().refills_without_work;
        assert_eq!((n(&rig, 0), n(&rig, 1), n(&rig, 2)), (1, 0, 0));
        // Picks: v0 once (its one submission), v1 every round it had work.
        let picks = |v: usize| rig.s.stats(rig.ids[v]).unwrap().picks;
        assert_eq!(picks(0), 1);
        assert_eq!(picks(2), 0);
        assert!(picks(1) >= rig.s.stats(rig.ids[1]).unwrap().ctx_switches && picks(1) > 100);
    }

    #[test]
    fn stats_count_engine_time_and_switches() {
        let (_, _, rig) =
            backlogged::<4>(&[10, 30], cfg(GVTG_QUANTUM_NS, Preemption::Command), 5, 1);
        for v in 0..2 {
            let st = rig.s.stats(rig.ids[v]).unwrap();
            assert_eq!(st.engine_ns[0], rig.g.used[0][v]);
            assert!(st.ctx_switches > 10);
            assert!(st.submissions as usize >= rig.g.retired[0][v].len());
        }
        let total: u64 = (0..2)
            .map(|v| rig.s.stats(rig.ids[v]).unwrap().ctx_switches)
            .sum();
        assert_eq!(total, rig.s.ctx_stats(EngineId::Rcs).switches);
    }
}
