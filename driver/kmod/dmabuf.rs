// SPDX-License-Identifier: GPL-2.0
//! dma-buf planes (`VFIO_DEVICE_GET_GFX_DMABUF`): an exported framebuffer
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

use core::sync::atomic::{AtomicU64, Ordering};

use kernel::bindings;
use kernel::prelude::*;
use kernel::sync::Arc;
use core::sync::atomic::AtomicU32;
use kernel::uaccess::{UserPtr, UserSlice};

use crate::gvt_core::mem::HostPage;
use crate::vfio;
use crate::vgpu::{Ops, Vgpu};

/// One exported framebuffer: a page reference per page, taken under the
/// vGPU's lock while the shadow GGTT mapped them, dropped at `release`.  It
/// holds no pointer to the vGPU, so it may outlive it (the VMM keeps the fd).
struct DmaBufPages {
    pages: KVVec<*mut bindings::page>,
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

impl Drop for DmaBufPages {
    fn drop(&mut self) {
        for &pg in self.pages.iter() {
            // SAFETY: each entry holds the reference `gvt_rs_pfn_get_page` took.
            unsafe { vfio::gvt_rs_put_page(pg) };
        }
        self.account.unreserve(self.reserved);
    }
}

static DMABUF_OPS: Ops<bindings::dma_buf_ops> = Ops({
    // SAFETY: all-zero is a valid `dma_buf_ops` (optional callbacks, plain values).
    let mut ops: bindings::dma_buf_ops = unsafe { core::mem::zeroed() };
    ops.map_dma_buf = Some(dmabuf_map);
    ops.unmap_dma_buf = Some(dmabuf_unmap);
    ops.release = Some(dmabuf_release);
    ops.mmap = Some(dmabuf_mmap);
    ops
});

static DMABUF_VM_OPS: Ops<bindings::vm_operations_struct> = Ops({
    // SAFETY: all-zero is a valid `vm_operations_struct`.
    let mut ops: bindings::vm_operations_struct = unsafe { core::mem::zeroed() };
    ops.fault = Some(dmabuf_fault);
    ops
});

/// # Safety
/// `buf` is a dma-buf exported by `ioctl_get_gfx_dmabuf` and not yet released.
unsafe fn dmabuf_pages<'a>(buf: *mut bindings::dma_buf) -> &'a DmaBufPages {
    // SAFETY: `priv_` is the `DmaBufPages` box leaked at export, freed only by
    // `dmabuf_release`.
    unsafe { &*(*buf).priv_.cast::<DmaBufPages>() }
}

fn err_ptr<T>(e: Error) -> *mut T {
    e.to_errno() as isize as *mut T
}

unsafe extern "C" fn dmabuf_map(
    at: *mut bindings::dma_buf_attachment,
    dir: bindings::dma_data_direction,
) -> *mut bindings::sg_table {
    // SAFETY: the dma-buf core passes a live attachment of our buffer.
    let (obj, dev) = unsafe { (dmabuf_pages((*at).dmabuf), (*at).dev) };
    // SAFETY: all-zero is an empty `sg_table`.
    let Ok(sgt) = KBox::new(unsafe { core::mem::zeroed::<bindings::sg_table>() }, GFP_KERNEL) else {
        return err_ptr(ENOMEM);
    };
    let sgt = KBox::into_raw(sgt);
    // SAFETY: `sgt` is ours; the page array holds `pages.len()` referenced pages.
    let r = unsafe {
        bindings::sg_alloc_table_from_pages_segment(
            sgt,
            obj.pages.as_ptr().cast_mut(),
            obj.pages.len() as u32,
            0,
            obj.size as _,
            u32::MAX,
            bindings::GFP_KERNEL,
        )
    };
    if r == 0 {
        // SAFETY: a table built above, mapped for the importer's device.
        if unsafe { bindings::dma_map_sgtable(dev, sgt, dir, 0) } == 0 {
            return sgt;
        }
        // SAFETY: allocated above and not mapped.
        unsafe { bindings::sg_free_table(sgt) };
    }
    // SAFETY: from `KBox::into_raw` above.
    drop(unsafe { KBox::from_raw(sgt) });
    err_ptr(ENOMEM)
}

unsafe extern "C" fn dmabuf_unmap(
    at: *mut bindings::dma_buf_attachment,
    sgt: *mut bindings::sg_table,
    dir: bindings::dma_data_direction,
) {
    // SAFETY: `sgt` came from `dmabuf_map` for this attachment
    // (`dma_unmap_sgtable` is an inline of exactly this call).
    unsafe {
        bindings::dma_unmap_sg_attrs((*at).dev, (*sgt).sgl, (*sgt).orig_nents as i32, dir, 0);
        bindings::sg_free_table(sgt);
        drop(KBox::from_raw(sgt));
    }
}

unsafe extern "C" fn dmabuf_release(buf: *mut bindings::dma_buf) {
    // SAFETY: the last reference is gone; `priv_` is our leaked box.
    drop(unsafe { KBox::from_raw((*buf).priv_.cast::<DmaBufPages>()) });
}

unsafe extern "C" fn dmabuf_mmap(buf: *mut bindings::dma_buf, vma: *mut bindings::vm_area_struct) -> i32 {
    // SAFETY: `vma` is being set up by mmap(2) of our dma-buf.
    if !unsafe { vfio::gvt_rs_vma_is_shared(vma) } {
        return EINVAL.to_errno();
    }
    // SAFETY: the mapping holds the dma-buf file, so `priv_` (and the page
    // references it holds) outlives it; the dma-buf core checked the range
    // against the buffer's size.  A PFN mapping: the pages belong to the
    // guest RAM's file, which may drop them from its cache (the VMM unmaps
    // its RAM) while the buffer still shows them.
    unsafe { vfio::gvt_rs_vma_setup_pfnmap(vma, &DMABUF_VM_OPS.0, (*buf).priv_) };
    0
}

unsafe extern "C" fn dmabuf_fault(vmf: *mut bindings::vm_fault) -> bindings::vm_fault_t {
    // SAFETY: `vm_private_data` is the buffer's `DmaBufPages` (see `dmabuf_mmap`).
    let obj = unsafe { &*vfio::gvt_rs_vmf_private(vmf).cast::<DmaBufPages>() };
    // SAFETY: `vmf` is the fault being handled.
    let pgoff = unsafe { vfio::gvt_rs_vmf_pgoff(vmf) };
    match obj.pages.get(pgoff) {
        Some(&pg) => {
            obj.account.faults.fetch_add(1, Ordering::Relaxed);
            // SAFETY: the buffer holds a reference on the page until
            // `release`, which runs only after every mapping of it is gone.
            unsafe { vfio::gvt_rs_vmf_insert_page_pfn(vmf, pg) }
        }
        None => bindings::vm_fault_reason_VM_FAULT_SIGBUS as bindings::vm_fault_t,
    }
}

/// `VFIO_DEVICE_GET_GFX_DMABUF`: a new dma-buf fd over the framebuffer of the
/// plane whose id QUERY_GFX_PLANE (`VFIO_GFX_PLANE_TYPE_DMABUF`) returned.
/// The pages are those the shadow GGTT maps now: the guest's, or this vGPU's
/// scratch page; never another vGPU's (the plane was validated against this
/// vGPU's slices, and the page list is built through its own shadow GGTT).
pub(crate) fn ioctl_get_gfx_dmabuf(v: &Vgpu, arg: usize) -> Result<i32> {
    if !v.dmabuf() {
        return Err(ENOTTY);
    }
    let mut id = [0u8; 4];
    UserSlice::new(UserPtr::from_addr(arg), 4).reader().read_slice(&mut id)?;
    let id = u32::from_ne_bytes(id);
    let obj = {
        let mut st = v.state.lock();
        let (core, mut storage) = st.split()?;
        let plane = core.dmabuf_plane(id).ok_or(ENOENT)?;
        let n = usize::try_from(plane.pages()).map_err(|_| EINVAL)?;
        let refuse = |e: Error, why: &str| {
            v.dmabuf_account.refused.fetch_add(1, Ordering::Relaxed);
            v.log_limited(format_args!("dma-buf export refused: {why}"));
            e
        };
        // Both arrays are charged to the caller's memcg.
        let mut hp = KVVec::with_capacity(n, GFP_KERNEL_ACCOUNT)?;
        hp.resize(n, HostPage(0), GFP_KERNEL_ACCOUNT)?;
        if core.framebuffer_pages(&mut storage, &plane, &mut hp).map_err(|_| EINVAL)? != n {
            return Err(EINVAL);
        }
        if hp.iter().any(|p| p.0 == v.scratch_pfn) {
            return Err(refuse(EAGAIN, "the plane maps pages the guest has not backed"));
        }
        let account = v.dmabuf_account.clone();
        account
            .reserve(n as u64, max_pages(v.display_size))
            .map_err(|e| refuse(e, "too many live dma-bufs for this vGPU"))?;
        // From here the buffer's drop gives the reservation back.
        let mut obj = DmaBufPages {
            pages: KVVec::new(),
            size: plane.mapped_size() as usize,
            account,
            reserved: n as u64,
        };
        obj.pages.reserve(n, GFP_KERNEL_ACCOUNT)?;
        for page in hp.iter() {
            // SAFETY: the page is pinned while the GGTT maps it, and we hold
            // the lock that keeps it so; the reference taken here (refused
            // for a page being freed) keeps it alive for the buffer.
            let pg = unsafe { vfio::gvt_rs_pfn_get_page(page.0) };
            if pg.is_null() {
                return Err(EFAULT);
            }
            if let Err(e) = obj.pages.push(pg, GFP_KERNEL_ACCOUNT) {
                // SAFETY: the reference just taken.
                unsafe { vfio::gvt_rs_put_page(pg) };
                return Err(e.into());
            }
        }
        obj
    };
    let size = obj.size;
    let priv_ = KBox::into_raw(KBox::new(obj, GFP_KERNEL)?);
    // SAFETY: all-zero is a valid `dma_buf_export_info`; the fields set are
    // what DEFINE_DMA_BUF_EXPORT_INFO sets, plus ours.
    let mut info: bindings::dma_buf_export_info = unsafe { core::mem::zeroed() };
    info.exp_name = c"gvt_rs".as_ptr().cast();
    // SAFETY: reads THIS_MODULE.
    info.owner = unsafe { vfio::gvt_rs_this_module() }.cast();
    info.ops = &DMABUF_OPS.0;
    info.size = size;
    info.flags = bindings::O_RDWR as i32;
    info.priv_ = priv_.cast();
    // SAFETY: `info` is complete; on success the buffer owns `priv_`.
    let buf = unsafe { bindings::dma_buf_export(&info) };
    // SAFETY: checking an ERR_PTR-or-pointer value.
    if unsafe { vfio::gvt_rs_is_err(buf.cast()) } {
        // SAFETY: not exported: the box is still ours.
        drop(unsafe { KBox::from_raw(priv_) });
        // SAFETY: as above.
        return Err(Error::from_errno(unsafe { vfio::gvt_rs_ptr_err(buf.cast()) } as i32));
    }
    // SAFETY: `buf` is our new dma-buf; on failure dropping its only
    // reference releases it (and our pages).
    let fd = unsafe { bindings::dma_buf_fd(buf, (bindings::O_CLOEXEC | bindings::O_RDWR) as i32) };
    if fd < 0 {
        // SAFETY: as above.
        unsafe { bindings::dma_buf_put(buf) };
        return Err(Error::from_errno(fd));
    }
    v.dmabufs_exported.fetch_add(1, Ordering::Relaxed);
    Ok(fd)
}

