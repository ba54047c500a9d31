//! The guest's graphics-memory view (issue 14: migration between different
//! placements).
//!
//! The paper's address-space ballooning (§3.3.1) makes a guest's graphics
//! addresses *equal* to the host's: the guest is told (PVINFO) which GM
//! ranges are its own and uses exactly those, so nothing is translated.
//! That ties the guest to its placement: a guest migrated to a vGPU holding
//! other slices keeps using the source's addresses.
//!
//! A [`GmView`] decouples the two.  It pairs the guest-visible slices (the
//! *view*: what PVINFO advertises, what the GGTT window, BAR2, registers
//! and commands are written against) with the vGPU's host slices (the
//! *placement*), of the same sizes.  Every guest graphics address that
//! reaches the hardware is moved by the constant offset of its slice
//! ([`GmView::to_host`]); an address (or range) outside the view, or one
//! that straddles two slices, has no translation and is refused by the
//! caller.  So a translated range always lies inside the vGPU's own host
//! slices (the property test below checks exactly that).
//!
//! A fresh vGPU's view is its placement ([`GmView::identity`]): every
//! translation is the identity, and callers skip it altogether
//! ([`GmView::is_identity`]), so the fast path costs one branch.

use super::mem::{GmRange, Gma, PAGE_SHIFT, PAGE_SIZE};

/// A vGPU's share of global graphics memory: its aperture (CPU-mappable) slice
/// and its high (non-mappable) slice: as the partitioner handed them out (the
/// placement), or as the guest sees them (its view, [`GmView`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VgpuGm {
    pub aperture: GmRange,
    pub high: GmRange,
}

impl VgpuGm {
    /// Number of GGTT entries the two slices cover (the storage length).
    pub const fn entries(&self) -> usize {
        ((self.aperture.size >> PAGE_SHIFT) + (self.high.size >> PAGE_SHIFT)) as usize
    }
    /// Whether graphics address `gma` lies in either slice.
    pub fn contains(&self, gma: Gma) -> bool {
        self.aperture.contains(gma, 0) || self.high.contains(gma, 0)
    }
}

/// Graphics addresses a guest can name through the GGTT window (BAR0 8–16
/// MiB: 2^20 entries of 4 KiB): a view must lie below this.
pub const VIEW_LIMIT: u64 = 1 << 32;

/// Why a view was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewError {
    /// A view slice's size differs from the host slice's.
    SizeMismatch,
    /// A base or size is not page aligned.
    Misaligned,
    /// The two view slices overlap.
    Overlap,
    /// A view slice ends beyond [`VIEW_LIMIT`] or its aperture slice beyond
    /// the BAR2 aperture.
    OutOfRange,
}

/// The guest's GM view of one vGPU and its placement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GmView {
    view: VgpuGm,
    host: VgpuGm,
    identity: bool,
}

/// Which slice an address lies in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    Aperture,
    High,
}

impl GmView {
    /// The view of a fresh vGPU: its placement.
    pub const fn identity(host: VgpuGm) -> Self {
        GmView {
            view: host,
            host,
            identity: true,
        }
    }

    /// A view `view` of a vGPU placed at `host`, whose BAR2 is
    /// `aperture_size` bytes: same slice sizes, page aligned, disjoint view
    /// slices, the view's aperture slice inside BAR2 and both below
    /// [`VIEW_LIMIT`].
    pub fn new(view: VgpuGm, host: VgpuGm, aperture_size: u64) -> Result<Self, ViewError> {
        if view.aperture.size != host.aperture.size || view.high.size != host.high.size {
            return Err(ViewError::SizeMismatch);
        }
        let aligned = |r: &GmRange| r.base % PAGE_SIZE == 0 && r.size % PAGE_SIZE == 0;
        if !aligned(&view.aperture) || !aligned(&view.high) {
            return Err(ViewError::Misaligned);
        }
        if view.aperture.overlaps(&view.high) {
            return Err(ViewError::Overlap);
        }
        let end = |r: &GmRange| r.base.checked_add(r.size);
        if end(&view.aperture).is_none_or(|e| e > aperture_size.min(VIEW_LIMIT))
            || end(&view.high).is_none_or(|e| e > VIEW_LIMIT)
        {
            return Err(ViewError::OutOfRange);
        }
        Ok(GmView {
            view,
            host,
            identity: view == host,
        })
    }

    /// The guest-visible slices.
    pub const fn view(&self) -> VgpuGm {
        self.view
    }
    /// The host slices (the placement).
    pub const fn host(&self) -> VgpuGm {
        self.host
    }
    /// Whether every translation is the identity (a fresh vGPU).
    pub const fn is_identity(&self) -> bool {
        self.identity
    }

