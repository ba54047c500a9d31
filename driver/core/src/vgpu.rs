//! One vGPU as the VFIO glue sees it: the facade that ties the virtual PCI
//! configuration space ([`super::cfgspace`]), the trapped BAR0
//! ([`super::mmio`], with PVINFO) and the vGPU's partition together, so the
//! kernel glue is a table from VFIO callbacks to these calls.
//!
//! Big state (2 MiB of virtual registers, the guest GGTT view) is owned by
//! the caller and borrowed per call: the core allocates nothing.

use core::fmt;

use super::cfgspace::{CfgError, CfgSpace, CFG_SIZE};
use super::mmio::{MmioError, MmioOutcome, VgpuMmio};
use super::partition::Partition;
use super::pvinfo::{PvInfo, PvInfoError};

pub use super::mmio::{BAR0_SIZE, GGTT_VIEW_ENTRIES};
pub use super::regs::VREG_DWORDS;

/// Size of the configuration-space region.
pub const CONFIG_SIZE: u64 = CFG_SIZE as u64;

/// Why a region access or setup was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessError {
    Config(CfgError),
    Mmio(MmioError),
    PvInfo(PvInfoError),
    /// A user buffer could not be read or written (set by the glue).
    Fault,
}

impl From<CfgError> for AccessError {
    fn from(e: CfgError) -> Self {
        AccessError::Config(e)
    }
}

impl From<MmioError> for AccessError {
    fn from(e: MmioError) -> Self {
        AccessError::Mmio(e)
    }
}

/// Event counters of the glue-visible surface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VgpuCounters {
    pub cfg_reads: u64,
    pub cfg_writes: u64,
    pub cfg_rejected: u64,
    pub resets: u64,
}

/// A vGPU: identity, partition and the emulated device surfaces.
#[derive(Clone, Debug)]
pub struct Vgpu {
    id: u32,
    part: Partition,
    cfg: CfgSpace,
    mmio: VgpuMmio,
    counters: VgpuCounters,
}

impl Vgpu {
    /// vGPU `id` owning `part` on a parent whose aperture (BAR2) is
    /// `aperture_size` bytes.
    pub fn new(id: u32, part: Partition, aperture_size: u64) -> Result<Self, AccessError> {
        let pv = PvInfo::new(id, 0, &part).map_err(AccessError::PvInfo)?;
        Ok(Self { id, part, cfg: CfgSpace::new(aperture_size)?, mmio: VgpuMmio::new(pv), counters: VgpuCounters::default() })
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn partition(&self) -> &Partition {
        &self.part
    }

    pub fn cfg(&self) -> &CfgSpace {
        &self.cfg
    }

    pub fn mmio(&self) -> &VgpuMmio {
        &self.mmio
    }

    pub fn counters(&self) -> &VgpuCounters {
        &self.counters
    }

    /// Device reset (VFIO_DEVICE_RESET, open): power-on config space,
    /// registers and an empty guest GGTT view.
    pub fn reset(&mut self, vregs: &mut [u32], ggtt: &mut [u64]) {
        self.cfg.reset();
        self.mmio.reset_vregs(vregs);
        ggtt.fill(0);
        self.counters.resets += 1;
    }

    /// Read `buf.len()` bytes of configuration space at `offset`, as a run of
    /// naturally aligned 4/2/1-byte reads (QEMU reads the whole space in one
    /// `pread` at realize).  Nothing is read unless all of it is in range.
    pub fn cfg_read_span(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), AccessError> {
        let end = (offset as usize).checked_add(buf.len());
        if end.map_or(true, |e| e > CFG_SIZE) {
            self.counters.cfg_rejected += 1;
            return Err(CfgError::OutOfRange.into());
        }
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset as usize + done;
            let left = buf.len() - done;
            let n = if at % 4 == 0 && left >= 4 {
                4
            } else if at % 2 == 0 && left >= 2 {
                2
            } else {
                1
            };
            let piece = buf.get_mut(done..done + n).ok_or(CfgError::OutOfRange)?;
            self.cfg.read_bytes(at as u32, piece)?;
            done += n;
        }
        self.counters.cfg_reads += 1;
        Ok(())
    }

