//! The facade ([`gvt_core::vgpu::Vgpu`]) through its public API: BAR0 and
//! config-space accesses, the display plane and its queries, the vblank
//! interrupt, fences, resets.

use gvt_core::backend::Backend;
use gvt_core::backend::EngineId;
use gvt_core::backend::Pte;
use gvt_core::cfgspace::off;
use gvt_core::display::{self, GfxCaps, InvalidQuery, NoPlane, QueryAnswer};
use gvt_core::fakes::{FakeGuestMemory, FakeHostMemory, FakeHostPages};
use gvt_core::ggtt::{PteWrite, VgpuGm};
use gvt_core::gpu::{Gpu, SubmitOutcome};
use gvt_core::gpu::{GpuConfig, SHADOW_PAGES_PER_VGPU};
use gvt_core::irq;
use gvt_core::irq::Delivery;
use gvt_core::mem::PAGE_SIZE;
use gvt_core::mem::{GmRange, HostPage};
use gvt_core::mmio;
use gvt_core::partition::Partition;
use gvt_core::pvinfo::vgtif;
use gvt_core::pvinfo::{PVINFO_BASE, VGT_MAGIC};
use gvt_core::regs::{self, ring};
use gvt_core::services::Held;
use gvt_core::services::{Clock, CpuMappings};
use gvt_core::vgpu::*;
use std::cell::Cell;

struct T(Cell<u64>);
impl Clock for T {
    fn now_ns(&self) -> u64 {
        self.0.get()
    }
}
struct NoCpu;
impl CpuMappings for NoCpu {
    fn invalidate(&mut self, _: u64) {}
}

fn part() -> Partition {
    Partition {
        aperture: GmRange::new(1 << 20, 1 << 20),
        high: GmRange::new(8 << 20, 1 << 20),
        fence_base: 4,
        fence_count: 4,
    }
}

/// `$body` with `$v`, the rig's vGPU, and `$env`, a call's [`Env`] over
/// the rig's storage and services.
macro_rules! call {
    ($r:expr, |$v:ident, $env:ident| $body:expr) => {{
        let r: &mut Rig = &mut *$r;
        let mut lock = Held::new(&mut r.gpu, &mut r.phys);
        let mut cpu = NoCpu;
        let st = VgpuStorage {
            vregs: &mut r.vregs,
            ggtt_guest: &mut r.gg,
            ggtt_shadow: &mut r.gs,
            ppgtt_snap: &mut r.snap,
        };
        let mut $env = Env::new(
            st,
            &mut lock,
            &mut r.host,
            &mut r.pages,
            &r.clock,
            &mut r.ram,
            &mut cpu,
        );
        let $v = r.v.as_mut().unwrap();
        $body
    }};
}

struct Rig {
    gpu: Gpu<2>,
    phys: Vec<Pte>,
    host: FakeHostMemory,
    pages: FakeHostPages,
    clock: T,
    ram: FakeGuestMemory,
    vregs: Vec<u32>,
    gg: Vec<u64>,
    gs: Vec<u64>,
    snap: Vec<u64>,
    v: Option<Vgpu<4>>,
}

impl Rig {
    fn new() -> Rig {
        let mut phys = vec![Pte::default(); 8192];
        let gpu = Gpu::new(GpuConfig::DEFAULT, &mut phys).unwrap();
        let (nv, ng, ns) = storage_sizes::<4>(&part());
        let mut r = Rig {
            gpu,
            phys,
            host: FakeHostMemory::new(700),
            pages: FakeHostPages::new(600, 100),
            clock: T(Cell::new(0)),
            ram: FakeGuestMemory::new(0x100, 64, 0),
            vregs: vec![0; nv],
            gg: vec![0; ng],
            gs: vec![0; ng],
            snap: vec![0; ns],
            v: None,
        };
        let shadow: Vec<HostPage> = (0..SHADOW_PAGES_PER_VGPU as u64)
            .map(|i| HostPage(100 + i))
            .collect();
        let p = VgpuParams {
            id: 3,
            part: part(),
            aperture_size: 4 << 20,
            weight: 1,
            scratch: HostPage(99),
            shadow_pages: &shadow,
        };
        let st = VgpuStorage {
            vregs: &mut r.vregs,
            ggtt_guest: &mut r.gg,
            ggtt_shadow: &mut r.gs,
            ppgtt_snap: &mut r.snap,
        };
        let (mut lock, mut cpu) = (Held::new(&mut r.gpu, &mut r.phys), NoCpu);
        let mut env = Env::new(
            st,
            &mut lock,
            &mut r.host,
            &mut r.pages,
            &r.clock,
            &mut r.ram,
            &mut cpu,
        );
        r.v = Some(Vgpu::create(p, &mut env).unwrap());
        r
    }
    fn w(&mut self, off: u64, data: &[u8]) -> Result<Bar0Write, AccessError> {
        call!(self, |v, env| v.bar0_write(&mut env, off, data))
    }
    fn r(&mut self, off: u64, buf: &mut [u8]) -> Result<(), AccessError> {
        call!(self, |v, env| v.bar0_read(&mut env, off, buf))
    }
    fn vgpu(&mut self) -> &mut Vgpu<4> {
        self.v.as_mut().unwrap()
    }
}

