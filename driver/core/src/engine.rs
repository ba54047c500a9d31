//! gvt-sim's command streamers: an engine that executes the command set of
//! [`super::cmd`] for real on host memory, through the physical GGTT or a
//! PPGTT [`AddressSpace`] (paper §2: the render engine "fetches GPU commands
//! from the command buffer"; §3.2: the GPU executes guest commands directly).
//!
//! Execution is separate from submission: writing TAIL only records it; the
//! commands run when the owner calls [`Engine::run`] with a [`Budget`] of
//! commands and modelled engine time (in the kernel, on a workqueue, never in
//! the trap path), so a scheduler can stop an engine at any command boundary
//! and inside a blit.  Faults (unmapped address, bad command) stop the engine
//! with an error status and the engine's error interrupt; they never panic.
//!
//! # Bounded steps and the cost model
//!
//! The engine works in **steps**: one step is either one whole non-blit
//! command, or at most [`STEP_ROWS`] rows and [`STEP_BYTES`] bytes of a blit
//! (`XY_COLOR_BLT`, `XY_SRC_COPY_BLT`).  A blit that does not finish in one
//! step keeps its progress (row, byte in the row) in the engine's execution
//! state ([`ExecState`], part of [`EngineContext`]): the engine can be
//! stopped, its context saved, other contexts run, and the blit resumes
//! exactly where it stopped (HEAD stays on the blit until it retires).  The
//! budget is checked between steps, so a [`Engine::run`] call overruns its
//! time budget by at most one step.
//!
//! Every step is charged what it did, as it does it ([`CostModel`]): the
//! engine counts each access it makes to host memory (command fetches, blit
//! rows, post-sync and store writes) and prices it; [`StepResult::cost_ns`]
//! is the sum.  The scheduler charges that engine time to the vGPU and its
//! hang watchdog sees it, so a blit is charged by the bytes it touches, never
//! per command only.
//!
//! | what | cost (ns, [`CostModel::DEFAULT`]) |
//! |---|---|
//! | a command (fetch, decode, retire; once per command) | `cmd_ns` = 1000 |
//! | one host-memory access (one call, at most one page) | `access_ns` = 40 |
//! | each KiB read or written by that access | `kib_ns` = 256 (≈ 4 GB/s) |
//!
//! So a 4-byte store is ≈ 1.1 µs, a 1 MiB fill ≈ 0.3 ms, a 1 MiB copy
//! ≈ 0.6 ms, a one-pixel-wide fill ≈ 40 ns a row, and a 17 GB fill would be
//! ≈ 5 s of engine time — long past the watchdog.  The model is on the
//! safe side of gvt-sim's own speed: `cargo bench -p gvt-core --features
//! fakes --bench cmd` prints, for a 1 MiB fill, a 512 KiB copy and a
//! one-pixel-wide fill, the time charged over the time taken; on the
//! development host that was 5.4, 7.2 and 2.5 when idle and about 1–2.5
//! under load, and the review measured the old engine at 0.26 ns a byte on
//! the host and about 0.6 ns a byte in the TCG rig.  Charging more than the
//! host takes keeps the work one worker call does under the GPU lock below
//! its budget in real time too.
//!
//! Ring registers (offsets from the engine's MMIO base, Intel legacy ring
//! layout): TAIL +0x30 (bits 20:3), HEAD +0x34 (bits 20:2), START +0x38 (GGTT
//! address, bits 31:12), CTL +0x3C (bit 0 enable, bits 20:12 = pages − 1 as
//! i915's `RING_CTL_SIZE`), IPEHR +0x68 (header of the faulting command), ACTHD
//! +0x74 (address being executed), HWS_PGA +0x80, EIR +0xB0 (bit 0 instruction
//! error, bit 4 page-table error), BBADDR +0x140, TIMESTAMP +0x358 (low dword
//! of the context's timestamp).
//!
//! # Timestamps are per context
//!
//! The timestamp that `RING_TIMESTAMP` reads and that `PIPE_CONTROL` /
//! `MI_FLUSH_DW` timestamp post-sync operations write is the *context's own*
//! engine time in ns of the cost model ([`ExecState::time_ns`]): it advances
//! only while that context executes and is saved and restored with it, so a
//! vGPU learns nothing about what other vGPUs ran between its own commands.
//!
//! HEAD advances as ring commands retire.  While a batch runs, HEAD stays on
//! the MI_BATCH_BUFFER_START that called it and moves past it when the batch
//! returns: HEAD is the retirement point, which is what lets the mediator know
//! when a shadow batch may be reused.  Batch levels follow [`super::cmd`]'s
//! module documentation.  Blit copies run row by row, top to bottom, left to
//! right (overlapping copies behave as that forward copy).
//! MI_LOAD_REGISTER_IMM cannot reprogram ring registers (the command streamer
//! latches them); other registers go to the device's register file.

