//! Test doubles for the memory traits, shared by every host test, property
//! test, fuzz target and benchmark.  Host-only (`std`): compiled for tests and
//! with the `fakes` feature, never in the kernel module.
//!
//! They stay in the core's `src/` (not a crate of their own) because the
//! core's unit tests use them: a crate over `gvt-core` would implement a
//! second copy of the [`super::services`] traits, not the ones those tests
//! compile against.

extern crate std;

use std::collections::BTreeMap;
use std::vec;
use std::vec::Vec;

use super::backend::Pte;
use super::mem::{Gfn, HostPage, MemError, PAGE_SIZE};
use super::services::{GpuLock, GuestMemory, HostMemory};

std::thread_local! {
    /// Whether this thread is inside a [`CheckedLock`] section.
    static GPU_LOCK_HELD: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
}

/// Whether the calling thread holds a [`CheckedLock`] now.
pub fn gpu_lock_held() -> bool {
    GPU_LOCK_HELD.with(|h| h.get())
}

/// The GPU lock as the kernel takes it, with the lock rule checked: the
/// fakes below panic if a guest page is pinned or unpinned, or a shadow page
/// allocated or freed, inside a section (the kernel would hold a lock shared
/// by every vGPU across `vfio_pin_pages`), and a nested section panics too.
pub struct CheckedLock<'a, G> {
    pub gpu: &'a mut G,
    pub phys: &'a mut [Pte],
    /// Sections taken so far.
    pub sections: u64,
}

impl<'a, G> CheckedLock<'a, G> {
    pub fn new(gpu: &'a mut G, phys: &'a mut [Pte]) -> Self {
        Self {
            gpu,
            phys,
            sections: 0,
        }
    }
}

impl<G> GpuLock for CheckedLock<'_, G> {
    type Gpu = G;
    fn with<R>(&mut self, f: impl FnOnce(&mut G, &mut [Pte]) -> R) -> R {
        assert!(!gpu_lock_held(), "GPU lock taken twice");
        GPU_LOCK_HELD.with(|h| h.set(true));
        self.sections += 1;
        let r = f(self.gpu, self.phys);
        GPU_LOCK_HELD.with(|h| h.set(false));
        r
    }
}

fn assert_unlocked(what: &str) {
    assert!(
        !gpu_lock_held(),
        "{what} under the GPU lock (a lock shared by every vGPU)"
    );
}

/// Host RAM: `pages` pages of 4 KiB, host page `n` is `HostPage(n)`.
pub struct FakeHostMemory {
    pages: Vec<u8>,
    npages: u64,
}

impl FakeHostMemory {
    pub fn new(npages: u64) -> Self {
        Self {
            pages: vec![0; (npages * PAGE_SIZE) as usize],
            npages,
        }
    }
    pub fn npages(&self) -> u64 {
        self.npages
    }
    fn span(
        &self,
        page: HostPage,
        offset: usize,
        len: usize,
    ) -> Result<core::ops::Range<usize>, MemError> {
        if page.0 >= self.npages
            || offset
                .checked_add(len)
                .is_none_or(|e| e > PAGE_SIZE as usize)
        {
            return Err(MemError::OutOfRange);
        }
        let start = page.0 as usize * PAGE_SIZE as usize + offset;
        Ok(start..start + len)
    }
    /// The whole page, for test assertions.
    pub fn page(&self, page: HostPage) -> &[u8] {
        let r = self
            .span(page, 0, PAGE_SIZE as usize)
            .expect("page in range");
        &self.pages[r]
    }
}

impl HostMemory for FakeHostMemory {
    fn read(&self, page: HostPage, offset: usize, buf: &mut [u8]) -> Result<(), MemError> {
        let r = self.span(page, offset, buf.len())?;
        buf.copy_from_slice(&self.pages[r]);
        Ok(())
    }
    fn write(&mut self, page: HostPage, offset: usize, data: &[u8]) -> Result<(), MemError> {
        let r = self.span(page, offset, data.len())?;
        self.pages[r].copy_from_slice(data);
        Ok(())
    }
}

/// A guest's RAM as the VMM DMA-mapped it: guest frames `[gfn_base, gfn_base +
/// len)` backed by host pages `[host_base, host_base + len)`.  Counts pins so
/// tests can prove that none leaks.
pub struct FakeGuestMemory {
    pub gfn_base: Gfn,
    pub len: u64,
    pub host_base: u64,
    pins: BTreeMap<Gfn, u64>,
    /// Frames the VMM has unmapped since (pinning them fails).
    unmapped: Vec<(Gfn, u64)>,
    /// Refuse pins once this many are outstanding (None: no limit).
    pub pin_limit: Option<u64>,
}

