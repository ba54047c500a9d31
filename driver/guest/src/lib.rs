//! A reference guest driver for the vGPU: what a VM's graphics driver does
//! through the device the mediator emulates (paper §3.3: the guest learns its
//! ballooned graphics memory from PVINFO and programs its own GGTT entries;
//! §3.4: it fills a ring buffer in its graphics memory and writes TAIL;
//! §3.2: it handles the engines' user interrupts).
//!
//! It is written against [`GuestBus`], the three things a guest has: BAR0
//! accesses, CPU accesses through the aperture (BAR2, its own slice), and its
//! own RAM (guest physical addresses).  The host end-to-end tests
//! (`gvt-core`'s `tests/e2e/`) implement the bus on top of the mediator's
//! facade, which is what the kernel's VFIO glue does; a user-space reference driver (a VFIO
//! client under `examples/`) implements it with `pread`/`pwrite` on the
//! device fd, an `mmap` of BAR2 and its DMA-mapped buffer.  A crate of its
//! own over `gvt-core`'s public API: `no_std`, no allocation, never in the
//! kernel module.
//!
//! Commands are built with [`gvt_core::cmd::encode`].
#![no_std]
#![forbid(unsafe_code)]

use gvt_core::backend::EngineId;
use gvt_core::cmd::MI_NOOP;
use gvt_core::engine::ring_ctl;
use gvt_core::mem::{Gfn, GmRange, Gma, PAGE_SHIFT, PAGE_SIZE};
use gvt_core::mmio::GGTT_VIEW_BASE;
use gvt_core::pvinfo::{vgtif, PVINFO_BASE, VGT_MAGIC};
use gvt_core::regs::{self, ring};

/// The device as the guest reaches it.
pub trait GuestBus {
    /// A BAR0 read of `buf.len()` (1/2/4/8) bytes; false if refused.
    fn bar0_read(&mut self, offset: u64, buf: &mut [u8]) -> bool;
    /// A BAR0 write; false if refused.
    fn bar0_write(&mut self, offset: u64, data: &[u8]) -> bool;
    /// A CPU write through the aperture (BAR2) at `offset` (within a page).
    fn aperture_write(&mut self, offset: u64, data: &[u8]) -> bool;
    /// A CPU read through the aperture (within a page).
    fn aperture_read(&mut self, offset: u64, buf: &mut [u8]) -> bool;
    /// A CPU write to guest RAM at guest physical address `gpa` (within a page).
    fn ram_write(&mut self, gpa: u64, data: &[u8]) -> bool;
    /// A CPU read of guest RAM (within a page).
    fn ram_read(&mut self, gpa: u64, buf: &mut [u8]) -> bool;
}

/// Why the driver could not bind or do something.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestError {
    /// No PVINFO magic: not a gvt-rs vGPU.
    NotVgpu,
    /// The device refused an access.
    Refused,
    /// An address outside the GM the driver has mapped.
    NotMapped,
    /// The driver's mapping table is full.
    TooManyMappings,
}

/// Most GM ranges the driver tracks.
pub const MAX_MAPPINGS: usize = 8;

/// How GGTT entries are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PteWidth {
    /// One 8-byte write per entry.
    Qword,
    /// Two 4-byte writes per entry, low half first (a 32-bit guest).
    Halves,
}

#[derive(Clone, Copy, Debug, Default)]
struct Mapping {
    gma: Gma,
    pages: u64,
    gfn: Gfn,
}

/// Per-engine ring bookkeeping of the driver.
#[derive(Clone, Copy, Debug, Default)]
struct Ring {
    gma: Gma,
    size: u32,
    tail: u32,
}

/// The driver state of one vGPU.
#[derive(Clone, Debug)]
pub struct GuestDriver {
    /// Its aperture slice (CPU-mappable GM), from PVINFO.
    pub aperture: GmRange,
    /// Its high slice (non-mappable GM), from PVINFO.
    pub high: GmRange,
    /// Its fence registers.
    pub fences: u32,
    maps: [Mapping; MAX_MAPPINGS],
    nmaps: usize,
    rings: [Ring; EngineId::COUNT],
}

fn rd<B: GuestBus>(bus: &mut B, off: u64) -> Result<u32, GuestError> {
    let mut b = [0u8; 4];
    if bus.bar0_read(off, &mut b) {
        Ok(u32::from_le_bytes(b))
    } else {
        Err(GuestError::Refused)
    }
}

fn wr<B: GuestBus>(bus: &mut B, off: u64, v: u32) -> Result<(), GuestError> {
    if bus.bar0_write(off, &v.to_le_bytes()) {
        Ok(())
    } else {
        Err(GuestError::Refused)
    }
}