impl Rig {
    fn w32(&mut self, off: u32, v: u32) -> Bar0Write {
        self.w(u64::from(off), &v.to_le_bytes()).unwrap()
    }
    fn r32(&mut self, off: u32) -> u32 {
        let mut b = [0u8; 4];
        self.r(u64::from(off), &mut b).unwrap();
        u32::from_le_bytes(b)
    }
    /// The vblank timer (or a counter read) at the fake clock's time.
    fn tick(&mut self) -> Delivery {
        let now = self.clock.0.get();
        call!(self, |v, env| v.vblank_tick(&mut env, now))
    }
    fn at_ms(&mut self, ms: u64) {
        self.clock.0.set(ms * 1_000_000);
    }
}

const PLANE_ON: u32 = 1 << 31;

impl Rig {
    fn reset_with(&mut self, new_owner: bool) {
        call!(self, |v, env| if new_owner {
            v.reset_for_new_owner(&mut env)
        } else {
            v.reset(&mut env)
        })
    }
}

/// Issue 19, finding 6: a new user of the device sees none of the
/// previous user's display counters; a device reset keeps them.
#[test]
fn display_counters_survive_a_reset_but_not_a_change_of_owner() {
    use gvt_core::vblank::{PIPEA_FLIPCOUNT, PIPEA_FRMCOUNT};
    let mut r = Rig::new();
    r.vgpu().set_refresh_period(0, 10_000_000);
    r.w32(regs::DSPACNTR, PLANE_ON);
    for i in 0..3u32 {
        r.w32(regs::DSPASURF, (1 << 20) + i * 0x1000);
    }
    r.at_ms(55);
    r.tick();
    let (frames, flips) = (r.r32(PIPEA_FRMCOUNT), r.r32(PIPEA_FLIPCOUNT));
    assert_eq!((frames, flips), (5, 3));
    r.reset_with(false);
    assert_eq!(
        (r.r32(PIPEA_FRMCOUNT), r.r32(PIPEA_FLIPCOUNT)),
        (frames, flips),
        "RESET keeps the counters"
    );
    r.reset_with(true);
    assert_eq!(
        (r.r32(PIPEA_FRMCOUNT), r.r32(PIPEA_FLIPCOUNT)),
        (0, 0),
        "a new owner starts from zero"
    );
    assert_eq!(r.vgpu().plane_ids().current(), 0);
}

