// SPDX-License-Identifier: GPL-2.0
//! The kernel services the module uses, as safe types and functions: each
//! wraps its C call (a `kernel::bindings` function or a shim of
//! `gvt_rs_helpers.c`) once, with one `// SAFETY:` justification here, so
//! the vGPU code above calls only safe methods.  What the `kernel` crate
//! offers is used directly: `kernel::time` (the monotonic clock,
//! `fsleep`), `kernel::error::from_err_ptr`, `kernel::current!`.
//! `kernel::workqueue::DelayedWork` of this kernel (7.3) has neither
//! `mod_delayed_work` (re-arm earlier) nor a synchronous cancel, which the
//! engine worker and the vblank timer need: [`CWork`] wraps the C work item.
//!
//! | wrapper | C |
//! |---|---|
//! | [`KHost`], [`KAlloc`], [`KClock`] (the core's host-side traits) | `kmap_local_page` copies, `alloc_page`/`__free_page`, `ktime_get` |
//! | [`clear_page`], [`page_pfn`], [`PageRef`] | `clear_highpage`, `page_to_pfn`, `try_get_page`/`put_page` |
//! | [`EventFd`] | `eventfd_ctx_fdget`, `eventfd_signal`, `eventfd_ctx_put` |
//! | [`VirqfdSlot`] | `vfio_virqfd_enable`/`disable` |
//! | [`CWork`] | a `delayed_work` on `system_dfl_wq` |
//! | [`Vma`], [`VmFault`], [`PfnFault`] | `vm_area_struct` set-up of a PFN mapping, `vmf_insert_pfn` |
//! | [`export_dmabuf`], [`DmaBufBacking`] | `dma_buf_export`, `dma_buf_fd`, the `dma_buf_ops` |
//! | [`MigFile`], [`MigData`] | the migration data files of `gvt_rs_helpers.c` (`anon_inode_getfile`, `kvzalloc`, `fput`) |

use core::marker::PhantomData;
use core::ptr::{self, NonNull};

use kernel::bindings;
use kernel::error::{from_err_ptr, to_result};
use kernel::page::Page;
use kernel::prelude::*;
use kernel::time::{ClockSource as _, Delta, Monotonic};
use kernel::types::Opaque;

use crate::gvt_core::mem::{HostPage, MemError};
use crate::gvt_core::services::{Clock, HostMemory, HostPageAlloc};
use crate::vfio;

/// A C ops table in a `static`: read-only after compilation.
#[repr(transparent)]
pub(crate) struct Ops<T>(pub(crate) T);

// SAFETY: the tables are never written; their raw pointers point to 'static
// data and functions.
unsafe impl<T> Sync for Ops<T> {}

// ---- time, tasks ---------------------------------------------------------------

/// The monotonic clock in nanoseconds (`ktime_get_ns`).
pub(crate) fn now_ns() -> u64 {
    Monotonic::ktime_get() as u64
}

/// The kernel's monotonic clock, as the core's [`Clock`].
pub(crate) struct KClock;

impl Clock for KClock {
    fn now_ns(&self) -> u64 {
        now_ns()
    }
}

/// Sleep at least `ms` milliseconds (process context, no lock held).
pub(crate) fn sleep_ms(ms: i64) {
    kernel::time::delay::fsleep(Delta::from_millis(ms));
}

/// Give the CPU to others if needed (process context, no spinlock held).
pub(crate) fn cond_resched() {
    // SAFETY: `cond_resched` has no precondition beyond process context,
    // which every caller (the engine worker) is.
    unsafe { vfio::gvt_rs_cond_resched() };
}

// ---- user memory -----------------------------------------------------------

/// A register's bytes (1, 2, 4 or 8 of them, little-endian as VFIO hands
/// them over on the little-endian machines the module builds for) to user
/// address `addr`: one store of that width, not the generic copy.
#[inline(always)]
pub(crate) fn put_user_reg(addr: usize, bytes: &[u8]) -> Result {
    let v = match *bytes {
        [a] => u64::from(a),
        [a, b] => u64::from(u16::from_le_bytes([a, b])),
        [a, b, c, d] => u64::from(u32::from_le_bytes([a, b, c, d])),
        [a, b, c, d, e, f, g, h] => u64::from_le_bytes([a, b, c, d, e, f, g, h]),
        _ => return Err(EINVAL),
    };
    // SAFETY: the helper checks the address (access_ok) and recovers from
    // a fault: any address is acceptable; any other size is -EINVAL.
    errno_result(unsafe {
        vfio::gvt_rs_put_user(addr as *mut core::ffi::c_void, v, bytes.len() as u32)
    })
}

