//! The PVINFO page (paper §3.3.1 "address space ballooning"): the one page of
//! BAR0, at 0x78000, through which a vGPU tells its guest driver which slice of
//! the graphics memory and which fences it owns, and through which the guest
//! reports back (display ready, PPGTT notifications).
//!
//! The layout is exactly Linux's `struct vgt_if` of
//! `drivers/gpu/drm/i915/i915_pvinfo.h` (checked field by field in the tests),
//! so the ballooning contract is the one i915 guests and GVT-g use:
//!
//! | offset | field | guest access |
//! |---|---|---|
//! | 0x000 | magic `VGT_MAGIC` (u64) | read-only |
//! | 0x008 / 0x00A | version_major / version_minor (u16) | read-only |
//! | 0x00C | vgt_id | read-only |
//! | 0x010 | vgt_caps | read-only |
//! | 0x040 / 0x044 | avail_rs.mappable_gmadr base / size | read-only |
//! | 0x048 / 0x04C | avail_rs.nonmappable_gmadr base / size | read-only |
//! | 0x050 | avail_rs.fence_num | read-only |
//! | 0x804 | display_ready | write: event |
//! | 0x808–0x817 | rsv5\[4\] | write: failsafe event (GVT-g), not stored |
//! | 0x818 | g2v_notify | write: event |
//! | 0x830 / 0x834 | cursor_x_hot / cursor_y_hot | write: stored |
//! | 0x838–0x857 | pdp\[4\] lo/hi | write: stored |
//! | 0x858 / 0x85C | execlist_context_descriptor lo/hi | write: stored |
//!
//! Everything else is reserved: reads 0, writes are dropped (GVT-g logs
//! "invalid pvinfo write" and does not store them).  Read-only fields are
//! computed from the vGPU's [`Partition`], never from the stored page, so no
//! write can change them.  The page's storage is the vGPU's vreg file (as in
//! GVT-g): [`PvInfo`] works on the 1024-dword window `vregs[0x78000/4..][..1024]`.

use super::partition::Partition;

/// BAR0 offset of the page (`VGT_PVINFO_PAGE`).
pub const PVINFO_BASE: u32 = 0x78000;
/// Size of the page (`VGT_PVINFO_SIZE`).
pub const PVINFO_SIZE: u32 = 0x1000;
/// Dwords of the page.
pub const PVINFO_DWORDS: usize = (PVINFO_SIZE / 4) as usize;

/// `VGT_MAGIC`: "vGTvGTvG".
pub const VGT_MAGIC: u64 = 0x4776_5447_7654_4776;
pub const VGT_VERSION_MAJOR: u16 = 1;
pub const VGT_VERSION_MINOR: u16 = 0;

/// `VGT_CAPS_FULL_PPGTT`.
pub const VGT_CAPS_FULL_PPGTT: u32 = 1 << 2;
/// `VGT_CAPS_HWSP_EMULATION`.
pub const VGT_CAPS_HWSP_EMULATION: u32 = 1 << 3;
/// `VGT_CAPS_HUGE_GTT`.
pub const VGT_CAPS_HUGE_GTT: u32 = 1 << 4;

/// `VGT_DRV_DISPLAY_READY`.
pub const VGT_DRV_DISPLAY_READY: u32 = 1;

/// Field offsets inside the page: `offsetof(struct vgt_if, field)`.
pub mod vgtif {
    pub const MAGIC: u32 = 0x00;
    pub const VERSION_MAJOR: u32 = 0x08;
    pub const VERSION_MINOR: u32 = 0x0A;
    pub const VGT_ID: u32 = 0x0C;
    pub const VGT_CAPS: u32 = 0x10;
    pub const MAPPABLE_BASE: u32 = 0x40;
    pub const MAPPABLE_SIZE: u32 = 0x44;
    pub const NONMAPPABLE_BASE: u32 = 0x48;
    pub const NONMAPPABLE_SIZE: u32 = 0x4C;
    pub const FENCE_NUM: u32 = 0x50;
    pub const DISPLAY_READY: u32 = 0x804;
    pub const RSV5: u32 = 0x808;
    pub const G2V_NOTIFY: u32 = 0x818;
    pub const CURSOR_X_HOT: u32 = 0x830;
    pub const CURSOR_Y_HOT: u32 = 0x834;
    /// `pdp[i].lo` at `PDP + 8 * i`, `.hi` 4 bytes later.
    pub const PDP: u32 = 0x838;
    pub const EXECLIST_CTX_DESC_LO: u32 = 0x858;
    pub const EXECLIST_CTX_DESC_HI: u32 = 0x85C;
}