#[test]
fn vblank_interrupt_counts_while_the_plane_is_enabled_and_unmasked() {
    use gvt_core::vblank::PIPEA_FRMCOUNT;
    let mut r = Rig::new();
    r.vgpu().set_refresh_period(0, 10_000_000);
    // Power-on: plane off, vblank masked and disabled: no timer needed.
    assert_eq!(r.vgpu().vblank_deadline(0), None);
    r.at_ms(100);
    assert_eq!(r.tick(), Delivery::default());
    assert_eq!(r.r32(PIPEA_FRMCOUNT), 0, "no frames while the plane is off");

    // The guest enables and unmasks the vblank, then its plane.
    r.w32(regs::DE_IER, irq::DE_PIPEA_VBLANK);
    r.w32(regs::DE_IMR, !irq::DE_PIPEA_VBLANK);
    assert_eq!(
        r.vgpu().vblank_deadline(100_000_000),
        None,
        "plane still off"
    );
    r.w32(regs::DSPACNTR, PLANE_ON);
    assert_eq!(
        r.vgpu().vblank_deadline(100_000_000),
        Some(110_000_000),
        "one period after the plane came on"
    );
    let mut msis = 0;
    for i in 1..=5u64 {
        r.at_ms(100 + 10 * i);
        let d = r.tick();
        assert!(d.msi, "vblank {i} is an MSI edge");
        msis += 1;
        assert_eq!(r.r32(regs::DE_IIR), irq::DE_PIPEA_VBLANK);
        assert_eq!(r.r32(PIPEA_FRMCOUNT), i as u32);
        // The guest acknowledges.
        r.w32(regs::DE_IIR, irq::DE_PIPEA_VBLANK);
        assert_eq!(r.r32(regs::DE_IIR), 0, "write one to clear");
    }
    assert_eq!(msis, 5);
    // Not acknowledged: later vblanks merge into the pending bit, no edge.
    r.at_ms(160);
    assert!(r.tick().msi);
    r.at_ms(190);
    assert!(!r.tick().msi, "still pending: no new edge");
    assert_eq!(
        r.r32(PIPEA_FRMCOUNT),
        9,
        "the counter still counts every vblank"
    );
    r.w32(regs::DE_IIR, !0);

    // Masked: the counter runs, nothing is latched, no timer is wanted.
    r.w32(regs::DE_IMR, !0);
    assert_eq!(r.vgpu().vblank_deadline(190_000_000), None);
    r.at_ms(250);
    assert_eq!(r.tick(), Delivery::default());
    assert_eq!((r.r32(PIPEA_FRMCOUNT), r.r32(regs::DE_IIR)), (15, 0));

    // Plane off: the counter stops where it is.
    r.w32(regs::DE_IMR, !irq::DE_PIPEA_VBLANK);
    r.at_ms(255);
    r.w32(regs::DSPACNTR, 0);
    r.at_ms(900);
    assert_eq!(r.tick(), Delivery::default());
    assert_eq!(r.r32(PIPEA_FRMCOUNT), 15, "stopped with the plane");
    assert_eq!(r.vgpu().vblank_deadline(900_000_000), None);
    assert_eq!(
        r.vgpu().counters().vblanks,
        8,
        "ticks that found new vblanks"
    );
}

#[test]
fn vblank_and_gt_interrupts_share_one_intx_line() {
    let mut r = Rig::new();
    r.vgpu().set_refresh_period(0, 10_000_000);
    r.w32(regs::DE_IER, irq::DE_PIPEA_VBLANK);
    r.w32(regs::DE_IMR, 0);
    r.w32(regs::DSPACNTR, PLANE_ON);
    r.at_ms(10);
    let d = r.tick();
    assert_eq!(d.intx, Some(true));
    // The GT block going quiet does not lower the line the display
    // block holds up.
    assert_eq!(
        r.vgpu()
            .signal(Delivery {
                msi: false,
                intx: Some(false)
            })
            .intx,
        None
    );
    // A byte write to DEIIR's second byte clears nothing in the first.
    r.w(u64::from(regs::DE_IIR) + 1, &[0xFF]).unwrap();
    assert_eq!(
        r.r32(regs::DE_IIR),
        irq::DE_PIPEA_VBLANK,
        "a partial write clears only its own bytes"
    );
    let out = r
        .w(u64::from(regs::DE_IIR), &[irq::DE_PIPEA_VBLANK as u8])
        .unwrap();
    assert_eq!(
        out.delivery.intx,
        Some(false),
        "acknowledging the vblank drops the line"
    );
    assert_eq!(r.r32(regs::DE_IIR), 0);
    // A reset stops the pipe and clears the block, keeps the count.
    call!(&mut r, |v, env| v.reset(&mut env));
    assert_eq!(r.r32(regs::DE_IER), 0);
    assert_eq!(r.r32(gvt_core::vblank::PIPEA_FRMCOUNT), 1);
    assert!(!r.vgpu().vblank().running());
}