/// `to_result` of a trap's user access, inlined: the common 0 costs one
/// test, not a call.
#[inline(always)]
fn errno_result(r: core::ffi::c_int) -> Result {
    if r == 0 {
        Ok(())
    } else {
        Err(Error::from_errno(r))
    }
}

/// [`put_user_reg`]'s reverse: `bytes.len()` (1, 2, 4 or 8) bytes from user
/// address `addr`, one load of that width.
#[inline(always)]
pub(crate) fn get_user_reg(addr: usize, bytes: &mut [u8]) -> Result {
    let mut v = 0u64;
    // SAFETY: as for `put_user_reg`; `v` is a valid u64 to write.
    errno_result(unsafe {
        vfio::gvt_rs_get_user(addr as *const core::ffi::c_void, &mut v, bytes.len() as u32)
    })?;
    match bytes {
        [a] => *a = v as u8,
        [_, _] => bytes.copy_from_slice(&(v as u16).to_le_bytes()),
        [_, _, _, _] => bytes.copy_from_slice(&(v as u32).to_le_bytes()),
        [_, _, _, _, _, _, _, _] => bytes.copy_from_slice(&v.to_le_bytes()),
        _ => return Err(EINVAL),
    }
    Ok(())
}

/// The running task, as an address (a key; never dereferenced).
pub(crate) fn current_task() -> usize {
    kernel::task::Task::current_raw() as usize
}

/// The running task's mm as a key (`current->mm`; 0 for kernel threads).
pub(crate) fn current_mm() -> usize {
    kernel::current!()
        .mm()
        .map_or(0, |mm| ptr::from_ref(mm) as usize)
}

/// A `core::fmt::Display` value for the kernel's `pr_*!` macros.
pub(crate) struct Shown<T>(pub(crate) T);

impl<T: core::fmt::Display> kernel::fmt::Display for Shown<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Display::fmt(&self.0, f)
    }
}

// ---- host pages ----------------------------------------------------------------

/// Host pages by page frame number, as the core's [`HostMemory`].  The core
/// only names frames it holds: its own pages (shadow tables, shadow rings,
/// scratch) and guest pages it keeps pinned while it uses them.
pub(crate) struct KHost;

impl HostMemory for KHost {
    fn read(
        &self,
        page: HostPage,
        offset: usize,
        buf: &mut [u8],
    ) -> core::result::Result<(), MemError> {
        // SAFETY: the helper checks the pfn and the bounds and copies into
        // `buf`, valid for `buf.len()` bytes; the frame is one the core
        // holds (see the type's documentation).
        let r = unsafe {
            vfio::gvt_rs_pfn_copy(page.0, offset, buf.as_mut_ptr().cast(), buf.len(), false)
        };
        if r == 0 {
            Ok(())
        } else {
            Err(MemError::OutOfRange)
        }
    }
    fn write(
        &mut self,
        page: HostPage,
        offset: usize,
        data: &[u8],
    ) -> core::result::Result<(), MemError> {
        // SAFETY: as in `read`; with `write` set the helper only reads `data`.
        let r = unsafe {
            vfio::gvt_rs_pfn_copy(
                page.0,
                offset,
                data.as_ptr().cast_mut().cast(),
                data.len(),
                true,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(MemError::OutOfRange)
        }
    }
}

/// Zeroed pages for shadow page tables, as the core's [`HostPageAlloc`].
pub(crate) struct KAlloc;

impl HostPageAlloc for KAlloc {
    fn alloc(&mut self) -> Option<HostPage> {
        // SAFETY: a plain page allocation.
        let pfn = unsafe { vfio::gvt_rs_alloc_pfn() };
        (pfn != 0).then_some(HostPage(pfn))
    }
    fn free(&mut self, page: HostPage) {
        // SAFETY: the core frees only what `alloc` returned, once no shadow
        // table references it (its `HostPageAlloc` contract).
        unsafe { vfio::gvt_rs_free_pfn(page.0) };
    }
}

/// The frame number of a page we own.
pub(crate) fn page_pfn(page: &Page) -> u64 {
    // SAFETY: `page` is a live page (owned by the `Page`).
    unsafe { vfio::gvt_rs_page_pfn(page.as_ptr()) }
}

/// Zero a page we own (`clear_highpage`).
pub(crate) fn clear_page(page: &Page) {
    // SAFETY: `page` is a live page owned by the `Page`.
    unsafe { vfio::gvt_rs_clear_pfn(page_pfn(page)) };
}

/// A reference on a page (`try_get_page`), dropped with `put_page`.
#[repr(transparent)]
pub(crate) struct PageRef(NonNull<bindings::page>);

// SAFETY: a page reference may be taken and dropped on any thread.
unsafe impl Send for PageRef {}
// SAFETY: `&PageRef` only reads the pointer.
unsafe impl Sync for PageRef {}

impl PageRef {
    /// A new reference on the page of frame `pfn` (`None`: no struct page,
    /// or the page is being freed).
    ///
    /// # Safety
    /// The caller holds the frame for the call (a pin, or its own page), so
    /// its `struct page` is not freed under `try_get_page`.
    pub(crate) unsafe fn get(pfn: u64) -> Option<Self> {
        // SAFETY: by the caller's guarantee; the helper checks `pfn_valid`
        // and refuses a page whose count already dropped to zero.
        NonNull::new(unsafe { vfio::gvt_rs_pfn_get_page(pfn) }).map(Self)
    }