/// `enum vgt_g2v_type`: what a `g2v_notify` write asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum G2vType {
    PpgttL3PageTableCreate = 2,
    PpgttL3PageTableDestroy = 3,
    PpgttL4PageTableCreate = 4,
    PpgttL4PageTableDestroy = 5,
    ExeclistContextCreate = 6,
    ExeclistContextDestroy = 7,
}

impl G2vType {
    pub fn from_raw(v: u32) -> Option<Self> {
        Some(match v {
            2 => G2vType::PpgttL3PageTableCreate,
            3 => G2vType::PpgttL3PageTableDestroy,
            4 => G2vType::PpgttL4PageTableCreate,
            5 => G2vType::PpgttL4PageTableDestroy,
            6 => G2vType::ExeclistContextCreate,
            7 => G2vType::ExeclistContextDestroy,
            _ => return None,
        })
    }
}

/// A guest write to the page that the glue must act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PvEvent {
    /// `display_ready` written (GVT-g sends a `GVT_DISPLAY_READY` uevent).
    DisplayReady(bool),
    /// `g2v_notify` written with this raw value ([`G2vType::from_raw`]
    /// decodes it; the PDPs are in the page, [`PvInfo::pdp`]).
    G2vNotify(u32),
    /// A write to `rsv5[]`: GVT-g enters failsafe mode
    /// (`GVT_FAILSAFE_INSUFFICIENT_RESOURCE`): the guest could not live with
    /// the resources it was given.
    InsufficientResource,
}

/// What a guest write to the page did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PvWrite {
    /// Stored in the page.
    Stored,
    /// Read-only or reserved: nothing changed.
    Dropped,
    /// Stored (except `InsufficientResource`) and to be routed.
    Event(PvEvent),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PvInfoError {
    /// A GM range does not fit the 32-bit fields of `avail_rs`.
    RangeTooHigh,
}

/// The read-only content of one vGPU's page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PvInfo {
    /// `vgt_id`: the vGPU's id (GVT-g numbers vGPUs from 1; 0 is the host).
    pub vgt_id: u32,
    /// `vgt_caps`: `VGT_CAPS_*` bits.
    pub caps: u32,
    pub mappable_base: u32,
    pub mappable_size: u32,
    pub nonmappable_base: u32,
    pub nonmappable_size: u32,
    pub fence_num: u32,
}

fn fits_u32(base: u64, size: u64) -> Option<(u32, u32)> {
    let end = base.checked_add(size)?;
    if end > 1 << 32 {
        return None;
    }
    Some((u32::try_from(base).ok()?, u32::try_from(size).ok()?))
}

/// Merge a (sub-dword) write into `old`: bytes selected by `mask` come from `value`.
const fn merge(old: u32, value: u32, mask: u32) -> u32 {
    (old & !mask) | (value & mask)
}

impl PvInfo {
    /// The page of a vGPU with id `vgt_id` owning `part`.
    pub fn new(vgt_id: u32, caps: u32, part: &Partition) -> Result<Self, PvInfoError> {
        let (mb, ms) =
            fits_u32(part.aperture.base, part.aperture.size).ok_or(PvInfoError::RangeTooHigh)?;
        let (nb, ns) = fits_u32(part.high.base, part.high.size).ok_or(PvInfoError::RangeTooHigh)?;
        Ok(Self {
            vgt_id,
            caps,
            mappable_base: mb,
            mappable_size: ms,
            nonmappable_base: nb,
            nonmappable_size: ns,
            fence_num: part.fence_count,
        })
    }