fn query(r: &mut Rig, flags: u32, ty: u32) -> Result<QueryAnswer, InvalidQuery> {
    let st = VgpuStorage {
        vregs: &mut r.vregs,
        ggtt_guest: &mut r.gg,
        ggtt_shadow: &mut r.gs,
        ppgtt_snap: &mut r.snap,
    };
    let caps = GfxCaps {
        region: true,
        dmabuf: true,
    };
    r.v.as_mut()
        .unwrap()
        .query_gfx_plane(&st, flags, ty, caps, 10)
}

#[test]
fn cursor_plane_is_validated_and_tracked_apart_from_the_primary() {
    use gvt_core::display::vfio::{
        DRM_PLANE_TYPE_CURSOR, NO_HOTSPOT, VFIO_GFX_PLANE_TYPE_DMABUF, VFIO_GFX_PLANE_TYPE_REGION,
    };
    use gvt_core::display::{drm_format, CURSOR_ID_BIT};
    const DMABUF: u32 = VFIO_GFX_PLANE_TYPE_DMABUF;
    let mut r = Rig::new();
    let ap = part().aperture.base as u32;
    r.w32(PVINFO_BASE + vgtif::DISPLAY_READY, 1);
    // Disabled: no plane, with the reason.
    let a = query(&mut r, DMABUF, DRM_PLANE_TYPE_CURSOR).unwrap();
    assert_eq!(a.info, display::GfxPlaneInfo::NONE);
    assert_eq!(a.no_plane, Some(NoPlane::CursorDisabled));
    // 64x64 ARGB at the start of the aperture slice, at (-5, 300).
    r.w32(regs::CURABASE, ap);
    r.w32(regs::CURAPOS, (300 << 16) | 0x8000 | 5);
    r.w32(regs::CURACNTR, 0x27);
    let a = query(&mut r, DMABUF, DRM_PLANE_TYPE_CURSOR).unwrap();
    let i = a.info;
    assert_eq!(
        (i.drm_format, i.width, i.height, i.stride, i.size),
        (drm_format::ARGB8888, 64, 64, 256, 16384)
    );
    assert_eq!((i.x_pos as i32, i.y_pos), (-5, 300));
    assert_eq!(
        (i.x_hot, i.y_hot),
        (NO_HOTSPOT, NO_HOTSPOT),
        "no hotspot until the guest says"
    );
    let id = i.region_index_or_dmabuf_id;
    assert_ne!(
        id & CURSOR_ID_BIT,
        0,
        "cursor ids never look like primary ids"
    );
    assert!(!a.observed.changed, "the primary's identity is untouched");
    let p = r
        .vgpu()
        .dmabuf_plane(id)
        .expect("the id names the cursor image");
    assert_eq!((p.surface(), p.pages()), (u64::from(ap), 4));
    assert_eq!(
        r.vgpu().dmabuf_plane(id & !CURSOR_ID_BIT),
        None,
        "not a primary id"
    );
    // Moving it and setting the hotspot keep the id.
    r.w32(regs::CURAPOS, (7 << 16) | 9);
    r.w32(PVINFO_BASE + vgtif::CURSOR_X_HOT, 3);
    r.w32(PVINFO_BASE + vgtif::CURSOR_Y_HOT, 4);
    let i = query(&mut r, DMABUF, DRM_PLANE_TYPE_CURSOR).unwrap().info;
    assert_eq!(
        (
            i.x_pos,
            i.y_pos,
            i.x_hot,
            i.y_hot,
            i.region_index_or_dmabuf_id
        ),
        (9, 7, 3, 4, id)
    );
    // A bigger mode is another image: another id.
    r.w32(regs::CURACNTR, 0x23);
    let i = query(&mut r, DMABUF, DRM_PLANE_TYPE_CURSOR).unwrap().info;
    assert_eq!((i.width, i.size), (256, 256 * 1024));
    assert_ne!(i.region_index_or_dmabuf_id, id);
    // Invalid: outside the vGPU's memory (last page of the slice, 64 KiB
    // image), misaligned, unknown mode.  No plane, no dma-buf.
    r.w32(regs::CURACNTR, 0x27);
    r.w32(regs::CURABASE, ap + part().aperture.size as u32 - 4096);
    let a = query(&mut r, DMABUF, DRM_PLANE_TYPE_CURSOR).unwrap();
    assert!(
        matches!(a.no_plane, Some(NoPlane::SurfaceOutsideGm { .. })),
        "{a:?}"
    );
    r.w32(regs::CURABASE, 0);
    assert!(
        matches!(
            query(&mut r, DMABUF, DRM_PLANE_TYPE_CURSOR)
                .unwrap()
                .no_plane,
            Some(NoPlane::SurfaceOutsideGm { .. })
        ),
        "another vGPU's memory"
    );
    r.w32(regs::CURABASE, ap + 64);
    assert_eq!(
        query(&mut r, DMABUF, DRM_PLANE_TYPE_CURSOR)
            .unwrap()
            .no_plane,
        Some(NoPlane::SurfaceMisaligned(ap + 64))
    );
    r.w32(regs::CURABASE, ap);
    r.w32(regs::CURACNTR, 0x07);
    assert_eq!(
        query(&mut r, DMABUF, DRM_PLANE_TYPE_CURSOR)
            .unwrap()
            .no_plane,
        Some(NoPlane::CursorMode(7))
    );
    // Region planes are primary only: a region cursor query is no plane.
    r.w32(regs::CURACNTR, 0x27);
    assert_eq!(
        query(&mut r, VFIO_GFX_PLANE_TYPE_REGION, DRM_PLANE_TYPE_CURSOR)
            .unwrap()
            .info,
        display::GfxPlaneInfo::NONE
    );
    assert_eq!(
        query(&mut r, DMABUF, DRM_PLANE_TYPE_CURSOR)
            .unwrap()
            .info
            .region_index_or_dmabuf_id,
        id,
        "remembered"
    );
    // Display not ready: no cursor either.
    r.w32(PVINFO_BASE + vgtif::DISPLAY_READY, 0);
    assert_eq!(
        query(&mut r, DMABUF, DRM_PLANE_TYPE_CURSOR)
            .unwrap()
            .no_plane,
        Some(NoPlane::DisplayNotReady)
    );
}