    fn as_ptr(&self) -> *mut bindings::page {
        self.0.as_ptr()
    }
}

impl Drop for PageRef {
    fn drop(&mut self) {
        // SAFETY: the reference `get` took, dropped once.
        unsafe { vfio::gvt_rs_put_page(self.0.as_ptr()) };
    }
}

// ---- eventfds, irqfds ------------------------------------------------------------

/// A reference on an eventfd context (`VFIO_DEVICE_SET_IRQS` triggers).
pub(crate) struct EventFd(NonNull<bindings::eventfd_ctx>);

// SAFETY: eventfd contexts are refcounted kernel objects usable from any thread.
unsafe impl Send for EventFd {}
// SAFETY: as above; `eventfd_signal` takes the context's own lock.
unsafe impl Sync for EventFd {}

impl EventFd {
    /// The eventfd of file descriptor `fd` (EBADF for a closed fd, EINVAL
    /// for a file that is no eventfd).
    pub(crate) fn from_fd(fd: i32) -> Result<Self> {
        // SAFETY: `eventfd_ctx_fdget` validates `fd` itself and returns a
        // reference or an `ERR_PTR`.
        let ctx = from_err_ptr(unsafe { bindings::eventfd_ctx_fdget(fd) })?;
        NonNull::new(ctx).map(Self).ok_or(EINVAL)
    }

    pub(crate) fn signal(&self) {
        // SAFETY: `self` holds a reference on the context.
        unsafe { vfio::gvt_rs_eventfd_signal(self.0.as_ptr()) };
    }
}

impl Drop for EventFd {
    fn drop(&mut self) {
        // SAFETY: the reference `from_fd` took, dropped once.
        unsafe { bindings::eventfd_ctx_put(self.0.as_ptr()) };
    }
}

/// What an irqfd of a [`VirqfdSlot`] calls (vfio's workqueue, process
/// context); `ID` tells the slots of one owner apart.
pub(crate) trait VirqfdHandler<const ID: usize>: Sync {
    fn virqfd(&self);
}

/// A slot for one of vfio's virqfds (an eventfd that calls back into the
/// driver: QEMU's INTx mask/unmask resamplefd path).  vfio's virqfd code
/// owns the slot's contents (it clears it under its own lock when the
/// eventfd closes); we only hand its address to `vfio_virqfd_{enable,disable}`.
pub(crate) struct VirqfdSlot(Opaque<*mut vfio::virqfd>);

// SAFETY: the slot's contents are only read and written by vfio's virqfd
// code (under its own lock), on any thread; we only pass its address.
unsafe impl Send for VirqfdSlot {}
// SAFETY: as above.
unsafe impl Sync for VirqfdSlot {}

impl VirqfdSlot {
    pub(crate) fn new() -> Self {
        Self(Opaque::new(ptr::null_mut()))
    }