    fn slice_of(gm: &VgpuGm, addr: Gma, len: u64) -> Option<Which> {
        if gm.aperture.contains(addr, len) {
            Some(Which::Aperture)
        } else if gm.high.contains(addr, len) {
            Some(Which::High)
        } else {
            None
        }
    }

    fn slice(gm: &VgpuGm, w: Which) -> GmRange {
        match w {
            Which::Aperture => gm.aperture,
            Which::High => gm.high,
        }
    }

    /// The host address of guest range `[addr, addr + len)` (`len` 0: the
    /// one address), if the whole range lies in one view slice.
    pub fn to_host(&self, addr: Gma, len: u64) -> Option<Gma> {
        let w = Self::slice_of(&self.view, addr, len)?;
        let off = addr - Self::slice(&self.view, w).base;
        Self::slice(&self.host, w).base.checked_add(off)
    }

    /// The guest address of host range `[addr, addr + len)`, if it lies in
    /// one host slice (the reverse of [`GmView::to_host`]).
    pub fn to_guest(&self, addr: Gma, len: u64) -> Option<Gma> {
        let w = Self::slice_of(&self.host, addr, len)?;
        let off = addr - Self::slice(&self.host, w).base;
        Self::slice(&self.view, w).base.checked_add(off)
    }

    /// A base address whose touched range `[first, first + len)` is known
    /// (a blit's surface base and its span): `base` moved by the offset of
    /// the view slice that holds the whole range.  The base itself may lie
    /// outside the slice; `None` when the range is in no one view slice or
    /// the moved base does not fit 48 bits.
    pub fn to_host_base(&self, base: u64, first: Gma, len: u64) -> Option<u64> {
        let w = Self::slice_of(&self.view, first, len)?;
        let from = Self::slice(&self.view, w).base;
        let to = Self::slice(&self.host, w).base;
        let moved = if to >= from {
            base.checked_add(to - from)?
        } else {
            base.checked_sub(from - to)?
        };
        (moved < 1 << 48).then_some(moved)
    }

    /// The host GGTT entry of guest entry `index` (one page).
    pub fn host_index(&self, index: u64) -> Option<u64> {
        let a = index.checked_mul(PAGE_SIZE)?;
        Some(self.to_host(a, PAGE_SIZE)? >> PAGE_SHIFT)
    }

