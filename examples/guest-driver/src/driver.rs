//! The reference driver proper, over any [`Backend`].
//!
//! What it does is gvt-core's [`GuestDriver`] (PVINFO probe, GGTT entry
//! writes through BAR0, ring programming, emit/TAIL, HEAD, IIR/IMR/IER,
//! `RING_EIR`, GDRST, PP_DIR_BASE), commands come from
//! [`gvt_core::cmd::encode`]; this layer adds what a real guest needs on
//! top: ballooning discipline (every graphics address it uses is checked
//! against its own slices from PVINFO), backing graphics memory with guest
//! RAM pages that need not be contiguous (a page table of its own, so the
//! sysfs backend's scattered pages work), waiting for interrupts or polling
//! HEAD with a deadline, and clear errors instead of panics.
//!
//! # Graphics memory layout ([`Layout`])
//! All offsets are from the start of the vGPU's own slices.  Aperture slice:
//! 0x00000 RCS ring, 0x08000 BCS ring (4 pages each), 0x10000 batch
//! buffers, 0x40000 results (stores, copy targets).  High slice: 0
//! surfaces (fills), 0x10000 a PPGTT page directory.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{fence, Ordering};
use std::thread;
use std::time::{Duration, Instant};

pub use gvt_core::backend::EngineId;
pub use gvt_core::cmd::Space;
use gvt_core::irq;
use gvt_core::mem::GmRange;
use gvt_core::pvinfo::{vgtif, PVINFO_BASE};
use gvt_guest::{GuestDriver, GuestError, PteWidth};

use crate::backend::{Backend, IrqWait};
use crate::error::{Error, Result};

pub const PAGE: u64 = 4096;
pub const RCS: EngineId = EngineId::Rcs;
pub const BCS: EngineId = EngineId::Bcs;
/// Both engines' user interrupts.
pub const USER_IRQS: u32 = irq::RCS_USER_INTERRUPT | irq::BCS_USER_INTERRUPT;
/// Both engines' command-streamer error interrupts.
pub const ERROR_IRQS: u32 = irq::RCS_ERROR_INTERRUPT | irq::BCS_ERROR_INTERRUPT;

/// The user interrupt bit of `e`.
pub const fn user_irq(e: EngineId) -> u32 {
    match e {
        EngineId::Rcs => irq::RCS_USER_INTERRUPT,
        EngineId::Bcs => irq::BCS_USER_INTERRUPT,
    }
}

/// The error interrupt bit of `e`.
pub const fn error_irq(e: EngineId) -> u32 {
    match e {
        EngineId::Rcs => irq::RCS_ERROR_INTERRUPT,
        EngineId::Bcs => irq::BCS_ERROR_INTERRUPT,
    }
}

/// Where things live in the driver's graphics memory (offsets from the
/// slice bases, see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub aperture: GmRange,
    pub high: GmRange,
}

impl Layout {
    pub const RING_PAGES: u32 = 4;
    pub fn ring(&self, e: EngineId) -> u64 {
        self.aperture.base + if e == RCS { 0 } else { 0x8000 }
    }
    /// Batch buffer area (48 pages).
    pub fn batches(&self) -> u64 {
        self.aperture.base + 0x10000
    }
    /// Result area in the aperture (stores, copy targets; 32 pages).
    pub fn results(&self) -> u64 {
        self.aperture.base + 0x40000
    }
    /// Surfaces in non-mappable GM.
    pub fn surfaces(&self) -> u64 {
        self.high.base
    }
    /// A PPGTT page directory page in non-mappable GM.
    pub fn page_directory(&self) -> u64 {
        self.high.base + 0x10000
    }
}

/// How [`Driver::boot`] sets the vGPU up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootConfig {
    /// Pages of the aperture slice backed by RAM, from its start (rings,
    /// batches and results need 0x60 = 96).
    pub aperture_pages: u64,
    /// Pages of the high slice backed by RAM, from its start.
    pub high_pages: u64,
    /// 8-byte PTE writes, or two 4-byte halves (a 32-bit guest).
    pub width: PteWidth,
    /// Read every PTE back after writing it.
    pub verify_ptes: bool,
}