    /// Call `owner.virqfd()` whenever eventfd `fd` is signalled.
    ///
    /// # Safety
    /// `owner` outlives the irqfd: it calls [`VirqfdSlot::disable`] (which
    /// waits for a running callback) before it goes away.  The caller
    /// serialises enable and disable of one slot.
    pub(crate) unsafe fn enable<const ID: usize, T: VirqfdHandler<ID>>(
        &self,
        owner: &T,
        fd: i32,
    ) -> Result {
        unsafe extern "C" fn thread<const ID: usize, T: VirqfdHandler<ID>>(
            opaque: *mut core::ffi::c_void,
            _data: *mut core::ffi::c_void,
        ) {
            // SAFETY: `opaque` is the `owner` of `enable`, alive until the
            // irqfd is disabled (the caller's guarantee).
            unsafe { &*opaque.cast::<T>() }.virqfd();
        }
        // SAFETY: the slot is pinned in its owner and only vfio's virqfd
        // code writes it; `owner` outlives the irqfd (the caller's guarantee).
        to_result(unsafe {
            vfio::vfio_virqfd_enable(
                ptr::from_ref(owner).cast_mut().cast(),
                None,
                Some(thread::<ID, T>),
                ptr::null_mut(),
                self.0.get(),
                fd,
            )
        })
    }

    /// Unbind the irqfd, waiting for a running callback (a no-op when empty).
    pub(crate) fn disable(&self) {
        // SAFETY: the slot is only written by vfio's virqfd code, which
        // serialises on its own lock; disabling an empty slot is a no-op.
        unsafe { vfio::vfio_virqfd_disable(self.0.get()) };
    }
}

// ---- migration data files -----------------------------------------------------

/// A VFIO migration data file (`gvt_rs_helpers.c`): read by the VMM while
/// saving, written while resuming; it owns its buffer and its lock.
/// Dropping it lets go of the vGPU's reference (the file answers ENODEV
/// until the VMM closes its fd).
pub(crate) struct MigFile(NonNull<vfio::gvt_rs_migf>);

// SAFETY: the C object is usable from any thread; every function takes its
// own mutex.
unsafe impl Send for MigFile {}
// SAFETY: as above.
unsafe impl Sync for MigFile {}

impl MigFile {
    /// A new file (`saving`: read-only for the VMM, else write-only) with a
    /// buffer of `cap` bytes.
    pub(crate) fn new(saving: bool, cap: usize) -> Result<Self> {
        // SAFETY: allocates and initialises the object and its file.
        let m = from_err_ptr(unsafe { vfio::gvt_rs_migf_new(saving, cap) })?;
        NonNull::new(m).map(Self).ok_or(ENOMEM)
    }

    /// A new reference to the file, for the VFIO core to install as the
    /// VMM's fd (it owns that reference).
    pub(crate) fn file_ref(&self) -> *mut bindings::file {
        // SAFETY: a live object (owned by `self`); `get_file` takes a reference.
        unsafe { vfio::gvt_rs_migf_file(self.0.as_ptr()) }.cast()
    }

    /// Saving: append `data` to what the VMM may read.
    pub(crate) fn fill(&self, data: &[u8]) -> Result {
        // SAFETY: a live object; `data` is valid for its length; the helper copies it.
        to_result(unsafe { vfio::gvt_rs_migf_fill(self.0.as_ptr(), data.as_ptr(), data.len()) })
    }

    /// Whether `VFIO_MIG_GET_PRECOPY_INFO` is answered (PRE_COPY states).
    pub(crate) fn set_precopy(&self, on: bool) {
        // SAFETY: a live object.
        unsafe { vfio::gvt_rs_migf_set_precopy(self.0.as_ptr(), on) };
    }

    /// PRE_COPY: let `owner.refill` append a round of what changed when
    /// the VMM read everything and asks how much is left.
    ///
    /// # Safety
    /// `owner` stays valid (at the same address) while this file is held
    /// (until it is dropped: `gvt_rs_migf_put` waits for a running refill
    /// under the file's mutex and clears the callback).
    pub(crate) unsafe fn set_refill<T: MigRefill>(&self, owner: &T) {
        unsafe extern "C" fn refill<T: MigRefill>(
            owner: *const core::ffi::c_void,
            dst: *mut u8,
            room: usize,
        ) -> isize {
            // SAFETY: `owner` is the `T` of `set_refill`, alive while the
            // file is held (the caller's guarantee); `dst` is the file's
            // buffer past what is filled, `room` bytes, under its mutex.
            let (owner, dst) = unsafe {
                (
                    &*owner.cast::<T>(),
                    core::slice::from_raw_parts_mut(dst, room),
                )
            };
            isize::try_from(owner.refill(dst)).unwrap_or(0)
        }
        // SAFETY: a live object; `owner` is only handed back to `refill::<T>`.
        unsafe {
            vfio::gvt_rs_migf_set_refill(
                self.0.as_ptr(),
                Some(refill::<T>),
                ptr::from_ref(owner).cast(),
            )
        };
    }

