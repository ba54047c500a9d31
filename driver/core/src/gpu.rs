//! The mediated GPU: the physical side that every vGPU shares (paper §3.1,
//! Figure 3: one mediator owning the physical GPU, per-VM vGPU instances,
//! "the mediator ... schedules the physical GPU").
//!
//! [`Gpu`] owns, for one parent device:
//! - the physical GPU, gvt-sim ([`super::sim`]), over the physical GGTT
//!   storage the caller lends per call (`phys: &mut [Pte]`, one entry per GM
//!   page: a vmalloc'ed array in the kernel);
//! - the GPU scheduler ([`super::sched`]: credit policy, context switch,
//!   flow control, hang detection and per-engine reset);
//! - the host-reserved shadow memory: the top 16 MiB of GM (more when more
//!   than 32 vGPU slots need shadow areas, [`host_reserved_size`];
//!   [`super::ring::host_reserved_range_of`]) holds, per vGPU slot and engine,
//!   a shadow ring and the batch-buffer pools ([`super::ring::ShadowLayout`],
//!   [`SHADOW_PAGES_PER_ENGINE`] pages), backed by host pages the caller
//!   allocates and hands to [`Gpu::create_slot`];
//! - for every vGPU slot, the state the engines need while the vGPU is not
//!   trapping: its ring shadows and submission queues, its virtual GT
//!   interrupt registers ([`super::irq::GtIrq`], [`Delivery`]), its virtual
//!   `RING_EIR`, its shadow PPGTT root.
//!
//! Everything a trap touches only for one vGPU (configuration space, vreg
//! file, PVINFO, the shadow GGTT's storage and pins, the shadow PPGTT's
//! tables) is in the per-vGPU facade, [`super::vgpu::Vgpu`], which calls in
//! here with the GPU borrowed.
//!
//! # Locking model (for the kernel glue)
//! Two kinds of locks, always taken in this order:
//! 1. **per-vGPU lock** (a `Mutex` around the facade and its storage):
//!    config space, BAR0, aperture faults, `dma_unmap`, reset, sysfs;
//! 2. **the GPU lock** (one `Mutex` around [`Gpu`] and the physical GGTT
//!    storage): taken inside a vGPU's lock by every facade call that needs
//!    the physical side, and alone by the engine worker.
//!
//! The engine worker ([`Gpu::run_engines`], a workqueue item kicked after a
//! submission and re-armed while work remains, never the trap path) holds
//! only the GPU lock; it returns per-slot [`Delivery`]s, the glue drops the
//! GPU lock, then takes each delivered vGPU's lock to turn the delivery
//! into an MSI or INTx signal ([`super::vgpu::Vgpu::signal`]).  So the
//! engine never waits for a vGPU lock and no lock order is ever inverted.
//! Physical state is only ever touched under the GPU lock, so the engines
//! never run while a trap rewrites a shadow (the PPGTT shadow in
//! particular is rebuilt only when nothing executes).
//!
//! # Engine model
//! gvt-sim executes commands for real; its time is modelled by the engine's
//! cost model ([`GpuConfig::cost`], the table in [`super::engine`]): every
//! command and every byte a blit touches is charged, and the scheduler's
//! slices, credits and watchdog are in those ns.  A run stops between
//! bounded engine steps (at most [`super::engine::STEP_BYTES`] per step,
//! inside a blit too), so a slice overruns by at most one step.
//!
//! A context's execution state that MMIO does not show (batch level and
//! pointers, blit progress, its timestamp: [`ExecState`]) is kept per slot
//! and engine and loaded onto the engine only for the duration of that
//! slot's run; between runs the engine sits at ring level, HEAD on the
//! retirement point, so the MMIO context switch ([`super::ctx`]) may switch
//! at any step boundary and the scheduler uses the configured
//! [`Preemption`] ([`Preemption::Command`] by default): neither a long batch
//! nor a long blit holds an engine past its slice.  A faulted engine makes
//! no progress and burns its whole slice, which is what the watchdog
//! ([`super::reset`]) turns into a hang of the guilty vGPU: reset of that
//! engine only, its work dropped, a virtual error interrupt, Failed at the
//! limit.  A blit that runs longer than the hang timeout without its
//! submission retiring is such a hang too.
//!
//! [`Gpu::run_engines`] does at most a [`WorkBudget`] of engine work per
//! call, so the kernel worker holds the GPU lock for bounded time.
//!
//! Retirement is exact: [`Engines::run`] points the physical TAIL at the
//! end of the oldest pending submission, runs to it, and counts it retired
//! when HEAD gets there at ring level; outside a run the physical (or
//! image) TAIL is the shadow ring's tail.

use super::backend::{Backend, EngineId, Pte};
use super::cmd::{Level, Limits, Reject, RejectCounters};
use super::engine::{Budget, CostModel, ExecState, StepStatus, EIR_INSTRUCTION};
use super::gm_view::GmView;
use super::irq::{self, Delivery, GtEvent, GtIrq};
use super::mem::{GmRange, HostPage, PAGE_SHIFT, PAGE_SIZE};
use super::mmio::IrqReg;
use super::ppgtt::{PpgttError, ShadowRoot};
use super::regs::ring;
use super::ring::{
    host_reserved_range_of, map_shadow, MapError, RingShadow, ShadowLayout, SubmitError,
    HOST_RESERVED_SIZE,
};
use super::sched::{
    Engines, Preemption, RunBudget, RunReport, SchedConfig, SchedError, Scheduler, SlotId,
    StopReason,
};
use super::services::{Clock, HostMemory};
use super::sim::{GvtSim, SimState};
use super::stats::RejectClass;

/// Pages of a shadow ring: the largest guest ring accepted (Linux uses 32).
pub const SHADOW_RING_PAGES: u32 = 32;
/// Pages of the first-level batch pool of one vGPU-engine.
pub const SHADOW_L1_PAGES: u32 = 16;
/// Pages of the second-level batch pool of one vGPU-engine.
pub const SHADOW_L2_PAGES: u32 = 16;
/// Host pages of one vGPU-engine's shadow area.
pub const SHADOW_PAGES_PER_ENGINE: usize =
    (SHADOW_RING_PAGES + SHADOW_L1_PAGES + SHADOW_L2_PAGES) as usize;
/// Host pages the caller allocates per vGPU for [`Gpu::create_slot`]
/// (RCS area first, then BCS).
pub const SHADOW_PAGES_PER_VGPU: usize = SHADOW_PAGES_PER_ENGINE * EngineId::COUNT;
/// Submissions tracked per vGPU and engine (admitted, not yet retired); the
/// scheduler's `max_pending_submissions` may not exceed it.
pub const MAX_QUEUED: usize = 64;

/// Bytes of GM the host reserves for `slots` vGPU slots' shadow areas: 16
/// MiB ([`HOST_RESERVED_SIZE`], room for 32 slots), or whole MiB enough for
/// `slots` when more (32 MiB for 64).
pub const fn host_reserved_size(slots: usize) -> u64 {
    const MIB: u64 = 1 << 20;
    let need = (slots as u64)
        .saturating_mul(SHADOW_PAGES_PER_VGPU as u64)
        .saturating_mul(PAGE_SIZE);
    let need = need.saturating_add(MIB - 1) / MIB * MIB;
    if need > HOST_RESERVED_SIZE {
        need
    } else {
        HOST_RESERVED_SIZE
    }
}

/// Parameters of the mediated GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuConfig {
    /// Scheduler parameters.
    pub sched: SchedConfig,
    /// Per-submission audit limits.
    pub limits: Limits,
    /// What engine work costs (modelled engine time, see
    /// [`super::engine`]): the scheduler's slices, credits and watchdog
    /// are in these ns.
    pub cost: CostModel,
}

