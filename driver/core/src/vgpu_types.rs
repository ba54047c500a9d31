//! vGPU types (paper §3.3.1: resources are partitioned statically among
//! vGPUs; GVT-g offers them as mdev types): what sizes of vGPU the parent
//! offers, derived from its capacity (aperture size, total GM, fences, maximum
//! number of vGPUs — all module parameters) the way GVT-g's
//! `intel_vgpu_configs[]` table is laid out.
//!
//! One type per instance count n in 64, 32, 16, 8, 4, 2, 1 (smallest first,
//! GVT-g's order; GVT-g itself stops at 8), kept only if `n <= max_vgpus`
//! and each share is sane (at least [`MIN_LOW_GM`] of aperture and
//! [`MIN_HIGH_GM`] of high GM):
//! - `low_gm_size` = aperture / n, `high_gm_size` = (high GM − host
//!   reservation) / n, both rounded down to whole MiB; `fences` = fences / n,
//!   at least one for GVT-g's types (n ≤ 8), and 0 for the larger counts
//!   when they have more instances than the parent has fences (a fence is
//!   only needed for tiled CPU access through the aperture; the guest reads
//!   its count from PVINFO `avail_rs.fence_num`);
//! - resolution 1024x768 for the 8-instance type or when a double-buffered
//!   1920x1200 framebuffer does not fit the aperture share, else 1920x1200
//!   (GVT-g gives 1024x768 to its smallest type only);
//! - weight `16 / n` (GVT-g's `VGPU_WEIGHT(n)` = `VGPU_MAX_WEIGHT / n`), at
//!   least 1 (the types of 16, 32 and 64 instances all weigh 1).
//!
//! Names: `sysfs_name` is `GVTsim_<low_gm MiB>M` (the mdev core shows it as
//! `<parent driver>-GVTsim_64M`, e.g. `gvt_rs-GVTsim_64M`); the description is
//! written in exactly GVT-g's format (`intel_vgpu_show_description`).
//!
//! [`available_instances`] counts what really still fits in the free blocks of
//! each resource ([`Partitioner::fit_count`]), not a sum of sizes as GVT-g
//! does, so the count is never optimistic after fragmentation; since GM is
//! shared by all types, creating any vGPU lowers every type's count.

use core::fmt::{self, Write};
use core::num::{NonZeroU32, NonZeroU64};

use super::partition::{GmLayout, PartitionRequest, Partitioner};

const MIB: u64 = 1 << 20;
/// Smallest aperture share a type may have.
pub const MIN_LOW_GM: u64 = 4 * MIB;
/// Smallest high GM share a type may have.
pub const MIN_HIGH_GM: u64 = 4 * MIB;
/// GVT-g's `VGPU_MAX_WEIGHT`.
pub const VGPU_MAX_WEIGHT: u32 = 16;
/// Instance counts, in the order types are listed.
pub const INSTANCE_COUNTS: [u32; 7] = [64, 32, 16, 8, 4, 2, 1];
/// GVT-g's largest instance count: its types (8, 4, 2, 1) need a fence
/// each; only the larger counts may be fence-less.
pub const GVTG_MAX_INSTANCES: u32 = 8;
/// At most this many types.
pub const MAX_TYPES: usize = INSTANCE_COUNTS.len();

/// A display resolution (the vGPU's EDID).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resolution {
    pub width: u32,
    pub height: u32,
}

impl Resolution {
    pub const R1024X768: Resolution = Resolution {
        width: 1024,
        height: 768,
    };
    pub const R1920X1200: Resolution = Resolution {
        width: 1920,
        height: 1200,
    };
    /// Bytes of one XRGB8888 framebuffer.
    pub const fn framebuffer_bytes(self) -> u64 {
        self.width as u64 * self.height as u64 * 4
    }
}

impl fmt::Display for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

