//! Render (and blitter) context switch between vGPUs (paper §3.2, "Render
//! context switch").
//!
//! The paper's sequence is: 1) save the current I/O register state, 2) flush
//! the current context, 3) save the current context's internal pipeline state
//! with extra commands, 4) restore the new one's, 5) restore the new I/O
//! register state.  Here, per engine:
//!
//! 1. **Flush / wait for idle**: request the ring to stop with `MI_MODE`
//!    (`base + 0x9C`, a masked register: bits 31–16 select which of bits 15–0
//!    a write changes) bit 8 `STOP_RING`, then poll bit 9 `MODE_IDLE` until
//!    the engine reports that every command it fetched has retired and its
//!    caches are written back (Intel semantics).  Bounded by a poll count and
//!    a [`Clock`] deadline; failure is [`CtxError::FlushTimeout`], which the
//!    scheduler treats as a hang of the outgoing vGPU.
//! 2. **Save** the outgoing vGPU's registers (list below) into its image.
//! 3. and 4. gvt-sim has no pipeline state hidden from MMIO, so the extra
//!    save/restore commands of the paper (run from a dedicated ring) are
//!    not needed; a backend that has such state would issue them here.
//! 5. **Restore** the incoming vGPU's image: ring disabled first (`CTL = 0`),
//!    then START, HEAD, TAIL, status page, interrupt mask, mode and — render
//!    only — the PPGTT root (`PP_DIR_DCLV`, `PP_DIR_BASE`): loading
//!    `PP_DIR_BASE` while the ring is stopped is what invalidates the engine's
//!    PPGTT TLB (the paper's TLB flush), then `CTL` (enable), and finally
//!    `STOP_RING` is cleared so the engine fetches again.
//!
//! Saved/restored registers, offsets from the engine's MMIO base
//! (0x2000 render, 0x22000 blitter; docs/gvt-sim.md §7.1):
//!
//! | reg | offset | notes |
//! |---|---|---|
//! | TAIL | 0x30 | shadow-ring tail |
//! | HEAD | 0x34 | where the engine stopped |
//! | START | 0x38 | GGTT address of the (shadow) ring |
//! | CTL | 0x3C | bit 0 enable, bits 12–20 length |
//! | HWS_PGA | 0x80 | hardware status page |
//! | IMR | 0xA8 | per-ring interrupt mask (Intel `RING_IMR`) |
//! | GFX_MODE | 0x29C | ring mode, masked (Intel `RING_MODE_GEN7`, PPGTT enable) |
//! | PP_DIR_DCLV | 0x220 | render only: PPGTT directory valid bits |
//! | PP_DIR_BASE | 0x228 | render only: PPGTT root (the vGPU's shadow PD) |
//!
//! The image of the engine's current owner is stale by design (the hardware
//! holds the live values); writes by the mediator go through
//! [`ContextStore::write_reg`], which updates the image and — for the owner —
//! the hardware.  Every switch is counted and timed with the [`Clock`].

use super::backend::{Backend, EngineId};
use super::services::Clock;

pub use super::engine::{MI_MODE_IDLE, MI_MODE_STOP_RING};
pub use super::regs::ring::{
    CTL as RING_CTL, GFX_MODE as RING_GFX_MODE, HEAD as RING_HEAD, HWS_PGA as RING_HWS_PGA,
    IMR as RING_IMR, MI_MODE as RING_MI_MODE, PP_DIR_BASE as RING_PP_DIR_BASE,
    PP_DIR_DCLV as RING_PP_DIR_DCLV, START as RING_START, TAIL as RING_TAIL,
};

/// `RING_CTL` enable bit.
pub const CTL_ENABLE: u32 = super::engine::RING_VALID;

/// Masked-register write: set `bits`.
pub const fn masked_set(bits: u32) -> u32 {
    (bits << 16) | bits
}
/// Masked-register write: clear `bits`.
pub const fn masked_clear(bits: u32) -> u32 {
    bits << 16
}

/// The registers of a context image, in restore order (CTL is written
/// twice: 0 first, the saved value last).
const CTX_REGS: [u32; 9] = [
    RING_START,
    RING_HEAD,
    RING_TAIL,
    RING_HWS_PGA,
    RING_IMR,
    RING_GFX_MODE,
    RING_PP_DIR_DCLV,
    RING_PP_DIR_BASE,
    RING_CTL,
];
/// Number of registers in an image.
pub const CTX_NREGS: usize = CTX_REGS.len();