use super::backend::{Backend, EngineId, Pte};
use super::cmd::{self, Command, Level, PostSync, Reject, Space, Surface, MAX_CMD_DWORDS};
use super::irq::GtEvent;
use super::mem::{HostPage, PAGE_SHIFT, PAGE_SIZE};
use super::services::HostMemory;

pub use super::regs::ring::{
    ACTHD as RING_ACTHD, BBADDR as RING_BBADDR, CTL as RING_CTL, EIR as RING_EIR,
    HEAD as RING_HEAD, HWS_PGA as RING_HWS_PGA, IPEHR as RING_IPEHR, MI_MODE as RING_MI_MODE,
    START as RING_START, TAIL as RING_TAIL, TIMESTAMP as RING_TIMESTAMP,
};
pub use super::regs::RING_BLOCK;
/// `MI_MODE` bit 8 (masked register): stop fetching at the next command
/// boundary.
pub const MI_MODE_STOP_RING: u32 = 1 << 8;
/// `MI_MODE` bit 9 (read-only): the ring is stopped and idle — every fetched
/// command retired, at ring level (not inside a batch buffer).
pub const MI_MODE_IDLE: u32 = 1 << 9;

pub const TAIL_ADDR: u32 = 0x001F_FFF8;
pub const HEAD_ADDR: u32 = 0x001F_FFFC;
pub const RING_NR_PAGES: u32 = 0x001F_F000;
pub const RING_VALID: u32 = 1;
pub const EIR_INSTRUCTION: u32 = 1 << 0;
pub const EIR_PAGE_TABLE: u32 = 1 << 4;

/// CTL value for a ring of `pages` pages, enabled.
pub const fn ring_ctl(pages: u32) -> u32 {
    ((pages.saturating_sub(1) << 12) & RING_NR_PAGES) | RING_VALID
}

/// Ring size in bytes encoded in a CTL value.
pub const fn ring_size(ctl: u32) -> u32 {
    (((ctl & RING_NR_PAGES) >> 12) + 1) << 12
}

/// A graphics address space as an engine sees it: the physical GGTT, or a
/// (shadow) PPGTT.  The PPGTT mediator plugs in by implementing this trait
/// over its page walk.
pub trait AddressSpace {
    /// The host page and in-page offset behind `addr`, if mapped.
    fn translate<H: HostMemory>(&self, host: &H, addr: u64) -> Option<(HostPage, usize)>;
}

/// The physical GGTT as a slice of entries.
#[derive(Clone, Copy)]
pub struct GgttSpace<'a>(pub &'a [Pte]);

impl AddressSpace for GgttSpace<'_> {
    fn translate<H: HostMemory>(&self, _host: &H, addr: u64) -> Option<(HostPage, usize)> {
        let idx = usize::try_from(addr >> PAGE_SHIFT).ok()?;
        let pte = *self.0.get(idx)?;
        pte.present()
            .then(|| (pte.page(), (addr & (PAGE_SIZE - 1)) as usize))
    }
}

/// The physical GGTT as any [`Backend`] exposes it.
pub struct BackendGgtt<'a, B: Backend>(pub &'a B);

impl<B: Backend> AddressSpace for BackendGgtt<'_, B> {
    fn translate<H: HostMemory>(&self, _host: &H, addr: u64) -> Option<(HostPage, usize)> {
        let idx = u32::try_from(addr >> PAGE_SHIFT).ok()?;
        if idx >= self.0.ggtt_entries() {
            return None;
        }
        let pte = self.0.read_ggtt(idx);
        pte.present()
            .then(|| (pte.page(), (addr & (PAGE_SIZE - 1)) as usize))
    }
}

/// No PPGTT loaded: every local address faults.
pub struct NoPpgtt;

impl AddressSpace for NoPpgtt {
    fn translate<H: HostMemory>(&self, _host: &H, _addr: u64) -> Option<(HostPage, usize)> {
        None
    }
}