impl GpuConfig {
    /// The audit's runaway bound equals the flow-control bound, so a stream
    /// the scheduler could never admit is stopped by the auditor at its
    /// first excess command (counted as a runaway, nothing shadowed) instead
    /// of being audited and shadowed in full and then refused.
    pub const DEFAULT: GpuConfig = GpuConfig {
        sched: SchedConfig::DEFAULT,
        limits: Limits {
            max_commands: SchedConfig::DEFAULT.max_pending_cmds,
            checks: true,
        },
        cost: CostModel::DEFAULT,
    };
}

/// Why the GPU or a slot could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuError {
    /// `N` slots' shadow areas do not fit the host-reserved GM, or the
    /// physical GGTT is smaller than the host-reserved range.
    ReservedTooSmall,
    /// `max_pending_submissions` above [`MAX_QUEUED`], `cost.cmd_ns` 0, or
    /// an audit limit (`limits.max_commands`) above the flow-control bound
    /// (`sched.max_pending_cmds`): such submissions could never be admitted.
    BadConfig,
    /// Wrong number of shadow pages.
    ShadowPages,
    /// A vGPU slice overlaps the host-reserved GM.
    SliceInReserved,
    Shadow(MapError),
    Sched(SchedError),
}

/// Why a submission was refused (nothing of it executes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubmitReject {
    /// The auditor (or the ring set-up) rejected it.
    Audit(Reject),
    /// The vGPU is Failed (too many hangs).
    Failed,
    /// More commands than flow control ever admits at once.
    TooLarge,
    /// The shadow PPGTT could not be synchronised.
    Ppgtt(PpgttError),
    /// The guest reprogrammed a ring that still has work pending.
    RingBusy,
}

/// What became of a guest TAIL write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubmitOutcome {
    /// Nothing new between the old and the new tail.
    Empty,
    /// Audited, shadowed and admitted: the engines will run it.
    Accepted { commands: u32 },
    /// Back-pressure (flow control, or the shadow pools are busy): the TAIL
    /// is held and retried by [`Gpu::run_engines`] after retirements.
    Held,
    /// Refused; the vGPU gets a command-streamer error interrupt.
    Rejected(SubmitReject),
}

/// Per-slot counters of the submission path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotStats {
    pub accepted: u64,
    pub commands: u64,
    pub held: u64,
    pub retried: u64,
    pub retired: u64,
    pub rejected: RejectCounters,
    pub rejected_failed: u64,
    pub rejected_too_large: u64,
    pub rejected_ppgtt: u64,
    pub rejected_ring_busy: u64,
    /// Engine faults forwarded as error interrupts.
    pub faults: u64,
    /// Hang events delivered.
    pub hangs: u64,
    /// Fence writes refused (range outside the vGPU's slices).
    pub fences_refused: u64,
}

/// Admitted, unretired submissions of one vGPU-engine: (end offset in the
/// ring, audited commands).
#[derive(Clone, Copy, Debug)]
struct SubQueue {
    q: [(u32, u32); MAX_QUEUED],
    first: usize,
    len: usize,
}

impl SubQueue {
    const EMPTY: SubQueue = SubQueue {
        q: [(0, 0); MAX_QUEUED],
        first: 0,
        len: 0,
    };
    fn front(&self) -> Option<(u32, u32)> {
        if self.len == 0 {
            return None;
        }
        self.q.get(self.first).copied()
    }
    fn pop(&mut self) {
        if self.len > 0 {
            self.first = (self.first + 1) % MAX_QUEUED;
            self.len -= 1;
        }
    }
    fn push(&mut self, tail: u32, cmds: u32) -> bool {
        if self.len >= MAX_QUEUED {
            return false;
        }
        if let Some(s) = self.q.get_mut((self.first + self.len) % MAX_QUEUED) {
            *s = (tail, cmds);
        }
        self.len += 1;
        true
    }
    fn clear(&mut self) {
        self.first = 0;
        self.len = 0;
    }
}

/// The engine-side state of one vGPU slot.
#[derive(Clone, Copy, Debug)]
struct Slot {
    present: bool,
    gm: [GmRange; 2],
    rings: [RingShadow; EngineId::COUNT],
    queue: [SubQueue; EngineId::COUNT],
    held: [Option<u32>; EngineId::COUNT],
    irq: GtIrq,
    eir: [u32; EngineId::COUNT],
    root: Option<HostPage>,
    /// The vGPU's shadow PPGTT is being rebuilt outside the GPU lock
    /// ([`Gpu::ppgtt_update_begin`]): its render work neither runs nor is
    /// audited until [`Gpu::ppgtt_update_end`] hands the new root.
    ppgtt_busy: bool,
    /// Per engine: the execution state of this vGPU's context (see
    /// [`ExecState`]), loaded onto the engine only while it runs.
    exec: [ExecState; EngineId::COUNT],
    out: Delivery,
    stats: SlotStats,
    /// The guest's GM view when it is not the placement (a migrated vGPU;
    /// [`Gpu::set_gm_view`]): its rings translate START and commands.
    view: Option<GmView>,
}

impl Slot {
    /// Let both rings see `view` (kept over resets of the slot).
    fn set_view(&mut self, view: Option<GmView>) {
        self.view = view.filter(|v| !v.is_identity());
        for r in self.rings.iter_mut() {
            r.set_view(self.view);
        }
    }

    fn new(slot: usize, gm: [GmRange; 2], reserved: GmRange) -> Slot {
        Slot {
            present: true,
            gm,
            rings: [
                RingShadow::new(EngineId::Rcs, layout(reserved, slot, EngineId::Rcs)),
                RingShadow::new(EngineId::Bcs, layout(reserved, slot, EngineId::Bcs)),
            ],
            queue: [SubQueue::EMPTY; EngineId::COUNT],
            held: [None; EngineId::COUNT],
            irq: GtIrq::new(),
            eir: [0; EngineId::COUNT],
            root: None,
            ppgtt_busy: false,
            exec: [ExecState::IDLE; EngineId::COUNT],
            out: Delivery {
                msi: false,
                intx: None,
            },
            stats: SlotStats {
                rejected: RejectCounters::new(),
                ..SLOT_STATS_ZERO
            },
            view: None,
        }
    }

    fn note(&mut self, d: Delivery) {
        self.out.msi |= d.msi;
        if d.intx.is_some() {
            self.out.intx = d.intx;
        }
    }

    /// A command-streamer error on `e` for this vGPU (audit rejection,
    /// engine fault, hang).
    fn error(&mut self, e: EngineId, eir: u32) {
        if let Some(x) = self.eir.get_mut(e.index()) {
            *x |= eir;
        }
        let d = self.irq.event(GtEvent::Error(e));
        self.note(d);
    }
}

const SLOT_STATS_ZERO: SlotStats = SlotStats {
    accepted: 0,
    commands: 0,
    held: 0,
    retried: 0,
    retired: 0,
    rejected: RejectCounters::new(),
    rejected_failed: 0,
    rejected_too_large: 0,
    rejected_ppgtt: 0,
    rejected_ring_busy: 0,
    faults: 0,
    hangs: 0,
    fences_refused: 0,
};

/// Shadow area of `slot`'s engine `e` inside the host-reserved range.
fn layout(reserved: GmRange, slot: usize, e: EngineId) -> ShadowLayout {
    let n = (slot * EngineId::COUNT + e.index()) as u64;
    ShadowLayout {
        base: reserved
            .base
            .saturating_add(n * SHADOW_PAGES_PER_ENGINE as u64 * PAGE_SIZE),
        ring_pages: SHADOW_RING_PAGES,
        l1_pages: SHADOW_L1_PAGES,
        l2_pages: SHADOW_L2_PAGES,
    }
}

