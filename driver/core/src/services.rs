//! The services the core receives from whoever runs it: the seam between
//! the mediator and the kernel (or a host test).
//!
//! Every side effect of the core that is not a computation on the state it
//! was lent goes through one of these traits:
//!
//! | trait | what | kernel | host tests |
//! |---|---|---|---|
//! | [`GuestMemory`] | pin/unpin a guest frame (this vGPU's VM only) | `vfio_pin_pages` | `fakes::FakeGuestMemory` |
//! | [`HostMemory`] | read/write a host page | `kmap_local_page` + `memcpy` | `fakes::FakeHostMemory` |
//! | [`HostPageAlloc`] | pages for shadow page tables | `alloc_page` | `fakes::FakeHostPages` |
//! | [`Clock`] | monotonic ns | `ktime_get_ns` | a `Cell` |
//! | [`CpuMappings`] | drop CPU views of a GGTT entry | `unmap_mapping_range` | a recorder |
//! | [`GpuLock`] | bounded sections on the shared GPU | a `Mutex` | [`Held`], `fakes::CheckedLock` |
//!
//! [`Services`] bundles the six as associated types (as mdevctl's
//! `Environment` bundles its services, and nova-core's `FalconEngine` its
//! supertraits), so the facade ([`super::vgpu::Vgpu`]) takes one type
//! parameter for all of them.
//!
//! What is not here: the physical GPU's interface ([`super::backend::Backend`],
//! and [`super::sched::Engines`] on top of it) is the seam between the
//! mediator and the GPU *model* inside the core (gvt-sim), not a service
//! of the kernel.

use super::backend::Pte;
use super::mem::{Gfn, HostPage, MemError};

/// Guest memory as the mediator may touch it: pin a guest frame to get the
/// host page behind it, unpin it again.  Pins are counted by the caller: every
/// successful `pin` is matched by exactly one `unpin` (no leaked pin, ever).
pub trait GuestMemory {
    /// Pin guest frame `gfn` and return the host page that backs it.
    fn pin(&mut self, gfn: Gfn) -> Result<HostPage, MemError>;
    /// Release one pin taken by [`GuestMemory::pin`].
    fn unpin(&mut self, gfn: Gfn);
}

/// Host pages as the engine (through the physical GGTT / shadow PPGTT) and the
/// mediator see them.
pub trait HostMemory {
    /// Copy `buf.len()` bytes from `page` at `offset` (within one page).
    fn read(&self, page: HostPage, offset: usize, buf: &mut [u8]) -> Result<(), MemError>;
    /// Copy `data` into `page` at `offset` (within one page).
    fn write(&mut self, page: HostPage, offset: usize, data: &[u8]) -> Result<(), MemError>;
}

/// Host pages the mediator owns (shadow tables).  In the kernel:
/// `alloc_page`/`__free_page`.
pub trait HostPageAlloc {
    /// A fresh host page, or `None` when out of memory.
    fn alloc(&mut self) -> Option<HostPage>;
    /// Give back a page from [`HostPageAlloc::alloc`].
    fn free(&mut self, page: HostPage);
}

/// Monotonic time in ns (ktime in the kernel, simulated in tests).
pub trait Clock {
    fn now_ns(&self) -> u64;
}

/// The CPU-side mappings of the aperture BAR, as the shadow GGTT must keep them
/// coherent.  In the kernel: `unmap_mapping_range` over one page of the BAR2
/// region of the mdev's file mapping.
pub trait CpuMappings {
    /// Drop any CPU mapping of aperture page `aperture_page_index` (aperture
    /// offset `aperture_page_index * 4096`); the next access faults again.
    fn invalidate(&mut self, aperture_page_index: u64);

    /// GGTT entry `index` (anywhere in the vGPU's slices, aperture or not)
    /// now maps another page: drop every other CPU view of it (the kernel's
    /// display region and its mappings).  Called after the physical entry
    /// was rewritten and before the old page is unpinned, like
    /// [`CpuMappings::invalidate`].
    fn entry_changed(&mut self, index: u64) {
        let _ = index;
    }
}

/// Access to the mediated GPU (`Gpu`: the core's `gpu::Gpu<N>`) and the
/// physical GGTT, one bounded section at a time.  `f` must not sleep on
/// anything a guest controls (the sections are listed in
/// [`super::gpu_lock`]).
pub trait GpuLock {
    /// What the lock guards besides the physical GGTT.
    type Gpu;
    fn with<R>(&mut self, f: impl FnOnce(&mut Self::Gpu, &mut [Pte]) -> R) -> R;
}

/// A GPU the caller already owns (host tests, tools, a caller that holds
/// the real lock for a larger reason).
pub struct Held<'a, G> {
    pub gpu: &'a mut G,
    pub phys: &'a mut [Pte],
}

impl<'a, G> Held<'a, G> {
    pub fn new(gpu: &'a mut G, phys: &'a mut [Pte]) -> Self {
        Self { gpu, phys }
    }
}

impl<G> GpuLock for Held<'_, G> {
    type Gpu = G;
    fn with<R>(&mut self, f: impl FnOnce(&mut G, &mut [Pte]) -> R) -> R {
        f(self.gpu, self.phys)
    }
}

/// The services of one call into the facade, as one type: each associated
/// type names the implementation of one service.  Any six implementations
/// form a `Services` as the tuple `(Lock, Host, Alloc, Clock, Guest, Cpu)`,
/// so a caller never writes an `impl` (the kernel names its tuple once).
pub trait Services {
    /// What the GPU lock guards (`gpu::Gpu<N>`).
    type Gpu;
    type Lock: GpuLock<Gpu = Self::Gpu>;
    type Host: HostMemory;
    type Alloc: HostPageAlloc;
    type Clock: Clock;
    type Guest: GuestMemory;
    type Cpu: CpuMappings;
}

impl<L, H, A, C, G, M> Services for (L, H, A, C, G, M)
where
    L: GpuLock,
    H: HostMemory,
    A: HostPageAlloc,
    C: Clock,
    G: GuestMemory,
    M: CpuMappings,
{
    type Gpu = L::Gpu;
    type Lock = L;
    type Host = H;
    type Alloc = A;
    type Clock = C;
    type Guest = G;
    type Cpu = M;
}
