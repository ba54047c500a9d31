//! The physical GPU as the mediator drives it.  gvt-sim (the software GPU
//! modelled inside the driver) is one implementation; an Intel backend could be
//! another.  The mediator never special-cases gvt-sim: everything it does to
//! the hardware goes through [`Backend`].

use super::mem::HostPage;

/// The two engines of the design (docs/gvt-sim.md §7.1): render and blitter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EngineId {
    /// Render command streamer, ring registers at 0x2000.
    Rcs = 0,
    /// Blitter command streamer, ring registers at 0x22000.
    Bcs = 1,
}

impl EngineId {
    pub const ALL: [EngineId; 2] = [EngineId::Rcs, EngineId::Bcs];
    pub const COUNT: usize = 2;
    /// MMIO base of the engine's ring registers.
    pub const fn mmio_base(self) -> u32 {
        match self {
            EngineId::Rcs => 0x2000,
            EngineId::Bcs => 0x22000,
        }
    }
    pub const fn index(self) -> usize {
        self as usize
    }
    pub fn from_index(i: usize) -> Option<Self> {
        Self::ALL.get(i).copied()
    }
}

/// A physical GGTT entry as the hardware reads it: bit 0 present, bits 12–47
/// the host page's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Pte(pub u64);

impl Pte {
    pub const PRESENT: u64 = 1;
    pub const ADDR_MASK: u64 = 0x0000_ffff_ffff_f000;
    pub const fn new(page: HostPage) -> Self {
        Pte(((page.0 << 12) & Self::ADDR_MASK) | Self::PRESENT)
    }
    pub const fn present(self) -> bool {
        self.0 & Self::PRESENT != 0
    }
    /// The page this entry maps (meaningful when present).
    pub const fn page(self) -> HostPage {
        HostPage((self.0 & Self::ADDR_MASK) >> 12)
    }
}

/// What the mediator needs from a physical GPU.
pub trait Backend {
    /// Read a physical MMIO register.
    fn read_reg(&mut self, offset: u32) -> u32;
    /// Write a physical MMIO register.
    fn write_reg(&mut self, offset: u32, value: u32);
    /// Number of entries of the physical GGTT.
    fn ggtt_entries(&self) -> u32;
    /// Write entry `index` of the one physical GGTT shared by all vGPUs.
    fn write_ggtt(&mut self, index: u32, pte: Pte);
    /// Read entry `index` of the physical GGTT.
    fn read_ggtt(&self, index: u32) -> Pte;
}