proptest::proptest! {
    /// Whatever the cursor registers hold: no panic, and a reported
    /// cursor lies inside the vGPU's own memory.
    #[test]
    fn any_cursor_registers_stay_inside_the_vgpu(ctl in proptest::prelude::any::<u32>(), base in proptest::prelude::any::<u32>(), pos in proptest::prelude::any::<u32>()) {
        let mut vregs = vec![0u32; VREG_DWORDS];
        vregs[display::DISPLAY_READY_VREG] = 1;
        vregs[regs::fixed_index(regs::CURACNTR)] = ctl;
        vregs[regs::fixed_index(regs::CURABASE)] = base;
        vregs[regs::fixed_index(regs::CURAPOS)] = pos;
        let gm = VgpuGm { aperture: part().aperture, high: part().high };
        if let Ok((p, (x, y))) = display::decode_cursor(&vregs, &gm) {
            proptest::prop_assert!(gm.aperture.contains(p.surface(), p.mapped_size()) || gm.high.contains(p.surface(), p.mapped_size()));
            proptest::prop_assert!(x.abs() <= 0x7FFF && y.abs() <= 0x7FFF);
        }
    }
}

#[test]
fn config_span_reads_whole_space_and_rejects_overrun() {
    let mut r = Rig::new();
    let v = r.vgpu();
    let mut all = [0u8; 256];
    v.cfg_read_span(0, &mut all).unwrap();
    assert_eq!(&all[..], &v.cfg().as_bytes()[..]);
    let mut odd = [0u8; 3];
    v.cfg_read_span(1, &mut odd).unwrap();
    assert_eq!(odd, all[1..4]);
    assert!(v.cfg_read_span(255, &mut [0u8; 2]).is_err());
    assert!(v.cfg_read_span(u32::MAX, &mut [0u8; 2]).is_err());
    assert_eq!(v.counters().cfg_rejected, 2);
    // Every span that fits, the one-register fast path's included, reads
    // exactly the bytes of the space.
    let reads = v.counters().cfg_reads;
    let mut n = 0;
    for off in 0..256u32 {
        for len in 1..=8usize {
            let mut b = [0xA5u8; 8];
            if off as usize + len > 256 {
                assert!(v.cfg_read_span(off, &mut b[..len]).is_err());
                continue;
            }
            v.cfg_read_span(off, &mut b[..len]).unwrap();
            n += 1;
            assert_eq!(
                b[..len],
                all[off as usize..off as usize + len],
                "{off:#x}+{len}"
            );
        }
    }
    assert_eq!(v.counters().cfg_reads, reads + n);
}