impl BootConfig {
    pub const DEFAULT: BootConfig = BootConfig {
        aperture_pages: 96,
        high_pages: 32,
        width: PteWidth::Qword,
        verify_ptes: true,
    };
}

/// What a wait saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waited {
    /// GT IIR when the wait ended.
    pub iir: u32,
    /// Interrupts signalled during the wait (0 when the backend polls).
    pub irqs: u64,
    pub elapsed: Duration,
}

/// The reference guest driver bound to one vGPU.
pub struct Driver<B: Backend> {
    bus: B,
    gd: GuestDriver,
    vgt_id: u32,
    /// GM page number → guest physical address of the RAM page behind it.
    gm: BTreeMap<u64, u64>,
    free: VecDeque<u64>,
    width: PteWidth,
    irqs: u64,
}

impl<B: Backend> Driver<B> {
    /// Bind (`pci_enable_device`, then the driver's probe): memory decode
    /// and bus mastering on, PVINFO magic, the slices this vGPU may use,
    /// its RAM pages.
    pub fn probe(mut bus: B) -> Result<Self> {
        bus.enable()?;
        let mut m = [0u8; 8];
        if !bus.bar0_read(u64::from(PVINFO_BASE), &mut m) {
            return Err(refused(&mut bus, "PVINFO magic read", GuestError::Refused));
        }
        let gd = match GuestDriver::probe(&mut bus) {
            Ok(d) => d,
            Err(GuestError::NotVgpu) => return Err(Error::NotVgpu),
            Err(e) => return Err(refused(&mut bus, "PVINFO read", e)),
        };
        let mut b = [0u8; 4];
        if !bus.bar0_read(u64::from(PVINFO_BASE + vgtif::VGT_ID), &mut b) {
            return Err(refused(&mut bus, "PVINFO vgt_id read", GuestError::Refused));
        }
        if gd.aperture.size == 0 || gd.aperture.base % PAGE != 0 || gd.high.base % PAGE != 0 {
            return Err(Error::BadInput(format!(
                "PVINFO slices {:?} / {:?}",
                gd.aperture, gd.high
            )));
        }
        let free = bus
            .ram_pages()
            .into_iter()
            .filter(|p| p % PAGE == 0)
            .collect();
        Ok(Driver {
            bus,
            gd,
            vgt_id: u32::from_le_bytes(b),
            gm: BTreeMap::new(),
            free,
            width: PteWidth::Qword,
            irqs: 0,
        })
    }

    pub fn bus(&self) -> &B {
        &self.bus
    }
    pub fn bus_mut(&mut self) -> &mut B {
        &mut self.bus
    }
    /// The VM moved (live migration, issue 14): the same guest state on
    /// another device and RAM.  `f` gets the old bus (the source VMM's, to
    /// save and let go of) and returns the new one (the target's, restored).
    pub fn rebind(mut self, f: impl FnOnce(B) -> B) -> Self {
        let Driver {
            bus,
            gd,
            vgt_id,
            gm,
            free,
            width,
            irqs,
        } = self;
        self = Driver {
            bus: f(bus),
            gd,
            vgt_id,
            gm,
            free,
            width,
            irqs,
        };
        self
    }
    pub fn into_bus(self) -> B {
        self.bus
    }
    pub fn vgt_id(&self) -> u32 {
        self.vgt_id
    }
    /// The aperture (mappable) slice from PVINFO.
    pub fn aperture(&self) -> GmRange {
        self.gd.aperture
    }
    /// The high (non-mappable) slice from PVINFO.
    pub fn high(&self) -> GmRange {
        self.gd.high
    }
    pub fn fences(&self) -> u32 {
        self.gd.fences
    }
    pub fn layout(&self) -> Layout {
        Layout {
            aperture: self.gd.aperture,
            high: self.gd.high,
        }
    }
    /// Interrupts seen by the waits so far.
    pub fn irqs_seen(&self) -> u64 {
        self.irqs
    }
    /// RAM pages not yet backing graphics memory.
    pub fn free_pages(&self) -> usize {
        self.free.len()
    }