/// What an executing engine does to the rest of the device.
pub trait EngineBus {
    /// MI_LOAD_REGISTER_IMM.
    fn write_reg(&mut self, offset: u32, value: u32);
    /// Latch GT interrupt bits.
    fn raise(&mut self, bits: u32);
}

/// Why an engine stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The command could not be decoded or is not valid here.
    BadCommand(Reject),
    /// An address was not mapped (or the host refused the access).
    PageFault { space: Space, addr: u64 },
}

/// How a [`Engine::run`] call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepStatus {
    /// HEAD reached TAIL (or only a partial command is submitted).
    Idle,
    /// The budget ran out with work left (possibly inside a blit:
    /// [`Engine::mid_command`]).
    Budget,
    /// The ring is not enabled.
    Disabled,
    /// Stopped by a fault (until an engine reset).
    Faulted(Fault),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepResult {
    /// Commands retired by this call.
    pub executed: u32,
    pub status: StepStatus,
    /// Engine time this call used, by the [`CostModel`] (every access it
    /// made, finished commands and partial blits alike).
    pub cost_ns: u64,
}

/// What one [`Engine::run`] call may use.  The engine checks it between
/// steps (see the module documentation), so it overruns `ns` by at most one
/// step and never executes more than `cmds` commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Most commands to retire.
    pub cmds: u32,
    /// Most engine time (ns of the cost model) to start steps in.
    pub ns: u64,
}

impl Budget {
    /// `n` commands, no time limit (every blit still runs in bounded steps).
    pub const fn cmds(n: u32) -> Budget {
        Budget {
            cmds: n,
            ns: u64::MAX,
        }
    }
}

/// The engine's cost model (the table in the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CostModel {
    /// Per command: fetch, decode, retire (charged when it starts).
    pub cmd_ns: u64,
    /// Per access to host memory (one call, at most one page).
    pub access_ns: u64,
    /// Per KiB an access reads or writes (charged pro rata, rounded up).
    pub kib_ns: u64,
}

impl CostModel {
    pub const DEFAULT: CostModel = CostModel {
        cmd_ns: 1000,
        access_ns: 40,
        kib_ns: 256,
    };

    /// Cost of one host access of `bytes` bytes.
    pub const fn access(&self, bytes: u64) -> u64 {
        self.access_ns
            .saturating_add(bytes.saturating_mul(self.kib_ns).div_ceil(1024))
    }

    /// The most one engine step can cost: how far a run overruns its time
    /// budget at worst.  A step fetches a command (at most
    /// [`MAX_CMD_DWORDS`] dword reads) and then either stores at most 8
    /// bytes (two accesses across a page boundary), or does one step of a
    /// blit: at most `STEP_BYTES / CHUNK` full pieces plus one short piece
    /// per row and one cut by [`STEP_BYTES`], each read and written in at
    /// most two accesses, and [`STEP_BYTES`] read and written.
    pub const fn max_step_ns(&self) -> u64 {
        let fetch = (MAX_CMD_DWORDS as u64).saturating_mul(self.access(4));
        let pieces = STEP_BYTES / CHUNK as u64 + STEP_ROWS as u64 + 1;
        let blit = (pieces * 4)
            .saturating_mul(self.access_ns.saturating_add(1))
            .saturating_add((2 * STEP_BYTES).saturating_mul(self.kib_ns).div_ceil(1024));
        let store = 2 * self.access(8);
        let data = if blit > store { blit } else { store };
        self.cmd_ns.saturating_add(fetch).saturating_add(data)
    }
}

/// Most bytes one step of a blit touches per surface (the copy reads that
/// much and writes that much).
pub const STEP_BYTES: u64 = 64 << 10;
/// Most rows one step of a blit touches.
pub const STEP_ROWS: u32 = 64;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct RingRegs {
    tail: u32,
    head: u32,
    start: u32,
    ctl: u32,
    hws_pga: u32,
    ipehr: u32,
    acthd: u32,
    eir: u32,
    bbaddr: u32,
    mi_mode: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pos {
    space: Space,
    addr: u64,
}

/// Progress of the blit at the execution position: the next byte to do is
/// byte `col` of row `row`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BlitProgress {
    row: u32,
    col: u64,
}

