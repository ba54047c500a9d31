//! Resource partitioning among vGPUs (paper §3.3.1 "address space
//! ballooning", §3.3 fences): every vGPU owns one contiguous slice of the
//! mappable GM (aperture), one of the non-mappable ("high") GM and a run of
//! fence registers.  Graphics addresses are identical in guest and host views,
//! so slices of different vGPUs never overlap.
//!
//! No allocation: each resource is an [`ExtentAllocator`] that keeps its *used*
//! extents sorted in a fixed array (capacity = the number of vGPU slots, since
//! every live partition holds exactly one extent of each resource).  Free
//! blocks are the gaps between used extents, so freeing coalesces by
//! construction and no create/destroy sequence can ever lose capacity.
//! Placement is best-fit (the smallest gap that fits, lowest address on ties),
//! which keeps large blocks intact for large vGPU types.
//!
//! The top `host_reserved_high` bytes of the high GM are the host's (shadow
//! rings and batches, paper §3.4) and never handed to a vGPU.

use super::mem::{GmRange, PAGE_SIZE};

/// A half-open `[base, base + size)` extent of one resource (bytes of GM, or
/// fence indices).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Extent {
    pub base: u64,
    pub size: u64,
}

impl Extent {
    pub const fn end(&self) -> u64 {
        self.base.saturating_add(self.size)
    }
}

/// Allocator of one resource `[base, base + size)` holding at most `N` used
/// extents.
#[derive(Clone, Debug)]
pub struct ExtentAllocator<const N: usize> {
    range: Extent,
    used: [Extent; N],
    len: usize,
}

/// Iterator over the free blocks (gaps) of an [`ExtentAllocator`], in address
/// order; empty gaps are skipped.
pub struct FreeBlocks<'a> {
    range: Extent,
    used: &'a [Extent],
    next: usize,
    cursor: u64,
    done: bool,
}

impl Iterator for FreeBlocks<'_> {
    type Item = Extent;
    fn next(&mut self) -> Option<Extent> {
        while !self.done {
            let (gap_end, next_cursor) = match self.used.get(self.next) {
                Some(u) => (u.base, u.end()),
                None => {
                    self.done = true;
                    (self.range.end(), self.range.end())
                }
            };
            let gap = Extent {
                base: self.cursor,
                size: gap_end.saturating_sub(self.cursor),
            };
            self.cursor = next_cursor;
            self.next += 1;
            if gap.size > 0 {
                return Some(gap);
            }
        }
        None
    }
}