    /// Whether `[gma, gma + len)` lies in one of this vGPU's slices.
    pub fn owns(&self, gma: u64, len: u64) -> bool {
        self.gd.aperture.contains(gma, len) || self.gd.high.contains(gma, len)
    }

    fn check_owned(&self, gma: u64, len: u64) -> Result<()> {
        if self.owns(gma, len) {
            Ok(())
        } else {
            Err(Error::NotMine { gma, len })
        }
    }

    fn fail(&mut self, what: impl Into<String>, e: GuestError) -> Error {
        refused(&mut self.bus, what, e)
    }

    /// Back `pages` pages of graphics memory at `gma` (inside the slices)
    /// with free RAM pages: one GGTT entry each, written through BAR0.
    pub fn map(&mut self, gma: u64, pages: u64) -> Result<()> {
        if gma % PAGE != 0 {
            return Err(Error::BadInput(format!(
                "graphics address {gma:#x} is not page aligned"
            )));
        }
        let len = pages
            .checked_mul(PAGE)
            .ok_or_else(|| Error::BadInput(format!("{pages} pages")))?;
        self.check_owned(gma, len)?;
        if (self.free.len() as u64) < pages {
            return Err(Error::NoRam {
                wanted: pages,
                free: self.free.len() as u64,
            });
        }
        for i in 0..pages {
            let page = gma / PAGE + i;
            if let Some(old) = self.gm.remove(&page) {
                self.free.push_back(old);
            }
            let gpa = self.free.pop_front().ok_or(Error::NoRam {
                wanted: pages - i,
                free: 0,
            })?;
            self.map_page(page * PAGE, gpa)?;
        }
        Ok(())
    }

    /// Point the GGTT entry of `gma` (inside the slices) at RAM page `gpa`.
    pub fn map_page(&mut self, gma: u64, gpa: u64) -> Result<()> {
        self.check_owned(gma, PAGE)?;
        let index = gma / PAGE;
        let pte = (gpa & !(PAGE - 1)) | 1;
        self.gd
            .write_pte(&mut self.bus, index, pte, self.width)
            .map_err(|e| refused(&mut self.bus, format!("GGTT entry {index:#x} write"), e))?;
        self.gm.insert(index, gpa & !(PAGE - 1));
        Ok(())
    }

    /// Write GGTT entry `index` with `value` as is — no ballooning check:
    /// for tests that play a hostile guest.
    pub fn poke_pte(&mut self, index: u64, value: u64) -> Result<()> {
        self.gd
            .write_pte(&mut self.bus, index, value, self.width)
            .map_err(|e| refused(&mut self.bus, format!("GGTT entry {index:#x} write"), e))
    }

    /// GGTT entry `index` as the guest view reads it.
    pub fn read_pte(&mut self, index: u64) -> Result<u64> {
        self.gd
            .read_pte(&mut self.bus, index)
            .map_err(|e| refused(&mut self.bus, format!("GGTT entry {index:#x} read"), e))
    }

    /// The RAM page (guest physical address) behind `gma`, if mapped.
    pub fn gpa_of(&self, gma: u64) -> Option<u64> {
        self.gm.get(&(gma / PAGE)).map(|p| p + gma % PAGE)
    }