    /// The read-only dword at `rel` (dword-aligned offset in the page), or
    /// `None` if `rel` is not a read-only field.
    fn read_only(&self, rel: u32) -> Option<u32> {
        use vgtif::*;
        Some(match rel {
            MAGIC => VGT_MAGIC as u32,
            0x04 => (VGT_MAGIC >> 32) as u32,
            VERSION_MAJOR => (VGT_VERSION_MAJOR as u32) | ((VGT_VERSION_MINOR as u32) << 16),
            VGT_ID => self.vgt_id,
            VGT_CAPS => self.caps,
            MAPPABLE_BASE => self.mappable_base,
            MAPPABLE_SIZE => self.mappable_size,
            NONMAPPABLE_BASE => self.nonmappable_base,
            NONMAPPABLE_SIZE => self.nonmappable_size,
            FENCE_NUM => self.fence_num,
            _ => return None,
        })
    }

    /// Whether the guest may store into the dword at `rel`.
    pub fn guest_writable(rel: u32) -> bool {
        use vgtif::*;
        matches!(
            rel & !3,
            DISPLAY_READY
                | G2V_NOTIFY
                | CURSOR_X_HOT
                | CURSOR_Y_HOT
                | EXECLIST_CTX_DESC_LO
                | EXECLIST_CTX_DESC_HI
        ) || (PDP..PDP + 32).contains(&(rel & !3))
    }

    /// Initialise the page (reset): read-only fields from the partition,
    /// everything else 0.  `page` is the 1024-dword window; a shorter slice is
    /// filled as far as it goes.
    pub fn fill(&self, page: &mut [u32]) {
        for (i, d) in page.iter_mut().take(PVINFO_DWORDS).enumerate() {
            *d = self.read_only((i as u32) * 4).unwrap_or(0);
        }
    }

    /// The dword at `rel` (any offset; its dword is read) as the guest sees
    /// it: read-only fields from the partition, the guest-writable ones from
    /// the page, reserved ones 0.
    pub fn read(&self, page: &[u32], rel: u32) -> u32 {
        let rel = rel & !3;
        if let Some(v) = self.read_only(rel) {
            return v;
        }
        if Self::guest_writable(rel) {
            return page.get((rel / 4) as usize).copied().unwrap_or(0);
        }
        0
    }

    /// A guest write of `value` to the bytes `mask` selects of the dword at
    /// `rel` (dword-aligned offset; other bits of `rel` are ignored).
    pub fn write(&self, page: &mut [u32], rel: u32, value: u32, mask: u32) -> PvWrite {
        let rel = rel & !3;
        if (vgtif::RSV5..vgtif::RSV5 + 16).contains(&rel) {
            return PvWrite::Event(PvEvent::InsufficientResource);
        }
        if !Self::guest_writable(rel) {
            return PvWrite::Dropped;
        }
        let Some(slot) = page.get_mut((rel / 4) as usize) else {
            return PvWrite::Dropped;
        };
        let v = merge(*slot, value, mask);
        *slot = v;
        match rel {
            vgtif::DISPLAY_READY => PvWrite::Event(PvEvent::DisplayReady(v != 0)),
            vgtif::G2V_NOTIFY => PvWrite::Event(PvEvent::G2vNotify(v)),
            _ => PvWrite::Stored,
        }
    }

    /// `pdp[i]` (i < 4) as the guest last wrote it.
    pub fn pdp(page: &[u32], i: usize) -> Option<u64> {
        if i >= 4 {
            return None;
        }
        let lo = (vgtif::PDP / 4) as usize + 2 * i;
        let l = *page.get(lo)?;
        let h = *page.get(lo + 1)?;
        Some((l as u64) | ((h as u64) << 32))
    }

