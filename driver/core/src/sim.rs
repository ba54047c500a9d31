//! gvt-sim: the physical GPU modelled in software (design: docs/gvt-sim.md; paper
//! §2, Figure 2: render/blitter engines fetching commands from graphics memory
//! mapped by the global GTT).  It implements [`Backend`], so the mediator drives
//! it exactly as it would drive an Intel GPU.
//!
//! What it holds:
//! - the one physical GGTT, over a borrowed `&mut [Pte]` (the caller owns the
//!   storage: a vmalloc'ed array in the kernel, a `Vec` in host tests);
//! - two engines (RCS at 0x2000, BCS at 0x22000) with the ring registers and
//!   execution semantics of [`super::engine`];
//! - the GT interrupt registers GTISR/GTIMR/GTIIR/GTIER ([`super::irq`]);
//! - GDRST (0x941C): bit 0 full reset, bit 1 render, bit 3 blitter (i915's
//!   `GEN6_GRDOM_*`); a reset completes immediately and the register reads 0;
//! - every other register in a small sparse register file of
//!   [`OTHER_REGS`] slots (writes beyond it are counted and dropped).
//!
//! Execution never happens inside a register write: [`GvtSim::run`] executes
//! one engine with a command budget, and is what a workqueue (or a test) calls.

use super::backend::{Backend, EngineId, Pte};
use super::engine::{
    AddressSpace, Budget, CostModel, Engine, EngineBus, EngineContext, ExecState, StepResult,
    RING_BLOCK,
};
use super::irq::GtIrq;
use super::regs::Gdrst;
use super::services::HostMemory;

/// GDRST and its domain bits (declared in [`super::regs`]).
pub use super::regs::GDRST;
pub const GRDOM_FULL: u32 = Gdrst::FULL;
pub const GRDOM_RENDER: u32 = Gdrst::RENDER;
pub const GRDOM_BLT: u32 = Gdrst::BLITTER;

/// Slots of the sparse register file for registers without semantics.
pub const OTHER_REGS: usize = 128;

/// Registers without semantics (GPRs, display, fences, ...).
#[derive(Clone, Copy)]
struct RegFile {
    n: usize,
    slots: [(u32, u32); OTHER_REGS],
    dropped: u64,
}

impl RegFile {
    const fn new() -> Self {
        Self {
            n: 0,
            slots: [(0, 0); OTHER_REGS],
            dropped: 0,
        }
    }
    fn get(&self, off: u32) -> u32 {
        self.slots
            .get(..self.n)
            .unwrap_or(&[])
            .iter()
            .find(|s| s.0 == off)
            .map_or(0, |s| s.1)
    }
    fn set(&mut self, off: u32, v: u32) {
        let n = self.n;
        if let Some(s) = self
            .slots
            .get_mut(..n)
            .unwrap_or(&mut [])
            .iter_mut()
            .find(|s| s.0 == off)
        {
            s.1 = v;
        } else if let Some(s) = self.slots.get_mut(n) {
            *s = (off, v);
            self.n += 1;
        } else {
            self.dropped = self.dropped.saturating_add(1);
        }
    }
}

/// gvt-sim's device state, everything but the physical GGTT storage: the
/// engines, the interrupt registers and the register file (about 1.3 KiB).
/// A long-lived owner keeps it and attaches the GGTT per call with
/// [`GvtSim::resume`].
#[derive(Clone, Copy)]
pub struct SimState {
    engines: [Engine; EngineId::COUNT],
    gt: GtIrq,
    regs: RegFile,
}

impl SimState {
    /// Power-on state.
    pub const fn new() -> Self {
        Self {
            engines: [Engine::new(EngineId::Rcs), Engine::new(EngineId::Bcs)],
            gt: GtIrq::new(),
            regs: RegFile::new(),
        }
    }
}

/// The software GPU.
pub struct GvtSim<'g> {
    ggtt: &'g mut [Pte],
    st: SimState,
}

/// The device as an executing engine sees it.
struct Bus<'x> {
    gt: &'x mut GtIrq,
    regs: &'x mut RegFile,
}

impl EngineBus for Bus<'_> {
    fn write_reg(&mut self, offset: u32, value: u32) {
        if GtIrq::handles(offset) {
            let _ = self.gt.write(offset, value);
        } else if offset == GDRST
            || EngineId::ALL.iter().any(|e| {
                offset >= e.mmio_base()
                    && offset < e.mmio_base() + RING_BLOCK
                    && (offset & (RING_BLOCK - 1)) < 0x600
            })
        {
            // The command streamer cannot reset engines or reprogram ring
            // registers from inside a command stream.
        } else {
            self.regs.set(offset, value);
        }
    }
    fn raise(&mut self, bits: u32) {
        let _ = self.gt.raise(bits);
    }
}

impl<'g> GvtSim<'g> {
    /// A powered-up device whose physical GGTT is `ggtt` (all entries as given).
    pub fn new(ggtt: &'g mut [Pte]) -> Self {
        Self {
            ggtt,
            st: SimState::new(),
        }
    }

    /// The device in state `st` (from [`GvtSim::park`]) over `ggtt`.
    pub fn resume(ggtt: &'g mut [Pte], st: SimState) -> Self {
        Self { ggtt, st }
    }

    /// Detach the GGTT storage; keep the returned state for the next
    /// [`GvtSim::resume`].
    pub fn park(self) -> SimState {
        self.st
    }

    pub fn engine(&self, id: EngineId) -> &Engine {
        &self.st.engines[id.index()]
    }

    /// The physical GGTT as the engines see it.
    pub fn ggtt(&self) -> &[Pte] {
        self.ggtt
    }

    /// Whether the physical GT interrupt is asserted (`GTIIR & GTIER != 0`).
    pub fn irq_asserted(&self) -> bool {
        self.st.gt.asserted()
    }

    /// Writes dropped because the sparse register file was full.
    pub fn dropped_reg_writes(&self) -> u64 {
        self.st.regs.dropped
    }

    /// Execute up to `budget` commands on `engine` (no time limit; blits
    /// still run in bounded steps); `ppgtt` is the local address space of
    /// the context loaded on it (render engine only).
    pub fn run<H: HostMemory, P: AddressSpace>(
        &mut self,
        engine: EngineId,
        host: &mut H,
        ppgtt: Option<&P>,
        budget: u32,
    ) -> StepResult {
        self.run_for(engine, host, ppgtt, Budget::cmds(budget))
    }

    /// Execute on `engine` within `budget` (commands and engine time, see
    /// [`super::engine`]'s cost model).
    pub fn run_for<H: HostMemory, P: AddressSpace>(
        &mut self,
        engine: EngineId,
        host: &mut H,
        ppgtt: Option<&P>,
        budget: Budget,
    ) -> StepResult {
        let Self {
            ggtt,
            st: SimState { engines, gt, regs },
        } = self;
        let mut bus = Bus { gt, regs };
        engines[engine.index()].run(ggtt, host, ppgtt, &mut bus, budget)
    }