    /// Resuming: the stream must hold `bytes` at offset `at` (checked as
    /// the VMM writes; a mismatch fails that write with EINVAL).
    pub(crate) fn expect(&self, at: usize, bytes: &[u8]) -> Result {
        // SAFETY: a live object; `bytes` is valid for its length and copied.
        to_result(unsafe {
            vfio::gvt_rs_migf_expect(self.0.as_ptr(), at, bytes.as_ptr(), bytes.len())
        })
    }

    /// Whether a write was refused by [`MigFile::expect`].
    pub(crate) fn refused(&self) -> bool {
        // SAFETY: a live object.
        unsafe { vfio::gvt_rs_migf_refused(self.0.as_ptr()) }
    }

    /// Resuming: stop accepting writes and take what the VMM wrote.
    pub(crate) fn take(&self) -> MigData {
        let mut p: *mut u8 = ptr::null_mut();
        // SAFETY: a live object; the helper hands over its buffer (or NULL)
        // and its length, and never touches it again.
        let len = unsafe { vfio::gvt_rs_migf_take(self.0.as_ptr(), &mut p) };
        MigData {
            ptr: p,
            len: if p.is_null() { 0 } else { len },
        }
    }
}

impl Drop for MigFile {
    fn drop(&mut self) {
        // SAFETY: created by `new`; our reference is dropped once.
        unsafe { vfio::gvt_rs_migf_put(self.0.as_ptr()) };
    }
}

/// Who writes the PRE_COPY rounds of a saving [`MigFile`].
pub(crate) trait MigRefill: Sync {
    /// Write a round into `dst` (the file's free space); its length (0: none).
    fn refill(&self, dst: &mut [u8]) -> usize;
}

/// The bytes a VMM wrote into a resuming [`MigFile`], owned.
pub(crate) struct MigData {
    ptr: *mut u8,
    len: usize,
}

impl MigData {
    pub(crate) fn bytes(&self) -> &[u8] {
        if self.ptr.is_null() {
            return &[];
        }
        // SAFETY: `ptr` is the `kvzalloc` buffer handed over by
        // `gvt_rs_migf_take`, `len` bytes of it written, owned by `self`.
        unsafe { core::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for MigData {
    fn drop(&mut self) {
        // SAFETY: the buffer handed over by `gvt_rs_migf_take` (or NULL), freed once.
        unsafe { vfio::gvt_rs_migf_free_data(self.ptr) };
    }
}

// ---- work items -------------------------------------------------------------------

/// What a [`CWork`] runs (process context, the system workqueue); `ID`
/// tells the work items of one owner apart.
pub(crate) trait WorkHandler<const ID: usize>: Sync {
    fn run(&self);
}

/// A C work item (`gvt_rs_helpers.c`) that runs `owner.run()`.  Dropping it
/// cancels it and waits for a running instance.
pub(crate) struct CWork(NonNull<vfio::gvt_rs_work>);

// SAFETY: the work item is a kernel object usable from any thread; its
// owner is `Sync` (`WorkHandler`).
unsafe impl Send for CWork {}
// SAFETY: as above; every method is a workqueue call that synchronises itself.
unsafe impl Sync for CWork {}

impl CWork {
    /// A new item running `owner.run()`; `account`: charge its memory to
    /// the caller's memcg.
    ///
    /// # Safety
    /// `owner` stays valid (at the same address) until the item is dropped.
    pub(crate) unsafe fn new<const ID: usize, T: WorkHandler<ID>>(
        owner: &T,
        account: bool,
    ) -> Result<Self> {
        unsafe extern "C" fn run<const ID: usize, T: WorkHandler<ID>>(
            owner: *const core::ffi::c_void,
        ) {
            // SAFETY: `owner` is the `T` of `new`, alive until the item is
            // dropped, which waits for this call (the caller's guarantee).
            unsafe { &*owner.cast::<T>() }.run();
        }
        // SAFETY: allocates and initialises the item; `owner` is only
        // handed back to `run::<ID, T>`.
        let w = unsafe {
            vfio::gvt_rs_work_new(Some(run::<ID, T>), ptr::from_ref(owner).cast(), account)
        };
        NonNull::new(w).map(Self).ok_or(ENOMEM)
    }

    /// Queue it now (a no-op while it is pending).
    pub(crate) fn queue(&self) {
        // SAFETY: a live item (owned by `self`).
        unsafe { vfio::gvt_rs_work_queue(self.0.as_ptr()) };
    }

    /// Run it in `delay_jiffies` (`mod_delayed_work`: re-armed if pending).
    pub(crate) fn kick(&self, delay_jiffies: u64) {
        // SAFETY: as in `queue`.
        unsafe { vfio::gvt_rs_work_kick(self.0.as_ptr(), delay_jiffies as _) };
    }

    /// Run it at `deadline_ns` (or earlier, if it is armed for earlier).
    pub(crate) fn arm(&self, deadline_ns: u64, now_ns: u64) {
        // SAFETY: as in `queue`.
        unsafe { vfio::gvt_rs_work_arm(self.0.as_ptr(), deadline_ns, now_ns) };
    }

    /// Forget the armed deadline (the work is running).
    pub(crate) fn disarm(&self) {
        // SAFETY: as in `queue`.
        unsafe { vfio::gvt_rs_work_disarm(self.0.as_ptr()) };
    }

    /// Cancel it and wait for a running instance.
    pub(crate) fn cancel_sync(&self) {
        // SAFETY: as in `queue`.
        unsafe { vfio::gvt_rs_work_cancel_sync(self.0.as_ptr()) };
    }
}

impl Drop for CWork {
    fn drop(&mut self) {
        // SAFETY: allocated by `new`, freed once; the helper cancels and waits first.
        unsafe { vfio::gvt_rs_work_free(self.0.as_ptr()) };
    }
}

// ---- PFN mappings ----------------------------------------------------------------

pub(crate) type VmFaultT = bindings::vm_fault_t;
pub(crate) const SIGBUS: VmFaultT = bindings::vm_fault_reason_VM_FAULT_SIGBUS as VmFaultT;

/// The fault handler of a PFN mapping whose private data is a `T`.
pub(crate) trait PfnFault<T>: 'static {
    fn fault(owner: &T, f: &VmFault<'_>) -> VmFaultT;
}

/// A page fault being handled.
pub(crate) struct VmFault<'a>(*mut bindings::vm_fault, PhantomData<&'a ()>);

impl VmFault<'_> {
    /// The faulting page's offset in the mapped file, in pages.
    pub(crate) fn pgoff(&self) -> u64 {
        // SAFETY: `self.0` is the fault being handled.
        unsafe { vfio::gvt_rs_vmf_pgoff(self.0) as u64 }
    }

    /// Map frame `pfn` at the fault address (no page reference).
    ///
    /// # Safety
    /// The frame stays allocated while it is mapped: the caller zaps the
    /// mapping before the frame can be freed (or holds a reference on it
    /// for as long as the mapping exists).
    pub(crate) unsafe fn insert_pfn(&self, pfn: u64) -> VmFaultT {
        // SAFETY: `self.0` is the fault being handled; the frame's life is
        // the caller's guarantee.
        unsafe { vfio::gvt_rs_vmf_insert_pfn(self.0, pfn) }
    }
}

struct FaultAdapter<T, H>(PhantomData<(T, H)>);

impl<T: 'static, H: PfnFault<T>> FaultAdapter<T, H> {
    const OPS: Ops<bindings::vm_operations_struct> = Ops({
        // SAFETY: all-zero is a valid `vm_operations_struct` (every field is
        // an optional function pointer or a plain value).
        let mut ops: bindings::vm_operations_struct = unsafe { core::mem::zeroed() };
        ops.fault = Some(Self::fault);
        ops
    });