impl GuestDriver {
    /// Bind: check PVINFO and learn the ballooned address space.
    pub fn probe<B: GuestBus>(bus: &mut B) -> Result<Self, GuestError> {
        let mut m = [0u8; 8];
        if !bus.bar0_read(u64::from(PVINFO_BASE), &mut m) || u64::from_le_bytes(m) != VGT_MAGIC {
            return Err(GuestError::NotVgpu);
        }
        let pv = |bus: &mut B, f: u32| rd(bus, u64::from(PVINFO_BASE + f));
        let aperture = GmRange::new(
            u64::from(pv(bus, vgtif::MAPPABLE_BASE)?),
            u64::from(pv(bus, vgtif::MAPPABLE_SIZE)?),
        );
        let high = GmRange::new(
            u64::from(pv(bus, vgtif::NONMAPPABLE_BASE)?),
            u64::from(pv(bus, vgtif::NONMAPPABLE_SIZE)?),
        );
        let fences = pv(bus, vgtif::FENCE_NUM)?;
        Ok(GuestDriver {
            aperture,
            high,
            fences,
            maps: [Mapping::default(); MAX_MAPPINGS],
            nmaps: 0,
            rings: [Ring::default(); EngineId::COUNT],
        })
    }

    /// Write GGTT entry `index` (graphics address `index * 4096`).
    pub fn write_pte<B: GuestBus>(
        &self,
        bus: &mut B,
        index: u64,
        value: u64,
        width: PteWidth,
    ) -> Result<(), GuestError> {
        let off = GGTT_VIEW_BASE + 8 * index;
        let ok = match width {
            PteWidth::Qword => bus.bar0_write(off, &value.to_le_bytes()),
            PteWidth::Halves => {
                bus.bar0_write(off, &(value as u32).to_le_bytes())
                    && bus.bar0_write(off + 4, &((value >> 32) as u32).to_le_bytes())
            }
        };
        if ok {
            Ok(())
        } else {
            Err(GuestError::Refused)
        }
    }

    /// Read GGTT entry `index` back.
    pub fn read_pte<B: GuestBus>(&self, bus: &mut B, index: u64) -> Result<u64, GuestError> {
        let mut b = [0u8; 8];
        if bus.bar0_read(GGTT_VIEW_BASE + 8 * index, &mut b) {
            Ok(u64::from_le_bytes(b))
        } else {
            Err(GuestError::Refused)
        }
    }

    /// Back `pages` pages of GM at `gma` with guest frames `gfn..`: one
    /// present PTE each, and remember the mapping for CPU access.
    pub fn map<B: GuestBus>(
        &mut self,
        bus: &mut B,
        gma: Gma,
        gfn: Gfn,
        pages: u64,
        width: PteWidth,
    ) -> Result<(), GuestError> {
        let slot = self
            .maps
            .get_mut(self.nmaps)
            .ok_or(GuestError::TooManyMappings)?;
        *slot = Mapping { gma, pages, gfn };
        self.nmaps += 1;
        for i in 0..pages {
            self.write_pte(
                bus,
                (gma >> PAGE_SHIFT) + i,
                ((gfn + i) << PAGE_SHIFT) | 1,
                width,
            )?;
        }
        Ok(())
    }

    /// The guest physical address behind `gma` in the driver's mappings.
    pub fn gpa(&self, gma: Gma) -> Option<u64> {
        self.maps
            .iter()
            .take(self.nmaps)
            .find(|m| gma >= m.gma && gma - m.gma < m.pages * PAGE_SIZE)
            .map(|m| (m.gfn << PAGE_SHIFT) + (gma - m.gma))
    }

    /// CPU write of dwords at `gma`: through the aperture inside the
    /// aperture slice, to the backing RAM page otherwise.
    pub fn write_gm<B: GuestBus>(
        &self,
        bus: &mut B,
        gma: Gma,
        dwords: &[u32],
    ) -> Result<(), GuestError> {
        for (i, d) in dwords.iter().enumerate() {
            let a = gma + 4 * i as u64;
            let ok = if self.aperture.contains(a, 4) {
                bus.aperture_write(a, &d.to_le_bytes())
            } else {
                let gpa = self.gpa(a).ok_or(GuestError::NotMapped)?;
                bus.ram_write(gpa, &d.to_le_bytes())
            };
            if !ok {
                return Err(GuestError::Refused);
            }
        }
        Ok(())
    }

    /// CPU read of the dword at `gma` (as [`GuestDriver::write_gm`]).
    pub fn read_gm<B: GuestBus>(&self, bus: &mut B, gma: Gma) -> Result<u32, GuestError> {
        let mut b = [0u8; 4];
        let ok = if self.aperture.contains(gma, 4) {
            bus.aperture_read(gma, &mut b)
        } else {
            let gpa = self.gpa(gma).ok_or(GuestError::NotMapped)?;
            bus.ram_read(gpa, &mut b)
        };
        if ok {
            Ok(u32::from_le_bytes(b))
        } else {
            Err(GuestError::Refused)
        }
    }