/// One vGPU type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VgpuType {
    /// How many instances of this type the parent was sized for.
    pub instances: u32,
    /// Aperture (mappable GM) per vGPU, bytes (whole MiB).
    pub low_gm_size: u64,
    /// Non-mappable GM per vGPU, bytes (whole MiB).
    pub high_gm_size: u64,
    pub fences: u32,
    pub resolution: Resolution,
    /// Scheduling weight.
    pub weight: u32,
}

/// A `fmt::Write` over a caller's byte buffer; fails (rather than
/// truncating silently) when the buffer is full.
pub struct SliceWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> SliceWriter<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, len: 0 }
    }
    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Write for SliceWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len.checked_add(s.len()).ok_or(fmt::Error)?;
        let dst = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

impl VgpuType {
    /// What creating one vGPU of this type asks of the partitioner.
    pub fn request(&self) -> PartitionRequest {
        PartitionRequest {
            aperture_size: self.low_gm_size,
            high_size: self.high_gm_size,
            fences: self.fences,
        }
    }
    /// `GVTsim_<low_gm MiB>M`.
    pub fn write_sysfs_name<W: Write>(&self, w: &mut W) -> fmt::Result {
        write!(w, "GVTsim_{}M", self.low_gm_size / MIB)
    }
    /// GVT-g's description format.
    pub fn write_description<W: Write>(&self, w: &mut W) -> fmt::Result {
        write!(
            w,
            "low_gm_size: {}MB\nhigh_gm_size: {}MB\nfence: {}\nresolution: {}\nweight: {}\n",
            self.low_gm_size / MIB,
            self.high_gm_size / MIB,
            self.fences,
            self.resolution,
            self.weight
        )
    }
    /// The sysfs name into `buf`; returns its length.
    pub fn sysfs_name(&self, buf: &mut [u8]) -> Result<usize, fmt::Error> {
        let mut w = SliceWriter::new(buf);
        self.write_sysfs_name(&mut w)?;
        Ok(w.len())
    }
    /// The description into `buf` (e.g. the sysfs page); returns its length.
    pub fn description(&self, buf: &mut [u8]) -> Result<usize, fmt::Error> {
        let mut w = SliceWriter::new(buf);
        self.write_description(&mut w)?;
        Ok(w.len())
    }
    /// Whether `name` is this type's sysfs name.
    pub fn has_name(&self, name: &str) -> bool {
        let mut b = [0u8; 32];
        match self.sysfs_name(&mut b) {
            Ok(n) => b.get(..n) == Some(name.as_bytes()),
            Err(_) => false,
        }
    }
}

/// The types a parent offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VgpuTypes {
    types: [Option<VgpuType>; MAX_TYPES],
}

const fn round_down_mib(x: u64) -> u64 {
    x - x % MIB
}