    /// CPU write of dwords at `gma`: through the aperture inside the
    /// aperture slice (pass-through), to the backing RAM page otherwise.
    pub fn write(&mut self, gma: u64, dwords: &[u32]) -> Result<()> {
        let len = (dwords.len() as u64)
            .checked_mul(4)
            .ok_or_else(|| Error::BadInput("too many dwords".into()))?;
        if gma % 4 != 0 {
            return Err(Error::BadInput(format!("{gma:#x} is not dword aligned")));
        }
        self.check_owned(gma, len.max(1))?;
        for (i, d) in dwords.iter().enumerate() {
            let a = gma + 4 * i as u64;
            let ok = if self.gd.aperture.contains(a, 4) {
                self.bus.aperture_write(a, &d.to_le_bytes())
            } else {
                let gpa = self.gpa_of(a).ok_or(Error::NotMapped { gma: a })?;
                self.bus.ram_write(gpa, &d.to_le_bytes())
            };
            if !ok {
                return Err(self.fail(format!("CPU write at {a:#x}"), GuestError::Refused));
            }
        }
        Ok(())
    }

    /// CPU read of the dword at `gma` (as [`Driver::write`]).
    pub fn read(&mut self, gma: u64) -> Result<u32> {
        if gma % 4 != 0 {
            return Err(Error::BadInput(format!("{gma:#x} is not dword aligned")));
        }
        self.check_owned(gma, 4)?;
        let mut b = [0u8; 4];
        let ok = if self.gd.aperture.contains(gma, 4) {
            self.bus.aperture_read(gma, &mut b)
        } else {
            let gpa = self.gpa_of(gma).ok_or(Error::NotMapped { gma })?;
            self.bus.ram_read(gpa, &mut b)
        };
        if ok {
            Ok(u32::from_le_bytes(b))
        } else {
            Err(self.fail(format!("CPU read at {gma:#x}"), GuestError::Refused))
        }
    }

    /// Read the dword at `gma` from the RAM page behind it, bypassing the
    /// aperture: where the engine's and the aperture's accesses must land.
    pub fn read_ram(&mut self, gma: u64) -> Result<u32> {
        let gpa = self.gpa_of(gma).ok_or(Error::NotMapped { gma })?;
        let mut b = [0u8; 4];
        if self.bus.ram_read(gpa, &mut b) {
            Ok(u32::from_le_bytes(b))
        } else {
            Err(self.fail(format!("RAM read at {gpa:#x}"), GuestError::Refused))
        }
    }

    /// Write RAM at guest physical `gpa` directly (page tables, data).
    pub fn write_phys(&mut self, gpa: u64, dwords: &[u32]) -> Result<()> {
        for (i, d) in dwords.iter().enumerate() {
            let a = gpa + 4 * i as u64;
            if !self.bus.ram_write(a, &d.to_le_bytes()) {
                return Err(self.fail(format!("RAM write at {a:#x}"), GuestError::Refused));
            }
        }
        Ok(())
    }

    /// Read the RAM dword at guest physical `gpa`.
    pub fn read_phys(&mut self, gpa: u64) -> Result<u32> {
        let mut b = [0u8; 4];
        if self.bus.ram_read(gpa, &mut b) {
            Ok(u32::from_le_bytes(b))
        } else {
            Err(self.fail(format!("RAM read at {gpa:#x}"), GuestError::Refused))
        }
    }

    /// Take one free RAM page out of the pool (for page tables, data the
    /// PPGTT maps): its guest physical address.
    pub fn alloc_page(&mut self) -> Result<u64> {
        self.free
            .pop_front()
            .ok_or(Error::NoRam { wanted: 1, free: 0 })
    }