    const fn ops() -> &'static Ops<bindings::vm_operations_struct> {
        &Self::OPS
    }

    unsafe extern "C" fn fault(vmf: *mut bindings::vm_fault) -> VmFaultT {
        // SAFETY: `vm_private_data` is the `T` that `Vma::set_pfnmap` set,
        // alive for as long as the mapping exists (its guarantee).
        let owner = unsafe { &*vfio::gvt_rs_vmf_private(vmf).cast::<T>() };
        H::fault(owner, &VmFault(vmf, PhantomData))
    }
}

/// A mapping being set up by mmap(2).
pub(crate) struct Vma<'a>(*mut bindings::vm_area_struct, PhantomData<&'a ()>);

impl Vma<'_> {
    /// # Safety
    /// `vma` is the mapping being set up by the `mmap` call in progress.
    pub(crate) unsafe fn from_raw(vma: *mut bindings::vm_area_struct) -> Self {
        Self(vma, PhantomData)
    }

    /// Offset in the file, in pages.
    pub(crate) fn pgoff(&self) -> u64 {
        // SAFETY: the mapping being set up (type invariant).
        unsafe { vfio::gvt_rs_vma_pgoff(self.0) as u64 }
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> u64 {
        // SAFETY: as above.
        unsafe { vfio::gvt_rs_vma_len(self.0) as u64 }
    }

    /// A shared mapping (`VM_SHARED`).
    pub(crate) fn shared(&self) -> bool {
        // SAFETY: as above.
        unsafe { vfio::gvt_rs_vma_is_shared(self.0) }
    }

    /// Make it a PFN mapping (`VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP`;
    /// see `gvt_rs_helpers.h`) whose faults `H` handles with `owner`;
    /// `read_only`: refuse a writable mapping (EINVAL) and keep it from
    /// becoming one.
    ///
    /// # Safety
    /// `owner` outlives the mapping (the mapping holds the file that keeps
    /// it alive).
    pub(crate) unsafe fn set_pfnmap<T: 'static, H: PfnFault<T>>(
        &self,
        owner: &T,
        read_only: bool,
    ) -> Result {
        let ops = &FaultAdapter::<T, H>::ops().0;
        let owner = ptr::from_ref(owner).cast_mut().cast();
        if read_only {
            // SAFETY: the mapping being set up; the ops table is 'static and
            // `owner` outlives the mapping (the caller's guarantee).
            to_result(unsafe { vfio::gvt_rs_vma_setup_ro(self.0, ops, owner) })
        } else {
            // SAFETY: as above.
            unsafe { vfio::gvt_rs_vma_setup_pfnmap(self.0, ops, owner) };
            Ok(())
        }
    }
}