/// Which scheduler refusal class an audit rejection is.
fn reject_class(r: Reject) -> RejectClass {
    match r {
        Reject::UnknownOpcode | Reject::UnsupportedMode | Reject::WrongEngine => {
            RejectClass::UnknownCommand
        }
        Reject::RegisterNotAllowed => RejectClass::Privileged,
        Reject::AddressNotAllowed | Reject::PpgttNotMapped => RejectClass::BadAddress,
        Reject::BadGeometry => RejectClass::BadGeometry,
        _ => RejectClass::Malformed,
    }
}

/// How much one [`Gpu::run_engines`] call may do before it returns.  It
/// stops after `rounds` scheduling rounds or as soon as the rounds used
/// `engine_ns` of engine time (both engines together), so one call does at
/// most `engine_ns` plus one round (a slice and one engine step per engine)
/// of work.  The kernel worker drops the GPU lock and yields between calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkBudget {
    pub rounds: u32,
    pub engine_ns: u64,
}

impl WorkBudget {
    /// The kernel's engine worker: at most 64 rounds and 2 ms of engine work
    /// per call.
    pub const WORKER: WorkBudget = WorkBudget {
        rounds: 64,
        engine_ns: 2_000_000,
    };

    /// `n` rounds, whatever they cost (host tests).
    pub const fn rounds(n: u32) -> WorkBudget {
        WorkBudget {
            rounds: n,
            engine_ns: u64::MAX,
        }
    }
}

/// What one [`Gpu::run_engines`] call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineReport<const N: usize> {
    /// Scheduling rounds run.
    pub rounds: u32,
    /// Nothing is left to run (the worker may sleep until the next
    /// submission); otherwise re-arm the worker.
    pub idle: bool,
    /// Hangs detected (each reset one engine).
    pub hangs: u32,
    /// Held TAILs that were admitted after retirements.
    pub retried: u32,
    /// Engine time the rounds used, both engines together (ns of the cost
    /// model): what the call cost, bounded by its [`WorkBudget`].
    pub work_ns: u64,
    /// Per slot: what the glue must signal (see [`super::vgpu::Vgpu::signal`]).
    pub deliveries: [Delivery; N],
}

impl<const N: usize> EngineReport<N> {
    /// Slots that have something to signal.
    pub fn pending(&self) -> impl Iterator<Item = (SlotId, Delivery)> + '_ {
        self.deliveries
            .iter()
            .enumerate()
            .filter(|(_, d)| d.msi || d.intx.is_some())
            .map(|(i, d)| (SlotId(i as u16), *d))
    }
}

/// The mediated GPU for `N` vGPU slots (see the module documentation).
pub struct Gpu<const N: usize> {
    cfg: GpuConfig,
    sim: SimState,
    sched: Scheduler<N>,
    slots: [Slot; N],
    reserved: GmRange,
}

/// gvt-sim and the slots as the scheduler drives them.
struct Hw<'x, 'g, H: HostMemory, const N: usize> {
    sim: &'x mut GvtSim<'g>,
    slots: &'x mut [Slot; N],
    host: &'x mut H,
    /// Least engine time a stuck run burns.
    cmd_ns: u64,
}

impl<H: HostMemory, const N: usize> Backend for Hw<'_, '_, H, N> {
    fn read_reg(&mut self, offset: u32) -> u32 {
        self.sim.read_reg(offset)
    }
    fn write_reg(&mut self, offset: u32, value: u32) {
        self.sim.write_reg(offset, value)
    }
    fn ggtt_entries(&self) -> u32 {
        self.sim.ggtt_entries()
    }
    fn write_ggtt(&mut self, index: u32, pte: Pte) {
        self.sim.write_ggtt(index, pte)
    }
    fn read_ggtt(&self, index: u32) -> Pte {
        self.sim.read_ggtt(index)
    }
}

/// Move the engine's GT interrupt bits from the physical IIR to the
/// virtual IIR of the vGPU that owned the engine (paper §3.2: the mediator
/// handles the physical interrupt and injects a virtual one).
fn forward_irq(sim: &mut GvtSim<'_>, slot: &mut Slot, e: EngineId) {
    let bits = sim.read_reg(irq::GTIIR) & irq::engine_bits(e);
    if bits == 0 {
        return;
    }
    sim.write_reg(irq::GTIIR, bits);
    if bits & GtEvent::Error(e).bit() != 0 {
        let eir = sim.read_reg(e.mmio_base() + ring::EIR);
        if let Some(x) = slot.eir.get_mut(e.index()) {
            *x |= eir;
        }
        slot.stats.faults = slot.stats.faults.saturating_add(1);
    }
    let d = slot.irq.raise(bits);
    slot.note(d);
}

impl<H: HostMemory, const N: usize> Engines for Hw<'_, '_, H, N> {
    fn has_work(&self, e: EngineId, v: SlotId) -> bool {
        self.slots.get(v.index()).is_some_and(|s| {
            s.present
                && !(e == EngineId::Rcs && s.ppgtt_busy)
                && s.queue.get(e.index()).is_some_and(|q| q.len > 0)
        })
    }

    fn run(&mut self, e: EngineId, v: SlotId, b: RunBudget) -> RunReport {
        let Some(slot) = self.slots.get_mut(v.index()) else {
            return RunReport {
                consumed_ns: 0,
                cmds: 0,
                retired: 0,
                since_retire_ns: 0,
                stop: StopReason::Drained,
            };
        };
        let base = e.mmio_base();
        let root = if e == EngineId::Rcs {
            slot.root.map(ShadowRoot)
        } else {
            None
        };
        // The context's execution state (batch position, blit progress,
        // timestamp) is on the engine only while it runs here.
        if let Some(x) = slot.exec.get(e.index()) {
            self.sim.put_exec(e, *x);
        }
        let (mut executed, mut retired, mut charged) = (0u32, 0u32, 0u32);
        let (mut consumed, mut since) = (0u64, 0u64);
        let mut stuck = false;
        let stop = loop {
            let Some((next, cmds)) = slot.queue.get(e.index()).and_then(|q| q.front()) else {
                break StopReason::Drained;
            };
            let eng = self.sim.engine(e);
            let at_ring = eng.level() == Level::Ring && !eng.mid_command();
            if b.finish_batch && at_ring {
                break StopReason::Preempted;
            }
            if executed >= b.max_cmds || consumed >= b.ns {
                let preemptible = at_ring || b.preemption == Preemption::Command;
                break if preemptible {
                    StopReason::Preempted
                } else {
                    StopReason::MidBatch
                };
            }
            self.sim.write_reg(base + ring::TAIL, next);
            let budget = Budget {
                cmds: if b.finish_batch {
                    1
                } else {
                    b.max_cmds - executed
                },
                ns: b.ns - consumed,
            };
            let r = self.sim.run_for(e, self.host, root.as_ref(), budget);
            executed = executed.saturating_add(r.executed);
            consumed = consumed.saturating_add(r.cost_ns);
            since = since.saturating_add(r.cost_ns);
            match r.status {
                StepStatus::Budget => {}
                StepStatus::Idle => {
                    let eng = self.sim.engine(e);
                    if eng.head() == next && eng.level() == Level::Ring {
                        if let Some(q) = slot.queue.get_mut(e.index()) {
                            q.pop();
                        }
                        retired += 1;
                        charged = charged.saturating_add(cmds);
                        since = 0;
                    } else {
                        // Waiting for a command that is not there: no progress.
                        stuck = true;
                        break StopReason::Preempted;
                    }
                }
                StepStatus::Disabled | StepStatus::Faulted(_) => {
                    stuck = true;
                    break StopReason::Preempted;
                }
            }
        };
        if let Some(x) = slot.exec.get_mut(e.index()) {
            *x = self.sim.take_exec(e);
        }
        let head = self.sim.engine(e).head();
        if let Some(r) = slot.rings.get_mut(e.index()) {
            r.retire(head);
            self.sim.write_reg(base + ring::TAIL, r.tail());
        }
        forward_irq(self.sim, slot, e);
        slot.stats.retired = slot.stats.retired.saturating_add(u64::from(retired));
        if stuck {
            // A stuck engine occupies the hardware for the whole slice.
            let burn = b.ns.max(self.cmd_ns).saturating_sub(consumed);
            consumed = consumed.saturating_add(burn);
            since = since.saturating_add(burn);
        }
        RunReport {
            consumed_ns: consumed,
            cmds: charged,
            retired,
            since_retire_ns: since,
            stop,
        }
    }