    /// A fence register value (gen6 layout: low dword bits 31:12 start and
    /// bit 0 valid, high dword bits 31:12 last page) with its range moved
    /// to the host; `None` when the range is not inside one view slice.  A
    /// disabled fence is returned as it is.
    pub fn fence_to_host(&self, value: u64) -> Option<u64> {
        if value & 1 == 0 {
            return Some(value);
        }
        let start = value & 0xFFFF_F000;
        let last = (value >> 32) & 0xFFFF_F000;
        let len = last.checked_sub(start)?.checked_add(PAGE_SIZE)?;
        let hs = self.to_host(start, len)?;
        let hl = hs.checked_add(last - start)?;
        if hl > 0xFFFF_F000 {
            return None;
        }
        Some((value & !0xFFFF_F000 & 0xFFFF_FFFF) | hs | (((value >> 32) & 0xFFF | hl) << 32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: u64 = 1 << 20;

    fn gm(ab: u64, asz: u64, hb: u64, hsz: u64) -> VgpuGm {
        VgpuGm {
            aperture: GmRange::new(ab, asz),
            high: GmRange::new(hb, hsz),
        }
    }

    #[test]
    fn identity_translates_nothing() {
        let h = gm(64 * MIB, 32 * MIB, 512 * MIB, 94 * MIB);
        let v = GmView::identity(h);
        assert!(v.is_identity());
        assert_eq!(v.to_host(64 * MIB + 8, 4), Some(64 * MIB + 8));
        assert_eq!(v.to_host(63 * MIB, 4), None);
        assert_eq!(GmView::new(h, h, 256 * MIB).unwrap(), v);
    }

    #[test]
    fn a_moved_view_translates_each_slice_by_its_own_offset() {
        let h = gm(64 * MIB, 32 * MIB, 512 * MIB, 94 * MIB);
        let view = gm(0, 32 * MIB, 256 * MIB, 94 * MIB);
        let v = GmView::new(view, h, 256 * MIB).unwrap();
        assert!(!v.is_identity());
        assert_eq!(v.to_host(0x1000, 8), Some(64 * MIB + 0x1000));
        assert_eq!(v.to_host(256 * MIB + 4, 4), Some(512 * MIB + 4));
        assert_eq!(v.to_guest(512 * MIB + 4, 4), Some(256 * MIB + 4));
        // Outside the view, straddling the end of a slice, or the host
        // addresses themselves: no translation.
        assert_eq!(v.to_host(32 * MIB, 4), None);
        assert_eq!(v.to_host(32 * MIB - 4, 8), None);
        assert_eq!(v.to_host(64 * MIB, 4), None);
        assert_eq!(v.host_index(1), Some(((64 * MIB) >> 12) + 1));
        assert_eq!(v.host_index((32 * MIB) >> 12), None);
        // A blit base below its slice whose span is inside it.
        assert_eq!(v.to_host_base(0, 0x1000, 0x100), Some(64 * MIB));
        let fence = (0x1000u64 | 1) | ((0x3000u64 | 0x5) << 32);
        assert_eq!(
            v.fence_to_host(fence),
            Some(((64 * MIB + 0x1000) | 1) | ((64 * MIB + 0x3000) | 0x5) << 32)
        );
        assert_eq!(
            v.fence_to_host(0x1000 | ((40 * MIB) << 32)),
            Some(0x1000 | ((40 * MIB) << 32))
        );
        assert_eq!(v.fence_to_host(0x1001 | ((40 * MIB) << 32)), None);
    }

    #[test]
    fn views_that_do_not_fit_are_refused() {
        let h = gm(64 * MIB, 32 * MIB, 512 * MIB, 94 * MIB);
        let bad = [
            (
                gm(0, 16 * MIB, 256 * MIB, 94 * MIB),
                ViewError::SizeMismatch,
            ),
            (
                gm(0x800, 32 * MIB, 256 * MIB, 94 * MIB),
                ViewError::Misaligned,
            ),
            (gm(0, 32 * MIB, 16 * MIB, 94 * MIB), ViewError::Overlap),
            (
                gm(240 * MIB, 32 * MIB, 512 * MIB, 94 * MIB),
                ViewError::OutOfRange,
            ),
            (
                gm(0, 32 * MIB, VIEW_LIMIT - 4 * MIB, 94 * MIB),
                ViewError::OutOfRange,
            ),
            (
                gm(!0xfff, 32 * MIB, 512 * MIB, 94 * MIB),
                ViewError::OutOfRange,
            ),
        ];
        for (view, e) in bad {
            assert_eq!(GmView::new(view, h, 256 * MIB), Err(e), "{view:?}");
        }
    }

    fn slices() -> impl Strategy<Value = (VgpuGm, VgpuGm)> {
        // Page-granular sizes and bases: a host placement and a view of the
        // same sizes anywhere in the 4 GiB window.
        (
            1u64..64,
            1u64..64,
            0u64..1 << 20,
            0u64..1 << 20,
            0u64..1 << 20,
            0u64..1 << 20,
        )
            .prop_map(|(a, h, ab, hb, vab, vhb)| {
                let p = |x: u64| x << 12;
                (gm(p(vab), p(a), p(vhb), p(h)), gm(p(ab), p(a), p(hb), p(h)))
            })
    }

    proptest! {
        /// No translated address or range ever leaves the vGPU's own host
        /// slices, and translating back gives the guest address.
        #[test]
        fn translations_stay_in_the_host_slices(
            (view, host) in slices(),
            addr in 0u64..(1 << 33),
            len in 0u64..(1 << 22),
            base in 0u64..(1 << 34),
        ) {
            let Ok(v) = GmView::new(view, host, VIEW_LIMIT) else { return Ok(()); };
            let inside = |a: u64, l: u64| host.aperture.contains(a, l) || host.high.contains(a, l);
            if let Some(h) = v.to_host(addr, len) {
                prop_assert!(inside(h, len));
                prop_assert!(view.aperture.contains(addr, len) || view.high.contains(addr, len));
                prop_assert_eq!(v.to_guest(h, len), Some(addr));
            } else {
                prop_assert!(!(view.aperture.contains(addr, len) || view.high.contains(addr, len)));
            }
            if let Some(i) = v.host_index(addr >> 12) {
                prop_assert!(inside(i << 12, PAGE_SIZE));
            }
            // A base moved for a span: the span moved with it is the host's.
            if let Some(hb) = v.to_host_base(base, addr, len) {
                let first = addr.wrapping_sub(base).wrapping_add(hb);
                prop_assert!(inside(first, len));
            }
            // Fences: a valid fence's moved range is inside one host slice.
            let start = addr & 0xFFFF_F000;
            let last = (addr.wrapping_add(len)) & 0xFFFF_F000;
            let fence = (start | 1) | (last << 32);
            if let Some(f) = v.fence_to_host(fence) {
                let (s, l) = (f & 0xFFFF_F000, (f >> 32) & 0xFFFF_F000);
                prop_assert!(l >= s && inside(s, l - s + PAGE_SIZE));
            }
        }
    }
}