    /// One configuration-space write of 1, 2 or 4 naturally aligned bytes.
    pub fn cfg_write(&mut self, offset: u32, data: &[u8]) -> Result<(), AccessError> {
        match self.cfg.write_bytes(offset, data) {
            Ok(_event) => {
                self.counters.cfg_writes += 1;
                Ok(())
            }
            Err(e) => {
                self.counters.cfg_rejected += 1;
                Err(e.into())
            }
        }
    }

    /// One BAR0 read (1/2/4/8 bytes, naturally aligned).
    pub fn bar0_read(&mut self, vregs: &[u32], ggtt: &[u64], offset: u64, buf: &mut [u8]) -> Result<(), AccessError> {
        Ok(self.mmio.read_bytes(vregs, offset, buf)?)
    }

    /// One BAR0 write; the outcome names the events other mediators act on.
    pub fn bar0_write(
        &mut self,
        vregs: &mut [u32],
        ggtt: &mut [u64],
        offset: u64,
        data: &[u8],
    ) -> Result<MmioOutcome, AccessError> {
        Ok(self.mmio.write_bytes(vregs, offset, data)?)
    }

    /// Human-readable counters for sysfs (`gvt/stats`).
    pub fn write_stats<W: fmt::Write>(&self, w: &mut W) -> fmt::Result {
        let t = self.mmio.stats();
        writeln!(w, "traps_pm {}", t.pm)?;
        writeln!(w, "traps_tail {}", t.tail)?;
        writeln!(w, "traps_pte {}", t.pte)?;
        writeln!(w, "traps_other {}", t.other)?;
        writeln!(w, "mmio_rejected {}", t.rejected)?;
        writeln!(w, "cfg_reads {}", self.counters.cfg_reads)?;
        writeln!(w, "cfg_writes {}", self.counters.cfg_writes)?;
        writeln!(w, "cfg_rejected {}", self.counters.cfg_rejected)?;
        writeln!(w, "resets {}", self.counters.resets)
    }
}

#[cfg(test)]
mod tests {
    use super::super::mem::GmRange;
    use super::super::pvinfo::{PVINFO_BASE, VGT_MAGIC};
    use super::*;
    use std::vec;

    fn part() -> Partition {
        Partition {
            aperture: GmRange::new(64 << 20, 64 << 20),
            high: GmRange::new(512 << 20, 256 << 20),
            fence_base: 4,
            fence_count: 4,
        }
    }

    #[test]
    fn config_span_reads_whole_space_and_rejects_overrun() {
        let mut v = Vgpu::new(1, part(), 256 << 20).unwrap();
        let mut all = [0u8; 256];
        v.cfg_read_span(0, &mut all).unwrap();
        assert_eq!(&all[..], &v.cfg().as_bytes()[..]);
        let mut odd = [0u8; 3];
        v.cfg_read_span(1, &mut odd).unwrap();
        assert_eq!(odd, all[1..4]);
        assert!(v.cfg_read_span(255, &mut [0u8; 2]).is_err());
        assert!(v.cfg_read_span(u32::MAX, &mut [0u8; 2]).is_err());
        assert_eq!(v.counters().cfg_rejected, 2);
    }

    #[test]
    fn pvinfo_magic_and_ggtt_readback_through_bar0() {
        let mut v = Vgpu::new(3, part(), 256 << 20).unwrap();
        let mut vregs = vec![0u32; VREG_DWORDS];
        let mut ggtt = vec![0u64; GGTT_VIEW_ENTRIES];
        v.reset(&mut vregs, &mut ggtt);
        let mut m = [0u8; 8];
        v.bar0_read(&vregs, &ggtt, PVINFO_BASE as u64, &mut m).unwrap();
        assert_eq!(u64::from_le_bytes(m), VGT_MAGIC);
        let idx = (64u64 << 20) / 4096;
        let off = (8 << 20) + idx * 8;
        v.bar0_write(&mut vregs, &mut ggtt, off, &0x1234_5001u64.to_le_bytes()).unwrap();
        let mut r = [0u8; 8];
        v.bar0_read(&vregs, &ggtt, off, &mut r).unwrap();
        assert_eq!(u64::from_le_bytes(r), 0x1234_5001);
        assert!(v.bar0_read(&vregs, &ggtt, 3, &mut [0u8; 4]).is_err());
    }
}