#[test]
fn pvinfo_ggtt_window_and_bad_accesses() {
    let mut r = Rig::new();
    let mut m = [0u8; 8];
    r.r(PVINFO_BASE as u64, &mut m).unwrap();
    assert_eq!(u64::from_le_bytes(m), VGT_MAGIC);
    let idx = (1u64 << 20) / PAGE_SIZE + 1;
    let off = mmio::GGTT_VIEW_BASE + idx * 8;
    let w = r.w(off, &((0x101u64 << 12) | 1).to_le_bytes()).unwrap();
    assert_eq!(w.pte(), Some(PteWrite::Mapped));
    let mut b = [0u8; 8];
    r.r(off, &mut b).unwrap();
    assert_eq!(u64::from_le_bytes(b), (0x101 << 12) | 1);
    assert_eq!(r.phys[idx as usize].page(), HostPage(1));
    assert!(r.r(3, &mut [0u8; 4]).is_err());
    assert!(r.w(off + 2, &[0u8; 4]).is_err());
    assert!(r.w(off, &[0u8; 2]).is_err());
    assert_eq!(r.vgpu().mmio().stats().pte, 2);
}

#[test]
fn tail_on_a_disabled_ring_starts_nothing() {
    let mut r = Rig::new();
    let w = r
        .w(
            u64::from(EngineId::Rcs.reg(ring::TAIL)),
            &0x40u32.to_le_bytes(),
        )
        .unwrap();
    assert_eq!(w.submit(), Some(SubmitOutcome::Empty));
    assert_eq!(w.delivery, Delivery::default());
    // Enabled but START outside the vGPU's memory: refused, error IRQ.
    r.w(regs::GT_IMR as u64, &0u32.to_le_bytes()).unwrap();
    r.w(regs::GT_IER as u64, &(!0u32).to_le_bytes()).unwrap();
    r.w(
        u64::from(EngineId::Rcs.reg(ring::START)),
        &0x40_0000u32.to_le_bytes(),
    )
    .unwrap();
    r.w(u64::from(EngineId::Rcs.reg(ring::CTL)), &1u32.to_le_bytes())
        .unwrap();
    let w = r
        .w(
            u64::from(EngineId::Rcs.reg(ring::TAIL)),
            &0x10u32.to_le_bytes(),
        )
        .unwrap();
    assert!(
        matches!(w.submit(), Some(SubmitOutcome::Rejected(_))),
        "{w:?}"
    );
    assert!(w.delivery.msi);
    let mut b = [0u8; 4];
    r.r(regs::GT_IIR as u64, &mut b).unwrap();
    assert_eq!(u32::from_le_bytes(b), irq::RCS_ERROR_INTERRUPT);
}

#[test]
fn fences_are_audited_before_the_physical_write() {
    let mut r = Rig::new();
    let inside = (1u64 << 20) | 1 | (((1u64 << 20) + 0x1000) << 32);
    let w = r
        .w(regs::fence_offset(2) as u64, &inside.to_le_bytes())
        .unwrap();
    assert_eq!(
        w.routed[0],
        Some(Routed::Fence {
            index: 2,
            accepted: true
        })
    );
    let phys_fence = regs::fence_offset(4 + 2);
    let got = r.gpu.with_backend(&mut r.phys, |b| {
        (b.read_reg(phys_fence), b.read_reg(phys_fence + 4))
    });
    assert_eq!(got, (inside as u32, (inside >> 32) as u32));
    let outside = 1 | (0x40_0000u64 << 32); // [0, 4 MiB): not this vGPU's
    let w = r
        .w(regs::fence_offset(2) as u64, &outside.to_le_bytes())
        .unwrap();
    assert_eq!(
        w.routed[0],
        Some(Routed::Fence {
            index: 2,
            accepted: false
        })
    );
    let got = r.gpu.with_backend(&mut r.phys, |b| b.read_reg(phys_fence));
    assert_eq!(got, 0, "the physical fence is disabled");
}