    /// Price engine work by `m` (both engines).
    pub fn set_cost_model(&mut self, m: CostModel) {
        for e in self.st.engines.iter_mut() {
            e.set_cost_model(m);
        }
    }

    /// Take the loaded context's execution state off `engine` (see
    /// [`ExecState`]).
    pub fn take_exec(&mut self, engine: EngineId) -> ExecState {
        self.st.engines[engine.index()].take_exec()
    }

    /// Load a context's execution state onto `engine`.
    pub fn put_exec(&mut self, engine: EngineId, s: ExecState) {
        self.st.engines[engine.index()].put_exec(s)
    }

    /// Save an engine's state for a context switch (paper §3.2).
    pub fn save_context(&self, engine: EngineId) -> EngineContext {
        self.st.engines[engine.index()].save_context()
    }

    /// Restore a state saved by [`GvtSim::save_context`].
    pub fn restore_context(&mut self, engine: EngineId, ctx: &EngineContext) {
        self.st.engines[engine.index()].restore_context(ctx)
    }

    fn engine_reg(offset: u32) -> Option<(usize, u32)> {
        EngineId::ALL
            .iter()
            .find(|e| offset >= e.mmio_base() && offset < e.mmio_base() + RING_BLOCK)
            .map(|e| (e.index(), offset - e.mmio_base()))
    }
}

impl Backend for GvtSim<'_> {
    fn read_reg(&mut self, offset: u32) -> u32 {
        if let Some((i, off)) = Self::engine_reg(offset) {
            if let Some(v) = self.st.engines[i].read_reg(off) {
                return v;
            }
        }
        if let Some(v) = self.st.gt.read(offset) {
            return v;
        }
        if offset == GDRST {
            return 0;
        }
        self.st.regs.get(offset)
    }

    fn write_reg(&mut self, offset: u32, value: u32) {
        if let Some((i, off)) = Self::engine_reg(offset) {
            if self.st.engines[i].write_reg(off, value) {
                return;
            }
        }
        if self.st.gt.write(offset, value).is_some() {
            return;
        }
        if offset == GDRST {
            if value & (GRDOM_FULL | GRDOM_RENDER) != 0 {
                self.st.engines[EngineId::Rcs.index()].reset();
            }
            if value & (GRDOM_FULL | GRDOM_BLT) != 0 {
                self.st.engines[EngineId::Bcs.index()].reset();
            }
            return;
        }
        self.st.regs.set(offset, value);
    }

    fn ggtt_entries(&self) -> u32 {
        u32::try_from(self.ggtt.len()).unwrap_or(u32::MAX)
    }

    fn write_ggtt(&mut self, index: u32, pte: Pte) {
        if let Some(e) = self.ggtt.get_mut(index as usize) {
            *e = pte;
        }
    }

    fn read_ggtt(&self, index: u32) -> Pte {
        self.ggtt.get(index as usize).copied().unwrap_or_default()
    }
}

/// A ready-made two-vGPU world on gvt-sim for host tests, property tests,
/// fuzzing and benchmarks (host-only, `std`).
///
/// Graphics memory is 32 MiB (8192 GGTT entries).  vGPU 0 owns GM
/// `[0, 1 MiB)` (aperture) and `[8, 9 MiB)` (high), vGPU 1 owns `[1, 2 MiB)`
/// and `[9, 10 MiB)`; the top 16 MiB is host-reserved and holds each
/// vGPU-engine's shadow area (32 pages: 8 ring, 16 first-level, 8
/// second-level).  Host page numbers are fixed: vGPU `v`'s GM is backed by host
/// pages `[512 v, 512 v + 512)`, its shadows by `[1024 + 64 v, 1024 + 64 v + 64)`.
#[cfg(all(any(test, feature = "fakes"), not(gvt_kmod)))]
pub mod kit {
    extern crate std;
    use core::cell::{Cell, RefCell};
    use core::ops::Range;
    use std::collections::BTreeSet;
    use std::vec;
    use std::vec::Vec;

    use super::super::backend::{Backend, EngineId, Pte};
    use super::super::cmd::{AuditSummary, Limits};
    use super::super::engine::{self, NoPpgtt, StepResult, RING_HEAD};
    use super::super::fakes::FakeHostMemory;
    use super::super::mem::{GmRange, Gma, HostPage, MemError, PAGE_SIZE};
    use super::super::ring::{self, RingShadow, ShadowLayout, SubmitError};
    use super::super::services::HostMemory;
    use super::GvtSim;

    pub const GM_SIZE: u64 = 32 << 20;
    pub const VGPUS: usize = 2;
    pub const VGPU_GM: [[GmRange; 2]; VGPUS] = [
        [GmRange::new(0, 1 << 20), GmRange::new(8 << 20, 1 << 20)],
        [
            GmRange::new(1 << 20, 1 << 20),
            GmRange::new(9 << 20, 1 << 20),
        ],
    ];
    /// Ring pages of the guest rings the kit sets up.
    pub const GUEST_RING_PAGES: u32 = 4;
    pub const HOST_PAGES: u64 = 1024 + 64 * VGPUS as u64;

    /// vGPU `v`'s shadow area for engine `e`.
    pub fn layout(v: usize, e: EngineId) -> ShadowLayout {
        let base =
            ring::host_reserved_range(GM_SIZE).base + ((v * 2 + e.index()) as u64) * 32 * PAGE_SIZE;
        ShadowLayout {
            base,
            ring_pages: 8,
            l1_pages: 16,
            l2_pages: 8,
        }
    }

    /// Host page behind a guest GM address of the kit (None: not guest GM).
    pub fn host_page(gma: Gma) -> Option<HostPage> {
        for (v, ranges) in VGPU_GM.iter().enumerate() {
            for (i, r) in ranges.iter().enumerate() {
                if r.contains(gma, 1) {
                    return Some(HostPage(
                        512 * v as u64 + 256 * i as u64 + (gma - r.base) / PAGE_SIZE,
                    ));
                }
            }
        }
        None
    }

    /// Host pages backing vGPU `v`'s graphics memory.
    pub fn vgpu_pages(v: usize) -> Range<u64> {
        512 * v as u64..512 * v as u64 + 512
    }
    /// Host pages backing vGPU `v`'s shadow areas.
    pub fn shadow_pages(v: usize) -> Range<u64> {
        1024 + 64 * v as u64..1024 + 64 * v as u64 + 64
    }

    /// A GGTT with every vGPU's GM mapped (shadows are mapped by [`map_shadows`]).
    pub fn new_ggtt() -> Vec<Pte> {
        let mut g = vec![Pte::default(); (GM_SIZE / PAGE_SIZE) as usize];
        for (i, e) in g.iter_mut().enumerate() {
            if let Some(p) = host_page(i as u64 * PAGE_SIZE) {
                *e = Pte::new(p);
            }
        }
        g
    }

    pub fn new_host() -> FakeHostMemory {
        FakeHostMemory::new(HOST_PAGES)
    }