impl<const N: usize> ExtentAllocator<N> {
    /// An allocator over `[base, base + size)`, all free.
    pub const fn new(base: u64, size: u64) -> Self {
        Self {
            range: Extent { base, size },
            used: [Extent { base: 0, size: 0 }; N],
            len: 0,
        }
    }
    /// Start over on `[base, base + size)`, all free (in place).
    fn reset(&mut self, base: u64, size: u64) {
        self.range = Extent { base, size };
        self.len = 0;
    }
    /// The managed range.
    pub const fn range(&self) -> Extent {
        self.range
    }
    /// The used extents, sorted by address.
    pub fn used(&self) -> &[Extent] {
        self.used.get(..self.len).unwrap_or(&[])
    }
    /// The free blocks, sorted by address, maximal (adjacent gaps cannot
    /// exist: gaps are separated by used extents).
    pub fn free_blocks(&self) -> FreeBlocks<'_> {
        FreeBlocks {
            range: self.range,
            used: self.used(),
            next: 0,
            cursor: self.range.base,
            done: false,
        }
    }
    /// Size of the largest free block (what one allocation can get at most).
    pub fn largest_free(&self) -> u64 {
        self.free_blocks().map(|b| b.size).max().unwrap_or(0)
    }
    pub fn total_free(&self) -> u64 {
        self.free_blocks().map(|b| b.size).sum()
    }
    pub fn total_used(&self) -> u64 {
        self.used().iter().map(|u| u.size).sum()
    }
    /// How many more allocations of `size` fit (0 for `size == 0`).
    pub fn count_fit(&self, size: u64) -> u64 {
        if size == 0 {
            return 0;
        }
        self.free_blocks().map(|b| b.size / size).sum()
    }
    /// Where an allocation of `size` would go (best fit), without taking it.
    pub fn find(&self, size: u64) -> Option<u64> {
        if size == 0 || self.len >= N {
            return None;
        }
        let mut best: Option<Extent> = None;
        for b in self.free_blocks() {
            if b.size >= size && best.is_none_or(|c| b.size < c.size) {
                best = Some(b);
            }
        }
        best.map(|b| b.base)
    }
    /// Allocate `size` (best fit); returns the base.
    pub fn alloc(&mut self, size: u64) -> Option<u64> {
        let base = self.find(size)?;
        self.insert(Extent { base, size }).then_some(base)
    }
    /// Take exactly `[base, base + size)` if it is entirely free.
    fn insert(&mut self, e: Extent) -> bool {
        if e.size == 0 || self.len >= N || e.base < self.range.base || e.end() > self.range.end() {
            return false;
        }
        let pos = self.used().partition_point(|u| u.base < e.base);
        let prev_ok = pos == 0 || self.used.get(pos - 1).is_some_and(|p| p.end() <= e.base);
        let next_ok = self.used().get(pos).is_none_or(|n| n.base >= e.end());
        if !prev_ok || !next_ok {
            return false;
        }
        // shift [pos, len) one to the right, put `e` at `pos`
        match self.used.get_mut(pos..=self.len) {
            Some(tail) => {
                tail.rotate_right(1);
                if let Some(first) = tail.first_mut() {
                    *first = e;
                }
                self.len += 1;
                true
            }
            None => false,
        }
    }
    /// Free an extent previously returned by [`alloc`](Self::alloc); `false`
    /// (and nothing changes) if `[base, base + size)` is not exactly a used
    /// extent.
    pub fn free(&mut self, base: u64, size: u64) -> bool {
        let pos = self.used().partition_point(|u| u.base < base);
        match self.used().get(pos) {
            Some(u) if u.base == base && u.size == size => {}
            _ => return false,
        }
        // shift (pos, len) one to the left
        if let Some(tail) = self.used.get_mut(pos..self.len) {
            tail.rotate_left(1);
        }
        self.len -= 1;
        true
    }
}

/// The parent's graphics resources, from the module parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GmLayout {
    /// Mappable GM (aperture) size: GM `[0, aperture_size)`.
    pub aperture_size: u64,
    /// Total GM size: high GM is `[aperture_size, total_gm)`.
    pub total_gm: u64,
    /// Fence registers that vGPUs may get.
    pub fences: u32,
    /// Bytes at the top of the high GM kept for the host (shadow rings and
    /// batches); gvt-rs uses 16 MiB.
    pub host_reserved_high: u64,
}

/// What one vGPU asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionRequest {
    pub aperture_size: u64,
    pub high_size: u64,
    pub fences: u32,
}

/// The resources of one vGPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Partition {
    /// Its slice of the mappable GM (and of BAR2).
    pub aperture: GmRange,
    /// Its slice of the non-mappable GM.
    pub high: GmRange,
    /// First physical fence register.
    pub fence_base: u32,
    /// Number of fence registers (guest fences `0..fence_count`).
    pub fence_count: u32,
}

/// Handle of a live partition (a slot index).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionId(pub usize);

/// The largest block one allocation can still get, per resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Largest {
    pub aperture: u64,
    pub high: u64,
    pub fences: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionError {
    /// Inconsistent layout (sizes not page multiples, reservation too large...).
    BadLayout,
    /// Request with a zero or non-page-multiple size.
    BadRequest,
    /// Every vGPU slot is in use.
    NoSlot,
    NoAperture,
    NoHighGm,
    NoFences,
    /// The handle names no live partition.
    NotAllocated,
}

/// Partitions the parent's GM and fences among at most `SLOTS` vGPUs.
#[derive(Clone, Debug)]
pub struct Partitioner<const SLOTS: usize> {
    layout: GmLayout,
    aperture: ExtentAllocator<SLOTS>,
    high: ExtentAllocator<SLOTS>,
    fences: ExtentAllocator<SLOTS>,
    slots: [Option<Partition>; SLOTS],
}

const fn page_multiple(x: u64) -> bool {
    x % PAGE_SIZE == 0
}

impl<const SLOTS: usize> Partitioner<SLOTS> {
    pub fn new(layout: GmLayout) -> Result<Self, PartitionError> {
        let mut p = Self::unset();
        p.reset(layout)?;
        Ok(p)
    }