    fn drop_work(&mut self, e: EngineId, v: SlotId) -> u32 {
        let Some(slot) = self.slots.get_mut(v.index()) else {
            return 0;
        };
        let n = slot.queue.get(e.index()).map_or(0, |q| q.len as u32);
        if let Some(q) = slot.queue.get_mut(e.index()) {
            q.clear();
        }
        if let Some(r) = slot.rings.get_mut(e.index()) {
            r.discard();
        }
        if let Some(h) = slot.held.get_mut(e.index()) {
            *h = None;
        }
        if let Some(x) = slot.exec.get_mut(e.index()) {
            x.drop_work();
        }
        n
    }
}

/// The guest's ring programming, handed to [`Gpu::submit`] when it changed
/// since the last submission (lazy ring shadowing configures at TAIL time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingSetup {
    pub start: u32,
    pub ctl: u32,
    pub head: u32,
}

impl<const N: usize> Gpu<N> {
    /// A powered-up GPU over the physical GGTT `phys` (one entry per GM page;
    /// the top 16 MiB is host-reserved).  Physical GT interrupts are all
    /// unmasked: the mediator polls and routes them after every run.
    ///
    /// `Gpu<8>` is about 19 KiB: too big for a kernel stack.  The kernel
    /// writes [`Gpu::unpowered`] (a `const fn`, so the value comes from
    /// read-only data, not the stack) into a heap allocation and then calls
    /// [`Gpu::power_on`]; host code may use this shortcut.
    pub fn new(cfg: GpuConfig, phys: &mut [Pte]) -> Result<Self, GpuError> {
        let mut g = Self::unpowered(cfg);
        g.power_on(phys)?;
        Ok(g)
    }

    /// The GPU before [`Gpu::power_on`]: no slot can be created yet.
    pub const fn unpowered(cfg: GpuConfig) -> Self {
        Gpu {
            cfg,
            sim: SimState::new(),
            sched: Scheduler::new(cfg.sched),
            slots: [EMPTY_SLOT; N],
            reserved: GmRange::new(0, 0),
        }
    }

    /// Turn the per-command policy checks of every later submission on or
    /// off ([`Limits::checks`]).  Off is a benchmark switch only (the
    /// kmod's root-set `bench_no_audit` load parameter): nothing a guest
    /// can reach calls it.
    pub fn set_audit_checks(&mut self, on: bool) {
        self.cfg.limits.checks = on;
    }

    /// Whether submissions are audited ([`Gpu::set_audit_checks`]).
    pub fn audit_checks(&self) -> bool {
        self.cfg.limits.checks
    }

    /// Check the configuration against `phys` (its length is the GM size),
    /// place the host-reserved range and program the physical interrupt
    /// registers.
    pub fn power_on(&mut self, phys: &mut [Pte]) -> Result<(), GpuError> {
        self.power_on_for(phys, N)
    }

    /// [`power_on`](Self::power_on) for at most `slots` (≤ `N`) live vGPUs:
    /// the host reserves [`host_reserved_size`]`(slots)` of GM.
    pub fn power_on_for(&mut self, phys: &mut [Pte], slots: usize) -> Result<(), GpuError> {
        let cfg = self.cfg;
        if slots == 0 || slots > N {
            return Err(GpuError::BadConfig);
        }
        if cfg.cost.cmd_ns == 0
            || cfg.sched.max_pending_submissions as usize > MAX_QUEUED
            || cfg.limits.max_commands > cfg.sched.max_pending_cmds
        {
            return Err(GpuError::BadConfig);
        }
        let gm_size = (phys.len() as u64) << PAGE_SHIFT;
        let reserved = host_reserved_range_of(gm_size, host_reserved_size(slots));
        let need = (slots * SHADOW_PAGES_PER_VGPU) as u64 * PAGE_SIZE;
        if gm_size < reserved.size || need > reserved.size {
            return Err(GpuError::ReservedTooSmall);
        }
        self.reserved = reserved;
        self.with_backend(phys, |b| {
            b.set_cost_model(cfg.cost);
            b.write_reg(irq::GTIMR, 0);
            b.write_reg(irq::GTIER, !0);
        });
        Ok(())
    }

    pub fn config(&self) -> &GpuConfig {
        &self.cfg
    }
    /// GM the mediator keeps for itself (never a vGPU's).
    pub fn host_reserved(&self) -> GmRange {
        self.reserved
    }
    pub fn scheduler(&self) -> &Scheduler<N> {
        &self.sched
    }
    /// Scheduler settings (weights, gang, hang limits): GPU lock held.
    pub fn scheduler_mut(&mut self) -> &mut Scheduler<N> {
        &mut self.sched
    }