/// The execution state of an engine that its MMIO registers do not show:
/// batch level and pointers, the progress of a partly done blit, and the
/// context's timestamp.  Part of [`EngineContext`]; a mediator that saves
/// contexts through MMIO keeps it per context with [`Engine::take_exec`] /
/// [`Engine::put_exec`] (the engine then always looks idle at ring level
/// between runs, and every context resumes exactly where it stopped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecState {
    level: Level,
    b1: Pos,
    b2: Pos,
    ret_head: u32,
    blit: Option<BlitProgress>,
    time_ns: u64,
}

impl ExecState {
    /// At ring level, nothing in progress, timestamp 0.
    pub const IDLE: ExecState = {
        let p = Pos {
            space: Space::Ggtt,
            addr: 0,
        };
        ExecState {
            level: Level::Ring,
            b1: p,
            b2: p,
            ret_head: 0,
            blit: None,
            time_ns: 0,
        }
    };
    /// The context's timestamp: its own engine time (ns of the cost model).
    pub fn time_ns(&self) -> u64 {
        self.time_ns
    }
    /// Batch level being executed.
    pub fn level(&self) -> Level {
        self.level
    }
    /// A blit is partly done.
    pub fn mid_command(&self) -> bool {
        self.blit.is_some()
    }
    /// The context's work was dropped (reset): back at ring level with
    /// nothing in progress; the timestamp keeps counting from where it was.
    pub fn drop_work(&mut self) {
        *self = ExecState {
            time_ns: self.time_ns,
            ..ExecState::IDLE
        };
    }
}

/// Everything an engine holds: what a context switch saves and restores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineContext {
    regs: RingRegs,
    exec: ExecState,
    fault: Option<Fault>,
}

/// One command streamer.
#[derive(Clone, Copy, Debug)]
pub struct Engine {
    id: EngineId,
    ctx: EngineContext,
    cost: CostModel,
}

/// Memory as the executing engine sees it; counts the cost of every access.
struct Mem<'x, H: HostMemory, P: AddressSpace> {
    ggtt: GgttSpace<'x>,
    host: &'x mut H,
    ppgtt: Option<&'x P>,
    rcs: bool,
    model: CostModel,
    cost: u64,
}