    /// A partitioner of no GM, to [`reset`](Self::reset) in place: the
    /// kernel glue copies it into a heap slot (64 slots are 6 KiB, too big
    /// for a `Self` on a kernel stack) and resets it there.
    pub const fn unset() -> Self {
        Self {
            layout: GmLayout {
                aperture_size: 0,
                total_gm: 0,
                fences: 0,
                host_reserved_high: 0,
            },
            aperture: ExtentAllocator::new(0, 0),
            high: ExtentAllocator::new(0, 0),
            fences: ExtentAllocator::new(0, 0),
            slots: [None; SLOTS],
        }
    }

    /// Start over with `layout`, every resource free and no partition (in
    /// place; on a bad layout nothing changes).
    pub fn reset(&mut self, layout: GmLayout) -> Result<(), PartitionError> {
        let l = layout;
        let high_size = l
            .total_gm
            .checked_sub(l.aperture_size)
            .and_then(|h| h.checked_sub(l.host_reserved_high))
            .ok_or(PartitionError::BadLayout)?;
        if l.aperture_size == 0
            || !page_multiple(l.aperture_size)
            || !page_multiple(l.total_gm)
            || !page_multiple(l.host_reserved_high)
        {
            return Err(PartitionError::BadLayout);
        }
        self.layout = layout;
        self.aperture.reset(0, l.aperture_size);
        self.high.reset(l.aperture_size, high_size);
        self.fences.reset(0, l.fences as u64);
        for s in self.slots.iter_mut() {
            *s = None;
        }
        Ok(())
    }
    pub fn layout(&self) -> GmLayout {
        self.layout
    }
    /// The high GM kept for the host.
    pub fn host_reserved(&self) -> GmRange {
        GmRange::new(
            self.layout
                .total_gm
                .saturating_sub(self.layout.host_reserved_high),
            self.layout.host_reserved_high,
        )
    }
    /// The high GM that vGPUs may get.
    pub fn high_pool(&self) -> GmRange {
        let r = self.high.range();
        GmRange::new(r.base, r.size)
    }
    pub fn aperture_allocator(&self) -> &ExtentAllocator<SLOTS> {
        &self.aperture
    }
    pub fn high_allocator(&self) -> &ExtentAllocator<SLOTS> {
        &self.high
    }
    pub fn fence_allocator(&self) -> &ExtentAllocator<SLOTS> {
        &self.fences
    }
    /// Live partitions.
    pub fn live(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }
    pub fn get(&self, id: PartitionId) -> Option<Partition> {
        self.slots.get(id.0).copied().flatten()
    }
    /// Live partitions with their handles.
    pub fn iter(&self) -> impl Iterator<Item = (PartitionId, Partition)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.map(|p| (PartitionId(i), p)))
    }
    pub fn largest_free(&self) -> Largest {
        Largest {
            aperture: self.aperture.largest_free(),
            high: self.high.largest_free(),
            fences: u32::try_from(self.fences.largest_free()).unwrap_or(u32::MAX),
        }
    }
    fn check(req: &PartitionRequest) -> Result<(), PartitionError> {
        if req.aperture_size == 0
            || req.high_size == 0
            || !page_multiple(req.aperture_size)
            || !page_multiple(req.high_size)
        {
            return Err(PartitionError::BadRequest);
        }
        Ok(())
    }
    /// How many more partitions like `req` fit right now (free slots and every
    /// resource's free blocks; exact, since placement of equal sizes in the
    /// gaps is independent per resource).
    pub fn fit_count(&self, req: &PartitionRequest) -> u64 {
        if Self::check(req).is_err() {
            return 0;
        }
        let free_slots = (SLOTS - self.live()) as u64;
        free_slots
            .min(self.aperture.count_fit(req.aperture_size))
            .min(self.high.count_fit(req.high_size))
            .min(if req.fences == 0 {
                u64::MAX
            } else {
                self.fences.count_fit(req.fences as u64)
            })
    }
    /// Allocate a partition: all of it or nothing.
    pub fn create(
        &mut self,
        req: &PartitionRequest,
    ) -> Result<(PartitionId, Partition), PartitionError> {
        Self::check(req)?;
        let slot = self
            .slots
            .iter()
            .position(|s| s.is_none())
            .ok_or(PartitionError::NoSlot)?;
        let ap = self
            .aperture
            .find(req.aperture_size)
            .ok_or(PartitionError::NoAperture)?;
        let hi = self
            .high
            .find(req.high_size)
            .ok_or(PartitionError::NoHighGm)?;
        // A fence-less vGPU (more vGPUs than fences) takes no extent.
        let fe = if req.fences == 0 {
            0
        } else {
            self.fences
                .find(req.fences as u64)
                .ok_or(PartitionError::NoFences)?
        };
        let fence_base = u32::try_from(fe).map_err(|_| PartitionError::NoFences)?;
        // Every `find` succeeded on distinct allocators with a free slot, so the
        // inserts cannot fail; check anyway and roll back rather than leak.
        let ok_a = self.aperture.insert(Extent {
            base: ap,
            size: req.aperture_size,
        });
        let ok_h = ok_a
            && self.high.insert(Extent {
                base: hi,
                size: req.high_size,
            });
        let ok_f = ok_h
            && (req.fences == 0
                || self.fences.insert(Extent {
                    base: fe,
                    size: req.fences as u64,
                }));
        if !ok_f {
            if ok_h {
                self.high.free(hi, req.high_size);
            }
            if ok_a {
                self.aperture.free(ap, req.aperture_size);
            }
            return Err(PartitionError::NoSlot);
        }
        let p = Partition {
            aperture: GmRange::new(ap, req.aperture_size),
            high: GmRange::new(hi, req.high_size),
            fence_base,
            fence_count: req.fences,
        };
        if let Some(s) = self.slots.get_mut(slot) {
            *s = Some(p);
        }
        Ok((PartitionId(slot), p))
    }
    /// Give a partition's resources back.
    pub fn destroy(&mut self, id: PartitionId) -> Result<Partition, PartitionError> {
        let p = self
            .slots
            .get_mut(id.0)
            .and_then(|s| s.take())
            .ok_or(PartitionError::NotAllocated)?;
        self.aperture.free(p.aperture.base, p.aperture.size);
        self.high.free(p.high.base, p.high.size);
        if p.fence_count > 0 {
            self.fences.free(p.fence_base as u64, p.fence_count as u64);
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    const MIB: u64 = 1 << 20;

    fn layout() -> GmLayout {
        GmLayout {
            aperture_size: 256 * MIB,
            total_gm: 4096 * MIB,
            fences: 16,
            host_reserved_high: 16 * MIB,
        }
    }

    fn req(a: u64, h: u64, f: u32) -> PartitionRequest {
        PartitionRequest {
            aperture_size: a * MIB,
            high_size: h * MIB,
            fences: f,
        }
    }

    #[test]
    fn extent_allocator_basics() {
        let mut a = ExtentAllocator::<4>::new(100, 100);
        assert_eq!(a.alloc(30), Some(100));
        assert_eq!(a.alloc(30), Some(130));
        assert_eq!(a.alloc(50), None);
        assert_eq!(a.largest_free(), 40);
        assert!(a.free(100, 30));
        assert!(!a.free(100, 30), "double free refused");
        assert!(!a.free(130, 29), "size must match");
        // best fit: the 30-gap at 100 rather than the 40-gap at 160
        assert_eq!(a.alloc(25), Some(100));
        assert_eq!(a.count_fit(5), 1 + 8);
        assert_eq!(a.alloc(0), None);
        assert!(a.free(100, 25) && a.free(130, 30));
        assert_eq!(
            a.free_blocks().collect::<Vec<_>>(),
            [Extent {
                base: 100,
                size: 100
            }]
        );
    }

    #[test]
    fn extent_allocator_capacity() {
        let mut a = ExtentAllocator::<2>::new(0, 10);
        assert!(a.alloc(1).is_some() && a.alloc(1).is_some());
        assert_eq!(a.alloc(1), None, "no room to record a third extent");
        assert_eq!(a.find(1), None);
    }

    #[test]
    fn layout_validation() {
        assert!(Partitioner::<4>::new(layout()).is_ok());
        let bad = [
            GmLayout {
                aperture_size: 0,
                ..layout()
            },
            GmLayout {
                aperture_size: 5000 * MIB,
                ..layout()
            },
            GmLayout {
                host_reserved_high: 4000 * MIB,
                ..layout()
            },
            GmLayout {
                aperture_size: 100,
                ..layout()
            },
            GmLayout {
                total_gm: u64::MAX,
                ..layout()
            },
        ];
        for l in bad {
            assert_eq!(
                Partitioner::<4>::new(l).err(),
                Some(PartitionError::BadLayout),
                "{l:?}"
            );
        }
    }

    #[test]
    fn host_reservation_is_never_handed_out() {
        let mut p = Partitioner::<8>::new(layout()).unwrap();
        assert_eq!(p.host_reserved(), GmRange::new(4080 * MIB, 16 * MIB));
        assert_eq!(p.largest_free().high, (4096 - 256 - 16) * MIB);
        assert_eq!(
            p.create(&req(32, 3825, 1)).err(),
            Some(PartitionError::NoHighGm)
        );
        let (_, part) = p.create(&req(32, 3824, 1)).unwrap();
        assert!(!part.high.overlaps(&p.host_reserved()));
        assert_eq!(part.high.end(), p.host_reserved().base);
    }

    #[test]
    fn all_or_nothing() {
        let mut p = Partitioner::<8>::new(layout()).unwrap();
        let (_, a) = p.create(&req(64, 512, 12)).unwrap();
        assert_eq!(a.fence_base, 0);
        // fences exhausted: nothing else may be taken
        let before = (
            p.aperture_allocator().total_free(),
            p.high_allocator().total_free(),
        );
        assert_eq!(
            p.create(&req(64, 512, 5)).err(),
            Some(PartitionError::NoFences)
        );
        assert_eq!(
            (
                p.aperture_allocator().total_free(),
                p.high_allocator().total_free()
            ),
            before
        );
        assert_eq!(p.live(), 1);
        assert_eq!(
            p.create(&req(0, 512, 1)).err(),
            Some(PartitionError::BadRequest)
        );
        // A fence-less vGPU still fits when every fence is taken, and
        // gives no fence back when it goes.
        let fences_free = p.fence_allocator().total_free();
        assert_eq!(p.fit_count(&req(1, 1, 0)), 7);
        let (id0, f0) = p.create(&req(1, 1, 0)).unwrap();
        assert_eq!(f0.fence_count, 0);
        assert_eq!(p.fence_allocator().total_free(), fences_free);
        p.destroy(id0).unwrap();
        assert_eq!(p.fence_allocator().total_free(), fences_free);
        assert_eq!(p.live(), 1);
        assert_eq!(
            p.create(&PartitionRequest {
                aperture_size: 100,
                high_size: MIB,
                fences: 1
            })
            .err(),
            Some(PartitionError::BadRequest)
        );
        assert_eq!(
            p.destroy(PartitionId(7)).err(),
            Some(PartitionError::NotAllocated)
        );
        assert_eq!(
            p.destroy(PartitionId(usize::MAX)).err(),
            Some(PartitionError::NotAllocated)
        );
    }

    #[test]
    fn reset_in_place_is_new() {
        let mut p = Partitioner::<8>::new(layout()).unwrap();
        p.create(&req(64, 512, 4)).unwrap();
        let mut q = Partitioner::<8>::unset();
        assert_eq!(q.fit_count(&req(1, 1, 1)), 0, "no GM yet");
        q.reset(layout()).unwrap();
        p.reset(layout()).unwrap();
        let fresh = Partitioner::<8>::new(layout()).unwrap();
        for r in [&p, &q] {
            assert_eq!(r.live(), 0);
            assert_eq!(r.largest_free(), fresh.largest_free());
            assert_eq!(r.high_pool(), fresh.high_pool());
            assert_eq!(r.layout(), fresh.layout());
        }
        let bad = GmLayout {
            aperture_size: 0,
            ..layout()
        };
        assert_eq!(p.reset(bad).err(), Some(PartitionError::BadLayout));
        assert_eq!(p.layout(), layout(), "a bad layout changes nothing");
    }

    #[test]
    fn slots_run_out() {
        let mut p = Partitioner::<2>::new(layout()).unwrap();
        p.create(&req(1, 1, 1)).unwrap();
        p.create(&req(1, 1, 1)).unwrap();
        assert_eq!(p.create(&req(1, 1, 1)).err(), Some(PartitionError::NoSlot));
        assert_eq!(p.fit_count(&req(1, 1, 1)), 0);
    }

    #[test]
    fn fragmentation_recovers() {
        let mut p = Partitioner::<8>::new(layout()).unwrap();
        let small = req(32, 128, 2);
        let ids: Vec<_> = (0..8).map(|_| p.create(&small).unwrap().0).collect();
        assert_eq!(p.fit_count(&small), 0);
        // free every other one: 4 holes of 32 MiB, no 64 MiB block
        for id in ids.iter().step_by(2) {
            p.destroy(*id).unwrap();
        }
        assert_eq!(p.largest_free().aperture, 32 * MIB);
        assert_eq!(p.fit_count(&req(64, 128, 2)), 0);
        assert_eq!(p.fit_count(&small), 4);
        for id in ids.iter().skip(1).step_by(2) {
            p.destroy(*id).unwrap();
        }
        assert_eq!(p.largest_free().aperture, 256 * MIB);
        assert_eq!(p.fit_count(&req(256, 1, 1)), 1);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Create(u64, u64, u32),
        Destroy(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1u64..=96, 1u64..=1200, 1u32..=6).prop_map(|(a, h, f)| Op::Create(a, h, f)),
            (0usize..10).prop_map(Op::Destroy),
        ]
    }

    fn check_invariants<const S: usize>(p: &Partitioner<S>) {
        let parts: Vec<_> = p.iter().map(|(_, x)| x).collect();
        let ap = GmRange::new(0, p.layout().aperture_size);
        for (i, a) in parts.iter().enumerate() {
            assert!(ap.contains(a.aperture.base, a.aperture.size));
            assert!(p.high_pool().contains(a.high.base, a.high.size));
            assert!(!a.high.overlaps(&p.host_reserved()));
            assert!(a.fence_base as u64 + a.fence_count as u64 <= p.layout().fences as u64);
            for b in &parts[i + 1..] {
                assert!(!a.aperture.overlaps(&b.aperture));
                assert!(!a.high.overlaps(&b.high));
                let (x, y) = (
                    a.fence_base..a.fence_base + a.fence_count,
                    b.fence_base..b.fence_base + b.fence_count,
                );
                assert!(x.end <= y.start || y.end <= x.start);
            }
        }
        for (alloc, total) in [
            (p.aperture_allocator(), p.layout().aperture_size),
            (p.high_allocator(), p.high_pool().size),
            (p.fence_allocator(), p.layout().fences as u64),
        ] {
            assert_eq!(alloc.total_free() + alloc.total_used(), total);
            assert_eq!(alloc.used().len(), parts.len());
            // free blocks are maximal and disjoint from the used ones
            let blocks: Vec<_> = alloc.free_blocks().collect();
            for w in blocks.windows(2) {
                assert!(
                    w[0].end() < w[1].base,
                    "adjacent free blocks were not coalesced"
                );
            }
            assert_eq!(
                alloc.largest_free(),
                blocks.iter().map(|b| b.size).max().unwrap_or(0)
            );
        }
    }

    proptest! {
        #[test]
        fn random_create_destroy_keeps_invariants(ops in proptest::collection::vec(op(), 1..80)) {
            let mut p = Partitioner::<8>::new(layout()).unwrap();
            let mut live: Vec<PartitionId> = Vec::new();
            for o in ops {
                match o {
                    Op::Create(a, h, f) => {
                        let r = req(a, h, f);
                        let fit = p.fit_count(&r);
                        match p.create(&r) {
                            Ok((id, part)) => {
                                prop_assert!(fit >= 1);
                                prop_assert_eq!(p.get(id), Some(part));
                                live.push(id);
                            }
                            Err(_) => prop_assert_eq!(fit, 0),
                        }
                    }
                    Op::Destroy(i) => {
                        if !live.is_empty() {
                            let id = live.remove(i % live.len());
                            prop_assert!(p.destroy(id).is_ok());
                            prop_assert!(p.destroy(id).is_err());
                        }
                    }
                }
                check_invariants(&p);
            }
            for id in live {
                p.destroy(id).unwrap();
            }
            let l = p.largest_free();
            prop_assert_eq!(l.aperture, p.layout().aperture_size);
            prop_assert_eq!(l.high, p.high_pool().size);
            prop_assert_eq!(l.fences, p.layout().fences);
            prop_assert_eq!(p.aperture_allocator().free_blocks().count(), 1);
        }
    }
}
