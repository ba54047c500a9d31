// SPDX-License-Identifier: GPL-2.0
//! `vfio_device_ops.mmap` of the aperture (BAR2) and the display region,
//! and their fault handlers.  A fault takes only the vGPU's `map` lock and,
//! for one read of the physical GGTT, the GPU lock: neither is ever held
//! across a pin, so a pin of another vGPU that faults in here (its guest
//! pointed a GGTT entry at an IOVA the VMM backs with this BAR) always
//! completes, and the VMM's mm lock is never waited for under them.  The
//! page shown is what the physical GGTT maps at that graphics address, the
//! same the engines reach; the core rewrites an entry, then zaps the
//! mapping under `map` (`mdev::KCpu`), then unpins the old page.

use core::sync::atomic::Ordering;

use kernel::prelude::*;

use crate::kapi::{current_task, PfnFault, VmFault, VmFaultT, SIGBUS};
use crate::mdev::{MdevVgpu, BAR2, DISPLAY_REGION, PAGE_SHIFT, REGION_MASK, REGION_SHIFT};
use crate::vfio_dev::DeviceVma;

/// `vfio_device_ops.mmap`: only BAR2, only inside this vGPU's slice, shared.
pub(crate) fn mmap(v: &MdevVgpu, dvma: &DeviceVma<'_, MdevVgpu>) -> Result {
    let vma = dvma.vma();
    let (pgoff, len, shared) = (vma.pgoff(), vma.len(), vma.shared());
    // As vfio-pci: the region index is the page offset's top bits (no
    // overflow for a huge pgoff), a shared mapping only.
    let index = pgoff >> (REGION_SHIFT - PAGE_SHIFT);
    let off = (pgoff & (REGION_MASK >> PAGE_SHIFT)) << PAGE_SHIFT;
    // Called with the mm lock held for write: take none of our locks.
    if index == u64::from(DISPLAY_REGION) && shared {
        let size = v.display_size;
        if len == 0 || off.checked_add(len).is_none_or(|end| end > size) {
            return Err(EINVAL);
        }
        // Refuses a writable mapping of the read-only region and keeps it
        // from becoming one.
        return dvma.set_pfnmap::<DisplayFault>(true);
    }
    if index != u64::from(BAR2) || !shared {
        return Err(EINVAL);
    }
    if len == 0 || !v.aperture_view().contains(off, len) {
        return Err(EINVAL);
    }
    // A PFN mapping: the frames are guest RAM (the VMM's anonymous or shmem
    // pages), not pages of this file; a `vmf->page` fault would hand them to
    // the shared-file write-fault path (dirty accounting through their
    // `mapping`), which is only right for page-cache pages of this file.
    dvma.set_pfnmap::<ApertureFault>(false)
}

/// A fault raised by the task that is inside this vGPU's `bar0_write`: its
/// guest pointed a GGTT entry at the VMM's own mapping of this vGPU's
/// aperture or display region, and the pin of that entry faults here.
/// Refused (SIGBUS: the pin fails, the entry goes to scratch, counted in
/// `self_map_faults`) rather than pinning a page through its own view.
fn self_fault(v: &MdevVgpu) -> bool {
    if v.pinning.load(Ordering::Relaxed) == current_task() {
        v.self_faults.fetch_add(1, Ordering::Relaxed);
        return true;
    }
    false
}

/// Fault on the aperture mapping: hand the slice's backing page to the CPU;
/// afterwards CPU accesses go straight to memory, no trap.
struct ApertureFault;

impl PfnFault<MdevVgpu> for ApertureFault {
    fn fault(v: &MdevVgpu, f: &VmFault<'_>) -> VmFaultT {
        let off = (f.pgoff() & (REGION_MASK >> PAGE_SHIFT)) << PAGE_SHIFT;
        let Some(index) = v.aperture_host_index(off) else {
            return SIGBUS;
        };
        if self_fault(v) {
            return SIGBUS;
        }
        let _map = v.map.lock();
        // Memory decode off: the BAR does not respond (vfio-pci: SIGBUS).  A
        // config write turning decode off stores it, then zaps under `map`.
        if !v.decode.load(Ordering::Acquire) {
            return SIGBUS;
        }
        // Aperture offset A is guest graphics address A: the page the
        // physical GGTT entry behind it maps (the guest's pinned page, or
        // this vGPU's scratch page); A/4096 itself unless the guest's view
        // was moved by a migration.
        match v.shared.phys_page(index) {
            // SAFETY: the page is pinned (or is our scratch page) while the
            // GGTT maps it; the entry cannot be rewritten and its page
            // unpinned before the zap that follows the rewrite, which waits
            // for `map`, held here.
            Some(pfn) => unsafe { f.insert_pfn(pfn) },
            None => SIGBUS,
        }
    }
}

// ---- display region mmap -------------------------------------------------------

/// Fault on the display region: the page of the plane the last
/// QUERY_GFX_PLANE reported (through the physical GGTT, like the
/// aperture), or this vGPU's scratch page past the plane.  A new plane, a
/// GGTT change under it, a DMA unmap or a reset zaps the mapping under
/// `map`, so it faults again.
struct DisplayFault;

impl PfnFault<MdevVgpu> for DisplayFault {
    fn fault(v: &MdevVgpu, f: &VmFault<'_>) -> VmFaultT {
        let page_index = f.pgoff() & (REGION_MASK >> PAGE_SHIFT);
        if page_index >= v.display_size >> PAGE_SHIFT || self_fault(v) {
            return SIGBUS;
        }
        let map = v.map.lock();
        let pfn = match map.shown {
            Some(p) if page_index < p.pages => match p
                .phys_first
                .checked_add(page_index)
                .and_then(|i| v.shared.phys_page(i))
            {
                Some(pfn) => pfn,
                None => return SIGBUS,
            },
            _ => v.scratch_pfn,
        };
        // SAFETY: as in `ApertureFault`: every path that could unpin the page
        // (a GGTT write under the plane, a DMA unmap, a reset) zaps this
        // mapping under `map` first, and a new plane zaps it too; the
        // scratch page lives as long as the vGPU, which outlives the mapping
        // (the mapping holds the device file).
        unsafe { f.insert_pfn(pfn) }
    }
}