#[test]
fn signal_follows_msi_enable_and_intx_disable() {
    let mut r = Rig::new();
    let v = r.vgpu();
    let up = Delivery {
        msi: true,
        intx: Some(true),
    };
    assert_eq!(
        v.signal(up),
        Signal {
            msi: false,
            intx: Some(true)
        }
    );
    assert_ne!(
        v.cfg().as_bytes()[off::STATUS] & 0x8,
        0,
        "INTx status shown"
    );
    v.cfg_write(off::COMMAND as u32, &(1u16 << 10).to_le_bytes())
        .unwrap();
    assert_eq!(v.signal(up), Signal::default());
    v.cfg_write(off::MSI_CTRL as u32, &1u16.to_le_bytes())
        .unwrap();
    assert_eq!(
        v.signal(up),
        Signal {
            msi: true,
            intx: None
        }
    );
}

#[test]
fn display_plane_query_fault_flip_and_reset() {
    use gvt_core::display::{vfio as gfx, NoPlane};
    use gvt_core::pvinfo::vgtif;
    use gvt_core::regs::{DSPACNTR, DSPASTRIDE, DSPASURF, PIPEASRC};
    let mut r = Rig::new();
    // Aperture pages 0..4 of the vGPU -> guest frames 0x101.. (host pages 1..).
    for i in 0..4u64 {
        let off = mmio::GGTT_VIEW_BASE + ((1u64 << 20) / PAGE_SIZE + i) * 8;
        r.w(off, &(((0x101 + i) << 12) | 1).to_le_bytes()).unwrap();
    }
    let w32 = |r: &mut Rig, off: u32, v: u32| {
        r.w(u64::from(off), &v.to_le_bytes()).unwrap();
    };
    w32(&mut r, PIPEASRC, (63 << 16) | 31); // 64x32
    w32(&mut r, DSPASTRIDE, 256);
    w32(&mut r, DSPASURF, 1 << 20);
    w32(&mut r, DSPACNTR, (1 << 31) | (6 << 26));
    let caps = GfxCaps {
        region: true,
        dmabuf: true,
    };
    let q = |r: &mut Rig, flags: u32| {
        let st = VgpuStorage {
            vregs: &mut r.vregs,
            ggtt_guest: &mut r.gg,
            ggtt_shadow: &mut r.gs,
            ppgtt_snap: &mut r.snap,
        };
        r.v.as_mut()
            .unwrap()
            .query_gfx_plane(&st, flags, gfx::DRM_PLANE_TYPE_PRIMARY, caps, 10)
    };
    let fault = |r: &mut Rig, page: u64| {
        let mut st = VgpuStorage {
            vregs: &mut r.vregs,
            ggtt_guest: &mut r.gg,
            ggtt_shadow: &mut r.gs,
            ppgtt_snap: &mut r.snap,
        };
        r.v.as_mut().unwrap().display_fault(&mut st, page)
    };
    let q_typed = |r: &mut Rig, flags: u32, ty: u32| {
        let st = VgpuStorage {
            vregs: &mut r.vregs,
            ggtt_guest: &mut r.gg,
            ggtt_shadow: &mut r.gs,
            ppgtt_snap: &mut r.snap,
        };
        r.v.as_mut()
            .unwrap()
            .query_gfx_plane(&st, flags, ty, caps, 10)
    };
    // Not ready: no plane, the region shows scratch.
    let a = q(&mut r, gfx::VFIO_GFX_PLANE_TYPE_REGION).unwrap();
    assert_eq!(a.no_plane, Some(NoPlane::DisplayNotReady));
    assert_eq!((a.info.width, a.info.size, a.observed.id), (0, 0, 0));
    assert_eq!(fault(&mut r, 0), Some(HostPage(99)));
    w32(&mut r, PVINFO_BASE + vgtif::DISPLAY_READY, 1);
    // A probe answers without observing.
    let p = q(
        &mut r,
        gfx::VFIO_GFX_PLANE_TYPE_PROBE | gfx::VFIO_GFX_PLANE_TYPE_REGION,
    )
    .unwrap();
    assert_eq!(p.observed.id, 0);
    assert!(r.vgpu().shown_plane().is_none());
    let a = q(&mut r, gfx::VFIO_GFX_PLANE_TYPE_REGION).unwrap();
    assert_eq!(
        (a.info.width, a.info.height, a.info.stride, a.info.size),
        (64, 32, 256, 8192)
    );
    assert_eq!(a.info.region_index_or_dmabuf_id, 10);
    assert!(a.observed.changed && a.observed.id != 0);
    let first = a.observed.id;
    assert_eq!(
        (fault(&mut r, 0), fault(&mut r, 1), fault(&mut r, 2)),
        (Some(HostPage(1)), Some(HostPage(2)), Some(HostPage(99)))
    );
    let size = r.vgpu().display_region_size();
    assert_eq!(size, 1 << 20, "the largest slice (1 MiB)");
    assert_eq!(fault(&mut r, size / PAGE_SIZE), None, "past the region");
    // QEMU's region path leaves drm_plane_type 0: the primary plane.
    let z = q_typed(
        &mut r,
        gfx::VFIO_GFX_PLANE_TYPE_REGION,
        gfx::DRM_PLANE_TYPE_OVERLAY,
    )
    .unwrap();
    assert_eq!((z.info.width, z.observed.id), (64, first));
    // Cursor queries, and overlay queries of dma-buf planes: none.
    let c = q_typed(
        &mut r,
        gfx::VFIO_GFX_PLANE_TYPE_REGION,
        gfx::DRM_PLANE_TYPE_CURSOR,
    )
    .unwrap();
    assert_eq!(c.info.width, 0);
    let o = q_typed(
        &mut r,
        gfx::VFIO_GFX_PLANE_TYPE_DMABUF,
        gfx::DRM_PLANE_TYPE_OVERLAY,
    )
    .unwrap();
    assert_eq!(o.info.width, 0);
    assert_eq!(
        r.vgpu().plane_ids().current(),
        first,
        "non-primary queries observe nothing"
    );
    // A flip shows only after the next query (the region maps the plane reported).
    w32(&mut r, DSPASURF, (1 << 20) + 2 * PAGE_SIZE as u32);
    assert_eq!(fault(&mut r, 0), Some(HostPage(1)));
    let b = q(&mut r, gfx::VFIO_GFX_PLANE_TYPE_DMABUF).unwrap();
    assert!(b.observed.changed && b.observed.id != first);
    assert_eq!(
        b.info.region_index_or_dmabuf_id, b.observed.id,
        "dma-buf planes carry the id"
    );
    assert_eq!(fault(&mut r, 0), Some(HostPage(3)));
    // The dma-buf path: the remembered plane's page list.
    let plane = r
        .vgpu()
        .dmabuf_plane(first)
        .expect("first plane remembered");
    let mut pages = [HostPage(0); 2];
    {
        let mut st = VgpuStorage {
            vregs: &mut r.vregs,
            ggtt_guest: &mut r.gg,
            ggtt_shadow: &mut r.gs,
            ppgtt_snap: &mut r.snap,
        };
        assert_eq!(
            r.v.as_mut()
                .unwrap()
                .framebuffer_pages(&mut st, &plane, &mut pages),
            Ok(2)
        );
    }
    assert_eq!(pages, [HostPage(1), HostPage(2)]);
    assert!(r.vgpu().dmabuf_plane(0).is_none() && r.vgpu().dmabuf_plane(999).is_none());
    // Flip back: the old id again.
    w32(&mut r, DSPASURF, 1 << 20);
    assert_eq!(
        q(&mut r, gfx::VFIO_GFX_PLANE_TYPE_REGION)
            .unwrap()
            .observed
            .id,
        first
    );
    // A surface in another vGPU's memory is no plane.
    w32(&mut r, DSPASURF, 3 << 20);
    let c = q(&mut r, gfx::VFIO_GFX_PLANE_TYPE_REGION).unwrap();
    assert!(matches!(c.no_plane, Some(NoPlane::SurfaceOutsideGm { .. })));
    assert_eq!(fault(&mut r, 0), Some(HostPage(99)));
    w32(&mut r, DSPASURF, 1 << 20);
    q(&mut r, gfx::VFIO_GFX_PLANE_TYPE_REGION).unwrap();
    assert!(r.vgpu().shown_plane().is_some());
    // Reset forgets every plane.
    {
        call!(&mut r, |v, env| v.reset(&mut env));
    }
    assert!(r.vgpu().shown_plane().is_none() && r.vgpu().dmabuf_plane(first).is_none());
    assert_eq!(fault(&mut r, 0), Some(HostPage(99)));
}