impl FakeGuestMemory {
    pub fn new(gfn_base: Gfn, len: u64, host_base: u64) -> Self {
        Self {
            gfn_base,
            len,
            host_base,
            pins: BTreeMap::new(),
            unmapped: Vec::new(),
            pin_limit: None,
        }
    }
    /// Outstanding pins, all frames together.
    pub fn outstanding_pins(&self) -> u64 {
        self.pins.values().sum()
    }
    /// Outstanding pins of one frame.
    pub fn pins_of(&self, gfn: Gfn) -> u64 {
        self.pins.get(&gfn).copied().unwrap_or(0)
    }
    /// The VMM unmaps `[gfn, gfn + n)`: later pins of those frames fail.
    pub fn unmap(&mut self, gfn: Gfn, n: u64) {
        self.unmapped.push((gfn, n));
    }
    /// Host page that backs `gfn`, if mapped.
    pub fn backing(&self, gfn: Gfn) -> Option<HostPage> {
        let mapped = gfn >= self.gfn_base && gfn - self.gfn_base < self.len;
        let gone = self.unmapped.iter().any(|&(b, n)| gfn >= b && gfn - b < n);
        (mapped && !gone).then(|| HostPage(self.host_base + (gfn - self.gfn_base)))
    }
}

impl GuestMemory for FakeGuestMemory {
    fn pin(&mut self, gfn: Gfn) -> Result<HostPage, MemError> {
        assert_unlocked("guest page pinned");
        let page = self.backing(gfn).ok_or(MemError::NotMapped)?;
        if self.pin_limit.is_some_and(|l| self.outstanding_pins() >= l) {
            return Err(MemError::NoResource);
        }
        *self.pins.entry(gfn).or_insert(0) += 1;
        Ok(page)
    }
    fn unpin(&mut self, gfn: Gfn) {
        assert_unlocked("guest page unpinned");
        match self.pins.get_mut(&gfn) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                self.pins.remove(&gfn);
            }
            None => panic!("unpin of gfn {gfn:#x} that is not pinned (pin accounting bug)"),
        }
    }
}

/// Host pages for shadow tables: hands out `[base, base + n)`, checks that
/// every free returns a page it handed out, counts what is live.
pub struct FakeHostPages {
    free: Vec<HostPage>,
    live: BTreeMap<u64, ()>,
}

impl FakeHostPages {
    pub fn new(base: u64, n: u64) -> Self {
        Self {
            free: (base..base + n).rev().map(HostPage).collect(),
            live: BTreeMap::new(),
        }
    }
    /// Pages handed out and not yet freed.
    pub fn live(&self) -> usize {
        self.live.len()
    }
}

impl super::services::HostPageAlloc for FakeHostPages {
    fn alloc(&mut self) -> Option<HostPage> {
        assert_unlocked("shadow page allocated");
        let p = self.free.pop()?;
        self.live.insert(p.0, ());
        Some(p)
    }
    fn free(&mut self, page: HostPage) {
        assert_unlocked("shadow page freed");
        assert!(
            self.live.remove(&page.0).is_some(),
            "free of {page:?} not allocated"
        );
        self.free.push(page);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_memory_counts_pins_and_honours_unmap() {
        let mut g = FakeGuestMemory::new(0x100, 4, 10);
        assert_eq!(g.pin(0x101), Ok(HostPage(11)));
        assert_eq!(g.pin(0x101), Ok(HostPage(11)));
        assert_eq!(g.pin(0x104), Err(MemError::NotMapped));
        assert_eq!(g.outstanding_pins(), 2);
        g.unpin(0x101);
        g.unpin(0x101);
        assert_eq!(g.outstanding_pins(), 0);
        g.unmap(0x102, 1);
        assert_eq!(g.pin(0x102), Err(MemError::NotMapped));
    }

    #[test]
    fn host_memory_bounds() {
        let mut h = FakeHostMemory::new(2);
        assert!(h.write(HostPage(1), 4090, &[1; 6]).is_ok());
        assert_eq!(
            h.write(HostPage(1), 4091, &[1; 6]),
            Err(MemError::OutOfRange)
        );
        assert_eq!(h.write(HostPage(2), 0, &[1]), Err(MemError::OutOfRange));
        let mut b = [0u8; 6];
        h.read(HostPage(1), 4090, &mut b).unwrap();
        assert_eq!(b, [1; 6]);
    }
}