    /// Map every shadow area through the backend (as the module does at init).
    pub fn map_shadows<B: Backend>(b: &mut B) {
        for v in 0..VGPUS {
            for e in EngineId::ALL {
                let pages: Vec<HostPage> = (0..32)
                    .map(|i| HostPage(shadow_pages(v).start + e.index() as u64 * 32 + i))
                    .collect();
                ring::map_shadow(b, &layout(v, e), &pages).expect("shadow maps");
            }
        }
    }

    /// Write dwords at a guest GM address (the guest's CPU through the aperture).
    pub fn write_dwords<H: HostMemory>(host: &mut H, gma: Gma, d: &[u32]) {
        for (i, w) in d.iter().enumerate() {
            let a = gma + 4 * i as u64;
            let p = host_page(a).expect("guest GM");
            host.write(p, (a % PAGE_SIZE) as usize, &w.to_le_bytes())
                .expect("write");
        }
    }
    pub fn read_dword<H: HostMemory>(host: &H, gma: Gma) -> u32 {
        let mut b = [0u8; 4];
        host.read(
            host_page(gma).expect("guest GM"),
            (gma % PAGE_SIZE) as usize,
            &mut b,
        )
        .expect("read");
        u32::from_le_bytes(b)
    }
    pub fn read_byte<H: HostMemory>(host: &H, gma: Gma) -> u8 {
        let mut b = [0u8; 1];
        host.read(
            host_page(gma).expect("guest GM"),
            (gma % PAGE_SIZE) as usize,
            &mut b,
        )
        .expect("read");
        b[0]
    }

    /// A guest driver's view: its rings, its software tail, its shadows.
    pub struct Guest {
        pub v: usize,
        pub shadows: [RingShadow; 2],
        pub tail: [u32; 2],
    }

