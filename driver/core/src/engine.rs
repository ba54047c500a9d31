//! gvt-sim's command streamers: an engine that executes the command set of
//! [`super::cmd`] for real on host memory, through the physical GGTT or a
//! PPGTT [`AddressSpace`] (paper §2: the render engine "fetches GPU commands
//! from the command buffer"; §3.2: the GPU executes guest commands directly).
//!
//! Execution is separate from submission: writing TAIL only records it; the
//! commands run when the owner calls [`Engine::run`] with a command budget (in
//! the kernel, on a workqueue, never in the trap path), so a scheduler can stop
//! an engine at any command boundary.  Faults (unmapped address, bad command)
//! stop the engine with an error status and the engine's error interrupt; they
//! never panic.
//!
//! Ring registers (offsets from the engine's MMIO base, Intel legacy ring
//! layout): TAIL +0x30 (bits 20:3), HEAD +0x34 (bits 20:2), START +0x38 (GGTT
//! address, bits 31:12), CTL +0x3C (bit 0 enable, bits 20:12 = pages − 1 as
//! i915's `RING_CTL_SIZE`), IPEHR +0x68 (header of the faulting command), ACTHD
//! +0x74 (address being executed), HWS_PGA +0x80, EIR +0xB0 (bit 0 instruction
//! error, bit 4 page-table error), BBADDR +0x140, TIMESTAMP +0x358 (commands
//! retired, low dword).
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
use super::mem::{HostMemory, HostPage, PAGE_SHIFT, PAGE_SIZE};

pub use super::regs::ring::{
    ACTHD as RING_ACTHD, BBADDR as RING_BBADDR, BLOCK as RING_BLOCK, CTL as RING_CTL, EIR as RING_EIR, HEAD as RING_HEAD,
    HWS_PGA as RING_HWS_PGA, IPEHR as RING_IPEHR, MI_MODE as RING_MI_MODE, START as RING_START, TAIL as RING_TAIL,
    TIMESTAMP as RING_TIMESTAMP,
};
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
        pte.present().then(|| (pte.page(), (addr & (PAGE_SIZE - 1)) as usize))
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
        pte.present().then(|| (pte.page(), (addr & (PAGE_SIZE - 1)) as usize))
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
    /// The budget ran out with work left.
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
}

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

/// Everything an engine holds: what a context switch saves and restores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineContext {
    regs: RingRegs,
    level: Level,
    b1: Pos,
    b2: Pos,
    ret_head: u32,
    fault: Option<Fault>,
}

/// One command streamer.
#[derive(Clone, Copy, Debug)]
pub struct Engine {
    id: EngineId,
    ctx: EngineContext,
    timestamp: u64,
}