    /// The vGPU's partition as the page advertises it.
    pub fn advertised(&self) -> (u32, u32, u32, u32, u32) {
        (
            self.mappable_base,
            self.mappable_size,
            self.nonmappable_base,
            self.nonmappable_size,
            self.fence_num,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::mem::GmRange;
    use super::*;
    use proptest::prelude::*;

    const MIB: u64 = 1 << 20;

    fn part() -> Partition {
        Partition {
            aperture: GmRange::new(64 * MIB, 64 * MIB),
            high: GmRange::new(512 * MIB, 384 * MIB),
            fence_base: 4,
            fence_count: 4,
        }
    }

    fn page() -> (PvInfo, [u32; PVINFO_DWORDS]) {
        let pv = PvInfo::new(3, VGT_CAPS_HUGE_GTT, &part()).unwrap();
        let mut page = [0xdead_beef; PVINFO_DWORDS];
        pv.fill(&mut page);
        (pv, page)
    }

    /// `struct vgt_if` offsets, computed from the C declaration order and sizes
    /// (u64 magic; u16 ×2; u32 vgt_id, vgt_caps, rsv1[11]; avail_rs: 5 u32 +
    /// rsv2[3]; rsv3[0x200-24]; rsv4; display_ready; rsv5[4]; g2v_notify;
    /// rsv6[5]; cursor x/y; pdp[4] {lo, hi}; execlist lo/hi; rsv7[0x200-24]).
    #[test]
    fn layout_matches_i915_pvinfo_h() {
        let mut off = 0u32;
        let mut field = |size: u32| {
            let o = off;
            off += size;
            o
        };
        assert_eq!(field(8), vgtif::MAGIC);
        assert_eq!(field(2), vgtif::VERSION_MAJOR);
        assert_eq!(field(2), vgtif::VERSION_MINOR);
        assert_eq!(field(4), vgtif::VGT_ID);
        assert_eq!(field(4), vgtif::VGT_CAPS);
        field(11 * 4);
        assert_eq!(field(4), vgtif::MAPPABLE_BASE);
        assert_eq!(field(4), vgtif::MAPPABLE_SIZE);
        assert_eq!(field(4), vgtif::NONMAPPABLE_BASE);
        assert_eq!(field(4), vgtif::NONMAPPABLE_SIZE);
        assert_eq!(field(4), vgtif::FENCE_NUM);
        field(3 * 4);
        field((0x200 - 24) * 4);
        field(4); // rsv4
        assert_eq!(field(4), vgtif::DISPLAY_READY);
        assert_eq!(field(4 * 4), vgtif::RSV5);
        assert_eq!(field(4), vgtif::G2V_NOTIFY);
        field(5 * 4);
        assert_eq!(field(4), vgtif::CURSOR_X_HOT);
        assert_eq!(field(4), vgtif::CURSOR_Y_HOT);
        assert_eq!(field(4 * 8), vgtif::PDP);
        assert_eq!(field(4), vgtif::EXECLIST_CTX_DESC_LO);
        assert_eq!(field(4), vgtif::EXECLIST_CTX_DESC_HI);
        field((0x200 - 24) * 4);
        assert_eq!(off, PVINFO_SIZE, "struct vgt_if is one page");
    }

    #[test]
    fn read_only_fields_come_from_the_partition() {
        let (pv, page) = page();
        let r = |o| pv.read(&page, o);
        assert_eq!((r(0) as u64) | ((r(4) as u64) << 32), VGT_MAGIC);
        assert_eq!(r(8), 1, "major 1, minor 0");
        assert_eq!(r(vgtif::VGT_ID), 3);
        assert_eq!(r(vgtif::VGT_CAPS), VGT_CAPS_HUGE_GTT);
        assert_eq!(r(vgtif::MAPPABLE_BASE), (64 * MIB) as u32);
        assert_eq!(r(vgtif::MAPPABLE_SIZE), (64 * MIB) as u32);
        assert_eq!(r(vgtif::NONMAPPABLE_BASE), (512 * MIB) as u32);
        assert_eq!(r(vgtif::NONMAPPABLE_SIZE), (384 * MIB) as u32);
        assert_eq!(r(vgtif::FENCE_NUM), 4);
        assert_eq!(
            r(vgtif::DISPLAY_READY),
            0,
            "fill cleared the writable fields"
        );
        assert_eq!(r(0x20), 0, "reserved");
        assert_eq!(
            page[(vgtif::FENCE_NUM / 4) as usize],
            4,
            "fill mirrors read-only fields into the vregs"
        );
        assert_eq!(
            pv.advertised(),
            (
                (64 * MIB) as u32,
                (64 * MIB) as u32,
                (512 * MIB) as u32,
                (384 * MIB) as u32,
                4
            )
        );
    }

    #[test]
    fn writes() {
        let (pv, mut page) = page();
        assert_eq!(pv.write(&mut page, vgtif::MAGIC, 0, !0), PvWrite::Dropped);
        assert_eq!(
            pv.write(&mut page, vgtif::FENCE_NUM, 16, !0),
            PvWrite::Dropped
        );
        assert_eq!(pv.read(&page, vgtif::FENCE_NUM), 4);
        assert_eq!(pv.write(&mut page, 0x100, 1, !0), PvWrite::Dropped);
        assert_eq!(pv.read(&page, 0x100), 0);
        assert_eq!(
            pv.write(&mut page, vgtif::DISPLAY_READY, VGT_DRV_DISPLAY_READY, !0),
            PvWrite::Event(PvEvent::DisplayReady(true))
        );
        assert_eq!(pv.read(&page, vgtif::DISPLAY_READY), 1);
        assert_eq!(
            pv.write(&mut page, vgtif::DISPLAY_READY, 0, !0),
            PvWrite::Event(PvEvent::DisplayReady(false))
        );
        assert_eq!(
            pv.write(&mut page, vgtif::G2V_NOTIFY, 4, !0),
            PvWrite::Event(PvEvent::G2vNotify(4))
        );
        assert_eq!(G2vType::from_raw(4), Some(G2vType::PpgttL4PageTableCreate));
        assert_eq!(G2vType::from_raw(1), None);
        assert_eq!(
            pv.write(&mut page, vgtif::RSV5 + 4, 1, !0),
            PvWrite::Event(PvEvent::InsufficientResource)
        );
        assert_eq!(pv.read(&page, vgtif::RSV5 + 4), 0, "rsv5 is not stored");
        assert_eq!(
            pv.write(&mut page, vgtif::PDP + 8, 0x1000, !0),
            PvWrite::Stored
        );
        assert_eq!(
            pv.write(&mut page, vgtif::PDP + 12, 0x2, !0),
            PvWrite::Stored
        );
        assert_eq!(PvInfo::pdp(&page, 1), Some(0x2_0000_1000));
        assert_eq!(PvInfo::pdp(&page, 4), None);
        // sub-dword write merges
        assert_eq!(
            pv.write(&mut page, vgtif::CURSOR_X_HOT, 0xAABB_CCDD, 0x0000_FF00),
            PvWrite::Stored
        );
        assert_eq!(pv.read(&page, vgtif::CURSOR_X_HOT), 0x0000_CC00);
        // a too-short page never panics
        assert_eq!(
            pv.write(&mut [0u32; 4], vgtif::G2V_NOTIFY, 1, !0),
            PvWrite::Dropped
        );
        assert_eq!(pv.read(&[], vgtif::G2V_NOTIFY), 0);
        pv.fill(&mut [0u32; 3]);
    }

    #[test]
    fn ranges_must_fit_32_bits() {
        let mut p = part();
        p.high = GmRange::new(4096 * MIB - 384 * MIB, 384 * MIB);
        assert!(PvInfo::new(1, 0, &p).is_ok());
        p.high = GmRange::new(4096 * MIB, 384 * MIB);
        assert_eq!(PvInfo::new(1, 0, &p), Err(PvInfoError::RangeTooHigh));
    }

    proptest! {
        #[test]
        fn writes_never_change_read_only_fields(ws in proptest::collection::vec((0u32..0x1400, any::<u32>(), any::<u32>()), 0..200)) {
            let (pv, mut page) = page();
            let before: std::vec::Vec<u32> = (0..PVINFO_SIZE).step_by(4).map(|o| pv.read(&page, o)).collect();
            for (rel, v, m) in ws {
                pv.write(&mut page, rel, v, m);
            }
            for (i, o) in (0..PVINFO_SIZE).step_by(4).enumerate() {
                if !PvInfo::guest_writable(o) {
                    prop_assert_eq!(pv.read(&page, o), before[i], "offset {:#x}", o);
                }
            }
        }
    }
}
