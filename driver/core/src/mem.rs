//! Memory vocabulary shared by every mediator: graphics addresses, guest
//! frames, host pages (the traits through which the core reaches them are
//! in [`super::services`]).

/// Size of a GTT page and of a guest/host page.
pub const PAGE_SIZE: u64 = 4096;
/// log2(PAGE_SIZE).
pub const PAGE_SHIFT: u32 = 12;

/// A graphics memory address (GGTT space). Guest and host views are identical
/// (address-space ballooning, paper §3.3): no translation ever happens on it.
pub type Gma = u64;
/// A guest frame number (guest physical address >> 12; the VMM's IOVA space).
pub type Gfn = u64;

/// A host page, as the physical GGTT names it: host physical frame number.
/// In the kernel it is the pfn of a page pinned with `vfio_pin_pages`; in host
/// tests it indexes a fake memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostPage(pub u64);

/// Why a memory operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemError {
    /// The guest frame is not backed by guest memory (not DMA-mapped).
    NotMapped,
    /// The host refused (pin limit, out of memory).
    NoResource,
    /// Offset/length outside the page.
    OutOfRange,
}

/// A half-open range of graphics memory `[base, base + size)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GmRange {
    pub base: Gma,
    pub size: u64,
}

impl GmRange {
    pub const fn new(base: Gma, size: u64) -> Self {
        Self { base, size }
    }
    /// One past the last address (saturating).
    pub const fn end(&self) -> Gma {
        self.base.saturating_add(self.size)
    }
    /// Whether `[addr, addr + len)` lies entirely inside this range
    /// (`len == 0` asks about the single address `addr`).
    pub fn contains(&self, addr: Gma, len: u64) -> bool {
        let len = if len == 0 { 1 } else { len };
        match addr.checked_add(len) {
            Some(end) => addr >= self.base && end <= self.end(),
            None => false,
        }
    }
    pub fn overlaps(&self, other: &GmRange) -> bool {
        self.size != 0 && other.size != 0 && self.base < other.end() && other.base < self.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gm_range_contains_is_overflow_safe() {
        let r = GmRange::new(0x1000, 0x2000);
        assert!(r.contains(0x1000, 0x2000));
        assert!(!r.contains(0x1000, 0x2001));
        assert!(!r.contains(0xfff, 1));
        assert!(r.contains(0x2fff, 0));
        assert!(!r.contains(0x3000, 0));
        assert!(!r.contains(u64::MAX, 2));
    }

    #[test]
    fn gm_range_overlap() {
        let a = GmRange::new(0, 0x1000);
        assert!(!a.overlaps(&GmRange::new(0x1000, 0x1000)));
        assert!(a.overlaps(&GmRange::new(0xfff, 2)));
        assert!(!a.overlaps(&GmRange::new(0x10, 0)));
    }
}