struct Mem<'x, H: HostMemory, P: AddressSpace> {
    ggtt: GgttSpace<'x>,
    host: &'x mut H,
    ppgtt: Option<&'x P>,
    rcs: bool,
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
    fn read(&self, space: Space, addr: u64, buf: &mut [u8]) -> Result<(), Fault> {
        let mut done = 0usize;
        while done < buf.len() {
            let a = addr.checked_add(done as u64).ok_or(Fault::PageFault { space, addr })?;
            let (page, off) = self.tr(space, a)?;
            let n = (PAGE_SIZE as usize - off).min(buf.len() - done);
            let chunk = buf.get_mut(done..done + n).ok_or(Fault::PageFault { space, addr: a })?;
            self.host.read(page, off, chunk).map_err(|_| Fault::PageFault { space, addr: a })?;
            done += n;
        }
        Ok(())
    }
    fn write(&mut self, space: Space, addr: u64, data: &[u8]) -> Result<(), Fault> {
        let mut done = 0usize;
        while done < data.len() {
            let a = addr.checked_add(done as u64).ok_or(Fault::PageFault { space, addr })?;
            let (page, off) = self.tr(space, a)?;
            let n = (PAGE_SIZE as usize - off).min(data.len() - done);
            let chunk = data.get(done..done + n).ok_or(Fault::PageFault { space, addr: a })?;
            self.host.write(page, off, chunk).map_err(|_| Fault::PageFault { space, addr: a })?;
            done += n;
        }
        Ok(())
    }
    fn read_u32(&self, space: Space, addr: u64) -> Result<u32, Fault> {
        let mut b = [0u8; 4];
        self.read(space, addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
}

const CHUNK: usize = 256;

impl Engine {
    pub const fn new(id: EngineId) -> Self {
        let p = Pos { space: Space::Ggtt, addr: 0 };
        Self {
            id,
            ctx: EngineContext { regs: RingRegs { tail: 0, head: 0, start: 0, ctl: 0, hws_pga: 0, ipehr: 0, acthd: 0, eir: 0, bbaddr: 0, mi_mode: 0 }, level: Level::Ring, b1: p, b2: p, ret_head: 0, fault: None },
            timestamp: 0,
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
    /// Commands retired since creation (the engine's timestamp).
    pub fn timestamp(&self) -> u64 {
        self.timestamp
    }
    /// Nesting level being executed.
    pub fn level(&self) -> Level {
        self.ctx.level
    }
    /// Whether there is nothing to execute: at ring level and HEAD == TAIL.
    pub fn idle(&self) -> bool {
        self.ctx.level == Level::Ring && self.ctx.regs.head == self.ctx.regs.tail
    }

    /// Engine reset (GDRST): ring registers cleared, execution state dropped.
    pub fn reset(&mut self) {
        *self = Self { timestamp: self.timestamp, ..Self::new(self.id) };
    }

    pub fn save_context(&self) -> EngineContext {
        self.ctx
    }
    pub fn restore_context(&mut self, ctx: &EngineContext) {
        self.ctx = *ctx;
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
                // switched out, the mediator must reset the engine.
                let stopped = r.mi_mode & MI_MODE_STOP_RING != 0;
                let idle = stopped && self.ctx.level == Level::Ring && self.ctx.fault.is_none();
                r.mi_mode | if idle { MI_MODE_IDLE } else { 0 }
            }
            RING_TIMESTAMP => self.timestamp as u32,
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
                self.ctx.level = Level::Ring;
            }
            RING_START => {
                r.start = v & !0xfff;
                self.ctx.level = Level::Ring;
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
        match self.ctx.level {
            Level::Ring => Pos { space: Space::Ggtt, addr: 0 },
            Level::First => self.ctx.b1,
            Level::Second => self.ctx.b2,
        }
    }

    /// Execute up to `budget` commands.
    pub fn run<H: HostMemory, P: AddressSpace, B: EngineBus>(
        &mut self,
        ggtt: &[Pte],
        host: &mut H,
        ppgtt: Option<&P>,
        bus: &mut B,
        budget: u32,
    ) -> StepResult {
        let mut mem = Mem { ggtt: GgttSpace(ggtt), host, ppgtt, rcs: self.id == EngineId::Rcs };
        let mut executed = 0;
        if self.ctx.regs.ctl & RING_VALID == 0 {
            return StepResult { executed, status: StepStatus::Disabled };
        }
        if let Some(f) = self.ctx.fault {
            return StepResult { executed, status: StepStatus::Faulted(f) };
        }
        if self.ctx.regs.mi_mode & MI_MODE_STOP_RING != 0 {
            // Stopped for a context switch: fetches nothing.
            return StepResult { executed, status: StepStatus::Disabled };
        }
        let mut buf = [0u32; MAX_CMD_DWORDS];
        loop {
            if self.idle() {
                return StepResult { executed, status: StepStatus::Idle };
            }
            if executed >= budget {
                return StepResult { executed, status: StepStatus::Budget };
            }
            match self.step(&mut mem, bus, &mut buf) {
                Ok(true) => executed += 1,
                Ok(false) => return StepResult { executed, status: StepStatus::Idle },
                Err(f) => {
                    let r = &mut self.ctx.regs;
                    r.ipehr = buf[0];
                    r.eir |= match f {
                        Fault::BadCommand(_) => EIR_INSTRUCTION,
                        Fault::PageFault { .. } => EIR_PAGE_TABLE,
                    };
                    self.ctx.fault = Some(f);
                    bus.raise(GtEvent::Error(self.id).bit());
                    return StepResult { executed, status: StepStatus::Faulted(f) };
                }
            }
        }
    }

    /// Fetch and execute one command.  Ok(false): only part of a command is
    /// submitted, wait for more.
    fn step<H: HostMemory, P: AddressSpace, B: EngineBus>(
        &mut self,
        mem: &mut Mem<'_, H, P>,
        bus: &mut B,
        buf: &mut [u32; MAX_CMD_DWORDS],
    ) -> Result<bool, Fault> {
        let level = self.ctx.level;
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
                return Ok(false);
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
        let step = 4 * n as u64;
        let mut advance = true;
        match c {
            Command::Noop => {}
            Command::UserInterrupt => bus.raise(GtEvent::User(self.id).bit()),
            Command::BatchEnd => {
                match level {
                    Level::Ring => return Err(Fault::BadCommand(Reject::BatchEndInRing)),
                    Level::First => {
                        self.ctx.regs.head = self.ctx.ret_head;
                        self.ctx.level = Level::Ring;
                    }
                    Level::Second => self.ctx.level = Level::First,
                }
                advance = false;
            }
            Command::StoreData { space, addr, data, n } => {
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
                if matches!(c, Command::PipeControl { .. }) && self.id != EngineId::Rcs {
                    return Err(Fault::BadCommand(Reject::WrongEngine));
                }
                self.post_sync(mem, post)?;
                if notify {
                    bus.raise(GtEvent::Notify(self.id).bit());
                }
            }
            Command::BatchStart { space, addr, second_level } => {
                let target = Pos { space, addr };
                match (level, second_level) {
                    (Level::Ring, false) => {
                        self.ctx.ret_head = ((r.head as u64 + step) % size) as u32;
                        self.ctx.b1 = target;
                        self.ctx.level = Level::First;
                    }
                    (Level::First, true) => {
                        self.ctx.b1.addr = self.ctx.b1.addr.wrapping_add(step);
                        self.ctx.b2 = target;
                        self.ctx.level = Level::Second;
                    }
                    (Level::First, false) => self.ctx.b1 = target,
                    (Level::Second, false) => self.ctx.b2 = target,
                    (_, true) => return Err(Fault::BadCommand(Reject::ChainTooDeep)),
                }
                self.ctx.regs.bbaddr = addr as u32;
                advance = false;
            }
            Command::ColorBlt { dst, w, h, cpp, color } => {
                if self.id != EngineId::Bcs {
                    return Err(Fault::BadCommand(Reject::WrongEngine));
                }
                Self::fill(mem, &dst, w, h, cpp, color)?;
            }
            Command::SrcCopyBlt { dst, src, w, h, cpp } => {
                if self.id != EngineId::Bcs {
                    return Err(Fault::BadCommand(Reject::WrongEngine));
                }
                Self::copy(mem, &dst, &src, w, h, cpp)?;
            }
        }
        if advance {
            match level {
                Level::Ring => self.ctx.regs.head = ((r.head as u64 + step) % size) as u32,
                Level::First => self.ctx.b1.addr = self.ctx.b1.addr.wrapping_add(step),
                Level::Second => self.ctx.b2.addr = self.ctx.b2.addr.wrapping_add(step),
            }
        }
        self.timestamp = self.timestamp.wrapping_add(1);
        Ok(true)
    }

    fn post_sync<H: HostMemory, P: AddressSpace>(&self, mem: &mut Mem<'_, H, P>, post: PostSync) -> Result<(), Fault> {
        match post {
            PostSync::None => Ok(()),
            PostSync::Imm { space, addr, data, n } => {
                let mut b = [0u8; 8];
                b[..4].copy_from_slice(&data[0].to_le_bytes());
                b[4..].copy_from_slice(&data[1].to_le_bytes());
                mem.write(space, addr, &b[..4 * n as usize])
            }
            PostSync::Timestamp { space, addr } => mem.write(space, addr, &self.timestamp.to_le_bytes()),
        }
    }

    fn fill<H: HostMemory, P: AddressSpace>(mem: &mut Mem<'_, H, P>, dst: &Surface, w: u32, h: u32, cpp: u32, color: u32) -> Result<(), Fault> {
        let mut pat = [0u8; CHUNK];
        let c = color.to_le_bytes();
        for (i, b) in pat.iter_mut().enumerate() {
            *b = c[i % cpp as usize];
        }
        let row_bytes = w as u64 * cpp as u64;
        for row in 0..h {
            let a = dst.row_addr(row, cpp).ok_or(Fault::PageFault { space: Space::Ggtt, addr: dst.base })?;
            let mut done = 0u64;
            while done < row_bytes {
                let n = (row_bytes - done).min(CHUNK as u64) as usize;
                mem.write(Space::Ggtt, a.wrapping_add(done), &pat[..n])?;
                done += n as u64;
            }
        }
        Ok(())
    }

    fn copy<H: HostMemory, P: AddressSpace>(mem: &mut Mem<'_, H, P>, dst: &Surface, src: &Surface, w: u32, h: u32, cpp: u32) -> Result<(), Fault> {
        let mut tmp = [0u8; CHUNK];
        let row_bytes = w as u64 * cpp as u64;
        for row in 0..h {
            let da = dst.row_addr(row, cpp).ok_or(Fault::PageFault { space: Space::Ggtt, addr: dst.base })?;
            let sa = src.row_addr(row, cpp).ok_or(Fault::PageFault { space: Space::Ggtt, addr: src.base })?;
            let mut done = 0u64;
            while done < row_bytes {
                let n = (row_bytes - done).min(CHUNK as u64) as usize;
                mem.read(Space::Ggtt, sa.wrapping_add(done), &mut tmp[..n])?;
                mem.write(Space::Ggtt, da.wrapping_add(done), &tmp[..n])?;
                done += n as u64;
            }
        }
        Ok(())
    }
}
