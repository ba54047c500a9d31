// SPDX-License-Identifier: GPL-2.0
//! dma-buf planes (`VFIO_DEVICE_GET_GFX_DMABUF`, in [`crate::ioctl`];
//! exported through [`crate::kapi::export_dmabuf`]): an exported framebuffer
//! holds a page reference per page, taken under the vGPU's `state` lock
//! while the shadow GGTT mapped them, dropped at `release`.  A buffer holds
//! no pointer to the vGPU, so it may outlive it (the VMM keeps the fd).
//!
//! What a hostile VMM (anyone who can open the VFIO group node) could do
//! with unbounded exports, and what stops it:
//! - pin host memory outside `RLIMIT_MEMLOCK` and wrap a page's refcount by
//!   exporting the same pages again and again: a vGPU has at most
//!   [`MAX_LIVE`] live buffers holding at most [`max_pages`] pages, counted
//!   in a [`DmaBufAccount`] the buffers share (they may outlive the vGPU);
//!   past either cap the export fails with `ENOSPC`; references are taken
//!   with `try_get_page`, page arrays are charged to the caller's memcg;
//! - keep a writable alias of the vGPU's scratch page (every unmapped GGTT
//!   entry maps it) and read or steer the next tenant's stray accesses:
//!   the scratch page is never exported; a plane that still maps it is
//!   refused (`EAGAIN`: the guest has not backed its framebuffer yet).

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use kernel::prelude::*;
use kernel::sync::Arc;

use crate::kapi::{DmaBufBacking, PageRef};

/// One exported framebuffer: a page reference per page, taken under the
/// vGPU's lock while the shadow GGTT mapped them, dropped at `release`.  It
/// holds no pointer to the vGPU, so it may outlive it (the VMM keeps the fd).
pub(crate) struct DmaBufPages {
    pages: KVVec<PageRef>,
    size: usize,
    /// The exporting vGPU's account (shared: the buffer may outlive it),
    /// and the pages reserved in it for this buffer.
    account: Arc<DmaBufAccount>,
    reserved: u64,
}

/// Most live dma-bufs per vGPU (QEMU keeps a handful: the primary plane
/// double-buffered and the cursor).
pub(crate) const MAX_LIVE: u32 = 16;

/// Most pages the live dma-bufs of a vGPU whose display region has
/// `display_size` bytes may hold: four planes of the largest size.
pub(crate) fn max_pages(display_size: u64) -> u64 {
    (display_size >> 12).saturating_mul(4).max(1)
}

/// The live dma-bufs of one vGPU and what they hold; shared with each
/// buffer (which may outlive the vGPU) and released with it.
#[derive(Default)]
pub(crate) struct DmaBufAccount {
    pub(crate) live: AtomicU32,
    pub(crate) pages: AtomicU64,
    /// Pages faulted in through CPU mappings of the buffers (sysfs
    /// `gvt/display`: a consumer read the pixels).
    pub(crate) faults: AtomicU64,
    /// Exports refused by a cap or an unbacked plane.
    pub(crate) refused: AtomicU64,
}

impl DmaBufAccount {
    /// Reserve one buffer of `n` pages under the caps, or refuse.
    fn reserve(&self, n: u64, page_cap: u64) -> Result {
        if self.live.fetch_add(1, Ordering::AcqRel) >= MAX_LIVE {
            self.live.fetch_sub(1, Ordering::AcqRel);
            return Err(ENOSPC);
        }
        let before = self.pages.fetch_add(n, Ordering::AcqRel);
        if before.saturating_add(n) > page_cap {
            self.unreserve(n);
            return Err(ENOSPC);
        }
        Ok(())
    }
    fn unreserve(&self, n: u64) {
        self.pages.fetch_sub(n, Ordering::AcqRel);
        self.live.fetch_sub(1, Ordering::AcqRel);
    }
}

impl DmaBufPages {
    /// An empty buffer of `size` bytes for `n` pages, reserved in `account`
    /// under `page_cap` (or refused: `ENOSPC`); its drop gives the
    /// reservation back.
    pub(crate) fn reserve(
        account: Arc<DmaBufAccount>,
        n: usize,
        size: usize,
        page_cap: u64,
    ) -> Result<Self> {
        account.reserve(n as u64, page_cap)?;
        Ok(DmaBufPages {
            pages: KVVec::new(),
            size,
            account,
            reserved: n as u64,
        })
    }

    /// Room for its `n` pages (charged to the caller's memcg).
    pub(crate) fn alloc(&mut self, n: usize) -> Result {
        self.pages
            .reserve(n, GFP_KERNEL_ACCOUNT)
            .map_err(Into::into)
    }

    /// Add the next page.
    pub(crate) fn push(&mut self, page: PageRef) -> Result {
        self.pages
            .push(page, GFP_KERNEL_ACCOUNT)
            .map_err(Into::into)
    }
}

impl Drop for DmaBufPages {
    fn drop(&mut self) {
        // Each entry's reference is put, then the reservation given back.
        self.pages.clear();
        self.account.unreserve(self.reserved);
    }
}

impl DmaBufBacking for DmaBufPages {
    fn pages(&self) -> &[PageRef] {
        &self.pages
    }
    fn size(&self) -> usize {
        self.size
    }
    fn faulted(&self) {
        self.account.faults.fetch_add(1, Ordering::Relaxed);
    }
}