    /// What a driver does at load: map the first
    /// `cfg.aperture_pages` of the aperture slice and `cfg.high_pages` of the
    /// high slice, program both rings, unmask user and error interrupts.
    pub fn boot(&mut self, cfg: BootConfig) -> Result<()> {
        self.width = cfg.width;
        let l = self.layout();
        let ap = cfg.aperture_pages.min(l.aperture.size / PAGE);
        let hi = cfg.high_pages.min(l.high.size / PAGE);
        if ap < 0x60 {
            return Err(Error::BadInput(format!(
                "the layout needs 96 aperture pages, the slice has {}",
                l.aperture.size / PAGE
            )));
        }
        self.map(l.aperture.base, ap)?;
        if hi > 0 {
            self.map(l.high.base, hi)?;
        }
        if cfg.verify_ptes {
            let pages: Vec<(u64, u64)> = self.gm.iter().map(|(k, v)| (*k, *v)).collect();
            for (index, gpa) in pages {
                let got = self.read_pte(index)?;
                if got != gpa | 1 {
                    return Err(Error::Mismatch {
                        what: "GGTT entry read-back".into(),
                        at: index,
                        expected: (gpa | 1) as u32,
                        got: got as u32,
                    });
                }
            }
        }
        for e in [RCS, BCS] {
            self.init_ring(e)?;
        }
        self.gd
            .enable_irqs(&mut self.bus, USER_IRQS | ERROR_IRQS)
            .map_err(|e| refused(&mut self.bus, "IMR/IER write", e))?;
        let stale = self.iir()?;
        self.ack(stale)?;
        let _ = self.bus.wait_irq(Duration::ZERO)?;
        Ok(())
    }

    /// Program `e`'s ring (empty) at its place in the layout.
    pub fn init_ring(&mut self, e: EngineId) -> Result<()> {
        let at = self.layout().ring(e);
        self.gd
            .init_ring(&mut self.bus, e, at, Layout::RING_PAGES)
            .map_err(|x| refused(&mut self.bus, format!("{e:?} ring setup"), x))
    }

    /// Append `cmds` to `e`'s ring and write TAIL.
    pub fn submit(&mut self, e: EngineId, cmds: &[u32]) -> Result<()> {
        if cmds.is_empty() {
            return Err(Error::BadInput("empty submission".into()));
        }
        let ring = (Layout::RING_PAGES as u64 * PAGE) as usize;
        if cmds.len() * 4 + 8 > ring {
            return Err(Error::BadInput(format!(
                "{} dwords do not fit a {ring}-byte ring",
                cmds.len()
            )));
        }
        self.gd
            .emit(&mut self.bus, e, cmds)
            .map_err(|x| refused(&mut self.bus, format!("{e:?} ring write"), x))?;
        fence(Ordering::SeqCst);
        self.gd
            .submit(&mut self.bus, e)
            .map_err(|x| refused(&mut self.bus, format!("{e:?} TAIL write"), x))
    }

    /// The driver's tail of `e` (what was submitted last).
    pub fn tail(&self, e: EngineId) -> u32 {
        self.gd.tail(e)
    }

    /// `e`'s HEAD as the device reports it.
    pub fn head(&mut self, e: EngineId) -> Result<u32> {
        self.gd
            .head(&mut self.bus, e)
            .map_err(|x| refused(&mut self.bus, format!("{e:?} HEAD read"), x))
    }

    pub fn iir(&mut self) -> Result<u32> {
        self.gd
            .iir(&mut self.bus)
            .map_err(|x| refused(&mut self.bus, "GT IIR read", x))
    }

    pub fn ack(&mut self, bits: u32) -> Result<()> {
        if bits == 0 {
            return Ok(());
        }
        self.gd
            .ack(&mut self.bus, bits)
            .map_err(|x| refused(&mut self.bus, "GT IIR write", x))
    }

    pub fn eir(&mut self, e: EngineId) -> Result<u32> {
        self.gd
            .eir(&mut self.bus, e)
            .map_err(|x| refused(&mut self.bus, format!("{e:?} RING_EIR read"), x))
    }

    /// Point the render engine's PPGTT at the page directory at `pd_gma`.
    pub fn set_ppgtt(&mut self, pd_gma: u64) -> Result<()> {
        self.check_owned(pd_gma, PAGE)?;
        self.gd
            .set_ppgtt(&mut self.bus, pd_gma)
            .map_err(|x| refused(&mut self.bus, "PP_DIR_BASE write", x))
    }

    /// One interrupt wait of at most `slice` (or a short sleep when the
    /// backend polls).
    fn nap(&mut self, slice: Duration) -> Result<()> {
        match self.bus.wait_irq(slice)? {
            IrqWait::Fired(n) => self.irqs += n,
            IrqWait::TimedOut => {}
            IrqWait::Unsupported => thread::sleep(slice.min(Duration::from_millis(2))),
        }
        Ok(())
    }