    /// Program `e`'s ring: `pages` pages at `gma`, empty (i915's ring init:
    /// stop, HEAD = TAIL = 0, START, then CTL with the length and enable).
    pub fn init_ring<B: GuestBus>(
        &mut self,
        bus: &mut B,
        e: EngineId,
        gma: Gma,
        pages: u32,
    ) -> Result<(), GuestError> {
        let o = |rel| u64::from(e.reg(rel));
        wr(bus, o(ring::CTL), 0)?;
        wr(bus, o(ring::HEAD), 0)?;
        wr(bus, o(ring::TAIL), 0)?;
        wr(bus, o(ring::START), gma as u32)?;
        wr(bus, o(ring::CTL), ring_ctl(pages))?;
        if let Some(r) = self.rings.get_mut(e.index()) {
            *r = Ring {
                gma,
                size: pages.saturating_mul(PAGE_SIZE as u32),
                tail: 0,
            };
        }
        Ok(())
    }

    /// The driver's software tail of `e`'s ring (where the next command goes).
    pub fn tail(&self, e: EngineId) -> u32 {
        self.rings.get(e.index()).map_or(0, |r| r.tail)
    }

    /// Append commands to `e`'s ring (no submission), wrapping around.
    pub fn emit<B: GuestBus>(
        &mut self,
        bus: &mut B,
        e: EngineId,
        cmds: &[u32],
    ) -> Result<(), GuestError> {
        let r = *self.rings.get(e.index()).ok_or(GuestError::NotMapped)?;
        if r.size == 0 {
            return Err(GuestError::NotMapped);
        }
        let mut t = r.tail;
        for c in cmds {
            self.write_gm(bus, r.gma + u64::from(t), &[*c])?;
            t = (t + 4) % r.size;
        }
        if let Some(x) = self.rings.get_mut(e.index()) {
            x.tail = t;
        }
        Ok(())
    }

    /// Pad to a qword and write TAIL: submit everything emitted.
    pub fn submit<B: GuestBus>(&mut self, bus: &mut B, e: EngineId) -> Result<(), GuestError> {
        if self.tail(e) % 8 != 0 {
            self.emit(bus, e, &[MI_NOOP])?;
        }
        wr(bus, u64::from(e.reg(ring::TAIL)), self.tail(e))
    }

    /// Emit and submit.
    pub fn run<B: GuestBus>(
        &mut self,
        bus: &mut B,
        e: EngineId,
        cmds: &[u32],
    ) -> Result<(), GuestError> {
        self.emit(bus, e, cmds)?;
        self.submit(bus, e)
    }

    /// The ring's HEAD as the device reports it.
    pub fn head<B: GuestBus>(&self, bus: &mut B, e: EngineId) -> Result<u32, GuestError> {
        rd(bus, u64::from(e.reg(ring::HEAD)))
    }

    /// Whether everything submitted on `e` has retired.
    pub fn idle<B: GuestBus>(&self, bus: &mut B, e: EngineId) -> Result<bool, GuestError> {
        Ok(self.head(bus, e)? == self.tail(e))
    }

    /// Unmask and enable the GT interrupts `bits`.
    pub fn enable_irqs<B: GuestBus>(&self, bus: &mut B, bits: u32) -> Result<(), GuestError> {
        wr(bus, u64::from(regs::GT_IMR), !bits)?;
        wr(bus, u64::from(regs::GT_IER), bits)
    }

    /// The pending GT interrupts.
    pub fn iir<B: GuestBus>(&self, bus: &mut B) -> Result<u32, GuestError> {
        rd(bus, u64::from(regs::GT_IIR))
    }

    /// Acknowledge GT interrupts (write one to clear).
    pub fn ack<B: GuestBus>(&self, bus: &mut B, bits: u32) -> Result<(), GuestError> {
        wr(bus, u64::from(regs::GT_IIR), bits)
    }

    /// `RING_EIR` of `e` (error identity after an error interrupt).
    pub fn eir<B: GuestBus>(&self, bus: &mut B, e: EngineId) -> Result<u32, GuestError> {
        rd(bus, u64::from(e.mmio_base() + regs::ring::EIR))
    }

    /// Reset engine `e` (GDRST); the ring must be programmed again.
    pub fn reset_engine<B: GuestBus>(
        &mut self,
        bus: &mut B,
        e: EngineId,
    ) -> Result<(), GuestError> {
        wr(bus, u64::from(regs::GDRST), regs::Gdrst::engine_bit(e))?;
        if let Some(r) = self.rings.get_mut(e.index()) {
            *r = Ring::default();
        }
        Ok(())
    }

    /// Point the render engine's PPGTT at the page directory at `pd_gma`.
    pub fn set_ppgtt<B: GuestBus>(&self, bus: &mut B, pd_gma: Gma) -> Result<(), GuestError> {
        wr(
            bus,
            u64::from(EngineId::Rcs.reg(ring::PP_DIR_BASE)),
            pd_gma as u32,
        )
    }
}
