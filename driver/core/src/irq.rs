//! GT interrupt registers: IIR / IMR / IER with Intel semantics, used both for
//! the physical gvt-sim device and for each vGPU's virtual copy (paper §3.2:
//! "The mediator handles the physical GPU interrupt, and may generate virtual
//! interrupt to the designated VMs").
//!
//! Layout (Intel gen6/7 GT interrupt block, `i915_reg.h`):
//! `GTISR` 0x44010, `GTIMR` 0x44014, `GTIIR` 0x44018, `GTIER` 0x4401C.
//! Bits: render user interrupt 0, render command-streamer error 3, render
//! PIPE_CONTROL notify 4, blitter user interrupt 22, blitter error 25,
//! blitter MI_FLUSH_DW notify 26.
//!
//! Semantics:
//! - an event sets its IIR bit unless masked in IMR (IMR only gates latching,
//!   it never clears IIR);
//! - the interrupt is asserted while `IIR & IER != 0`;
//! - IIR is write-1-to-clear;
//! - GTISR reads 0: every gvt-sim event is a pulse, there is no live level.
//! - A hang has no GT bit of its own on gen7 (i915 finds hangs with its
//!   hangcheck); the mediator's emulated hang event (§3.5.1) is delivered on
//!   the engine's command-streamer error bit.
//!
//! Delivery: MSI is an edge.  [`Delivery::msi`] says "send one MSI now": on a
//! rising edge of the asserted level, and again after a guest IIR write that
//! acknowledged some bits while others stay pending (the guest's handler would
//! otherwise never hear of them).  [`Delivery::intx`] reports changes of the
//! INTx level.  Which of the two the caller uses depends on the guest's PCI
//! configuration (MSI enable), not on this module.

use super::backend::EngineId;

/// Pipe A vblank in the display-engine block (`DE_PIPEA_VBLANK_IVB`):
/// `DEIIR`/`DEIMR`/`DEIER` ([`super::regs::DE_IIR`]...), with the same
/// semantics as the GT block (a second [`GtIrq`]).
pub const DE_PIPEA_VBLANK: u32 = 1 << 0;

pub use super::regs::{GT_IER as GTIER, GT_IIR as GTIIR, GT_IMR as GTIMR, GT_ISR as GTISR};

pub const RCS_USER_INTERRUPT: u32 = 1 << 0;
pub const RCS_ERROR_INTERRUPT: u32 = 1 << 3;
pub const RCS_PIPECTL_NOTIFY: u32 = 1 << 4;
pub const BCS_USER_INTERRUPT: u32 = 1 << 22;
pub const BCS_ERROR_INTERRUPT: u32 = 1 << 25;
pub const BCS_FLUSHDW_NOTIFY: u32 = 1 << 26;

/// Every GT bit of `engine`: user interrupt, notify and command-streamer
/// error (what the mediator forwards to the vGPU that owned the engine).
pub const fn engine_bits(engine: EngineId) -> u32 {
    match engine {
        EngineId::Rcs => RCS_USER_INTERRUPT | RCS_ERROR_INTERRUPT | RCS_PIPECTL_NOTIFY,
        EngineId::Bcs => BCS_USER_INTERRUPT | BCS_ERROR_INTERRUPT | BCS_FLUSHDW_NOTIFY,
    }
}

/// A GT interrupt event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GtEvent {
    /// MI_USER_INTERRUPT retired on the engine.
    User(EngineId),
    /// PIPE_CONTROL / MI_FLUSH_DW with the notify bit.
    Notify(EngineId),
    /// The command streamer faulted (bad command, unmapped address).
    Error(EngineId),
    /// The engine hung (detected by the scheduler's watchdog).
    Hang(EngineId),
}

impl GtEvent {
    /// The GT IIR bit of this event.
    pub const fn bit(self) -> u32 {
        match self {
            GtEvent::User(EngineId::Rcs) => RCS_USER_INTERRUPT,
            GtEvent::User(EngineId::Bcs) => BCS_USER_INTERRUPT,
            GtEvent::Notify(EngineId::Rcs) => RCS_PIPECTL_NOTIFY,
            GtEvent::Notify(EngineId::Bcs) => BCS_FLUSHDW_NOTIFY,
            GtEvent::Error(EngineId::Rcs) | GtEvent::Hang(EngineId::Rcs) => RCS_ERROR_INTERRUPT,
            GtEvent::Error(EngineId::Bcs) | GtEvent::Hang(EngineId::Bcs) => BCS_ERROR_INTERRUPT,
        }
    }
}

/// What the caller must signal after an interrupt-register change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Send one MSI now (if the guest enabled MSI).
    pub msi: bool,
    /// The INTx level changed to this value (if the guest uses INTx).
    pub intx: Option<bool>,
}

/// One IIR/IMR/IER set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GtIrq {
    iir: u32,
    imr: u32,
    ier: u32,
}

impl GtIrq {
    /// Reset state: everything masked and disabled, nothing pending.
    pub const fn new() -> Self {
        Self {
            iir: 0,
            imr: !0,
            ier: 0,
        }
    }

    /// The registers as saved (migration restore): no event is latched or
    /// delivered, `iir` is taken as it was, masked bits included.
    pub const fn from_parts(iir: u32, imr: u32, ier: u32) -> Self {
        Self { iir, imr, ier }
    }

    pub const fn iir(&self) -> u32 {
        self.iir
    }
    pub const fn imr(&self) -> u32 {
        self.imr
    }
    pub const fn ier(&self) -> u32 {
        self.ier
    }

    /// Whether the interrupt line is asserted (`IIR & IER != 0`).
    pub const fn asserted(&self) -> bool {
        self.iir & self.ier != 0
    }