// ---- dma-buf export --------------------------------------------------------------

/// What an exported dma-buf shows: referenced pages, read by importers
/// (scatter-gather tables) and by CPU mappings (PFN faults).
pub(crate) trait DmaBufBacking: Send + Sync + 'static {
    fn pages(&self) -> &[PageRef];
    fn size(&self) -> usize;
    /// A CPU mapping faulted a page in.
    fn faulted(&self);
}

struct DmaBufAdapter<B>(PhantomData<B>);

impl<B: DmaBufBacking> PfnFault<B> for DmaBufAdapter<B> {
    fn fault(b: &B, f: &VmFault<'_>) -> VmFaultT {
        match usize::try_from(f.pgoff())
            .ok()
            .and_then(|i| b.pages().get(i))
        {
            Some(pg) => {
                b.faulted();
                // SAFETY: as `gvt_rs_vmf_insert_page_pfn` of `pg`'s frame:
                // the buffer holds a reference on the page until `release`,
                // which runs only after every mapping of it is gone.
                unsafe { vfio::gvt_rs_vmf_insert_page_pfn(f.0, pg.as_ptr()) }
            }
            None => SIGBUS,
        }
    }
}

impl<B: DmaBufBacking> DmaBufAdapter<B> {
    const OPS: Ops<bindings::dma_buf_ops> = Ops({
        // SAFETY: all-zero is a valid `dma_buf_ops` (optional callbacks, plain values).
        let mut ops: bindings::dma_buf_ops = unsafe { core::mem::zeroed() };
        ops.map_dma_buf = Some(Self::map);
        ops.unmap_dma_buf = Some(Self::unmap);
        ops.release = Some(Self::release);
        ops.mmap = Some(Self::mmap);
        ops
    });