impl VgpuTypes {
    /// Derive the types from the parent's capacity.
    pub fn derive(layout: &GmLayout, max_vgpus: u32) -> Self {
        let high_pool = layout
            .total_gm
            .checked_sub(layout.aperture_size)
            .and_then(|h| h.checked_sub(layout.host_reserved_high))
            .unwrap_or(0);
        let mut types = [None; MAX_TYPES];
        let mut k = 0;
        for n in INSTANCE_COUNTS {
            // Divisions by a `NonZero` cannot panic: no divide-by-zero check
            // (and no panic path) in the module's init, which inlines this.
            let Some(d) = NonZeroU32::new(n).filter(|_| n <= max_vgpus) else {
                continue;
            };
            let low = round_down_mib(layout.aperture_size / NonZeroU64::from(d));
            let high = round_down_mib(high_pool / NonZeroU64::from(d));
            let fences = layout.fences / d;
            if low < MIN_LOW_GM || high < MIN_HIGH_GM || (fences == 0 && n <= GVTG_MAX_INSTANCES) {
                continue;
            }
            let big = Resolution::R1920X1200;
            let resolution = if n >= 8 || low < 2 * big.framebuffer_bytes() {
                Resolution::R1024X768
            } else {
                big
            };
            let t = VgpuType {
                instances: n,
                low_gm_size: low,
                high_gm_size: high,
                fences,
                resolution,
                weight: (VGPU_MAX_WEIGHT / d).max(1),
            };
            if let Some(slot) = types.get_mut(k) {
                *slot = Some(t);
                k += 1;
            }
        }
        Self { types }
    }
    pub fn len(&self) -> usize {
        self.types.iter().filter(|t| t.is_some()).count()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Type `i` (the order of [`iter`](Self::iter)).
    pub fn get(&self, i: usize) -> Option<&VgpuType> {
        self.types.get(i).and_then(|t| t.as_ref())
    }
    pub fn iter(&self) -> impl Iterator<Item = &VgpuType> {
        self.types.iter().flatten()
    }
    /// The type whose sysfs name is `name`.
    pub fn by_name(&self, name: &str) -> Option<&VgpuType> {
        self.iter().find(|t| t.has_name(name))
    }
}

/// How many more vGPUs of type `t` can be created now: bounded by the vGPU
/// limit and by what really fits in each resource's free blocks.
pub fn available_instances<const S: usize>(
    t: &VgpuType,
    partitioner: &Partitioner<S>,
    live_vgpus: u32,
    max_vgpus: u32,
) -> u32 {
    let by_count = max_vgpus.saturating_sub(live_vgpus) as u64;
    let fit = partitioner.fit_count(&t.request());
    u32::try_from(by_count.min(fit)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::super::partition::PartitionId;
    use super::*;
    use proptest::prelude::*;
    use std::string::String;
    use std::vec::Vec;

    /// GVT-g's Broadwell/Skylake parent: 512 MiB aperture, 4 GiB GM.
    fn layout() -> GmLayout {
        GmLayout {
            aperture_size: 512 * MIB,
            total_gm: 4096 * MIB,
            fences: 16,
            host_reserved_high: 16 * MIB,
        }
    }

    fn name(t: &VgpuType) -> String {
        let mut s = String::new();
        t.write_sysfs_name(&mut s).unwrap();
        s
    }

    /// (instances, aperture MiB, high GM MiB, fences, weight) of each type.
    fn shape(types: &VgpuTypes) -> Vec<(u32, u64, u64, u32, u32)> {
        types
            .iter()
            .map(|t| {
                (
                    t.instances,
                    t.low_gm_size / MIB,
                    t.high_gm_size / MIB,
                    t.fences,
                    t.weight,
                )
            })
            .collect()
    }

    #[test]
    fn derived_types() {
        let types = VgpuTypes::derive(&layout(), 8);
        let v = shape(&types);
        // high pool: 4096 - 512 - 16 = 3568 MiB
        assert_eq!(
            v,
            [
                (8, 64, 446, 2, 2),
                (4, 128, 892, 4, 4),
                (2, 256, 1784, 8, 8),
                (1, 512, 3568, 16, 16)
            ]
        );
        assert_eq!(types.get(0).unwrap().resolution, Resolution::R1024X768);
        assert_eq!(types.get(1).unwrap().resolution, Resolution::R1920X1200);
        assert_eq!(
            types.iter().map(name).collect::<Vec<_>>(),
            ["GVTsim_64M", "GVTsim_128M", "GVTsim_256M", "GVTsim_512M"]
        );
        assert_eq!(types.by_name("GVTsim_128M").map(|t| t.instances), Some(4));
        assert!(types.by_name("GVTsim_1M").is_none());
        assert!(types.get(4).is_none());
    }

    #[test]
    fn limited_by_max_vgpus_and_minimum_size() {
        let types = VgpuTypes::derive(&layout(), 3);
        assert_eq!(
            types.iter().map(|t| t.instances).collect::<Vec<_>>(),
            [2, 1]
        );
        // a small test parent: 16 MiB aperture, 128 MiB GM
        let small = GmLayout {
            aperture_size: 16 * MIB,
            total_gm: 128 * MIB,
            fences: 16,
            host_reserved_high: 16 * MIB,
        };
        let types = VgpuTypes::derive(&small, 8);
        let v: Vec<_> = types
            .iter()
            .map(|t| (t.instances, t.low_gm_size / MIB, t.high_gm_size / MIB))
            .collect();
        assert_eq!(
            v,
            [(4, 4, 24), (2, 8, 48), (1, 16, 96)],
            "8 instances would get 2 MiB of aperture"
        );
        assert!(
            types.iter().all(|t| t.resolution == Resolution::R1024X768),
            "no room for 1920x1200 double-buffered"
        );
        let none = VgpuTypes::derive(
            &GmLayout {
                aperture_size: 2 * MIB,
                ..small
            },
            8,
        );
        assert!(none.is_empty());
        assert!(VgpuTypes::derive(&layout(), 0).is_empty());
        let no_fences = VgpuTypes::derive(
            &GmLayout {
                fences: 2,
                ..layout()
            },
            8,
        );
        assert_eq!(
            no_fences
                .iter()
                .map(|t| (t.instances, t.fences))
                .collect::<Vec<_>>(),
            [(2, 1), (1, 2)],
            "GVT-g's types need a fence"
        );
        let no_fences = VgpuTypes::derive(
            &GmLayout {
                fences: 8,
                ..layout()
            },
            64,
        );
        assert_eq!(
            no_fences
                .iter()
                .map(|t| (t.instances, t.fences))
                .collect::<Vec<_>>(),
            [(64, 0), (32, 0), (16, 0), (8, 1), (4, 2), (2, 4), (1, 8)],
            "more than 8 instances: fence-less when there are too few"
        );
    }

    #[test]
    fn sixty_four_vgpus() {
        // The default parent (512 MiB aperture, 4 GiB GM) with max_vgpus=64.
        let types = VgpuTypes::derive(&layout(), 64);
        let v = shape(&types);
        assert_eq!(
            v,
            [
                (64, 8, 55, 0, 1),
                (32, 16, 111, 0, 1),
                (16, 32, 223, 1, 1),
                (8, 64, 446, 2, 2),
                (4, 128, 892, 4, 4),
                (2, 256, 1784, 8, 8),
                (1, 512, 3568, 16, 16)
            ]
        );
        assert_eq!(types.len(), MAX_TYPES);
        assert_eq!(types.get(0).unwrap().resolution, Resolution::R1024X768);
        // 64 of the smallest type really fit, and not a 65th
        let mut p = Partitioner::<64>::new(layout()).unwrap();
        let small = *types.get(0).unwrap();
        assert_eq!(available_instances(&small, &p, 0, 64), 64);
        for i in 0..64 {
            assert!(p.create(&small.request()).is_ok(), "vGPU {i}");
        }
        assert_eq!(available_instances(&small, &p, 64, 64), 0);
        assert!(p.create(&small.request()).is_err());
    }

    #[test]
    fn description_format_is_gvt_gs() {
        let types = VgpuTypes::derive(&layout(), 8);
        let t = types.get(0).unwrap();
        let mut buf = [0u8; 128];
        let n = t.description(&mut buf).unwrap();
        assert_eq!(
            core::str::from_utf8(&buf[..n]).unwrap(),
            "low_gm_size: 64MB\nhigh_gm_size: 446MB\nfence: 2\nresolution: 1024x768\nweight: 2\n"
        );
        let mut tiny = [0u8; 10];
        assert!(t.description(&mut tiny).is_err(), "no silent truncation");
        let n = t.sysfs_name(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"GVTsim_64M");
        assert!(t.sysfs_name(&mut []).is_err());
    }

    #[test]
    fn names_are_unique() {
        for ap in [4u64, 5, 8, 16, 33, 64, 100, 256, 512, 1024] {
            let l = GmLayout {
                aperture_size: ap * MIB,
                total_gm: 4096 * MIB,
                fences: 32,
                host_reserved_high: 16 * MIB,
            };
            let names: Vec<_> = VgpuTypes::derive(&l, 8).iter().map(name).collect();
            let mut d = names.clone();
            d.dedup();
            assert_eq!(d, names, "aperture {ap} MiB");
        }
    }

    #[test]
    fn counts_drop_and_recover() {
        let types = VgpuTypes::derive(&layout(), 8);
        let mut p = Partitioner::<8>::new(layout()).unwrap();
        let counts = |p: &Partitioner<8>| {
            types
                .iter()
                .map(|t| available_instances(t, p, p.live() as u32, 8))
                .collect::<Vec<_>>()
        };
        assert_eq!(counts(&p), [8, 4, 2, 1]);
        let big = *types.get(2).unwrap(); // 256 MiB, 2 instances
        let (id, _) = p.create(&big.request()).unwrap();
        assert_eq!(counts(&p), [4, 2, 1, 0], "one big vGPU lowers every type");
        let small = *types.get(0).unwrap();
        let (id2, _) = p.create(&small.request()).unwrap();
        assert_eq!(counts(&p), [3, 1, 0, 0]);
        p.destroy(id).unwrap();
        assert_eq!(counts(&p), [7, 3, 1, 0]);
        p.destroy(id2).unwrap();
        assert_eq!(counts(&p), [8, 4, 2, 1]);
        // the vGPU limit caps the count
        assert_eq!(available_instances(&small, &p, 7, 8), 1);
        assert_eq!(available_instances(&small, &p, 9, 8), 0);
    }

    #[test]
    fn fragmentation_is_counted_honestly() {
        let types = VgpuTypes::derive(&layout(), 8);
        let small = *types.get(0).unwrap();
        let mid = *types.get(1).unwrap();
        let mut p = Partitioner::<8>::new(layout()).unwrap();
        let ids: Vec<_> = (0..8)
            .map(|_| p.create(&small.request()).unwrap().0)
            .collect();
        // free every other small vGPU: 256 MiB of aperture free, in 64 MiB holes
        for id in ids.iter().step_by(2) {
            p.destroy(*id).unwrap();
        }
        assert_eq!(p.aperture_allocator().total_free(), 256 * MIB);
        assert_eq!(
            available_instances(&mid, &p, 4, 8),
            0,
            "a sum-of-sizes count would say 2"
        );
        assert_eq!(available_instances(&small, &p, 4, 8), 4);
        for id in ids.iter().skip(1).step_by(2) {
            p.destroy(*id).unwrap();
        }
        assert_eq!(available_instances(&mid, &p, 0, 8), 4);
    }

    proptest! {
        /// Random create/destroy of random types: the reported count is exactly
        /// how many more creations succeed, and capacity is never lost.
        #[test]
        fn counts_are_exact_and_capacity_never_lost(ops in proptest::collection::vec((0usize..4, any::<bool>(), 0usize..8), 1..60)) {
            let types = VgpuTypes::derive(&layout(), 8);
            let mut p = Partitioner::<8>::new(layout()).unwrap();
            let mut live: Vec<PartitionId> = Vec::new();
            for (ti, create, victim) in ops {
                let t = *types.get(ti).unwrap();
                if create {
                    let avail = available_instances(&t, &p, live.len() as u32, 8);
                    // the count is exact: exactly `avail` creations succeed on a copy
                    let mut q = p.clone();
                    for _ in 0..avail {
                        prop_assert!(q.create(&t.request()).is_ok());
                    }
                    prop_assert!(q.create(&t.request()).is_err());
                    if let Ok((id, _)) = p.create(&t.request()) {
                        live.push(id);
                    }
                } else if !live.is_empty() {
                    let id = live.remove(victim % live.len());
                    p.destroy(id).unwrap();
                }
            }
            for id in live.drain(..) {
                p.destroy(id).unwrap();
            }
            let counts: Vec<_> = types.iter().map(|t| available_instances(t, &p, 0, 8)).collect();
            prop_assert_eq!(counts, [8, 4, 2, 1]);
        }
    }
}