    fn delivery(before: bool, after: bool, resignal: bool) -> Delivery {
        Delivery {
            msi: after && (!before || resignal),
            intx: if before != after { Some(after) } else { None },
        }
    }

    /// Latch the events `bits` (those not masked in IMR).
    pub fn raise(&mut self, bits: u32) -> Delivery {
        let before = self.asserted();
        self.iir |= bits & !self.imr;
        Self::delivery(before, self.asserted(), false)
    }

    /// Latch one event.
    pub fn event(&mut self, ev: GtEvent) -> Delivery {
        self.raise(ev.bit())
    }

    /// Whether `offset` is one of the four GT interrupt registers.
    pub const fn handles(offset: u32) -> bool {
        matches!(offset, GTISR | GTIMR | GTIIR | GTIER)
    }

    /// Read one of the registers (None: not an interrupt register).
    pub fn read(&self, offset: u32) -> Option<u32> {
        match offset {
            GTISR => Some(0),
            GTIMR => Some(self.imr),
            GTIIR => Some(self.iir),
            GTIER => Some(self.ier),
            _ => None,
        }
    }

    /// Write one of the registers (None: not an interrupt register).
    pub fn write(&mut self, offset: u32, value: u32) -> Option<Delivery> {
        let before = self.asserted();
        let resignal = match offset {
            GTISR => false,
            GTIMR => {
                self.imr = value;
                false
            }
            GTIIR => {
                let cleared = self.iir & value;
                self.iir &= !value;
                cleared != 0
            }
            GTIER => {
                self.ier = value;
                false
            }
            _ => return None,
        };
        Some(Self::delivery(before, self.asserted(), resignal))
    }
}

/// A vGPU's virtual GT interrupt registers (the guest-visible copy).
pub type VirtualIrq = GtIrq;

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled(bits: u32) -> GtIrq {
        let mut g = GtIrq::new();
        g.write(GTIMR, !bits).unwrap();
        g.write(GTIER, bits).unwrap();
        g
    }

    #[test]
    fn masked_event_is_not_latched() {
        let mut g = GtIrq::new();
        g.write(GTIER, !0).unwrap();
        let d = g.event(GtEvent::User(EngineId::Rcs));
        assert_eq!(g.iir(), 0);
        assert_eq!(d, Delivery::default());
        g.write(GTIMR, !RCS_USER_INTERRUPT).unwrap();
        // Unmasking later does not replay the lost pulse.
        assert_eq!(g.iir(), 0);
        assert!(g.event(GtEvent::User(EngineId::Rcs)).msi);
    }

    #[test]
    fn unmasked_but_disabled_latches_without_asserting() {
        let mut g = GtIrq::new();
        g.write(GTIMR, 0).unwrap();
        let d = g.event(GtEvent::User(EngineId::Bcs));
        assert_eq!(g.iir(), BCS_USER_INTERRUPT);
        assert!(!g.asserted());
        assert!(!d.msi);
        // Enabling it now raises the line: rising edge.
        let d = g.write(GTIER, BCS_USER_INTERRUPT).unwrap();
        assert!(d.msi);
        assert_eq!(d.intx, Some(true));
    }

    #[test]
    fn msi_on_rising_edge_only_and_iir_is_w1c() {
        let mut g = enabled(RCS_USER_INTERRUPT | BCS_USER_INTERRUPT);
        let d = g.event(GtEvent::User(EngineId::Rcs));
        assert_eq!(
            d,
            Delivery {
                msi: true,
                intx: Some(true)
            }
        );
        // A second event while asserted: no new edge.
        let d = g.event(GtEvent::User(EngineId::Bcs));
        assert_eq!(
            d,
            Delivery {
                msi: false,
                intx: None
            }
        );
        assert_eq!(g.read(GTIIR), Some(RCS_USER_INTERRUPT | BCS_USER_INTERRUPT));
        // Guest acknowledges only the render bit: the blitter bit is still pending,
        // so it is told again.
        let d = g.write(GTIIR, RCS_USER_INTERRUPT).unwrap();
        assert_eq!(
            d,
            Delivery {
                msi: true,
                intx: None
            }
        );
        assert_eq!(g.iir(), BCS_USER_INTERRUPT);
        // Writing 0 clears nothing and signals nothing.
        assert_eq!(g.write(GTIIR, 0).unwrap(), Delivery::default());
        let d = g.write(GTIIR, !0).unwrap();
        assert_eq!(
            d,
            Delivery {
                msi: false,
                intx: Some(false)
            }
        );
        assert_eq!(g.iir(), 0);
    }

    #[test]
    fn error_and_hang_share_the_cs_error_bit() {
        assert_eq!(
            GtEvent::Hang(EngineId::Rcs).bit(),
            GtEvent::Error(EngineId::Rcs).bit()
        );
        assert_eq!(GtEvent::Error(EngineId::Bcs).bit(), BCS_ERROR_INTERRUPT);
        assert_eq!(GtEvent::Notify(EngineId::Bcs).bit(), BCS_FLUSHDW_NOTIFY);
        assert_eq!(GtEvent::Notify(EngineId::Rcs).bit(), RCS_PIPECTL_NOTIFY);
    }

    #[test]
    fn disabling_ier_drops_the_line() {
        let mut g = enabled(RCS_ERROR_INTERRUPT);
        assert!(g.event(GtEvent::Error(EngineId::Rcs)).msi);
        let d = g.write(GTIER, 0).unwrap();
        assert_eq!(
            d,
            Delivery {
                msi: false,
                intx: Some(false)
            }
        );
        assert_eq!(g.read(GTISR), Some(0));
        assert_eq!(g.write(0x1234, 1), None);
        assert!(!GtIrq::handles(0x1234));
    }
}