    impl Guest {
        /// vGPU `v` with a 4-page ring per engine at the start of its aperture
        /// (RCS at +0, BCS at +0x8000), configured and empty.
        pub fn new(v: usize) -> Self {
            let mut g = Self {
                v,
                shadows: [
                    RingShadow::new(EngineId::Rcs, layout(v, EngineId::Rcs)),
                    RingShadow::new(EngineId::Bcs, layout(v, EngineId::Bcs)),
                ],
                tail: [0; 2],
            };
            for e in EngineId::ALL {
                g.shadows[e.index()]
                    .configure(g.ring_gma(e) as u32, engine::ring_ctl(GUEST_RING_PAGES), 0)
                    .expect("ring fits");
            }
            g
        }
        pub fn gm(&self) -> &'static [GmRange] {
            &VGPU_GM[self.v]
        }
        pub fn ring_gma(&self, e: EngineId) -> Gma {
            VGPU_GM[self.v][0].base + e.index() as u64 * 0x8000
        }
        /// Put commands in the guest ring at its software tail (no submission).
        pub fn push<H: HostMemory>(&mut self, host: &mut H, e: EngineId, cmds: &[u32]) {
            let size = GUEST_RING_PAGES * PAGE_SIZE as u32;
            let base = self.ring_gma(e);
            for c in cmds {
                let t = &mut self.tail[e.index()];
                write_dwords(host, base + *t as u64, &[*c]);
                *t = (*t + 4) % size;
            }
        }
        /// The guest's TAIL write.
        pub fn submit<B: Backend, H: HostMemory>(
            &mut self,
            b: &B,
            host: &mut H,
            e: EngineId,
        ) -> Result<AuditSummary, SubmitError> {
            let t = self.tail[e.index()];
            self.shadows[e.index()].submit(
                b,
                host,
                None::<&NoPpgtt>,
                self.gm(),
                t,
                &Limits::DEFAULT,
            )
        }
        /// Schedule this vGPU on `e`: load its shadow ring, run, retire.
        pub fn execute<H: HostMemory>(
            &mut self,
            sim: &mut GvtSim<'_>,
            host: &mut H,
            e: EngineId,
            budget: u32,
        ) -> StepResult {
            let s = &mut self.shadows[e.index()];
            s.load(sim);
            let r = sim.run(e, host, None::<&NoPpgtt>, budget);
            let head = sim.read_reg(e.mmio_base() + RING_HEAD);
            s.retire(head);
            r
        }
    }

    /// A run's commands retired and status (its cost aside).
    pub fn es(r: StepResult) -> (u32, engine::StepStatus) {
        (r.executed, r.status)
    }

    impl Guest {
        /// Schedule this vGPU on `e` and run it to idle in runs of at most
        /// `slice_ns` of engine time each (the scheduler's slices), calling
        /// `each` with every run's result; then retire.  Stops after
        /// `max_runs` runs.  Returns the last result and the total cost.
        pub fn execute_sliced<H: HostMemory>(
            &mut self,
            sim: &mut GvtSim<'_>,
            host: &mut H,
            e: EngineId,
            slice_ns: u64,
            max_runs: u32,
            mut each: impl FnMut(&StepResult),
        ) -> (StepResult, u64) {
            let s = &mut self.shadows[e.index()];
            s.load(sim);
            let mut total = 0u64;
            let mut last = StepResult {
                executed: 0,
                status: engine::StepStatus::Idle,
                cost_ns: 0,
            };
            for _ in 0..max_runs {
                last = sim.run_for(
                    e,
                    host,
                    None::<&NoPpgtt>,
                    engine::Budget {
                        cmds: u32::MAX,
                        ns: slice_ns,
                    },
                );
                total = total.saturating_add(last.cost_ns);
                each(&last);
                if last.status != engine::StepStatus::Budget {
                    break;
                }
            }
            let head = sim.read_reg(e.mmio_base() + RING_HEAD);
            s.retire(head);
            (last, total)
        }
    }

    /// A host memory that records every page read and written, and counts
    /// the accesses and bytes (what the engine's cost model must cover).
    pub struct Recording<H> {
        pub inner: H,
        pub reads: RefCell<BTreeSet<u64>>,
        pub writes: BTreeSet<u64>,
        /// Read accesses and bytes read.
        pub read_io: Cell<(u64, u64)>,
        /// Write accesses and bytes written.
        pub write_io: (u64, u64),
    }

    impl<H> Recording<H> {
        pub fn new(inner: H) -> Self {
            Self {
                inner,
                reads: RefCell::new(BTreeSet::new()),
                writes: BTreeSet::new(),
                read_io: Cell::new((0, 0)),
                write_io: (0, 0),
            }
        }
        pub fn clear(&mut self) {
            self.reads.borrow_mut().clear();
            self.writes.clear();
            self.read_io.set((0, 0));
            self.write_io = (0, 0);
        }
        /// What the accesses counted since the last [`Recording::clear`]
        /// cost by `m`, every access priced with the bytes rounded down:
        /// never more than an engine that charges each access it makes.
        pub fn io_cost(&self, m: &engine::CostModel) -> u64 {
            let (rc, rb) = self.read_io.get();
            let (wc, wb) = self.write_io;
            (rc + wc) * m.access_ns + (rb + wb) * m.kib_ns / 1024
        }
    }

    impl<H: HostMemory> HostMemory for Recording<H> {
        fn read(&self, page: HostPage, offset: usize, buf: &mut [u8]) -> Result<(), MemError> {
            self.reads.borrow_mut().insert(page.0);
            let (c, b) = self.read_io.get();
            self.read_io.set((c + 1, b + buf.len() as u64));
            self.inner.read(page, offset, buf)
        }
        fn write(&mut self, page: HostPage, offset: usize, data: &[u8]) -> Result<(), MemError> {
            self.writes.insert(page.0);
            self.write_io = (self.write_io.0 + 1, self.write_io.1 + data.len() as u64);
            self.inner.write(page, offset, data)
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::super::backend::{Backend, EngineId};
    use super::super::cmd::encode::*;
    use super::super::cmd::{self, Level, Reject, Space, Surface};
    use super::super::engine::*;
    use super::super::fakes::FakeHostMemory;
    use super::super::irq::{self, GTIER, GTIIR, GTIMR};
    use super::super::mem::{HostPage, PAGE_SIZE};
    use super::super::services::HostMemory;
    use super::kit::*;
    use super::*;

    const RING: u64 = 0x0; // vGPU 0 aperture start: the raw (unaudited) ring
    const BB: u64 = 0x10000;
    const DATA: u64 = 0x20000;
    const HIGH: u64 = 8 << 20; // vGPU 0's high GM

    /// Program `e`'s ring at `RING` directly with `cmds` and run it.
    fn direct(
        sim: &mut GvtSim<'_>,
        host: &mut FakeHostMemory,
        e: EngineId,
        cmds: &[u32],
        budget: u32,
    ) -> StepResult {
        write_dwords(host, RING, cmds);
        let b = e.mmio_base();
        sim.write_reg(b + RING_CTL, 0);
        sim.write_reg(b + RING_START, RING as u32);
        sim.write_reg(b + RING_HEAD, 0);
        sim.write_reg(b + RING_TAIL, 4 * cmds.len() as u32);
        sim.write_reg(b + RING_CTL, ring_ctl(GUEST_RING_PAGES));
        sim.run(e, host, None::<&NoPpgtt>, budget)
    }

    fn cat(parts: &[&[u32]]) -> Vec<u32> {
        let mut v: Vec<u32> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        if v.len() % 2 == 1 {
            v.push(cmd::MI_NOOP);
        }
        v
    }

    #[test]
    fn store_data_dword_and_qword_and_head_advances() {
        let (mut host, mut ggtt) = (new_host(), new_ggtt());
        let mut sim = GvtSim::new(&mut ggtt);
        let s = cat(&[
            &sdi(Space::Ggtt, DATA, 0xdead_beef),
            &sdi_qw(Space::Ggtt, HIGH + 8, [1, 2]),
        ]);
        let r = direct(&mut sim, &mut host, EngineId::Rcs, &s, 100);
        assert_eq!(es(r), (3, StepStatus::Idle));
        assert_eq!(read_dword(&host, DATA), 0xdead_beef);
        assert_eq!(
            (read_dword(&host, HIGH + 8), read_dword(&host, HIGH + 12)),
            (1, 2)
        );
        assert_eq!(sim.read_reg(0x2000 + RING_HEAD), 4 * s.len() as u32);
        // The timestamp is the context's engine time: three commands, their
        // fetches (4 + 5 + 1 dwords) and two stores (4 and 8 bytes).
        let m = CostModel::DEFAULT;
        let cost = 3 * m.cmd_ns + 10 * m.access(4) + m.access(4) + m.access(8);
        assert_eq!(r.cost_ns, cost);
        assert_eq!(sim.read_reg(0x2000 + RING_TIMESTAMP), cost as u32);
    }

    #[test]
    fn budget_stops_at_command_boundaries() {
        let (mut host, mut ggtt) = (new_host(), new_ggtt());
        let mut sim = GvtSim::new(&mut ggtt);
        let s = cat(&[
            &sdi(Space::Ggtt, DATA, 1),
            &sdi(Space::Ggtt, DATA + 4, 2),
            &sdi(Space::Ggtt, DATA + 8, 3),
        ]);
        let r = direct(&mut sim, &mut host, EngineId::Bcs, &s, 1);
        assert_eq!(es(r), (1, StepStatus::Budget));
        assert_eq!(sim.engine(EngineId::Bcs).head(), 16);
        assert_eq!(read_dword(&host, DATA + 4), 0);
        let r = sim.run(EngineId::Bcs, &mut host, None::<&NoPpgtt>, 1);
        assert_eq!(r.status, StepStatus::Budget);
        assert_eq!(
            (read_dword(&host, DATA + 4), read_dword(&host, DATA + 8)),
            (2, 0)
        );
        let r = sim.run(EngineId::Bcs, &mut host, None::<&NoPpgtt>, 10);
        assert_eq!(es(r), (1, StepStatus::Idle));
        assert_eq!(read_dword(&host, DATA + 8), 3);
    }

    #[test]
    fn color_fill_writes_exactly_the_rectangle() {
        let (mut host, mut ggtt) = (new_host(), new_ggtt());
        let mut sim = GvtSim::new(&mut ggtt);
        let pitch = 64 * 4; // 64 pixels per row
        let s = cat(&[&color_blt(DATA, pitch, (3, 2, 10, 6), 0x00ff_8040)]);
        assert_eq!(
            direct(&mut sim, &mut host, EngineId::Bcs, &s, 10).status,
            StepStatus::Idle
        );
        for y in 0..8u64 {
            for x in 0..16u64 {
                let v = read_dword(&host, DATA + y * pitch as u64 + 4 * x);
                let inside = (3..10).contains(&x) && (2..6).contains(&y);
                assert_eq!(v, if inside { 0x00ff_8040 } else { 0 }, "pixel ({x},{y})");
            }
        }
    }

    #[test]
    fn color_fill_8_and_16_bpp() {
        let (mut host, mut ggtt) = (new_host(), new_ggtt());
        let mut sim = GvtSim::new(&mut ggtt);
        // 8 bpp: depth 0, 16 bpp (565): depth 1; 6-dword form with a 32-bit address.
        let c8 = [
            cmd::XY_COLOR_BLT | 4,
            cmd::BLT_ROP_COLOR_COPY | 16,
            (1 << 16) | 2,
            (3 << 16) | 5,
            DATA as u32,
            0xab,
        ];
        let c16 = [
            cmd::XY_COLOR_BLT | 4,
            (1 << 24) | cmd::BLT_ROP_COLOR_COPY | 16,
            0,
            (1 << 16) | 2,
            (DATA + 0x100) as u32,
            0x1234,
        ];
        let s = cat(&[&c8, &c16]);
        assert_eq!(
            direct(&mut sim, &mut host, EngineId::Bcs, &s, 10).status,
            StepStatus::Idle
        );
        for y in 0..4u64 {
            for x in 0..8u64 {
                let inside = (2..5).contains(&x) && (1..3).contains(&y);
                assert_eq!(
                    read_byte(&host, DATA + y * 16 + x),
                    if inside { 0xab } else { 0 }
                );
            }
        }
        assert_eq!(read_dword(&host, DATA + 0x100), 0x1234_1234);
        assert_eq!(read_dword(&host, DATA + 0x104), 0);
    }

    #[test]
    fn src_copy_copies_the_rectangle_across_pages() {
        let (mut host, mut ggtt) = (new_host(), new_ggtt());
        let mut sim = GvtSim::new(&mut ggtt);
        let (src, dst, pitch) = (DATA, HIGH, 2048u32); // two rows per page: rows cross pages
        for y in 0..8u64 {
            for x in 0..8u64 {
                write_dwords(
                    &mut host,
                    src + y * pitch as u64 + 4 * x,
                    &[(y << 8 | x) as u32 | 0x5500_0000],
                );
            }
        }
        // copy src (2,1)-(6,7) to dst (1,3)
        let s = cat(&[&src_copy_blt(dst, pitch, (1, 3, 5, 9), src, pitch, (2, 1))]);
        assert_eq!(
            direct(&mut sim, &mut host, EngineId::Bcs, &s, 10).status,
            StepStatus::Idle
        );
        for y in 0..10u64 {
            for x in 0..8u64 {
                let v = read_dword(&host, dst + y * pitch as u64 + 4 * x);
                let want = if (1..5).contains(&x) && (3..9).contains(&y) {
                    (((y - 2) << 8) | (x + 1)) as u32 | 0x5500_0000
                } else {
                    0
                };
                assert_eq!(v, want, "dst ({x},{y})");
            }
        }
    }

    #[test]
    fn post_sync_writes_and_notify_interrupts() {
        let (mut host, mut ggtt) = (new_host(), new_ggtt());
        let mut sim = GvtSim::new(&mut ggtt);
        sim.write_reg(GTIMR, 0);
        sim.write_reg(GTIER, !0);
        let ts = cmd::PIPE_CONTROL | 4;
        let s = cat(&[
            &pipe_control_qw(Space::Ggtt, DATA, [7, 8]),
            &[
                ts,
                cmd::PIPE_CONTROL_WRITE_TIMESTAMP
                    | cmd::PIPE_CONTROL_GLOBAL_GTT
                    | cmd::PIPE_CONTROL_NOTIFY,
                (DATA + 8) as u32,
                0,
                0,
                0,
            ],
        ]);
        assert_eq!(
            direct(&mut sim, &mut host, EngineId::Rcs, &s, 10).status,
            StepStatus::Idle
        );
        assert_eq!(
            (read_dword(&host, DATA), read_dword(&host, DATA + 4)),
            (7, 8)
        );
        let m = CostModel::DEFAULT;
        let first = m.cmd_ns + 6 * m.access(4) + m.access(8);
        assert_eq!(
            read_dword(&host, DATA + 8),
            first as u32,
            "timestamp = engine time of the commands before it"
        );
        assert_eq!(sim.read_reg(GTIIR), irq::RCS_PIPECTL_NOTIFY);
        let s = cat(&[&flush_dw_store(Space::Ggtt, DATA + 16, 0x42, true)]);
        assert_eq!(
            direct(&mut sim, &mut host, EngineId::Bcs, &s, 10).status,
            StepStatus::Idle
        );
        assert_eq!(read_dword(&host, DATA + 16), 0x42);
        assert_eq!(
            sim.read_reg(GTIIR),
            irq::RCS_PIPECTL_NOTIFY | irq::BCS_FLUSHDW_NOTIFY
        );
    }

    #[test]
    fn user_interrupt_follows_imr_and_ier() {
        let (mut host, mut ggtt) = (new_host(), new_ggtt());
        let mut sim = GvtSim::new(&mut ggtt);
        let s = [cmd::MI_USER_INTERRUPT, cmd::MI_NOOP];
        direct(&mut sim, &mut host, EngineId::Rcs, &s, 10);
        assert_eq!(sim.read_reg(GTIIR), 0, "masked at reset");
        sim.write_reg(GTIMR, !irq::RCS_USER_INTERRUPT);
        direct(&mut sim, &mut host, EngineId::Rcs, &s, 10);
        assert_eq!(sim.read_reg(GTIIR), irq::RCS_USER_INTERRUPT);
        assert!(!sim.irq_asserted());
        sim.write_reg(GTIER, irq::RCS_USER_INTERRUPT);
        assert!(sim.irq_asserted());
        sim.write_reg(GTIIR, irq::RCS_USER_INTERRUPT);
        assert!(!sim.irq_asserted());
        sim.write_reg(GTIMR, !irq::BCS_USER_INTERRUPT);
        sim.write_reg(GTIER, irq::BCS_USER_INTERRUPT);
        direct(&mut sim, &mut host, EngineId::Bcs, &s, 10);
        assert_eq!(sim.read_reg(GTIIR), irq::BCS_USER_INTERRUPT);
        assert!(sim.irq_asserted());
    }

    /// ring → BB1 (first level) → call BB2 (second level) → return to BB1 →
    /// chain to BB3 → return to the ring.
    #[test]
    fn batch_chaining_and_return() {
        let (mut host, mut ggtt) = (new_host(), new_ggtt());
        let mut sim = GvtSim::new(&mut ggtt);
        let (bb1, bb2, bb3) = (BB, BB + 0x1000, HIGH + 0x3000);
        write_dwords(
            &mut host,
            bb1,
            &cat(&[
                &sdi(Space::Ggtt, DATA, 1),
                &bb_start(Space::Ggtt, bb2, true),
                &sdi(Space::Ggtt, DATA + 8, 3),
                &bb_start(Space::Ggtt, bb3, false),
            ]),
        );
        write_dwords(
            &mut host,
            bb2,
            &[
                sdi(Space::Ggtt, DATA + 4, 2).as_slice(),
                &[cmd::MI_BATCH_BUFFER_END],
            ]
            .concat(),
        );
        write_dwords(
            &mut host,
            bb3,
            &[
                sdi(Space::Ggtt, DATA + 12, 4).as_slice(),
                &[cmd::MI_BATCH_BUFFER_END],
            ]
            .concat(),
        );
        let s = cat(&[
            &bb_start(Space::Ggtt, bb1, false),
            &sdi(Space::Ggtt, DATA + 16, 5),
        ]);
        // Step into the second-level batch: HEAD stays on the ring's BB_START.
        let r1 = direct(&mut sim, &mut host, EngineId::Rcs, &s, 3);
        let r = r1;
        assert_eq!(r.status, StepStatus::Budget);
        assert_eq!(sim.engine(EngineId::Rcs).level(), Level::Second);
        assert_eq!(sim.engine(EngineId::Rcs).head(), 0);
        let r = sim.run(EngineId::Rcs, &mut host, None::<&NoPpgtt>, 100);
        assert_eq!(r.status, StepStatus::Idle);
        for (i, want) in [1, 2, 3, 4, 5].iter().enumerate() {
            assert_eq!(read_dword(&host, DATA + 4 * i as u64), *want);
        }
        assert_eq!(sim.engine(EngineId::Rcs).head(), 4 * s.len() as u32);
        assert_eq!(sim.engine(EngineId::Rcs).level(), Level::Ring);
        // 1 BB_START, SDI, BB_START(2nd), SDI, BBE, SDI, BB_START(chain), SDI, BBE, SDI, NOOP
        assert_eq!(r1.executed + r.executed, 11);
        assert_eq!(
            sim.engine(EngineId::Rcs).timestamp(),
            r1.cost_ns + r.cost_ns,
            "the context's own engine time"
        );
        assert!(r1.cost_ns + r.cost_ns >= 11 * CostModel::DEFAULT.cmd_ns);
    }

    #[test]
    fn ring_wraps_around() {
        let (mut host, mut ggtt) = (new_host(), new_ggtt());
        let mut sim = GvtSim::new(&mut ggtt);
        let size = (GUEST_RING_PAGES as u64) * PAGE_SIZE;
        // An SDI that starts 8 bytes before the end of the ring and wraps.
        let c = sdi(Space::Ggtt, DATA, 0x77);
        write_dwords(&mut host, RING + size - 8, &c[..2]);
        write_dwords(&mut host, RING, &[c[2], c[3], cmd::MI_NOOP, cmd::MI_NOOP]);
        let b = 0x2000;
        sim.write_reg(b + RING_START, RING as u32);
        sim.write_reg(b + RING_HEAD, (size - 8) as u32);
        sim.write_reg(b + RING_TAIL, 16);
        sim.write_reg(b + RING_CTL, ring_ctl(GUEST_RING_PAGES));
        let r = sim.run(EngineId::Rcs, &mut host, None::<&NoPpgtt>, 10);
        assert_eq!(es(r), (3, StepStatus::Idle));
        assert_eq!(read_dword(&host, DATA), 0x77);
        assert_eq!(sim.engine(EngineId::Rcs).head(), 16);
    }

    #[test]
    fn partial_command_waits_for_tail() {
        let (mut host, mut ggtt) = (new_host(), new_ggtt());
        let mut sim = GvtSim::new(&mut ggtt);
        let c = sdi(Space::Ggtt, DATA, 9);
        write_dwords(&mut host, RING, &c);
        let b = 0x2000;
        sim.write_reg(b + RING_START, RING as u32);
        sim.write_reg(b + RING_TAIL, 8);
        sim.write_reg(b + RING_CTL, ring_ctl(1));
        assert_eq!(
            es(sim.run(EngineId::Rcs, &mut host, None::<&NoPpgtt>, 10)),
            (0, StepStatus::Idle)
        );
        sim.write_reg(b + RING_TAIL, 16);
        assert_eq!(
            es(sim.run(EngineId::Rcs, &mut host, None::<&NoPpgtt>, 10)),
            (1, StepStatus::Idle)
        );
        assert_eq!(read_dword(&host, DATA), 9);
    }

    #[test]
    fn faults_stop_the_engine_raise_error_and_reset_recovers() {
        let (mut host, mut ggtt) = (new_host(), new_ggtt());
        let mut sim = GvtSim::new(&mut ggtt);
        sim.write_reg(GTIMR, 0);
        sim.write_reg(GTIER, !0);
        let unmapped = 5 << 20; // nobody's GM: no GGTT entry
        let s = cat(&[
            &sdi(Space::Ggtt, DATA, 1),
            &sdi(Space::Ggtt, unmapped, 2),
            &sdi(Space::Ggtt, DATA + 4, 3),
        ]);
        let r = direct(&mut sim, &mut host, EngineId::Rcs, &s, 10);
        assert_eq!(
            es(r),
            (
                1,
                StepStatus::Faulted(Fault::PageFault {
                    space: Space::Ggtt,
                    addr: unmapped
                })
            )
        );
        assert_eq!(sim.read_reg(0x2000 + RING_EIR), EIR_PAGE_TABLE);
        assert_eq!(sim.read_reg(0x2000 + RING_IPEHR), s[4]);
        assert_eq!(
            sim.read_reg(0x2000 + RING_HEAD),
            16,
            "HEAD stays on the faulting command"
        );
        assert_eq!(sim.read_reg(GTIIR), irq::RCS_ERROR_INTERRUPT);
        assert!(matches!(
            sim.run(EngineId::Rcs, &mut host, None::<&NoPpgtt>, 10)
                .status,
            StepStatus::Faulted(_)
        ));
        assert_eq!(read_dword(&host, DATA + 4), 0);
        sim.write_reg(GDRST, GRDOM_RENDER);
        assert_eq!(sim.engine(EngineId::Rcs).fault(), None);
        assert_eq!(sim.read_reg(0x2000 + RING_CTL), 0);
        assert_eq!(
            sim.run(EngineId::Rcs, &mut host, None::<&NoPpgtt>, 10)
                .status,
            StepStatus::Disabled
        );
        // A PPGTT store without a PPGTT, an unknown opcode, BB_END in the ring,
        // a blit on the render engine, PIPE_CONTROL on the blitter.
        let bad: [(EngineId, Vec<u32>, Fault); 5] = [
            (
                EngineId::Rcs,
                cat(&[&sdi(Space::Ppgtt, DATA, 1)]),
                Fault::PageFault {
                    space: Space::Ppgtt,
                    addr: DATA,
                },
            ),
            (
                EngineId::Rcs,
                cat(&[&[0x1f << 23]]),
                Fault::BadCommand(Reject::UnknownOpcode),
            ),
            (
                EngineId::Bcs,
                cat(&[&[cmd::MI_BATCH_BUFFER_END]]),
                Fault::BadCommand(Reject::BatchEndInRing),
            ),
            (
                EngineId::Rcs,
                cat(&[&color_blt(DATA, 64, (0, 0, 1, 1), 1)]),
                Fault::BadCommand(Reject::WrongEngine),
            ),
            (
                EngineId::Bcs,
                cat(&[&pipe_control_qw(Space::Ggtt, DATA, [1, 1])]),
                Fault::BadCommand(Reject::WrongEngine),
            ),
        ];
        for (e, s, f) in bad {
            sim.write_reg(GDRST, GRDOM_FULL);
            let r = direct(&mut sim, &mut host, e, &s, 10);
            assert_eq!(r.status, StepStatus::Faulted(f));
            let eir = sim.read_reg(e.mmio_base() + RING_EIR);
            assert_ne!(eir, 0);
        }
        assert_eq!(read_dword(&host, DATA), 1);
    }

    #[test]
    fn second_level_inside_second_level_faults() {
        let (mut host, mut ggtt) = (new_host(), new_ggtt());
        let mut sim = GvtSim::new(&mut ggtt);
        write_dwords(&mut host, BB, &bb_start(Space::Ggtt, BB + 0x100, true));
        write_dwords(
            &mut host,
            BB + 0x100,
            &bb_start(Space::Ggtt, BB + 0x200, true),
        );
        let r = direct(
            &mut sim,
            &mut host,
            EngineId::Rcs,
            &cat(&[&bb_start(Space::Ggtt, BB, false)]),
            10,
        );
        assert_eq!(
            r.status,
            StepStatus::Faulted(Fault::BadCommand(Reject::ChainTooDeep))
        );
    }

    /// A page-table double: local addresses `[0, n pages)` map to host pages.
    struct TablePpgtt(Vec<Option<HostPage>>);
    impl AddressSpace for TablePpgtt {
        fn translate<H: HostMemory>(&self, _h: &H, addr: u64) -> Option<(HostPage, usize)> {
            let p = (*self.0.get(usize::try_from(addr / PAGE_SIZE).ok()?)?)?;
            Some((p, (addr % PAGE_SIZE) as usize))
        }
    }

    #[test]
    fn ppgtt_batch_and_stores_go_through_the_local_address_space() {
        let (mut host, mut ggtt) = (new_host(), new_ggtt());
        let mut sim = GvtSim::new(&mut ggtt);
        // local page 0 → the host page behind GM 0x30000, local page 1 → GM 0x31000
        let pp = TablePpgtt(std::vec![host_page(0x30000), host_page(0x31000)]);
        write_dwords(
            &mut host,
            0x30000,
            &[
                sdi(Space::Ppgtt, 0x1010, 0xabc).as_slice(),
                &sdi(Space::Ggtt, DATA, 0xdef),
                &[cmd::MI_BATCH_BUFFER_END],
            ]
            .concat(),
        );
        let s = cat(&[&bb_start(Space::Ppgtt, 0, false)]);
        write_dwords(&mut host, RING, &s);
        let b = 0x2000;
        sim.write_reg(b + RING_START, RING as u32);
        sim.write_reg(b + RING_HEAD, 0);
        sim.write_reg(b + RING_TAIL, 4 * s.len() as u32);
        sim.write_reg(b + RING_CTL, ring_ctl(1));
        let r = sim.run(EngineId::Rcs, &mut host, Some(&pp), 10);
        assert_eq!(r.status, StepStatus::Idle);
        assert_eq!(read_dword(&host, 0x31010), 0xabc);
        assert_eq!(read_dword(&host, DATA), 0xdef);
    }

    #[test]
    fn lri_writes_registers_but_not_ring_registers() {
        let (mut host, mut ggtt) = (new_host(), new_ggtt());
        let mut sim = GvtSim::new(&mut ggtt);
        let s = cat(&[
            &lri(0x2600, 0x1234),
            &lri(0x2000 + RING_TAIL, 0x40),
            &lri(GDRST, GRDOM_FULL),
        ]);
        let r = direct(&mut sim, &mut host, EngineId::Rcs, &s, 10);
        assert_eq!(r.status, StepStatus::Idle);
        assert_eq!(sim.read_reg(0x2600), 0x1234);
        assert_eq!(sim.read_reg(0x2000 + RING_TAIL), 4 * s.len() as u32);
        assert_eq!(sim.read_reg(0x2000 + RING_CTL), ring_ctl(GUEST_RING_PAGES));
    }

    #[test]
    fn context_save_restore_resumes_mid_batch() {
        let (mut host, mut ggtt) = (new_host(), new_ggtt());
        let mut sim = GvtSim::new(&mut ggtt);
        write_dwords(
            &mut host,
            BB,
            &[
                sdi(Space::Ggtt, DATA, 1).as_slice(),
                &sdi(Space::Ggtt, DATA + 4, 2),
                &[cmd::MI_BATCH_BUFFER_END],
            ]
            .concat(),
        );
        let s = cat(&[&bb_start(Space::Ggtt, BB, false)]);
        assert_eq!(
            direct(&mut sim, &mut host, EngineId::Rcs, &s, 2).status,
            StepStatus::Budget
        );
        let saved = sim.save_context(EngineId::Rcs);
        sim.write_reg(GDRST, GRDOM_RENDER);
        sim.restore_context(EngineId::Rcs, &saved);
        assert_eq!(
            sim.run(EngineId::Rcs, &mut host, None::<&NoPpgtt>, 10)
                .status,
            StepStatus::Idle
        );
        assert_eq!(
            (read_dword(&host, DATA), read_dword(&host, DATA + 4)),
            (1, 2)
        );
    }

    /// A blit stopped between steps keeps its progress in the context:
    /// saved, replaced by another context's work, restored, it finishes
    /// exactly as an uninterrupted one.
    #[test]
    fn a_blit_is_preempted_mid_command_and_resumes_from_its_context() {
        let (mut host, mut ggtt) = (new_host(), new_ggtt());
        let mut sim = GvtSim::new(&mut ggtt);
        // 64 rows of 4 KiB, 8 KiB apart: 256 KiB, four steps at least.
        let s = cat(&[&color_blt(DATA, 8192, (0, 0, 1024, 64), 0x1234_5678)]);
        let r = direct(&mut sim, &mut host, EngineId::Bcs, &s, 10);
        assert_eq!(r.status, StepStatus::Idle);
        let whole = r.cost_ns;
        let (mut host, mut ggtt) = (new_host(), new_ggtt());
        let mut sim = GvtSim::new(&mut ggtt);
        write_dwords(&mut host, RING, &s);
        let b = EngineId::Bcs.mmio_base();
        sim.write_reg(b + RING_START, RING as u32);
        sim.write_reg(b + RING_TAIL, 4 * s.len() as u32);
        sim.write_reg(b + RING_CTL, ring_ctl(GUEST_RING_PAGES));
        let r = sim.run_for(
            EngineId::Bcs,
            &mut host,
            None::<&NoPpgtt>,
            Budget { cmds: 10, ns: 1 },
        );
        assert_eq!((r.executed, r.status), (0, StepStatus::Budget));
        assert!(sim.engine(EngineId::Bcs).mid_command());
        assert!(
            r.cost_ns <= CostModel::DEFAULT.max_step_ns(),
            "one step: {} ns",
            r.cost_ns
        );
        assert_eq!(
            sim.engine(EngineId::Bcs).head(),
            0,
            "HEAD stays on the blit"
        );
        assert_eq!(read_dword(&host, DATA + 63 * 8192), 0, "not done yet");
        let saved = sim.save_context(EngineId::Bcs);
        // Another context uses the engine meanwhile.
        let other = cat(&[&sdi(Space::Ggtt, HIGH, 0x77)]);
        write_dwords(&mut host, HIGH + 0x1000, &other);
        sim.write_reg(b + RING_CTL, 0);
        sim.write_reg(b + RING_START, (HIGH + 0x1000) as u32);
        sim.write_reg(b + RING_HEAD, 0);
        sim.write_reg(b + RING_TAIL, 4 * other.len() as u32);
        sim.write_reg(b + RING_CTL, ring_ctl(1));
        assert!(
            !sim.engine(EngineId::Bcs).mid_command(),
            "a new ring drops the progress"
        );
        assert_eq!(
            sim.run(EngineId::Bcs, &mut host, None::<&NoPpgtt>, 10)
                .status,
            StepStatus::Idle
        );
        sim.restore_context(EngineId::Bcs, &saved);
        let mut cost = r.cost_ns;
        loop {
            let r = sim.run_for(
                EngineId::Bcs,
                &mut host,
                None::<&NoPpgtt>,
                Budget {
                    cmds: 10,
                    ns: 20_000,
                },
            );
            cost += r.cost_ns;
            if r.status == StepStatus::Idle {
                assert!(r.executed >= 1, "the blit retired");
                break;
            }
            assert_eq!(r.status, StepStatus::Budget);
        }
        for y in 0..65u64 {
            for x in [0u64, 1, 1023, 1024] {
                let want = if y < 64 && x < 1024 { 0x1234_5678 } else { 0 };
                assert_eq!(
                    read_dword(&host, DATA + y * 8192 + 4 * x),
                    want,
                    "({x},{y})"
                );
            }
        }
        assert_eq!(read_dword(&host, HIGH), 0x77);
        // Slicing re-fetches the command per step: a little dearer, never cheaper.
        assert!(cost >= whole, "sliced {cost} ns, whole {whole} ns");
        assert!(
            whole >= 256 * CostModel::DEFAULT.kib_ns,
            "256 KiB written: charged {whole} ns"
        );
    }

    #[test]
    fn backend_ggtt_and_sparse_registers() {
        let mut ggtt = new_ggtt();
        let mut sim = GvtSim::new(&mut ggtt);
        assert_eq!(sim.ggtt_entries(), 8192);
        sim.write_ggtt(7, Pte::new(HostPage(3)));
        assert_eq!(sim.read_ggtt(7).page(), HostPage(3));
        sim.write_ggtt(1 << 20, Pte::new(HostPage(3))); // ignored, no panic
        assert_eq!(sim.read_ggtt(1 << 20), Pte::default());
        for i in 0..(OTHER_REGS as u32 + 3) {
            sim.write_reg(0x100000 + 8 * i, i);
        }
        assert_eq!(sim.read_reg(0x100008), 1);
        assert_eq!(sim.dropped_reg_writes(), 3);
        assert_eq!(sim.read_reg(GDRST), 0);
    }

    /// vGPU 0's graphics memory as one byte vector (aperture, then high).
    fn gm_bytes<H: HostMemory>(host: &H) -> Vec<u8> {
        let mut v = std::vec![0u8; 512 * PAGE_SIZE as usize];
        for (i, p) in vgpu_pages(0).enumerate() {
            host.read(
                HostPage(p),
                0,
                &mut v[i * PAGE_SIZE as usize..(i + 1) * PAGE_SIZE as usize],
            )
            .unwrap();
        }
        v
    }

    /// GM address of byte `i` of [`gm_bytes`].
    fn gm_addr(i: usize) -> u64 {
        let (r, off) = if i < (1 << 20) {
            (VGPU_GM[0][0], i)
        } else {
            (VGPU_GM[0][1], i - (1 << 20))
        };
        r.base + off as u64
    }

    /// Audit, then run in slices of `slice` ns (u64::MAX: at once) one
    /// blitter command over a world whose GM holds a pattern.  None when the
    /// auditor refuses it.
    fn run_blit(cmdw: &[u32], slice: u64) -> Option<(Vec<u8>, Recording<FakeHostMemory>, u64)> {
        let mut host = Recording::new(new_host());
        let mut ggtt = new_ggtt();
        let mut sim = GvtSim::new(&mut ggtt);
        map_shadows(&mut sim);
        for (i, p) in vgpu_pages(0).enumerate() {
            let page: Vec<u8> = (0..PAGE_SIZE as usize)
                .map(|j| (i * 7 + j * 13) as u8)
                .collect();
            host.inner.write(HostPage(p), 0, &page).unwrap();
        }
        let mut g = Guest::new(0);
        g.push(&mut host, EngineId::Bcs, &cat(&[cmdw]));
        let before = gm_bytes(&host.inner);
        g.submit(&sim, &mut host, EngineId::Bcs).ok()?;
        host.clear();
        let m = CostModel::DEFAULT;
        let (r, charged) =
            g.execute_sliced(&mut sim, &mut host, EngineId::Bcs, slice, 1 << 20, |r| {
                assert!(
                    slice == u64::MAX || r.cost_ns <= slice + m.max_step_ns(),
                    "run of {} ns in a {slice} ns slice",
                    r.cost_ns
                );
            });
        assert_eq!(r.status, StepStatus::Idle);
        Some((before, host, charged))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..proptest::prelude::ProptestConfig::default() })]
        /// Arbitrary blit geometry: an accepted blit writes exactly its
        /// rectangle's bytes, all inside the span the auditor checked, is
        /// charged at least what it did, and gives the same result however
        /// it is sliced.
        #[test]
        fn accepted_blits_stay_in_their_span_and_are_charged_their_work(
            copy in proptest::bool::ANY,
            dst in 0u64..(2 << 20), src in 0u64..(2 << 20),
            pitch in proptest::prop_oneof![0u32..64, 0u32..0x8000], spitch in 0u32..0x8000,
            (x, y, w, h) in (0u32..300, 0u32..300, 0u32..1500, 0u32..400),
            (sx, sy) in (0u32..300, 0u32..300),
            slice in 2_000u64..300_000,
        ) {
            let dst = gm_addr(dst as usize);
            let src = gm_addr(src as usize);
            let cmdw: Vec<u32> = if copy {
                src_copy_blt(dst, pitch, (x, y, x + w, y + h), src, spitch, (sx, sy)).to_vec()
            } else {
                color_blt(dst, pitch, (x, y, x + w, y + h), 0xC0FF_EE00).to_vec()
            };
            let surf = Surface { base: dst, pitch, x, y };
            let Some((before, host, charged)) = run_blit(&cmdw, slice) else {
                return Ok(());
            };
            let after = gm_bytes(&host.inner);
            let m = CostModel::DEFAULT;
            proptest::prop_assert!(surf.geometry_ok(w, h, 4) || w == 0 || h == 0);
            let bytes = u64::from(w) * 4 * u64::from(h);
            proptest::prop_assert_eq!(host.write_io.1, bytes, "bytes written");
            proptest::prop_assert!(host.io_cost(&m) <= charged + m.cmd_ns, "did {} ns, charged {}", host.io_cost(&m), charged);
            let span = surf.span(w, h, 4);
            for (i, (a, b)) in before.iter().zip(after.iter()).enumerate() {
                if a != b {
                    let at = gm_addr(i);
                    let inside = span.is_some_and(|(f, l)| at >= f && at < f + l);
                    proptest::prop_assert!(inside, "byte at {:#x} written outside the span {:?}", at, span);
                }
            }
            let (_, whole, _) = run_blit(&cmdw, u64::MAX).expect("accepted again");
            proptest::prop_assert!(gm_bytes(&whole.inner) == after, "slicing changed the result");
        }
    }
}