const fn is_masked(off: u32) -> bool {
    off == RING_GFX_MODE
}
const fn applies(e: EngineId, off: u32) -> bool {
    match e {
        EngineId::Rcs => true,
        EngineId::Bcs => off != RING_PP_DIR_DCLV && off != RING_PP_DIR_BASE,
    }
}
fn reg_index(off: u32) -> Option<usize> {
    CTX_REGS.iter().position(|r| *r == off)
}

/// A vGPU's saved state of one engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContextImage {
    regs: [u32; CTX_NREGS],
}

impl ContextImage {
    /// Ring disabled, everything zero.
    pub const EMPTY: ContextImage = ContextImage {
        regs: [0; CTX_NREGS],
    };
    pub fn get(&self, off: u32) -> Option<u32> {
        reg_index(off).and_then(|i| self.regs.get(i)).copied()
    }
    fn set(&mut self, off: u32, v: u32) -> bool {
        match reg_index(off).and_then(|i| self.regs.get_mut(i)) {
            Some(r) => {
                *r = if is_masked(off) { v & 0xffff } else { v };
                true
            }
            None => false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtxError {
    /// The engine did not report idle after STOP_RING: the outgoing context
    /// is considered hung.
    FlushTimeout,
    /// Not a context register / bad slot.
    BadArg,
}

/// Context-switch figures of one engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwitchStats {
    pub switches: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    pub last_ns: u64,
    pub flush_timeouts: u64,
}

/// Flush limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtxConfig {
    /// Most `MI_MODE` polls while waiting for idle.
    pub max_polls: u32,
    /// Most time spent waiting for idle (ns, by the clock).
    pub flush_timeout_ns: u64,
}

impl CtxConfig {
    pub const DEFAULT: CtxConfig = CtxConfig {
        max_polls: 1000,
        flush_timeout_ns: 10_000_000,
    };
}

/// Images of `N` vGPU slots on both engines, and who owns each engine.
pub struct ContextStore<const N: usize> {
    images: [[ContextImage; N]; EngineId::COUNT],
    owner: [Option<usize>; EngineId::COUNT],
    stats: [SwitchStats; EngineId::COUNT],
    cfg: CtxConfig,
}

impl<const N: usize> ContextStore<N> {
    pub const fn new(cfg: CtxConfig) -> Self {
        Self {
            images: [[ContextImage::EMPTY; N]; EngineId::COUNT],
            owner: [None; EngineId::COUNT],
            stats: [SwitchStats {
                switches: 0,
                total_ns: 0,
                max_ns: 0,
                last_ns: 0,
                flush_timeouts: 0,
            }; EngineId::COUNT],
            cfg,
        }
    }

    /// The slot whose context is loaded on `e`.
    pub fn owner(&self, e: EngineId) -> Option<usize> {
        self.owner.get(e.index()).copied().flatten()
    }
    pub fn stats(&self, e: EngineId) -> SwitchStats {
        self.stats.get(e.index()).copied().unwrap_or_default()
    }
    /// Saved image of `slot` on `e` (stale while `slot` owns `e`).
    pub fn image(&self, e: EngineId, slot: usize) -> Option<&ContextImage> {
        self.images.get(e.index()).and_then(|a| a.get(slot))
    }

    /// Mediator write of a context register of `slot` on `e` (e.g. the
    /// shadow ring START/CTL, a new TAIL after a submission, the shadow
    /// PPGTT root).  Goes to the hardware too when `slot` owns `e`.
    pub fn write_reg<B: Backend>(
        &mut self,
        b: &mut B,
        e: EngineId,
        slot: usize,
        off: u32,
        val: u32,
    ) -> Result<(), CtxError> {
        if !applies(e, off) {
            return Err(CtxError::BadArg);
        }
        let img = self
            .images
            .get_mut(e.index())
            .and_then(|a| a.get_mut(slot))
            .ok_or(CtxError::BadArg)?;
        if !img.set(off, val) {
            return Err(CtxError::BadArg);
        }
        if self.owner(e) == Some(slot) {
            let v = if is_masked(off) {
                0xffff_0000 | (val & 0xffff)
            } else {
                val
            };
            b.write_reg(e.mmio_base().wrapping_add(off), v);
        }
        Ok(())
    }