    /// Wait until every command submitted on `e` has retired (HEAD ==
    /// tail).  An error interrupt of `e` ends the wait with
    /// [`Error::EngineError`] (the submission was rejected or the engine
    /// hung); interrupts are not acknowledged.
    pub fn wait_idle(&mut self, e: EngineId, timeout: Duration) -> Result<Waited> {
        let t0 = Instant::now();
        let irqs0 = self.irqs;
        loop {
            let iir = self.iir()?;
            if iir & error_irq(e) != 0 {
                let eir = self.eir(e)?;
                return Err(Error::EngineError {
                    engine: e,
                    iir,
                    eir,
                });
            }
            let head = self.head(e)?;
            if head == self.tail(e) {
                return Ok(Waited {
                    iir,
                    irqs: self.irqs - irqs0,
                    elapsed: t0.elapsed(),
                });
            }
            let waited = t0.elapsed();
            if waited > timeout {
                return Err(Error::Timeout {
                    what: format!("{e:?} HEAD {head:#x} to reach tail {:#x}", self.tail(e)),
                    waited,
                });
            }
            self.nap(Duration::from_millis(20))?;
        }
    }

    /// Wait until the GT IIR has one of `bits` set; returns it.
    pub fn wait_iir(&mut self, bits: u32, timeout: Duration) -> Result<Waited> {
        self.wait_iir_until(timeout, |iir| iir & bits != 0, bits)
    }

    /// Wait until the GT IIR has all of `bits` set.  An error interrupt
    /// not in `bits` ends the wait with [`Error::EngineError`].
    pub fn wait_all(&mut self, bits: u32, timeout: Duration) -> Result<Waited> {
        let w = self.wait_iir_until(
            timeout,
            |iir| iir & bits == bits || iir & ERROR_IRQS & !bits != 0,
            bits,
        )?;
        let err = w.iir & ERROR_IRQS & !bits;
        if err != 0 {
            let e = if err & error_irq(RCS) != 0 { RCS } else { BCS };
            let eir = self.eir(e)?;
            return Err(Error::EngineError {
                engine: e,
                iir: w.iir,
                eir,
            });
        }
        Ok(w)
    }

    fn wait_iir_until(
        &mut self,
        timeout: Duration,
        done: impl Fn(u32) -> bool,
        bits: u32,
    ) -> Result<Waited> {
        let t0 = Instant::now();
        let irqs0 = self.irqs;
        loop {
            let iir = self.iir()?;
            if done(iir) {
                // Collect the MSI that came with it, if it is still pending.
                if let IrqWait::Fired(n) = self.bus.wait_irq(Duration::ZERO)? {
                    self.irqs += n;
                }
                return Ok(Waited {
                    iir,
                    irqs: self.irqs - irqs0,
                    elapsed: t0.elapsed(),
                });
            }
            let waited = t0.elapsed();
            if waited > timeout {
                return Err(Error::Timeout {
                    what: format!("GT IIR bits {bits:#x} (IIR {iir:#x})"),
                    waited,
                });
            }
            self.nap(Duration::from_millis(20))?;
        }
    }

    /// Recover `e` after an error the way a driver does after a GPU reset:
    /// reset the engine (GDRST), program its ring again, acknowledge its
    /// error interrupt.
    pub fn recover(&mut self, e: EngineId) -> Result<()> {
        self.gd
            .reset_engine(&mut self.bus, e)
            .map_err(|x| refused(&mut self.bus, "GDRST write", x))?;
        self.init_ring(e)?;
        self.ack(error_irq(e))
    }
}

fn refused<B: Backend>(bus: &mut B, what: impl Into<String>, e: GuestError) -> Error {
    let detail = bus.take_error().unwrap_or_else(|| format!("{e:?}"));
    Error::Refused {
        what: what.into(),
        detail,
    }
}