impl<H: HostMemory, P: AddressSpace> Mem<'_, H, P> {
    fn tr(&self, space: Space, addr: u64) -> Result<(HostPage, usize), Fault> {
        let t = match space {
            Space::Ggtt => self.ggtt.translate(&*self.host, addr),
            Space::Ppgtt if self.rcs => self.ppgtt.and_then(|p| p.translate(&*self.host, addr)),
            Space::Ppgtt => None,
        };
        t.ok_or(Fault::PageFault { space, addr })
    }
    fn charge(&mut self, bytes: usize) {
        self.cost = self.cost.saturating_add(self.model.access(bytes as u64));
    }
    fn read(&mut self, space: Space, addr: u64, buf: &mut [u8]) -> Result<(), Fault> {
        let mut done = 0usize;
        while done < buf.len() {
            let a = addr
                .checked_add(done as u64)
                .ok_or(Fault::PageFault { space, addr })?;
            let (page, off) = self.tr(space, a)?;
            let n = (PAGE_SIZE as usize - off).min(buf.len() - done);
            let chunk = buf
                .get_mut(done..done + n)
                .ok_or(Fault::PageFault { space, addr: a })?;
            self.charge(n);
            self.host
                .read(page, off, chunk)
                .map_err(|_| Fault::PageFault { space, addr: a })?;
            done += n;
        }
        Ok(())
    }
    fn write(&mut self, space: Space, addr: u64, data: &[u8]) -> Result<(), Fault> {
        let mut done = 0usize;
        while done < data.len() {
            let a = addr
                .checked_add(done as u64)
                .ok_or(Fault::PageFault { space, addr })?;
            let (page, off) = self.tr(space, a)?;
            let n = (PAGE_SIZE as usize - off).min(data.len() - done);
            let chunk = data
                .get(done..done + n)
                .ok_or(Fault::PageFault { space, addr: a })?;
            self.charge(n);
            self.host
                .write(page, off, chunk)
                .map_err(|_| Fault::PageFault { space, addr: a })?;
            done += n;
        }
        Ok(())
    }
    fn read_u32(&mut self, space: Space, addr: u64) -> Result<u32, Fault> {
        let mut b = [0u8; 4];
        self.read(space, addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
}

/// Bytes a blit moves per host access (a stack buffer).
const CHUNK: usize = 1024;

/// What one step did.
enum Stepped {
    /// A command retired.
    Retired,
    /// A blit made progress and is not finished.
    Partial,
    /// Only part of the next command is submitted: wait for more.
    Waiting,
}

impl Engine {
    pub const fn new(id: EngineId) -> Self {
        Self {
            id,
            ctx: EngineContext {
                regs: RingRegs {
                    tail: 0,
                    head: 0,
                    start: 0,
                    ctl: 0,
                    hws_pga: 0,
                    ipehr: 0,
                    acthd: 0,
                    eir: 0,
                    bbaddr: 0,
                    mi_mode: 0,
                },
                exec: ExecState::IDLE,
                fault: None,
            },
            cost: CostModel::DEFAULT,
        }
    }

    pub const fn id(&self) -> EngineId {
        self.id
    }
    pub fn head(&self) -> u32 {
        self.ctx.regs.head
    }
    pub fn tail(&self) -> u32 {
        self.ctx.regs.tail
    }
    pub fn fault(&self) -> Option<Fault> {
        self.ctx.fault
    }
    /// The loaded context's timestamp: its own engine time in ns of the cost
    /// model (see the module documentation).
    pub fn timestamp(&self) -> u64 {
        self.ctx.exec.time_ns
    }
    /// Nesting level being executed.
    pub fn level(&self) -> Level {
        self.ctx.exec.level
    }
    /// A blit is partly done (HEAD or the batch pointer is on it).
    pub fn mid_command(&self) -> bool {
        self.ctx.exec.blit.is_some()
    }
    /// Whether there is nothing to execute: at ring level and HEAD == TAIL.
    pub fn idle(&self) -> bool {
        self.ctx.exec.level == Level::Ring
            && self.ctx.exec.blit.is_none()
            && self.ctx.regs.head == self.ctx.regs.tail
    }
    /// The cost model this engine charges by.
    pub fn cost_model(&self) -> CostModel {
        self.cost
    }
    pub fn set_cost_model(&mut self, m: CostModel) {
        self.cost = m;
    }

    /// Engine reset (GDRST): ring registers cleared, execution state dropped
    /// (the loaded context's timestamp keeps counting).
    pub fn reset(&mut self) {
        let mut exec = self.ctx.exec;
        exec.drop_work();
        *self = Self {
            cost: self.cost,
            ..Self::new(self.id)
        };
        self.ctx.exec = exec;
    }

    pub fn save_context(&self) -> EngineContext {
        self.ctx
    }
    pub fn restore_context(&mut self, ctx: &EngineContext) {
        self.ctx = *ctx;
    }

    /// Take the execution state of the loaded context out of the engine
    /// (see [`ExecState`]); the engine is left at ring level, nothing in
    /// progress, timestamp 0.
    pub fn take_exec(&mut self) -> ExecState {
        core::mem::replace(&mut self.ctx.exec, ExecState::IDLE)
    }
    /// Load a context's execution state saved by [`Engine::take_exec`]
    /// (after its ring registers were restored).
    pub fn put_exec(&mut self, s: ExecState) {
        self.ctx.exec = s;
    }

    /// Read a ring register (offset relative to the engine's MMIO base).
    pub fn read_reg(&self, off: u32) -> Option<u32> {
        let r = &self.ctx.regs;
        Some(match off {
            RING_TAIL => r.tail,
            RING_HEAD => r.head,
            RING_START => r.start,
            RING_CTL => r.ctl,
            RING_IPEHR => r.ipehr,
            RING_ACTHD => r.acthd,
            RING_HWS_PGA => r.hws_pga,
            RING_EIR => r.eir,
            RING_BBADDR => r.bbaddr,
            RING_MI_MODE => {
                // A faulted engine never reports idle: its context cannot be
                // switched out, the mediator must reset the engine.  Neither
                // does one inside a batch or a blit (state MMIO cannot save).
                let stopped = r.mi_mode & MI_MODE_STOP_RING != 0;
                let x = &self.ctx.exec;
                let idle = stopped
                    && x.level == Level::Ring
                    && x.blit.is_none()
                    && self.ctx.fault.is_none();
                r.mi_mode | if idle { MI_MODE_IDLE } else { 0 }
            }
            RING_TIMESTAMP => self.ctx.exec.time_ns as u32,
            _ => return None,
        })
    }

    /// Write a ring register; false when `off` is not a ring register.
    pub fn write_reg(&mut self, off: u32, v: u32) -> bool {
        let r = &mut self.ctx.regs;
        match off {
            RING_TAIL => r.tail = v & TAIL_ADDR,
            RING_HEAD => {
                r.head = v & HEAD_ADDR;
                self.ctx.exec.drop_work();
            }
            RING_START => {
                r.start = v & !0xfff;
                self.ctx.exec.drop_work();
            }
            RING_CTL => r.ctl = v & (RING_NR_PAGES | RING_VALID),
            RING_HWS_PGA => r.hws_pga = v & !0xfff,
            RING_EIR => r.eir &= !v,
            RING_MI_MODE => r.mi_mode = super::regs::masked_write(r.mi_mode, v) & MI_MODE_STOP_RING,
            _ => return false,
        }
        true
    }

    fn pos(&self) -> Pos {
        match self.ctx.exec.level {
            Level::Ring => Pos {
                space: Space::Ggtt,
                addr: 0,
            },
            Level::First => self.ctx.exec.b1,
            Level::Second => self.ctx.exec.b2,
        }
    }

    /// Execute within `budget` (commands and engine time; see [`Budget`]).
    pub fn run<H: HostMemory, P: AddressSpace, B: EngineBus>(
        &mut self,
        ggtt: &[Pte],
        host: &mut H,
        ppgtt: Option<&P>,
        bus: &mut B,
        budget: Budget,
    ) -> StepResult {
        let mut mem = Mem {
            ggtt: GgttSpace(ggtt),
            host,
            ppgtt,
            rcs: self.id == EngineId::Rcs,
            model: self.cost,
            cost: 0,
        };
        let mut executed = 0;
        let done = |executed: u32, status: StepStatus, mem: &Mem<'_, H, P>| StepResult {
            executed,
            status,
            cost_ns: mem.cost,
        };
        if self.ctx.regs.ctl & RING_VALID == 0 {
            return done(executed, StepStatus::Disabled, &mem);
        }
        if let Some(f) = self.ctx.fault {
            return done(executed, StepStatus::Faulted(f), &mem);
        }
        if self.ctx.regs.mi_mode & MI_MODE_STOP_RING != 0 {
            // Stopped for a context switch: fetches nothing.
            return done(executed, StepStatus::Disabled, &mem);
        }
        let mut buf = [0u32; MAX_CMD_DWORDS];
        loop {
            if self.idle() {
                return done(executed, StepStatus::Idle, &mem);
            }
            if executed >= budget.cmds || mem.cost >= budget.ns {
                return done(executed, StepStatus::Budget, &mem);
            }
            let before = mem.cost;
            let r = self.step(&mut mem, bus, &mut buf);
            // The context's timestamp is its own engine time.
            self.ctx.exec.time_ns = self.ctx.exec.time_ns.wrapping_add(mem.cost - before);
            match r {
                Ok(Stepped::Retired) => executed += 1,
                Ok(Stepped::Partial) => {}
                Ok(Stepped::Waiting) => return done(executed, StepStatus::Idle, &mem),
                Err(f) => {
                    let r = &mut self.ctx.regs;
                    r.ipehr = buf[0];
                    r.eir |= match f {
                        Fault::BadCommand(_) => EIR_INSTRUCTION,
                        Fault::PageFault { .. } => EIR_PAGE_TABLE,
                    };
                    self.ctx.fault = Some(f);
                    bus.raise(GtEvent::Error(self.id).bit());
                    return done(executed, StepStatus::Faulted(f), &mem);
                }
            }
        }
    }

    /// Fetch the command at the execution position and do one step of it.
    fn step<H: HostMemory, P: AddressSpace, B: EngineBus>(
        &mut self,
        mem: &mut Mem<'_, H, P>,
        bus: &mut B,
        buf: &mut [u32; MAX_CMD_DWORDS],
    ) -> Result<Stepped, Fault> {
        let level = self.ctx.exec.level;
        let r = self.ctx.regs;
        let size = ring_size(r.ctl) as u64;
        let start = r.start as u64;
        let p = self.pos();
        let at = |i: usize| -> (Space, u64) {
            match level {
                Level::Ring => (Space::Ggtt, start + (r.head as u64 + 4 * i as u64) % size),
                _ => (p.space, p.addr.wrapping_add(4 * i as u64)),
            }
        };
        buf[0] = 0;
        let (s0, a0) = at(0);
        self.ctx.regs.acthd = a0 as u32;
        let h = mem.read_u32(s0, a0)?;
        buf[0] = h;
        let (op, n) = cmd::decode(h).map_err(Fault::BadCommand)?;
        if level == Level::Ring {
            let pending = (r.tail as u64 + size - r.head as u64) % size;
            if 4 * n as u64 > pending {
                return Ok(Stepped::Waiting);
            }
        }
        for i in 1..n {
            let (s, a) = at(i);
            let v = mem.read_u32(s, a)?;
            if let Some(slot) = buf.get_mut(i) {
                *slot = v;
            }
        }
        let d = buf.get(..n).unwrap_or(&[]);
        let c = cmd::parse(op, d).map_err(Fault::BadCommand)?;
        let resumed = self.ctx.exec.blit.take();
        if resumed.is_none() {
            mem.cost = mem.cost.saturating_add(mem.model.cmd_ns);
        }
        let step = 4 * n as u64;
        let mut advance = true;
        if !op.runs_on(self.id) {
            return Err(Fault::BadCommand(Reject::WrongEngine));
        }
        match c {
            Command::Noop => {}
            Command::UserInterrupt => bus.raise(GtEvent::User(self.id).bit()),
            Command::BatchEnd => {
                match level {
                    Level::Ring => return Err(Fault::BadCommand(Reject::BatchEndInRing)),
                    Level::First => {
                        self.ctx.regs.head = self.ctx.exec.ret_head;
                        self.ctx.exec.level = Level::Ring;
                    }
                    Level::Second => self.ctx.exec.level = Level::First,
                }
                advance = false;
            }
            Command::StoreData {
                space,
                addr,
                data,
                n,
            } => {
                let mut b = [0u8; 8];
                b[..4].copy_from_slice(&data[0].to_le_bytes());
                b[4..].copy_from_slice(&data[1].to_le_bytes());
                mem.write(space, addr, &b[..4 * n as usize])?;
            }
            Command::LoadRegs { count } => {
                for i in 0..count {
                    let reg = d.get(1 + 2 * i).copied().unwrap_or(0) & 0x7f_fffc;
                    let val = d.get(2 + 2 * i).copied().unwrap_or(0);
                    bus.write_reg(reg, val);
                }
            }
            Command::FlushDw { post, notify } | Command::PipeControl { post, notify } => {
                self.post_sync(mem, post)?;
                if notify {
                    bus.raise(GtEvent::Notify(self.id).bit());
                }
            }
            Command::BatchStart {
                space,
                addr,
                second_level,
            } => {
                let target = Pos { space, addr };
                let x = &mut self.ctx.exec;
                match (level, second_level) {
                    (Level::Ring, false) => {
                        x.ret_head = ((r.head as u64 + step) % size) as u32;
                        x.b1 = target;
                        x.level = Level::First;
                    }
                    (Level::First, true) => {
                        x.b1.addr = x.b1.addr.wrapping_add(step);
                        x.b2 = target;
                        x.level = Level::Second;
                    }
                    (Level::First, false) => x.b1 = target,
                    (Level::Second, false) => x.b2 = target,
                    (_, true) => return Err(Fault::BadCommand(Reject::ChainTooDeep)),
                }
                self.ctx.regs.bbaddr = addr as u32;
                advance = false;
            }
            Command::ColorBlt {
                dst,
                w,
                h,
                cpp,
                color,
            } => {
                let at = resumed.unwrap_or(BlitProgress { row: 0, col: 0 });
                if let Some(next) = Self::fill(mem, &dst, w, h, cpp, color, at)? {
                    self.ctx.exec.blit = Some(next);
                    return Ok(Stepped::Partial);
                }
            }
            Command::SrcCopyBlt {
                dst,
                src,
                w,
                h,
                cpp,
            } => {
                let at = resumed.unwrap_or(BlitProgress { row: 0, col: 0 });
                if let Some(next) = Self::copy(mem, &dst, &src, w, h, cpp, at)? {
                    self.ctx.exec.blit = Some(next);
                    return Ok(Stepped::Partial);
                }
            }
        }
        if advance {
            let x = &mut self.ctx.exec;
            match level {
                Level::Ring => self.ctx.regs.head = ((r.head as u64 + step) % size) as u32,
                Level::First => x.b1.addr = x.b1.addr.wrapping_add(step),
                Level::Second => x.b2.addr = x.b2.addr.wrapping_add(step),
            }
        }
        Ok(Stepped::Retired)
    }

    fn post_sync<H: HostMemory, P: AddressSpace>(
        &self,
        mem: &mut Mem<'_, H, P>,
        post: PostSync,
    ) -> Result<(), Fault> {
        match post {
            PostSync::None => Ok(()),
            PostSync::Imm {
                space,
                addr,
                data,
                n,
            } => {
                let mut b = [0u8; 8];
                b[..4].copy_from_slice(&data[0].to_le_bytes());
                b[4..].copy_from_slice(&data[1].to_le_bytes());
                mem.write(space, addr, &b[..4 * n as usize])
            }
            // The context's own time, never a device-global counter.
            PostSync::Timestamp { space, addr } => {
                mem.write(space, addr, &self.ctx.exec.time_ns.to_le_bytes())
            }
        }
    }

    /// One step of a blit of `h` rows of `row_bytes` bytes from `at`: calls
    /// `row_op(row, first byte, bytes)` for pieces of at most [`CHUNK`]
    /// bytes, at most [`STEP_ROWS`] rows and [`STEP_BYTES`] bytes in all.
    /// Returns where to resume, or None when the blit is done.
    fn blit_step(
        h: u32,
        row_bytes: u64,
        at: BlitProgress,
        mut row_op: impl FnMut(u32, u64, usize) -> Result<(), Fault>,
    ) -> Result<Option<BlitProgress>, Fault> {
        if row_bytes == 0 {
            return Ok(None);
        }
        let mut p = at;
        let (mut rows, mut bytes) = (0u32, 0u64);
        while p.row < h {
            if rows >= STEP_ROWS || bytes >= STEP_BYTES {
                return Ok(Some(p));
            }
            while p.col < row_bytes && bytes < STEP_BYTES {
                let n = (row_bytes - p.col)
                    .min(CHUNK as u64)
                    .min(STEP_BYTES - bytes) as usize;
                row_op(p.row, p.col, n)?;
                p.col += n as u64;
                bytes += n as u64;
            }
            if p.col < row_bytes {
                return Ok(Some(p));
            }
            p = BlitProgress {
                row: p.row + 1,
                col: 0,
            };
            rows += 1;
        }
        Ok(None)
    }

    fn fill<H: HostMemory, P: AddressSpace>(
        mem: &mut Mem<'_, H, P>,
        dst: &Surface,
        w: u32,
        h: u32,
        cpp: u32,
        color: u32,
        at: BlitProgress,
    ) -> Result<Option<BlitProgress>, Fault> {
        let mut pat = [0u8; CHUNK];
        let c = color.to_le_bytes();
        let cpp = cpp.clamp(1, 4);
        let row_bytes = w as u64 * cpp as u64;
        // Only as much pattern as one piece can use (CHUNK is a multiple of
        // every cpp).
        let need = row_bytes.min(CHUNK as u64) as usize;
        let px = c.get(..cpp as usize).unwrap_or(&c);
        for p in pat
            .get_mut(..need)
            .unwrap_or(&mut [])
            .chunks_exact_mut(px.len())
        {
            p.copy_from_slice(px);
        }
        Self::blit_step(h, row_bytes, at, |row, col, n| {
            let a = dst.row_addr(row, cpp).ok_or(Fault::PageFault {
                space: Space::Ggtt,
                addr: dst.base,
            })?;
            // Every piece is a multiple of cpp bytes (rows, CHUNK and
            // STEP_BYTES are), so `col` is on a pixel boundary.
            mem.write(
                Space::Ggtt,
                a.wrapping_add(col),
                pat.get(..n).unwrap_or(&[]),
            )
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn copy<H: HostMemory, P: AddressSpace>(
        mem: &mut Mem<'_, H, P>,
        dst: &Surface,
        src: &Surface,
        w: u32,
        h: u32,
        cpp: u32,
        at: BlitProgress,
    ) -> Result<Option<BlitProgress>, Fault> {
        let mut tmp = [0u8; CHUNK];
        let row_bytes = w as u64 * cpp as u64;
        Self::blit_step(h, row_bytes, at, |row, col, n| {
            let da = dst.row_addr(row, cpp).ok_or(Fault::PageFault {
                space: Space::Ggtt,
                addr: dst.base,
            })?;
            let sa = src.row_addr(row, cpp).ok_or(Fault::PageFault {
                space: Space::Ggtt,
                addr: src.base,
            })?;
            let t = tmp.get_mut(..n).unwrap_or(&mut []);
            mem.read(Space::Ggtt, sa.wrapping_add(col), t)?;
            mem.write(Space::Ggtt, da.wrapping_add(col), t)
        })
    }
}