    /// Current value of a context register of `slot` on `e`: from the
    /// hardware for the owner, from the image otherwise.
    pub fn read_reg<B: Backend>(
        &self,
        b: &mut B,
        e: EngineId,
        slot: usize,
        off: u32,
    ) -> Option<u32> {
        if !applies(e, off) {
            return None;
        }
        if self.owner(e) == Some(slot) {
            let v = b.read_reg(e.mmio_base().wrapping_add(off));
            return Some(if is_masked(off) { v & 0xffff } else { v });
        }
        self.image(e, slot).and_then(|i| i.get(off))
    }

    /// Switch `e` to `to` (None: leave it without a vGPU context).  A no-op
    /// when `to` already owns it.  On [`CtxError::FlushTimeout`] nothing was
    /// saved or restored: the caller resets the engine and calls
    /// [`ContextStore::engine_reset`], then may switch again.
    pub fn switch<B: Backend, C: Clock>(
        &mut self,
        b: &mut B,
        clock: &C,
        e: EngineId,
        to: Option<usize>,
    ) -> Result<(), CtxError> {
        if let Some(t) = to {
            if t >= N {
                return Err(CtxError::BadArg);
            }
        }
        let from = self.owner(e);
        if from == to {
            return Ok(());
        }
        let t0 = clock.now_ns();
        let base = e.mmio_base();
        let mi_mode = base.wrapping_add(RING_MI_MODE);
        if from.is_some() {
            // 1. flush: stop the ring and wait for idle.
            b.write_reg(mi_mode, masked_set(MI_MODE_STOP_RING));
            if !self.wait_idle(b, clock, mi_mode, t0) {
                if let Some(s) = self.stats.get_mut(e.index()) {
                    s.flush_timeouts = s.flush_timeouts.saturating_add(1);
                }
                return Err(CtxError::FlushTimeout);
            }
        }
        // 2. save.
        if let Some(f) = from {
            if let Some(img) = self.images.get_mut(e.index()).and_then(|a| a.get_mut(f)) {
                for (i, off) in CTX_REGS.iter().enumerate() {
                    if applies(e, *off) {
                        let v = b.read_reg(base.wrapping_add(*off));
                        if let Some(r) = img.regs.get_mut(i) {
                            *r = if is_masked(*off) { v & 0xffff } else { v };
                        }
                    }
                }
            }
        }
        // 5. restore (3./4.: nothing hidden in gvt-sim).
        let img = match to {
            Some(t) => self
                .images
                .get(e.index())
                .and_then(|a| a.get(t))
                .copied()
                .unwrap_or(ContextImage::EMPTY),
            None => ContextImage::EMPTY,
        };
        b.write_reg(base.wrapping_add(RING_CTL), 0);
        for (i, off) in CTX_REGS.iter().enumerate() {
            if !applies(e, *off) {
                continue;
            }
            let v = img.regs.get(i).copied().unwrap_or(0);
            let v = if is_masked(*off) {
                0xffff_0000 | (v & 0xffff)
            } else {
                v
            };
            b.write_reg(base.wrapping_add(*off), v);
        }
        if to.is_some() {
            b.write_reg(mi_mode, masked_clear(MI_MODE_STOP_RING));
        }
        if let Some(o) = self.owner.get_mut(e.index()) {
            *o = to;
        }
        let dt = clock.now_ns().saturating_sub(t0);
        if let Some(s) = self.stats.get_mut(e.index()) {
            s.switches = s.switches.saturating_add(1);
            s.total_ns = s.total_ns.saturating_add(dt);
            s.max_ns = s.max_ns.max(dt);
            s.last_ns = dt;
        }
        Ok(())
    }

    fn wait_idle<B: Backend, C: Clock>(&self, b: &mut B, clock: &C, mi_mode: u32, t0: u64) -> bool {
        for _ in 0..self.cfg.max_polls.max(1) {
            if b.read_reg(mi_mode) & MI_MODE_IDLE != 0 {
                return true;
            }
            if clock.now_ns().saturating_sub(t0) > self.cfg.flush_timeout_ns {
                return false;
            }
        }
        false
    }

