//! The GPU lock as a service the core takes for itself (isolation under a
//! hostile tenant).
//!
//! The mediated GPU ([`Gpu`]: engines, scheduler, per-slot rings and
//! interrupts) and the one physical GGTT are shared by every vGPU.  Whoever
//! holds them blocks every other tenant's traps and the engine worker, so
//! the facade ([`super::vgpu::Vgpu`]) never receives them for a whole trap:
//! it receives a [`GpuLock`] (declared with the other services in
//! [`super::services`]) and takes the lock only around short sections
//! whose length no guest chooses:
//!
//! | section | bounded by |
//! |---|---|
//! | one physical GGTT entry write ([`Locked`]) | one store |
//! | audit + shadow copy + admission of one TAIL ([`Gpu::submit`]) | [`super::gpu::GpuConfig`] limits |
//! | an interrupt, fence, EIR or GDRST register | one register |
//! | refresh of the mediated registers a read overlaps | a few registers |
//! | create/destroy/reset of a slot | the slot's shadow pages |
//!
//! Never under it: `GuestMemory::pin`/`unpin` (which may fault into any
//! user mapping, including another vGPU's aperture, and wait on the VMM's
//! mm and on VFIO's container lock), PPGTT shadowing (guest-sized page
//! walks), CPU mapping invalidation, allocation of shadow pages.
//!
//! In the kernel, `with` is a `Mutex` lock/unlock pair; on the host
//! [`super::services::Held`] lends a `Gpu` the caller owns.

use core::cell::RefCell;

use super::backend::{Backend, Pte};
use super::gpu::Gpu;
use super::services::GpuLock;

/// The physical GPU as a [`Backend`] that takes the GPU lock for each
/// access and drops it right after: what the shadow GGTT writes through, so
/// that pinning the next guest page and unpinning the old one happen with
/// the lock free.
pub struct Locked<'l, L, const N: usize> {
    lock: RefCell<&'l mut L>,
    entries: u32,
}

impl<'l, L: GpuLock<Gpu = Gpu<N>>, const N: usize> Locked<'l, L, N> {
    pub fn new(lock: &'l mut L) -> Self {
        let entries = lock.with(|_, phys| u32::try_from(phys.len()).unwrap_or(u32::MAX));
        Self {
            lock: RefCell::new(lock),
            entries,
        }
    }

    /// One section.  `Locked`'s methods are leaf calls (none calls another
    /// while its section runs), so the borrow is never nested.
    fn with<R>(&self, f: impl FnOnce(&mut Gpu<N>, &mut [Pte]) -> R) -> R {
        self.lock.borrow_mut().with(f)
    }
}

impl<L: GpuLock<Gpu = Gpu<N>>, const N: usize> Backend for Locked<'_, L, N> {
    fn read_reg(&mut self, offset: u32) -> u32 {
        self.with(|gpu, phys| gpu.with_backend(phys, |b| b.read_reg(offset)))
    }
    fn write_reg(&mut self, offset: u32, value: u32) {
        self.with(|gpu, phys| gpu.with_backend(phys, |b| b.write_reg(offset, value)))
    }
    fn ggtt_entries(&self) -> u32 {
        self.entries
    }
    fn write_ggtt(&mut self, index: u32, pte: Pte) {
        self.with(|_, phys| {
            if let Some(e) = phys.get_mut(index as usize) {
                *e = pte;
            }
        })
    }
    fn read_ggtt(&self, index: u32) -> Pte {
        self.with(|_, phys| phys.get(index as usize).copied().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::super::gpu::{Gpu, GpuConfig};
    use super::super::services::Held;
    use super::*;
    use std::vec;

    /// A lock that counts its sections, to prove what runs outside them.
    struct Counting<'a, const N: usize> {
        inner: Held<'a, Gpu<N>>,
        sections: u32,
        held: bool,
    }

    impl<const N: usize> GpuLock for Counting<'_, N> {
        type Gpu = Gpu<N>;
        fn with<R>(&mut self, f: impl FnOnce(&mut Gpu<N>, &mut [Pte]) -> R) -> R {
            assert!(!self.held, "GPU lock taken twice");
            self.held = true;
            self.sections += 1;
            let r = self.inner.with(f);
            self.held = false;
            r
        }
    }

    #[test]
    fn locked_backend_takes_the_lock_once_per_access() {
        let mut phys = vec![Pte::default(); 8192];
        let mut gpu = Gpu::<2>::new(GpuConfig::DEFAULT, &mut phys).unwrap();
        let mut l = Counting {
            inner: Held::new(&mut gpu, &mut phys),
            sections: 0,
            held: false,
        };
        {
            let mut b = Locked::new(&mut l);
            assert_eq!(b.ggtt_entries(), 8192);
            b.write_ggtt(5, Pte(0x1001));
            assert_eq!(b.read_ggtt(5), Pte(0x1001));
            assert_eq!(b.read_ggtt(9000), Pte::default());
        }
        // new() + write + two reads.
        assert_eq!(l.sections, 4);
        assert_eq!(phys[5], Pte(0x1001));
    }
}