    /// The physical GPU as a [`Backend`], for the duration of `f`.
    pub fn with_backend<R>(&mut self, phys: &mut [Pte], f: impl FnOnce(&mut GvtSim<'_>) -> R) -> R {
        let mut sim = GvtSim::resume(phys, self.sim);
        let r = f(&mut sim);
        self.sim = sim.park();
        r
    }

    fn slot(&self, v: SlotId) -> Option<&Slot> {
        self.slots.get(v.index()).filter(|s| s.present)
    }
    fn slot_mut(&mut self, v: SlotId) -> Option<&mut Slot> {
        self.slots.get_mut(v.index()).filter(|s| s.present)
    }

    /// Take a slot for a vGPU owning `gm` (aperture and high slices) with
    /// scheduling `weight`; map its shadow areas onto `shadow_pages`
    /// ([`SHADOW_PAGES_PER_VGPU`] host pages the caller allocated and frees
    /// after [`Gpu::destroy_slot`]).
    pub fn create_slot(
        &mut self,
        phys: &mut [Pte],
        gm: [GmRange; 2],
        weight: u32,
        shadow_pages: &[HostPage],
    ) -> Result<SlotId, GpuError> {
        if self.reserved.size == 0 {
            return Err(GpuError::ReservedTooSmall);
        }
        if shadow_pages.len() != SHADOW_PAGES_PER_VGPU {
            return Err(GpuError::ShadowPages);
        }
        if gm.iter().any(|r| r.overlaps(&self.reserved)) {
            return Err(GpuError::SliceInReserved);
        }
        let v = self.sched.create_vgpu(weight).map_err(GpuError::Sched)?;
        let i = v.index();
        let reserved = self.reserved;
        // Powered on for fewer slots than `N`: a slot whose shadow area
        // would lie past the reserved range is refused.
        let end = (i as u64 + 1) * (SHADOW_PAGES_PER_VGPU as u64) * PAGE_SIZE;
        if end > reserved.size {
            self.drop_new_slot(phys, v);
            return Err(GpuError::ReservedTooSmall);
        }
        let mapped = self.with_backend(phys, |b| {
            for e in EngineId::ALL {
                let lo = e.index() * SHADOW_PAGES_PER_ENGINE;
                let pages = shadow_pages
                    .get(lo..lo + SHADOW_PAGES_PER_ENGINE)
                    .unwrap_or(&[]);
                map_shadow(b, &layout(reserved, i, e), pages)?;
            }
            Ok(())
        });
        if let Err(m) = mapped {
            self.unmap_shadows(phys, i);
            self.drop_new_slot(phys, v);
            return Err(GpuError::Shadow(m));
        }
        match self.slots.get_mut(i) {
            Some(s) => *s = Slot::new(i, gm, reserved),
            None => return Err(GpuError::Sched(SchedError::BadVgpu)),
        }
        Ok(v)
    }

    /// Give back the scheduler slot `v` that [`Gpu::create_slot`] took and
    /// could not finish setting up.
    fn drop_new_slot(&mut self, phys: &mut [Pte], v: SlotId) {
        let Gpu {
            sim,
            sched,
            slots,
            cfg,
            ..
        } = self;
        let _ = with_hw_nohost(sim, phys, slots, cfg.cost.cmd_ns, |hw| {
            sched.destroy_vgpu(hw, &NoClock, v)
        });
    }

    fn unmap_shadows(&mut self, phys: &mut [Pte], i: usize) {
        let reserved = self.reserved;
        self.with_backend(phys, |b| {
            for e in EngineId::ALL {
                let l = layout(reserved, i, e);
                let first = l.base >> PAGE_SHIFT;
                for p in 0..u64::from(l.pages()) {
                    if let Ok(idx) = u32::try_from(first + p) {
                        b.write_ggtt(idx, Pte::default());
                    }
                }
            }
        });
    }

    /// Free slot `v`: its contexts switched out, its work dropped, its shadow
    /// areas unmapped from the physical GGTT (the caller may free the pages).
    pub fn destroy_slot<H: HostMemory, C: Clock>(
        &mut self,
        phys: &mut [Pte],
        host: &mut H,
        clock: &C,
        v: SlotId,
    ) -> Result<(), GpuError> {
        self.slot(v).ok_or(GpuError::Sched(SchedError::BadVgpu))?;
        let Gpu {
            sim,
            sched,
            slots,
            cfg,
            ..
        } = self;
        let r = with_hw(sim, phys, slots, host, cfg.cost.cmd_ns, |hw| {
            sched.destroy_vgpu(hw, clock, v)
        });
        self.unmap_shadows(phys, v.index());
        if let Some(s) = self.slots.get_mut(v.index()) {
            *s = EMPTY_SLOT;
        }
        r.map_err(GpuError::Sched)
    }

    /// Device reset of slot `v` (VFIO reset/open): all its work dropped, its
    /// rings unprogrammed, its virtual interrupts and errors cleared, its
    /// hang count and Failed state cleared.
    pub fn reset_slot<H: HostMemory, C: Clock>(
        &mut self,
        phys: &mut [Pte],
        host: &mut H,
        clock: &C,
        v: SlotId,
    ) -> Result<(), GpuError> {
        self.slot(v).ok_or(GpuError::Sched(SchedError::BadVgpu))?;
        let Gpu {
            sim,
            sched,
            slots,
            cfg,
            reserved,
            ..
        } = self;
        let r = with_hw(sim, phys, slots, host, cfg.cost.cmd_ns, |hw| {
            sched.reset_vgpu(hw, clock, v)
        });
        if let Some(s) = slots.get_mut(v.index()) {
            let (stats, view) = (s.stats, s.view);
            *s = Slot::new(v.index(), s.gm, *reserved);
            s.stats = stats;
            s.set_view(view);
        }
        r.map_err(GpuError::Sched)
    }

    /// The guest wrote GDRST for engine `e` of slot `v`: that engine's work
    /// is dropped and its ring registers are back at their reset values (the
    /// guest programs the ring again).  Hang count and Failed state stay.
    pub fn guest_engine_reset<H: HostMemory, C: Clock>(
        &mut self,
        phys: &mut [Pte],
        host: &mut H,
        clock: &C,
        v: SlotId,
        e: EngineId,
    ) {
        if self.slot(v).is_none() {
            return;
        }
        let Gpu {
            sim,
            sched,
            slots,
            cfg,
            reserved,
            ..
        } = self;
        with_hw(sim, phys, slots, host, cfg.cost.cmd_ns, |hw| {
            let _ = sched.reset_engine_work(hw, clock, v, e);
            for off in [ring::CTL, ring::START, ring::HEAD, ring::TAIL] {
                let _ = sched.write_ctx_reg(hw, v, e, off, 0);
            }
        });
        if let Some(s) = slots.get_mut(v.index()) {
            if let Some(r) = s.rings.get_mut(e.index()) {
                *r = RingShadow::new(e, layout(*reserved, v.index(), e));
                r.set_view(s.view);
            }
            if let Some(q) = s.queue.get_mut(e.index()) {
                q.clear();
            }
            if let Some(h) = s.held.get_mut(e.index()) {
                *h = None;
            }
            if let Some(x) = s.eir.get_mut(e.index()) {
                *x = 0;
            }
        }
    }

    /// A guest TAIL write on `e` of slot `v` (trap path, GPU lock held).
    /// `setup`: the ring as the guest programmed it, when that changed since
    /// the last submission; `root`: the shadow PPGTT root to use for render
    /// submissions (synchronised by the caller just before).  Returns the
    /// outcome and what to signal (an error interrupt on rejection).
    #[allow(clippy::too_many_arguments)]
    pub fn submit<H: HostMemory>(
        &mut self,
        phys: &mut [Pte],
        host: &mut H,
        v: SlotId,
        e: EngineId,
        setup: Option<RingSetup>,
        tail: u32,
        root: Option<HostPage>,
    ) -> (SubmitOutcome, Delivery) {
        let limits = self.cfg.limits;
        let Gpu {
            sim, sched, slots, ..
        } = self;
        let Some(slot) = slots.get_mut(v.index()).filter(|s| s.present) else {
            return (
                SubmitOutcome::Rejected(SubmitReject::Audit(Reject::BadRing)),
                Delivery::default(),
            );
        };
        if e == EngineId::Rcs {
            slot.root = root;
        }
        slot.out = Delivery::default();
        let mut g = GvtSim::resume(phys, *sim);
        let mut outcome = None;
        if let Some(s) = setup {
            let busy = slot
                .rings
                .get(e.index())
                .is_some_and(|r| r.ring().is_some() && !r.idle());
            if busy {
                outcome = Some(SubmitOutcome::Rejected(SubmitReject::RingBusy));
            } else if let Some(r) = slot.rings.get_mut(e.index()) {
                match r.configure(s.start, s.ctl, s.head) {
                    Ok(()) => {
                        if let Some(w) = r.ring() {
                            let regs = [
                                (ring::CTL, 0),
                                (ring::START, r.layout().ring_gma() as u32),
                                (ring::HEAD, r.head()),
                                (ring::TAIL, r.tail()),
                                (ring::CTL, super::engine::ring_ctl(w.size >> PAGE_SHIFT)),
                            ];
                            for (off, val) in regs {
                                let _ = sched.write_ctx_reg(&mut g, v, e, off, val);
                            }
                        }
                        if let Some(q) = slot.queue.get_mut(e.index()) {
                            q.clear();
                        }
                        if let Some(h) = slot.held.get_mut(e.index()) {
                            *h = None;
                        }
                    }
                    Err(x) => outcome = Some(SubmitOutcome::Rejected(SubmitReject::Audit(x))),
                }
            }
        }
        let outcome = match outcome {
            Some(o) => o,
            None if slot.held.get(e.index()).copied().flatten().is_some() => {
                // Older work is held: keep order, hold this tail too.
                if let Some(h) = slot.held.get_mut(e.index()) {
                    *h = Some(tail);
                }
                SubmitOutcome::Held
            }
            None => try_submit(&mut g, host, sched, slot, v, e, tail, &limits),
        };
        match outcome {
            SubmitOutcome::Held => {
                if let Some(h) = slot.held.get_mut(e.index()) {
                    *h = Some(tail);
                }
                slot.stats.held = slot.stats.held.saturating_add(1);
            }
            SubmitOutcome::Rejected(r) => {
                match r {
                    SubmitReject::Audit(x) => slot.stats.rejected.record(x),
                    SubmitReject::Failed => {
                        slot.stats.rejected_failed = slot.stats.rejected_failed.saturating_add(1)
                    }
                    SubmitReject::TooLarge => {
                        slot.stats.rejected_too_large =
                            slot.stats.rejected_too_large.saturating_add(1)
                    }
                    SubmitReject::Ppgtt(_) => {
                        slot.stats.rejected_ppgtt = slot.stats.rejected_ppgtt.saturating_add(1)
                    }
                    SubmitReject::RingBusy => {
                        slot.stats.rejected_ring_busy =
                            slot.stats.rejected_ring_busy.saturating_add(1)
                    }
                }
                slot.error(e, EIR_INSTRUCTION);
            }
            _ => {}
        }
        *sim = g.park();
        let d = core::mem::take(&mut slot.out);
        (outcome, d)
    }

    /// Record that a render submission of `v` could not get a PPGTT (the
    /// caller's sync failed): counted and signalled like a rejection.
    pub fn reject_ppgtt(&mut self, v: SlotId, err: PpgttError) -> (SubmitOutcome, Delivery) {
        let Some(slot) = self.slot_mut(v) else {
            return (
                SubmitOutcome::Rejected(SubmitReject::Ppgtt(err)),
                Delivery::default(),
            );
        };
        slot.out = Delivery::default();
        slot.stats.rejected_ppgtt = slot.stats.rejected_ppgtt.saturating_add(1);
        slot.error(EngineId::Rcs, EIR_INSTRUCTION);
        (
            SubmitOutcome::Rejected(SubmitReject::Ppgtt(err)),
            core::mem::take(&mut slot.out),
        )
    }

    /// The engine worker: scheduling rounds over gvt-sim (each runs every
    /// engine for one slice) within `budget`, retirement, interrupt
    /// forwarding, hang handling, and retry of held TAILs.  GPU lock only.
    pub fn run_engines<H: HostMemory, C: Clock>(
        &mut self,
        phys: &mut [Pte],
        host: &mut H,
        clock: &C,
        budget: WorkBudget,
    ) -> EngineReport<N> {
        let mut rep = EngineReport {
            rounds: 0,
            idle: false,
            hangs: 0,
            retried: 0,
            work_ns: 0,
            deliveries: [Delivery::default(); N],
        };
        let limits = self.cfg.limits;
        let ns = self.cfg.cost.cmd_ns;
        let Gpu {
            sim, sched, slots, ..
        } = self;
        let mut g = GvtSim::resume(phys, *sim);
        for s in slots.iter_mut() {
            s.out = Delivery::default();
        }
        for _ in 0..budget.rounds {
            let r = {
                let mut hw = Hw {
                    sim: &mut g,
                    slots: &mut *slots,
                    host: &mut *host,
                    cmd_ns: ns,
                };
                sched.round(&mut hw, clock)
            };
            rep.rounds += 1;
            let used = r
                .ran
                .iter()
                .flatten()
                .fold(0u64, |a, x| a.saturating_add(x.consumed_ns));
            rep.work_ns = rep.work_ns.saturating_add(used);
            for ev in r.hangs.iter().flatten() {
                rep.hangs += 1;
                let v = SlotId(ev.slot as u16);
                let ev = sched.take_hang_event(v).unwrap_or(*ev);
                if let Some(s) = slots.get_mut(ev.slot).filter(|s| s.present) {
                    s.stats.hangs = s.stats.hangs.saturating_add(1);
                    s.error(ev.engine, ev.eir());
                }
            }
            // Retry held TAILs now that work retired.
            for (i, s) in slots.iter_mut().enumerate() {
                if !s.present {
                    continue;
                }
                for e in EngineId::ALL {
                    if e == EngineId::Rcs && s.ppgtt_busy {
                        continue;
                    }
                    let Some(t) = s.held.get(e.index()).copied().flatten() else {
                        continue;
                    };
                    let v = SlotId(i as u16);
                    match try_submit(&mut g, host, sched, s, v, e, t, &limits) {
                        SubmitOutcome::Held => {}
                        o => {
                            if let Some(h) = s.held.get_mut(e.index()) {
                                *h = None;
                            }
                            if let SubmitOutcome::Accepted { .. } = o {
                                rep.retried += 1;
                                s.stats.retried = s.stats.retried.saturating_add(1);
                            } else if let SubmitOutcome::Rejected(x) = o {
                                if let SubmitReject::Audit(a) = x {
                                    s.stats.rejected.record(a);
                                }
                                s.error(e, EIR_INSTRUCTION);
                            }
                        }
                    }
                }
            }
            let held = slots
                .iter()
                .any(|s| s.present && s.held.iter().any(|h| h.is_some()));
            if r.idle && !held {
                rep.idle = true;
                break;
            }
            if rep.work_ns >= budget.engine_ns {
                break;
            }
        }
        for (d, s) in rep.deliveries.iter_mut().zip(slots.iter_mut()) {
            *d = core::mem::take(&mut s.out);
        }
        *sim = g.park();
        rep
    }

    /// The shadow PPGTT root `v`'s render work uses from now on (set after
    /// every change of the shadow: sync, `dma_unmap`, reset).
    pub fn set_root(&mut self, v: SlotId, root: Option<HostPage>) {
        if let Some(s) = self.slot_mut(v) {
            s.root = root;
        }
    }

    /// `v`'s shadow PPGTT is about to change outside the GPU lock (pins,
    /// shadow pages allocated and freed): from now until
    /// [`Gpu::ppgtt_update_end`] the engines neither run nor audit `v`'s
    /// render work, so nothing reads a shadow page while it may be freed.
    pub fn ppgtt_update_begin(&mut self, v: SlotId) {
        if let Some(s) = self.slot_mut(v) {
            s.ppgtt_busy = true;
        }
    }

    /// The PPGTT update of `v` is over; `root` is the shadow root its render
    /// work uses from now on.
    pub fn ppgtt_update_end(&mut self, v: SlotId, root: Option<HostPage>) {
        if let Some(s) = self.slot_mut(v) {
            s.ppgtt_busy = false;
            s.root = root;
        }
    }

    /// Charge the modelled cost of re-shadowing `v`'s PPGTT for a render
    /// submission ([`super::ppgtt::SyncWork::cost_ns`]) to `v`'s render
    /// engine time (see [`Scheduler::charge_mediation`]).
    pub fn charge_ppgtt(&mut self, v: SlotId, ns: u64) {
        self.sched.charge_mediation(v, EngineId::Rcs, ns);
    }

    /// Virtual GT interrupt registers of `v`.
    pub fn irq(&self, v: SlotId) -> Option<GtIrq> {
        self.slot(v).map(|s| s.irq)
    }

    /// A guest write of IIR (`value`: bits to clear), IMR or IER.
    pub fn irq_write(&mut self, v: SlotId, reg: IrqReg, value: u32) -> Delivery {
        let Some(s) = self.slot_mut(v) else {
            return Delivery::default();
        };
        let off = match reg {
            IrqReg::Iir => irq::GTIIR,
            IrqReg::Imr => irq::GTIMR,
            IrqReg::Ier => irq::GTIER,
        };
        s.irq.write(off, value).unwrap_or_default()
    }

    /// Put back `v`'s virtual GT interrupt registers and `RING_EIR`s as a
    /// migration stream carried them (nothing is delivered).
    pub fn restore_irq(&mut self, v: SlotId, irq: GtIrq, eir: [u32; EngineId::COUNT]) {
        if let Some(s) = self.slot_mut(v) {
            s.irq = irq;
            s.eir = eir;
        }
    }

    /// The guest-visible HEAD of `v`'s ring on `e` (None: not configured).
    pub fn ring_head(&self, v: SlotId, e: EngineId) -> Option<u32> {
        let r = self.slot(v)?.rings.get(e.index())?;
        r.ring().map(|_| r.head())
    }

    /// Whether `v` has admitted or held work on `e`.
    pub fn busy(&self, v: SlotId, e: EngineId) -> bool {
        self.slot(v).is_some_and(|s| {
            s.queue.get(e.index()).is_some_and(|q| q.len > 0)
                || s.held.get(e.index()).copied().flatten().is_some()
        })
    }

    /// Virtual `RING_EIR` of `v` on `e`.
    pub fn eir(&self, v: SlotId, e: EngineId) -> u32 {
        self.slot(v)
            .and_then(|s| s.eir.get(e.index()).copied())
            .unwrap_or(0)
    }

    /// Guest write-one-to-clear of `RING_EIR`.
    pub fn clear_eir(&mut self, v: SlotId, e: EngineId, bits: u32) {
        if let Some(x) = self.slot_mut(v).and_then(|s| s.eir.get_mut(e.index())) {
            *x &= !bits;
        }
    }

    /// Submission counters of `v`.
    pub fn slot_stats(&self, v: SlotId) -> Option<SlotStats> {
        self.slot(v).map(|s| s.stats)
    }

    /// The guest of slot `v` sees `view` of its graphics memory from now on
    /// (a migration target adopting the source's view; `None` or an
    /// identity view: its placement).  Ring START and every GGTT address
    /// of its commands are translated from the next ring programming and
    /// submission on; kept over resets of the slot.  Call while its rings
    /// are unprogrammed (after [`Gpu::reset_slot`]).
    pub fn set_gm_view(&mut self, v: SlotId, view: Option<GmView>) {
        if let Some(s) = self.slot_mut(v) {
            s.set_view(view);
        }
    }

    /// Count a refused fence write of `v`.
    pub fn note_fence_refused(&mut self, v: SlotId) {
        if let Some(s) = self.slot_mut(v) {
            s.stats.fences_refused = s.stats.fences_refused.saturating_add(1);
        }
    }

    /// Write physical fence register `index` (64 bits).
    pub fn write_fence(&mut self, phys: &mut [Pte], index: u32, value: u64) {
        let off = super::regs::fence_offset(index);
        self.with_backend(phys, |b| {
            b.write_reg(off, value as u32);
            b.write_reg(off.wrapping_add(4), (value >> 32) as u32);
        });
    }
}

const EMPTY_SLOT: Slot = Slot {
    present: false,
    gm: [GmRange::new(0, 0); 2],
    rings: [
        RingShadow::new(
            EngineId::Rcs,
            ShadowLayout {
                base: 0,
                ring_pages: 0,
                l1_pages: 0,
                l2_pages: 0,
            },
        ),
        RingShadow::new(
            EngineId::Bcs,
            ShadowLayout {
                base: 0,
                ring_pages: 0,
                l1_pages: 0,
                l2_pages: 0,
            },
        ),
    ],
    queue: [SubQueue::EMPTY; EngineId::COUNT],
    held: [None; EngineId::COUNT],
    irq: GtIrq::new(),
    eir: [0; EngineId::COUNT],
    root: None,
    ppgtt_busy: false,
    exec: [ExecState::IDLE; EngineId::COUNT],
    out: Delivery {
        msi: false,
        intx: None,
    },
    stats: SLOT_STATS_ZERO,
    view: None,
};

/// Audit and shadow `[tail, new tail)`, then admit it; roll the shadow back
/// when flow control refuses.
#[allow(clippy::too_many_arguments)]
fn try_submit<H: HostMemory, const N: usize>(
    g: &mut GvtSim<'_>,
    host: &mut H,
    sched: &mut Scheduler<N>,
    slot: &mut Slot,
    v: SlotId,
    e: EngineId,
    tail: u32,
    limits: &Limits,
) -> SubmitOutcome {
    if sched.is_failed(v) {
        if let Some(st) = sched.stats_mut(v) {
            st.count_reject(RejectClass::Failed);
        }
        return SubmitOutcome::Rejected(SubmitReject::Failed);
    }
    let root = if e == EngineId::Rcs {
        slot.root.map(ShadowRoot)
    } else {
        None
    };
    let gm = slot.gm;
    let Some(r) = slot.rings.get_mut(e.index()) else {
        return SubmitOutcome::Rejected(SubmitReject::Audit(Reject::BadRing));
    };
    let saved = *r;
    let sum = match r.submit(&*g, host, root.as_ref(), &gm, tail, limits) {
        Ok(s) => s,
        Err(SubmitError::Busy) => return SubmitOutcome::Held,
        Err(SubmitError::Rejected(x)) => {
            if let Some(st) = sched.stats_mut(v) {
                st.count_reject(reject_class(x));
            }
            return SubmitOutcome::Rejected(SubmitReject::Audit(x));
        }
    };
    if sum.commands == 0 && r.tail() == saved.tail() {
        return SubmitOutcome::Empty;
    }
    match sched.admit(v, e, sum.commands) {
        Ok(()) => {}
        Err(SchedError::Backpressure) => {
            *r = saved;
            return SubmitOutcome::Held;
        }
        Err(SchedError::Failed) => {
            *r = saved;
            return SubmitOutcome::Rejected(SubmitReject::Failed);
        }
        Err(_) => {
            *r = saved;
            return SubmitOutcome::Rejected(SubmitReject::TooLarge);
        }
    }
    let new_tail = r.tail();
    let pushed = slot
        .queue
        .get_mut(e.index())
        .is_some_and(|q| q.push(new_tail, sum.commands));
    if !pushed {
        // Cannot happen while max_pending_submissions <= MAX_QUEUED.
        *r = saved;
        return SubmitOutcome::Held;
    }
    let _ = sched.write_ctx_reg(g, v, e, ring::TAIL, new_tail);
    if let Some(st) = sched.stats_mut(v) {
        st.count_audited(u64::from(sum.commands));
    }
    slot.stats.accepted = slot.stats.accepted.saturating_add(1);
    slot.stats.commands = slot.stats.commands.saturating_add(u64::from(sum.commands));
    SubmitOutcome::Accepted {
        commands: sum.commands,
    }
}

fn with_hw<H: HostMemory, R, const N: usize>(
    sim: &mut SimState,
    phys: &mut [Pte],
    slots: &mut [Slot; N],
    host: &mut H,
    cmd_ns: u64,
    f: impl FnOnce(&mut Hw<'_, '_, H, N>) -> R,
) -> R {
    let mut g = GvtSim::resume(phys, *sim);
    let r = {
        let mut hw = Hw {
            sim: &mut g,
            slots,
            host,
            cmd_ns,
        };
        f(&mut hw)
    };
    *sim = g.park();
    r
}

/// A host memory that refuses everything (for paths that never execute).
struct NoHost;
impl HostMemory for NoHost {
    fn read(&self, _: HostPage, _: usize, _: &mut [u8]) -> Result<(), super::mem::MemError> {
        Err(super::mem::MemError::OutOfRange)
    }
    fn write(&mut self, _: HostPage, _: usize, _: &[u8]) -> Result<(), super::mem::MemError> {
        Err(super::mem::MemError::OutOfRange)
    }
}

/// A clock that never advances (for undoing a slot that never ran).
struct NoClock;
impl Clock for NoClock {
    fn now_ns(&self) -> u64 {
        0
    }
}

fn with_hw_nohost<R, const N: usize>(
    sim: &mut SimState,
    phys: &mut [Pte],
    slots: &mut [Slot; N],
    cmd_ns: u64,
    f: impl FnOnce(&mut Hw<'_, '_, NoHost, N>) -> R,
) -> R {
    with_hw(sim, phys, slots, &mut NoHost, cmd_ns, f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::boxed::Box;
    use std::vec;
    use std::vec::Vec;

    fn phys(mib: u64) -> Vec<Pte> {
        vec![Pte::default(); (mib << 20 >> PAGE_SHIFT) as usize]
    }

    #[test]
    fn configuration_is_checked() {
        let mut small = phys(8);
        assert_eq!(
            Gpu::<2>::new(GpuConfig::DEFAULT, &mut small).err(),
            Some(GpuError::ReservedTooSmall)
        );
        let mut p = phys(32);
        // 16 MiB reserved hold 32 slots of 128 pages; 33 need 17 MiB, 64
        // need 32 MiB.
        assert_eq!(host_reserved_size(1), 16 << 20);
        assert_eq!(host_reserved_size(32), 16 << 20);
        assert_eq!(host_reserved_size(33), 17 << 20);
        assert_eq!(host_reserved_size(64), 32 << 20);
        let g = Gpu::<32>::new(GpuConfig::DEFAULT, &mut p).unwrap();
        assert_eq!(g.host_reserved(), GmRange::new(16 << 20, 16 << 20));
        let g = Gpu::<33>::new(GpuConfig::DEFAULT, &mut p).unwrap();
        assert_eq!(g.host_reserved(), GmRange::new(15 << 20, 17 << 20));
        let mut p16 = phys(16);
        assert_eq!(
            Gpu::<64>::new(GpuConfig::DEFAULT, &mut p16).err(),
            Some(GpuError::ReservedTooSmall)
        );
        // Powered on for 32 of 64 slots: 16 MiB, and the 33rd slot is refused.
        let mut big = phys(64);
        let mut g = Box::new(Gpu::<64>::unpowered(GpuConfig::DEFAULT));
        assert_eq!(g.power_on_for(&mut big, 0).err(), Some(GpuError::BadConfig));
        assert_eq!(
            g.power_on_for(&mut big, 65).err(),
            Some(GpuError::BadConfig)
        );
        g.power_on_for(&mut big, 32).unwrap();
        assert_eq!(g.host_reserved(), GmRange::new(48 << 20, 16 << 20));
        let pages: Vec<HostPage> = (0..SHADOW_PAGES_PER_VGPU as u64).map(HostPage).collect();
        for i in 0..32u64 {
            let gm = [
                GmRange::new(i << 20, 1 << 20),
                GmRange::new((32 + i / 2) << 20, 512 << 10),
            ];
            g.create_slot(&mut big, gm, 1, &pages).unwrap();
        }
        let gm = [
            GmRange::new(40 << 20, 1 << 20),
            GmRange::new(47 << 20, 1 << 20),
        ];
        assert_eq!(
            g.create_slot(&mut big, gm, 1, &pages).err(),
            Some(GpuError::ReservedTooSmall)
        );
        let mut c = GpuConfig::DEFAULT;
        c.sched.max_pending_submissions = MAX_QUEUED as u32 + 1;
        assert_eq!(Gpu::<2>::new(c, &mut p).err(), Some(GpuError::BadConfig));
        // An audit limit the scheduler could never admit is a bad config.
        let mut c = GpuConfig::DEFAULT;
        c.limits.max_commands = c.sched.max_pending_cmds + 1;
        assert_eq!(Gpu::<2>::new(c, &mut p).err(), Some(GpuError::BadConfig));
        let g = Gpu::<2>::new(GpuConfig::DEFAULT, &mut p).unwrap();
        assert_eq!(g.config().sched.preemption, Preemption::Command);
        assert_eq!(g.host_reserved(), GmRange::new(16 << 20, 16 << 20));
        // The in-place path: a const value, powered on later.
        const UNPOWERED: Gpu<2> = Gpu::unpowered(GpuConfig::DEFAULT);
        let mut u = UNPOWERED;
        let pages: Vec<HostPage> = (0..SHADOW_PAGES_PER_VGPU as u64).map(HostPage).collect();
        let gm = [GmRange::new(0, 1 << 20), GmRange::new(8 << 20, 1 << 20)];
        assert_eq!(
            u.create_slot(&mut p, gm, 1, &pages).err(),
            Some(GpuError::ReservedTooSmall)
        );
        u.power_on(&mut p).unwrap();
        assert!(u.create_slot(&mut p, gm, 1, &pages).is_ok());
    }

    #[test]
    fn slots_map_and_unmap_their_shadow_areas() {
        struct C;
        impl Clock for C {
            fn now_ns(&self) -> u64 {
                0
            }
        }
        let mut p = phys(32);
        let mut g = Gpu::<2>::new(GpuConfig::DEFAULT, &mut p).unwrap();
        let gm = [GmRange::new(0, 1 << 20), GmRange::new(8 << 20, 1 << 20)];
        let pages: Vec<HostPage> = (0..SHADOW_PAGES_PER_VGPU as u64)
            .map(|i| HostPage(1000 + i))
            .collect();
        assert_eq!(
            g.create_slot(&mut p, gm, 1, &pages[1..]).err(),
            Some(GpuError::ShadowPages)
        );
        assert_eq!(
            g.create_slot(&mut p, [gm[0], GmRange::new(31 << 20, 4096)], 1, &pages)
                .err(),
            Some(GpuError::SliceInReserved)
        );
        let a = g.create_slot(&mut p, gm, 1, &pages).unwrap();
        let b = g.create_slot(&mut p, gm, 1, &pages).unwrap();
        assert_eq!(
            g.create_slot(&mut p, gm, 1, &pages).err(),
            Some(GpuError::Sched(SchedError::NoSlot))
        );
        let first = (16 << 20) >> PAGE_SHIFT;
        assert_eq!(
            p[first],
            Pte::new(HostPage(1000)),
            "slot 0, RCS ring page 0"
        );
        assert_eq!(
            p[first + SHADOW_PAGES_PER_VGPU],
            Pte::new(HostPage(1000)),
            "slot 1"
        );
        let mut host = super::super::fakes::FakeHostMemory::new(1);
        g.destroy_slot(&mut p, &mut host, &C, a).unwrap();
        assert_eq!(p[first], Pte::default());
        assert_eq!(
            p[first + SHADOW_PAGES_PER_VGPU],
            Pte::new(HostPage(1000)),
            "the other slot keeps its area"
        );
        assert!(g.destroy_slot(&mut p, &mut host, &C, a).is_err());
        g.destroy_slot(&mut p, &mut host, &C, b).unwrap();
        assert!(p.iter().all(|e| *e == Pte::default()));
    }
}