    /// The engine was reset (its registers are gone): nobody owns it any
    /// more.  The guilty slot's ring is emptied in its image (HEAD := TAIL)
    /// so the hung submission is never resumed; every other slot's image was
    /// saved at its last switch-out and is untouched.
    pub fn engine_reset(&mut self, e: EngineId, guilty: Option<usize>) {
        if let Some(o) = self.owner.get_mut(e.index()) {
            *o = None;
        }
        if let Some(g) = guilty {
            self.discard_ring(e, g);
        }
    }

    /// Empty `slot`'s ring in its image (HEAD := TAIL).  `slot` must not own
    /// `e` (switch it out first).
    pub fn discard_ring(&mut self, e: EngineId, slot: usize) {
        if let Some(img) = self.images.get_mut(e.index()).and_then(|a| a.get_mut(slot)) {
            let tail = img.get(RING_TAIL).unwrap_or(0);
            img.set(RING_HEAD, tail);
        }
    }

    /// Forget `slot`'s images (vGPU created/reset/destroyed).  `slot` must
    /// not own an engine.
    pub fn clear(&mut self, slot: usize) {
        for a in self.images.iter_mut() {
            if let Some(img) = a.get_mut(slot) {
                *img = ContextImage::EMPTY;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;
    use std::collections::BTreeMap;
    use std::vec::Vec;

    struct TClock(Cell<u64>);
    impl Clock for TClock {
        fn now_ns(&self) -> u64 {
            // Every read advances 100 ns: switches take measurable time.
            let t = self.0.get();
            self.0.set(t + 100);
            t
        }
    }

    /// Register file with Intel masked MI_MODE and an idle bit that can be
    /// withheld; logs writes.
    #[derive(Default)]
    struct Regs {
        r: BTreeMap<u32, u32>,
        busy: bool,
        log: Vec<(u32, u32)>,
    }
    impl Backend for Regs {
        fn read_reg(&mut self, off: u32) -> u32 {
            let v = self.r.get(&off).copied().unwrap_or(0);
            if off & 0xfff == RING_MI_MODE {
                let idle = if v & MI_MODE_STOP_RING != 0 && !self.busy {
                    MI_MODE_IDLE
                } else {
                    0
                };
                return v | idle;
            }
            v
        }
        fn write_reg(&mut self, off: u32, v: u32) {
            self.log.push((off, v));
            let v = if off & 0xfff == RING_MI_MODE || off & 0xfff == RING_GFX_MODE {
                let old = self.r.get(&off).copied().unwrap_or(0);
                let m = v >> 16;
                (old & !m) | (v & m & 0xffff)
            } else {
                v
            };
            self.r.insert(off, v);
        }
        fn ggtt_entries(&self) -> u32 {
            0
        }
        fn write_ggtt(&mut self, _: u32, _: super::super::backend::Pte) {}
        fn read_ggtt(&self, _: u32) -> super::super::backend::Pte {
            super::super::backend::Pte(0)
        }
    }

    fn setup(store: &mut ContextStore<4>, b: &mut Regs, slot: usize, e: EngineId) {
        let s = slot as u32;
        store
            .write_reg(b, e, slot, RING_START, 0x10_000 * (s + 1))
            .unwrap();
        store
            .write_reg(b, e, slot, RING_CTL, CTL_ENABLE | (3 << 12))
            .unwrap();
        store
            .write_reg(b, e, slot, RING_HWS_PGA, 0x1000 * (s + 1))
            .unwrap();
        store
            .write_reg(b, e, slot, RING_GFX_MODE, 0x200 | s)
            .unwrap();
        if e == EngineId::Rcs {
            store
                .write_reg(b, e, slot, RING_PP_DIR_BASE, 0xabc0_0000 + s)
                .unwrap();
        }
    }

    #[test]
    fn switch_saves_and_restores_per_vgpu_state() {
        let mut st = ContextStore::<4>::new(CtxConfig::DEFAULT);
        let mut b = Regs::default();
        let clk = TClock(Cell::new(0));
        let e = EngineId::Rcs;
        setup(&mut st, &mut b, 0, e);
        setup(&mut st, &mut b, 1, e);
        assert!(b.log.is_empty(), "nobody owns the engine: images only");
        st.switch(&mut b, &clk, e, Some(0)).unwrap();
        assert_eq!(b.r[&(0x2000 + RING_START)], 0x10_000);
        assert_eq!(b.r[&(0x2000 + RING_PP_DIR_BASE)], 0xabc0_0000);
        assert_eq!(b.r[&(0x2000 + RING_GFX_MODE)], 0x200);
        assert_eq!(
            b.r[&(0x2000 + RING_MI_MODE)] & MI_MODE_STOP_RING,
            0,
            "ring runs again"
        );
        // The engine progresses; the mediator submits more (write-through).
        b.r.insert(0x2000 + RING_HEAD, 0x40);
        st.write_reg(&mut b, e, 0, RING_TAIL, 0x80).unwrap();
        assert_eq!(b.r[&(0x2000 + RING_TAIL)], 0x80);
        assert_eq!(st.read_reg(&mut b, e, 0, RING_HEAD), Some(0x40));
        st.switch(&mut b, &clk, e, Some(1)).unwrap();
        assert_eq!(st.image(e, 0).unwrap().get(RING_HEAD), Some(0x40), "saved");
        assert_eq!(b.r[&(0x2000 + RING_START)], 0x20_000);
        assert_eq!(b.r[&(0x2000 + RING_HEAD)], 0);
        assert_eq!(b.r[&(0x2000 + RING_PP_DIR_BASE)], 0xabc0_0001);
        // Ring disabled before START/HEAD/TAIL are loaded, enabled last.
        let tail = &b.log[b.log.len() - 11..];
        assert_eq!(tail[0], (0x2000 + RING_CTL, 0));
        assert_eq!(tail[9].0, 0x2000 + RING_CTL);
        assert_eq!(
            tail[10],
            (0x2000 + RING_MI_MODE, masked_clear(MI_MODE_STOP_RING))
        );
        st.switch(&mut b, &clk, e, Some(0)).unwrap();
        assert_eq!(b.r[&(0x2000 + RING_HEAD)], 0x40);
        assert_eq!(b.r[&(0x2000 + RING_TAIL)], 0x80);
        let s = st.stats(e);
        assert_eq!(s.switches, 3);
        assert!(s.total_ns > 0 && s.max_ns >= s.last_ns);
        // Blitter has no PPGTT root.
        assert_eq!(
            st.write_reg(&mut b, EngineId::Bcs, 0, RING_PP_DIR_BASE, 1),
            Err(CtxError::BadArg)
        );
        assert_eq!(
            st.write_reg(&mut b, e, 9, RING_TAIL, 1),
            Err(CtxError::BadArg)
        );
        assert_eq!(st.write_reg(&mut b, e, 0, 0x44, 1), Err(CtxError::BadArg));
    }

    #[test]
    fn flush_waits_for_idle_and_times_out() {
        let mut st = ContextStore::<4>::new(CtxConfig {
            max_polls: 50,
            flush_timeout_ns: 1_000_000,
        });
        let mut b = Regs::default();
        let clk = TClock(Cell::new(0));
        let e = EngineId::Bcs;
        setup(&mut st, &mut b, 2, e);
        st.switch(&mut b, &clk, e, Some(2)).unwrap();
        b.busy = true;
        assert_eq!(
            st.switch(&mut b, &clk, e, Some(3)),
            Err(CtxError::FlushTimeout)
        );
        assert_eq!(st.owner(e), Some(2), "nothing switched");
        assert_eq!(st.stats(e).flush_timeouts, 1);
        // After a reset, the guilty ring is emptied and the engine is free.
        st.write_reg(&mut b, e, 2, RING_TAIL, 0x100).unwrap();
        st.engine_reset(e, Some(2));
        assert_eq!(st.owner(e), None);
        let img = st.image(e, 2).unwrap();
        assert_eq!(img.get(RING_HEAD), img.get(RING_TAIL));
        b.busy = false;
        st.switch(&mut b, &clk, e, Some(3)).unwrap();
        assert_eq!(st.owner(e), Some(3));
    }
}