    const fn ops() -> &'static Ops<bindings::dma_buf_ops> {
        &Self::OPS
    }

    /// # Safety
    /// `buf` is a dma-buf exported by [`export_dmabuf`] and not yet released.
    unsafe fn backing<'a>(buf: *mut bindings::dma_buf) -> &'a B {
        // SAFETY: `priv_` is the `B` box leaked at export, freed only by `release`.
        unsafe { &*(*buf).priv_.cast::<B>() }
    }

    unsafe extern "C" fn map(
        at: *mut bindings::dma_buf_attachment,
        dir: bindings::dma_data_direction,
    ) -> *mut bindings::sg_table {
        // SAFETY: the dma-buf core passes a live attachment of our buffer.
        let (obj, dev) = unsafe { (Self::backing((*at).dmabuf), (*at).dev) };
        // SAFETY: all-zero is an empty `sg_table`.
        let Ok(sgt) = KBox::new(
            unsafe { core::mem::zeroed::<bindings::sg_table>() },
            GFP_KERNEL,
        ) else {
            return err_ptr(ENOMEM);
        };
        let sgt = KBox::into_raw(sgt);
        let pages = obj.pages();
        // SAFETY: `sgt` is ours; `PageRef` is a transparent page pointer, so
        // the array holds `pages.len()` referenced pages.
        let r = unsafe {
            bindings::sg_alloc_table_from_pages_segment(
                sgt,
                pages.as_ptr().cast_mut().cast(),
                pages.len() as u32,
                0,
                obj.size() as _,
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

    unsafe extern "C" fn unmap(
        at: *mut bindings::dma_buf_attachment,
        sgt: *mut bindings::sg_table,
        dir: bindings::dma_data_direction,
    ) {
        // SAFETY: `sgt` came from `map` for this attachment
        // (`dma_unmap_sgtable` is an inline of exactly this call).
        unsafe {
            bindings::dma_unmap_sg_attrs((*at).dev, (*sgt).sgl, (*sgt).orig_nents as i32, dir, 0);
            bindings::sg_free_table(sgt);
            drop(KBox::from_raw(sgt));
        }
    }

    unsafe extern "C" fn release(buf: *mut bindings::dma_buf) {
        // SAFETY: the last reference is gone; `priv_` is our leaked box.
        drop(unsafe { KBox::from_raw((*buf).priv_.cast::<B>()) });
    }

    unsafe extern "C" fn mmap(
        buf: *mut bindings::dma_buf,
        vma: *mut bindings::vm_area_struct,
    ) -> i32 {
        // SAFETY: `vma` is being set up by mmap(2) of our dma-buf.
        let vma = unsafe { Vma::from_raw(vma) };
        if !vma.shared() {
            return EINVAL.to_errno();
        }
        // SAFETY: the dma-buf core passes our live buffer.
        let obj = unsafe { Self::backing(buf) };
        // SAFETY: the mapping holds the dma-buf file, so the backing (and
        // the page references it holds) outlives it; the dma-buf core
        // checked the range against the buffer's size.  A PFN mapping: the
        // pages belong to the guest RAM's file, which may drop them from its
        // cache (the VMM unmaps its RAM) while the buffer still shows them.
        match unsafe { vma.set_pfnmap::<B, Self>(obj, false) } {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }
}

fn err_ptr<T>(e: Error) -> *mut T {
    e.to_errno() as isize as *mut T
}

/// Export `obj` as a new dma-buf and return its file descriptor
/// (`O_CLOEXEC | O_RDWR`).  The buffer owns `obj` until its last reference
/// is gone; on failure `obj` is dropped.
pub(crate) fn export_dmabuf<B: DmaBufBacking>(obj: B) -> Result<i32> {
    let size = obj.size();
    let priv_ = KBox::into_raw(KBox::new(obj, GFP_KERNEL)?);
    // SAFETY: all-zero is a valid `dma_buf_export_info`; the fields set are
    // what DEFINE_DMA_BUF_EXPORT_INFO sets, plus ours.
    let mut info: bindings::dma_buf_export_info = unsafe { core::mem::zeroed() };
    info.exp_name = c"gvt_rs".as_ptr().cast();
    // SAFETY: reads THIS_MODULE.
    info.owner = unsafe { vfio::gvt_rs_this_module() }.cast();
    info.ops = &DmaBufAdapter::<B>::ops().0;
    info.size = size;
    info.flags = bindings::O_RDWR as i32;
    info.priv_ = priv_.cast();
    // SAFETY: `info` is complete; on success the buffer owns `priv_`.
    let buf = match from_err_ptr(unsafe { bindings::dma_buf_export(&info) }) {
        Ok(buf) => buf,
        Err(e) => {
            // SAFETY: not exported: the box is still ours.
            drop(unsafe { KBox::from_raw(priv_) });
            return Err(e);
        }
    };
    // SAFETY: `buf` is our new dma-buf; on failure dropping its only
    // reference releases it (and `obj`).
    let fd = unsafe { bindings::dma_buf_fd(buf, (bindings::O_CLOEXEC | bindings::O_RDWR) as i32) };
    if fd < 0 {
        // SAFETY: as above.
        unsafe { bindings::dma_buf_put(buf) };
        return Err(Error::from_errno(fd));
    }
    Ok(fd)
}
