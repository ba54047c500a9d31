//! Aperture coherence (paper §3.3, "Pass-Through"; §3.4 shared shadow GGTT).
//!
//! The aperture BAR (BAR2) is the CPU's window onto the mappable part of global
//! graphics memory: aperture offset `A` *is* graphics address `A` (guest and host
//! views are identical thanks to address-space ballooning).  The VMM mmaps the
//! vGPU's own slice of BAR2 and the guest CPU touches its frame buffer and
//! command buffers through it directly (pass-through), while the engine reaches
//! graphics address `A` through the physical GGTT.  Both must land on the same
//! host page:
//!
//! - the fault path ([`fault`]) resolves an aperture page to the host page that
//!   GGTT entry `A / 4096` maps right now (a pinned guest page, or the vGPU's
//!   scratch page), and refuses anything outside the vGPU's aperture slice;
//! - whenever the shadow GGTT changes an entry inside the mappable slice it calls
//!   [`CpuMappings::invalidate`](super::services::CpuMappings::invalidate) for exactly that page, *after* the physical entry
//!   has been rewritten and *before* the old guest page is unpinned, so the kernel
//!   can zap the user mapping (`unmap_mapping_range`) and the next CPU access
//!   faults in the new page.

use super::ggtt::Ggtt;
use super::mem::{GmRange, HostPage, PAGE_SHIFT};

/// Why an aperture fault was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApertureError {
    /// The offset lies outside the vGPU's aperture slice (ballooned space or
    /// beyond the BAR): the fault must fail (SIGBUS), never map anything.
    OutsideSlice,
}

/// The part of BAR2 that may be mmapped (advertised with the VFIO sparse-mmap
/// capability): the vGPU's aperture slice, as a range of aperture offsets.
pub fn mmap_area(ggtt: &Ggtt<'_>) -> GmRange {
    ggtt.slices().aperture
}

/// Fault path: the host page a CPU access at aperture offset `offset` must
/// reach — the page currently mapped by GGTT entry `offset / 4096` (or the
/// vGPU's scratch page when the guest has not mapped it).
pub fn fault(ggtt: &Ggtt<'_>, offset: u64) -> Result<HostPage, ApertureError> {
    if !ggtt.slices().aperture.contains(offset, 0) {
        return Err(ApertureError::OutsideSlice);
    }
    ggtt.host_page(offset >> PAGE_SHIFT)
        .ok_or(ApertureError::OutsideSlice)
}

#[cfg(test)]
mod tests {
    use super::super::backend::Pte;
    use super::super::fakes::FakeGuestMemory;
    use super::super::ggtt::tests::{FakePhysGgtt, RecordingCpu};
    use super::super::ggtt::{Ggtt, PteWrite, VgpuGm};
    use super::super::mem::{GmRange, HostPage, PAGE_SIZE};
    use super::*;
    use std::vec;

    const SCRATCH: HostPage = HostPage(7);

    fn gm() -> VgpuGm {
        // Aperture slice: entries 4..8; high slice: entries 40..44.
        VgpuGm {
            aperture: GmRange::new(4 * PAGE_SIZE, 4 * PAGE_SIZE),
            high: GmRange::new(40 * PAGE_SIZE, 4 * PAGE_SIZE),
        }
    }

    #[test]
    fn fault_follows_pte_changes_and_invalidates_exactly_the_changed_page() {
        let mut be = FakePhysGgtt::new(64);
        let mut g = FakeGuestMemory::new(0x100, 16, 1000);
        let mut cpu = RecordingCpu::default();
        let (mut guest, mut shadow) = (vec![0; 8], vec![0; 8]);
        let mut ggtt = Ggtt::new(gm(), SCRATCH, &mut guest, &mut shadow, &mut be).unwrap();
        assert_eq!(mmap_area(&ggtt), gm().aperture);

        // Unmapped: scratch.
        assert_eq!(fault(&ggtt, 5 * PAGE_SIZE + 12), Ok(SCRATCH));
        // Map entry 5 -> gfn 0x103 (host 1003).
        assert_eq!(
            ggtt.write_pte(&mut g, &mut be, &mut cpu, 5, (0x103 << 12) | 1),
            PteWrite::Mapped
        );
        assert_eq!(cpu.invalidated, vec![5]);
        assert_eq!(fault(&ggtt, 5 * PAGE_SIZE + 12), Ok(HostPage(1003)));
        // The engine's view agrees.
        assert_eq!(be.read(5), Pte::new(HostPage(1003)));

        // Remap to gfn 0x10a.
        cpu.invalidated.clear();
        ggtt.write_pte(&mut g, &mut be, &mut cpu, 5, (0x10a << 12) | 1);
        assert_eq!(cpu.invalidated, vec![5]);
        assert_eq!(fault(&ggtt, 5 * PAGE_SIZE), Ok(HostPage(1010)));
        assert_eq!(g.pins_of(0x103), 0);

        // Rewriting the same value changes nothing: nothing invalidated.
        cpu.invalidated.clear();
        ggtt.write_pte(&mut g, &mut be, &mut cpu, 5, (0x10a << 12) | 1);
        assert!(cpu.invalidated.is_empty());

        // A high-slice change never touches CPU mappings of the aperture.
        ggtt.write_pte(&mut g, &mut be, &mut cpu, 41, (0x101 << 12) | 1);
        assert!(cpu.invalidated.is_empty());

        // Clearing goes back to scratch and invalidates that page only.
        ggtt.write_pte(&mut g, &mut be, &mut cpu, 5, 0);
        assert_eq!(cpu.invalidated, vec![5]);
        assert_eq!(fault(&ggtt, 5 * PAGE_SIZE), Ok(SCRATCH));

        // dma_unmap of a mapped aperture frame invalidates its page.
        ggtt.write_pte(&mut g, &mut be, &mut cpu, 6, (0x104 << 12) | 1);
        cpu.invalidated.clear();
        g.unmap(0x104, 1);
        assert_eq!(
            ggtt.dma_unmap(&mut g, &mut be, &mut cpu, 0x104 << 12, PAGE_SIZE),
            1
        );
        assert_eq!(cpu.invalidated, vec![6]);
        assert_eq!(fault(&ggtt, 6 * PAGE_SIZE), Ok(SCRATCH));

        ggtt.destroy(&mut g, &mut be, &mut cpu);
        assert_eq!(g.outstanding_pins(), 0);
    }

    #[test]
    fn fault_outside_the_slice_is_refused() {
        let mut be = FakePhysGgtt::new(64);
        let (mut guest, mut shadow) = (vec![0; 8], vec![0; 8]);
        let ggtt = Ggtt::new(gm(), SCRATCH, &mut guest, &mut shadow, &mut be).unwrap();
        assert_eq!(fault(&ggtt, 0), Err(ApertureError::OutsideSlice));
        assert_eq!(
            fault(&ggtt, 4 * PAGE_SIZE - 1),
            Err(ApertureError::OutsideSlice)
        );
        assert_eq!(
            fault(&ggtt, 8 * PAGE_SIZE),
            Err(ApertureError::OutsideSlice)
        );
        // The high slice is not CPU-visible through the aperture.
        assert_eq!(
            fault(&ggtt, 40 * PAGE_SIZE),
            Err(ApertureError::OutsideSlice)
        );
        assert_eq!(fault(&ggtt, u64::MAX), Err(ApertureError::OutsideSlice));
        assert_eq!(fault(&ggtt, 7 * PAGE_SIZE + 4095), Ok(SCRATCH));
    }
}
