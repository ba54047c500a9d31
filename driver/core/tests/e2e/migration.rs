//! Issue 14: a running vGPU saved into a migration stream and restored into
//! a fresh vGPU of the same type and placement on another host (a second
//! [`World`]: another gvt-sim, other host pages), with the guest's RAM
//! copied as the VMM copies it.  The guest driver carries on where it was:
//! its next blits and PPGTT stores verify, its interrupts arrive, its
//! display plane and counters are those of the source.  Streams of another
//! type or placement, newer, truncated, damaged or hostile are refused and
//! leave the target untouched.

use gvt_core::backend::Backend;
use gvt_core::migration::{self, StreamError, Tag};
use gvt_core::regs::{self, ring, DE_IER, DE_IMR, DSPACNTR, DSPASTRIDE, DSPASURF, PIPEASRC};
use gvt_core::vblank::{PIPEA_FLIPCOUNT, PIPEA_FRMCOUNT};
use gvt_core::vgpu_migrate::{MigrationError, Precopy};
use proptest::prelude::*;

use super::*;

const TYPE: &[u8] = b"gvt_rs-test";
const EDID: [u8; 128] = [0x5A; 128];

fn save(w: &mut World, k: usize) -> Result<Vec<u8>, MigrationError> {
    let mut buf = vec![0u8; w.vgpu(k).max_stream_len()];
    let n = w.with_vm(k, |v, env| v.save_state(env, TYPE, Some(&EDID), &mut buf))?;
    buf.truncate(n);
    Ok(buf)
}

/// The guest's RAM as the VMM moves it: VM `k`'s frames, page by page.
fn copy_ram(a: &World, b: &mut World, k: usize) {
    copy_ram_to(a, k, b, k);
}

/// VM `ka`'s RAM of world `a` into VM `kb`'s of world `b` (the same guest
/// frames; other host pages).
fn copy_ram_to(a: &World, ka: usize, b: &mut World, kb: usize) {
    for gfn in RAM_GFN..RAM_GFN + RAM_PAGES {
        let pa = a.vms[ka].ram.backing(gfn).expect("source RAM");
        let pb = b.vms[kb].ram.backing(gfn).expect("target RAM");
        let data = a.host.page(pa).to_vec();
        b.host.write(pb, 0, &data).expect("copy");
    }
}

/// VM `k`'s RAM as the guest reads it.
fn ram_of(w: &World, k: usize) -> Vec<u8> {
    (RAM_GFN..RAM_GFN + RAM_PAGES)
        .flat_map(|gfn| {
            w.host
                .page(w.vms[k].ram.backing(gfn).expect("RAM"))
                .to_vec()
        })
        .collect()
}

fn w32(w: &mut World, k: usize, off: u32, v: u32) {
    assert!(w.bus(k).bar0_write(u64::from(off), &v.to_le_bytes()));
}

fn r32(w: &mut World, k: usize, off: u32) -> u32 {
    let mut b = [0u8; 4];
    assert!(w.bus(k).bar0_read(u64::from(off), &mut b));
    u32::from_le_bytes(b)
}

/// Recompute the trailer's checksum after an edit (a hostile writer's
/// stream, not a damaged one).
fn reseal(s: &mut [u8]) {
    let n = s.len();
    let sum = migration::fnv1a64(&s[..n - 16]);
    s[n - 8..].copy_from_slice(&sum.to_le_bytes());
}

/// Offset of the guest GM view in the header (aperture base, size, high
/// base, size; u64 each).
const VIEW_AT: usize = 8 + 2 + 2 + 1 + migration::TYPE_NAME_MAX + 5;

/// `s` with its header's view and PVINFO's ballooning set to `gm`, resealed
/// (a hostile writer's consistent stream).
fn with_view(s: &[u8], gm: [u64; 4]) -> Vec<u8> {
    use gvt_core::pvinfo::vgtif::{
        MAPPABLE_BASE, MAPPABLE_SIZE, NONMAPPABLE_BASE, NONMAPPABLE_SIZE,
    };
    let mut s = s.to_vec();
    for (i, g) in gm.iter().enumerate() {
        s[VIEW_AT + 8 * i..VIEW_AT + 8 * i + 8].copy_from_slice(&g.to_le_bytes());
    }
    let pv = section_at(&s, Tag::PvInfo);
    for (f, g) in [
        MAPPABLE_BASE,
        MAPPABLE_SIZE,
        NONMAPPABLE_BASE,
        NONMAPPABLE_SIZE,
    ]
    .into_iter()
    .zip(gm)
    {
        let at = pv + f as usize;
        s[at..at + 4].copy_from_slice(&(g as u32).to_le_bytes());
    }
    reseal(&mut s);
    s
}

/// Offset of section `tag`'s payload in a stream.
fn section_at(s: &[u8], tag: Tag) -> usize {
    let mut at = migration::HEADER_LEN;
    loop {
        let t = u16::from_le_bytes([s[at], s[at + 1]]);
        let len = u32::from_le_bytes(s[at + 4..at + 8].try_into().unwrap()) as usize;
        if t == tag as u16 {
            return at + 8;
        }
        at += 8 + len;
    }
}

/// VM 0 of a world after a workload: blits (interrupts left pending), a
/// PPGTT store, a fence, a displayed plane with the vblank interrupt on.
fn busy_source() -> (World, GuestDriver) {
    let mut w = World::new(test_config());
    let mut d = boot(&mut w, 0);
    setup_ppgtt(&mut w, &d);
    let job = blit_job(&d, 0x00AA_0000, 0xD0_0E00);
    let mut b = w.bus(0);
    d.run(&mut b, BCS, &job).unwrap();
    assert!(accepted(&b));
    d.run(
        &mut b,
        RCS,
        &[&sdi(Space::Ppgtt, 0x40, 0xABCD)[..], &[MI_USER_INTERRUPT]].concat(),
    )
    .unwrap();
    assert!(accepted(&b));
    run_idle(&mut w);
    check_blit(&mut w, 0, &d, 0x00AA_0000, 0xD0_0E00);
    let ap = d.aperture;
    assert!(w.bus(0).bar0_write(
        u64::from(regs::FENCE),
        &(((ap.end() - PAGE_SIZE) << 32) | ap.base | 1).to_le_bytes()
    ));
    use gvt_core::pvinfo::{vgtif, PVINFO_BASE};
    w32(&mut w, 0, PVINFO_BASE + vgtif::DISPLAY_READY, 1);
    w32(&mut w, 0, PIPEASRC, (63 << 16) | 31);
    w32(&mut w, 0, DSPASTRIDE, PITCH);
    w32(&mut w, 0, DSPASURF, ap.base as u32 + 0x40000);
    w32(&mut w, 0, DSPACNTR, (1 << 31) | (6 << 26));
    w32(&mut w, 0, DE_IMR, !irq::DE_PIPEA_VBLANK);
    w32(&mut w, 0, DE_IER, irq::DE_PIPEA_VBLANK);
    (w, d)
}

/// Registers whose guest-visible value must be the same after a restore.
fn guest_view(w: &mut World, k: usize) -> Vec<u32> {
    let mut offs = vec![
        regs::GT_IIR,
        regs::GT_IMR,
        regs::GT_IER,
        regs::FENCE,
        regs::FENCE + 4,
        PIPEASRC,
        DSPASTRIDE,
        DSPASURF,
        DSPACNTR,
        DE_IMR,
        DE_IER,
        PIPEA_FLIPCOUNT,
    ];
    for e in [RCS, BCS] {
        for r in [ring::START, ring::CTL, ring::HEAD, ring::TAIL] {
            offs.push(e.reg(r));
        }
    }
    offs.push(RCS.reg(ring::PP_DIR_BASE));
    let mut v: Vec<u32> = offs.iter().map(|o| r32(w, k, *o)).collect();
    for i in 0..64u64 {
        let mut b = [0u8; 8];
        assert!(w
            .bus(k)
            .bar0_read(gvt_core::mmio::GGTT_VIEW_BASE + i * 8, &mut b));
        v.push(u64::from_le_bytes(b) as u32);
    }
    v
}

#[test]
fn a_running_vgpu_moves_to_another_host_and_carries_on() {
    let (mut a, mut d) = busy_source();
    let before = guest_view(&mut a, 0);
    let plane = a.with_vm(0, |v, env| v.display_plane(&env.st)).unwrap();
    let frames = r32(&mut a, 0, PIPEA_FRMCOUNT);
    let stream = save(&mut a, 0).expect("save");
    eprintln!("migration stream: {} bytes", stream.len());
    // The target host: same type and placement, never used.
    let mut b = World::new(test_config());
    copy_ram(&a, &mut b, 0);
    let rep = b
        .with_vm(0, |v, env| v.restore_state(env, TYPE, &stream))
        .expect("restore");
    assert_eq!(rep.edid, Some(&EDID[..]));
    assert_eq!(rep.ptes_rejected, 0);
    assert!(rep.ptes as u64 >= 2 * MIB / PAGE_SIZE);
    // The source lets go (the VMM closes it): its pins go.
    a.destroy(0);
    assert_eq!(a.vms[0].ram.outstanding_pins(), 0);
    // Everything the guest can read is as it was.
    assert_eq!(guest_view(&mut b, 0), before);
    assert_eq!(
        b.with_vm(0, |v, env| v.display_plane(&env.st)).unwrap(),
        plane
    );
    assert!(r32(&mut b, 0, PIPEA_FRMCOUNT) >= frames);
    // ... and it carries on: new blits, a PPGTT store through the shadow
    // the target rebuilt, their interrupts.
    carry_on(&mut b, 0, &mut d);
    // Weight moved too.
    let slot = b.vgpu(0).slot();
    assert_eq!(b.gpu.scheduler().weight(slot), Some(1));
}

#[test]
fn saving_a_vgpu_with_work_on_its_engines_is_refused() {
    let mut w = World::new(test_config());
    let mut d = boot(&mut w, 0);
    let job = blit_job(&d, 1, 2);
    let mut b = w.bus(0);
    d.run(&mut b, BCS, &job).unwrap();
    assert!(accepted(&b));
    assert_eq!(save(&mut w, 0).err(), Some(MigrationError::Busy));
    run_idle(&mut w);
    assert!(save(&mut w, 0).is_ok());
}

/// Everything the target has that a refused restore could change.
fn target_state(w: &mut World, k: usize) -> (Vec<u32>, Vec<u64>, u64) {
    let vm = &w.vms[k];
    (vm.vregs.clone(), vm.gg.clone(), vm.ram.outstanding_pins())
}

#[test]
fn other_type_placement_version_and_damage_are_refused_untouched() {
    let (mut a, _d) = busy_source();
    let stream = save(&mut a, 0).expect("save");
    let mut b = World::new(test_config());
    copy_ram(&a, &mut b, 0);
    let untouched = target_state(&mut b, 0);
    let restore = |b: &mut World, k: usize, ty: &[u8], s: &[u8]| {
        b.with_vm(k, |v, env| v.restore_state(env, ty, s).map(|_| ()))
    };
    assert_eq!(
        restore(&mut b, 0, b"gvt_rs-other", &stream),
        Err(MigrationError::OtherType)
    );
    // Views this vGPU cannot stand behind (PVINFO edited to agree, so the
    // view itself is what is refused): other sizes, misaligned, slices
    // that overlap, an aperture beyond BAR2, a high slice beyond the GGTT
    // window, one that wraps.
    let p = part(0);
    let (ab, asz, hb, hsz) = (p.aperture.base, p.aperture.size, p.high.base, p.high.size);
    for view in [
        [ab, 2 * asz, hb, hsz],
        [ab, asz, hb, hsz / 2],
        [ab + 0x800, asz, hb, hsz],
        [ab, asz, ab, hsz],
        [APERTURE, asz, hb, hsz],
        [ab, asz, (1 << 32) - PAGE_SIZE, hsz],
        [ab, asz, !(PAGE_SIZE - 1), hsz],
    ] {
        assert_eq!(
            restore(&mut b, 0, TYPE, &with_view(&stream, view)),
            Err(MigrationError::OtherPlacement),
            "view {view:x?}"
        );
    }
    // A sane view whose PVINFO says otherwise.
    let mut h = with_view(&stream, [2 * MIB, asz, hb, hsz]);
    let at = section_at(&h, Tag::PvInfo) + gvt_core::pvinfo::vgtif::MAPPABLE_BASE as usize;
    h[at..at + 4].copy_from_slice(&0u32.to_le_bytes());
    reseal(&mut h);
    assert_eq!(
        restore(&mut b, 0, TYPE, &h),
        Err(MigrationError::PvInfoMismatch)
    );
    let mut newer = stream.clone();
    newer[8] = migration::VERSION as u8 + 1;
    assert_eq!(
        restore(&mut b, 0, TYPE, &newer),
        Err(MigrationError::Stream(StreamError::NewerVersion(
            migration::VERSION + 1
        )))
    );
    assert_eq!(
        restore(&mut b, 0, TYPE, &stream[..stream.len() - 1]),
        Err(MigrationError::Stream(StreamError::Truncated))
    );
    let mut damaged = stream.clone();
    damaged[stream.len() / 2] ^= 1;
    assert_eq!(
        restore(&mut b, 0, TYPE, &damaged),
        Err(MigrationError::Stream(StreamError::Checksum))
    );
    // Hostile (resealed): a GGTT entry outside the view, a GDRST in the
    // register replay, a PVINFO that balloons another view.
    let mut h = stream.clone();
    let at = section_at(&h, Tag::Ggtt);
    h[at..at + 4].copy_from_slice(&0x7000u32.to_le_bytes());
    reseal(&mut h);
    assert_eq!(
        restore(&mut b, 0, TYPE, &h),
        Err(MigrationError::BadContents(Tag::Ggtt as u16))
    );
    let mut h = stream.clone();
    let at = section_at(&h, Tag::Mmio);
    h[at..at + 4].copy_from_slice(&regs::GDRST.to_le_bytes());
    reseal(&mut h);
    assert_eq!(
        restore(&mut b, 0, TYPE, &h),
        Err(MigrationError::BadContents(Tag::Mmio as u16))
    );
    let mut h = stream.clone();
    let at = section_at(&h, Tag::PvInfo) + gvt_core::pvinfo::vgtif::MAPPABLE_BASE as usize;
    h[at] ^= 0x10;
    reseal(&mut h);
    assert_eq!(
        restore(&mut b, 0, TYPE, &h),
        Err(MigrationError::PvInfoMismatch)
    );
    assert!(target_state(&mut b, 0) == untouched, "target untouched");
    // And the right stream still goes in afterwards.
    assert_eq!(restore(&mut b, 0, TYPE, &stream), Ok(()));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    /// Any edit of a valid stream, resealed (so the contents, not the
    /// checksum, are what is tested): never a panic; a refused stream
    /// leaves the target as it was, a taken one leaves a vGPU whose reset
    /// releases every pin.
    #[test]
    fn edited_streams_never_panic_and_refusals_touch_nothing(
        edits in proptest::collection::vec((any::<u32>(), any::<u8>()), 1..6)
    ) {
        thread_local! {
            static SRC: Vec<u8> = {
                let (mut a, _d) = busy_source();
                save(&mut a, 0).expect("save")
            };
        }
        let mut s = SRC.with(|s| s.clone());
        let n = s.len();
        for (at, x) in edits {
            let at = at as usize % (n - 16);
            s[at] ^= x | 1;
        }
        reseal(&mut s);
        let mut b = World::new(test_config());
        let untouched = target_state(&mut b, 0);
        let r = b.with_vm(0, |v, env| v.restore_state(env, TYPE, &s).map(|_| ()));
        match r {
            Err(MigrationError::Replay(_)) | Ok(()) => {}
            Err(_) => prop_assert!(target_state(&mut b, 0) == untouched),
        }
        b.with_vm(0, |v, env| v.reset(env));
        prop_assert_eq!(b.vms[0].ram.outstanding_pins(), 0);
    }
}

/// Physical GGTT entries of `gm`'s pages in world `w`.
fn phys_entries(w: &World, r: GmRange) -> Vec<Pte> {
    let first = (r.base / PAGE_SIZE) as usize;
    w.phys[first..first + (r.size / PAGE_SIZE) as usize].to_vec()
}

/// The physical fence registers of a vGPU whose fences start at `base`.
fn phys_fence(w: &mut World, index: u32) -> u64 {
    let off = regs::fence_offset(index);
    let World { gpu, phys, .. } = w;
    gpu.with_backend(phys, |b| {
        u64::from(b.read_reg(off)) | (u64::from(b.read_reg(off + 4)) << 32)
    })
}

/// What a guest can observe of its vGPU and memory, for comparing two
/// targets: registers and GGTT view ([`guest_view`]), its RAM, the displayed
/// plane and the bytes of its framebuffer.
fn observed(w: &mut World, k: usize) -> (Vec<u32>, Vec<u8>, String, Vec<u8>) {
    let regs = guest_view(w, k);
    let ram = ram_of(w, k);
    let plane = w
        .with_vm(k, |v, env| v.display_plane(&env.st))
        .expect("plane");
    let mut pages = vec![HostPage(0); plane.pages() as usize];
    let n = w
        .with_vm(k, |v, env| {
            v.framebuffer_pages(&mut env.st, &plane, &mut pages)
        })
        .expect("framebuffer");
    let fb: Vec<u8> = pages[..n]
        .iter()
        .flat_map(|p| w.host.page(*p).to_vec())
        .collect();
    (regs, ram, format!("{plane:?}"), fb)
}

/// The same guest, after the move, on either target: the interrupts it left
/// pending, its old and new blits, a PPGTT store, a remapped aperture page
/// written by the CPU and by the engine, a fence, a flip.
fn carry_on(w: &mut World, k: usize, d: &mut GuestDriver) {
    let mut bus = w.bus(k);
    assert_eq!(d.iir(&mut bus).unwrap(), USERS, "pending interrupts moved");
    d.ack(&mut bus, USERS).unwrap();
    check_blit(w, k, d, 0x00AA_0000, 0xD0_0E00);
    let job = blit_job(d, 0x0000_BB00, 0xD0_0E01);
    let mut bus = w.bus(k);
    d.run(&mut bus, BCS, &job).unwrap();
    assert!(accepted(&bus), "blit accepted on the target");
    d.run(
        &mut bus,
        RCS,
        &[&sdi(Space::Ppgtt, 0x44, 0xBEEF)[..], &[MI_USER_INTERRUPT]].concat(),
    )
    .unwrap();
    assert!(accepted(&bus), "PPGTT store accepted on the target");
    w.vms[k].signals.clear();
    run_idle(w);
    assert!(w.vms[k].signals.iter().any(|s| s.msi), "MSI after the move");
    check_blit(w, k, d, 0x0000_BB00, 0xD0_0E01);
    let mut v = [0u8; 4];
    let mut bus = w.bus(k);
    assert!(bus.ram_read(((RAM_GFN + 700) << 12) + 0x44, &mut v));
    assert_eq!(u32::from_le_bytes(v), 0xBEEF);
    assert_eq!(d.iir(&mut bus).unwrap(), USERS);
    d.ack(&mut bus, USERS).unwrap();
    assert!(d.idle(&mut bus, RCS).unwrap() && d.idle(&mut bus, BCS).unwrap());
    // A PTE write: an aperture page moves to RAM frame 900; the CPU writes
    // it through BAR2, the engine stores next to it through the GGTT.
    let page = d.aperture.base + 0x60000;
    d.map(&mut bus, page, RAM_GFN + 900, 1, PteWidth::Qword)
        .unwrap();
    assert!(bus.aperture_write(page + 8, &0x1234_5678u32.to_le_bytes()));
    d.run(
        &mut bus,
        BCS,
        &[
            &sdi(Space::Ggtt, page + 16, 0x0DDC_0FFE)[..],
            &[MI_USER_INTERRUPT],
        ]
        .concat(),
    )
    .unwrap();
    assert!(accepted(&bus), "store accepted");
    run_idle(w);
    let mut bus = w.bus(k);
    for (at, want) in [(8u64, 0x1234_5678u32), (16, 0x0DDC_0FFE)] {
        assert!(bus.ram_read(((RAM_GFN + 900) << 12) + at, &mut v));
        assert_eq!(u32::from_le_bytes(v), want, "frame 900 +{at}");
    }
    // A fence over the high slice, a flip to the copied rectangle.
    let hi = d.high;
    assert!(bus.bar0_write(
        u64::from(regs::FENCE + 8),
        &(((hi.end() - PAGE_SIZE) << 32) | hi.base | 1).to_le_bytes()
    ));
    assert!(matches!(
        bus.last().routed[0],
        Some(gvt_core::vgpu::Routed::Fence { accepted: true, .. })
    ));
    w32(w, k, DSPASURF, d.aperture.base as u32 + 0x40000);
}

#[test]
fn a_vgpu_moves_to_another_placement_and_its_guest_sees_no_difference() {
    let (mut a, d) = busy_source();
    let before = guest_view(&mut a, 0);
    let plane = a.with_vm(0, |v, env| v.display_plane(&env.st)).unwrap();
    let stream = save(&mut a, 0).expect("save");
    // Target 1: the source's placement (VM 0 of a fresh host).
    let mut same = World::new(test_config());
    copy_ram_to(&a, 0, &mut same, 0);
    same.with_vm(0, |v, env| v.restore_state(env, TYPE, &stream))
        .expect("restore, same placement");
    assert!(same.vgpu(0).gm_view().is_identity());
    // Target 2: VM 1 of another host, other slices; its VM 0 runs a guest
    // of its own at the very addresses the moved guest keeps using.
    let mut other = World::new(test_config());
    let mut neighbour = boot(&mut other, 0);
    let job = blit_job(&neighbour, 0x0011_2233, 0xFEED);
    let mut bus = other.bus(0);
    neighbour.run(&mut bus, BCS, &job).unwrap();
    assert!(accepted(&bus));
    run_idle(&mut other);
    check_blit(&mut other, 0, &neighbour, 0x0011_2233, 0xFEED);
    let neighbour_ggtt = (
        phys_entries(&other, part(0).aperture),
        phys_entries(&other, part(0).high),
    );
    copy_ram_to(&a, 0, &mut other, 1);
    let rep = other
        .with_vm(1, |v, env| v.restore_state(env, TYPE, &stream))
        .expect("restore, other placement");
    assert_eq!(rep.ptes_rejected, 0);
    let view = *other.vgpu(1).gm_view();
    assert!(!view.is_identity());
    assert_eq!(view.view().aperture, part(0).aperture);
    assert_eq!(view.host().aperture, part(1).aperture);
    assert_eq!(other.vgpu(1).mmap_area(), part(0).aperture);
    // PVINFO shows the source's view and id: a guest probing now sees what
    // it saw on the source.
    let fresh = GuestDriver::probe(&mut other.bus(1)).expect("probe");
    assert_eq!(
        (fresh.aperture, fresh.high),
        (part(0).aperture, part(0).high)
    );
    assert_eq!(r32(&mut other, 1, gvt_core::pvinfo::PVINFO_BASE + 0x0C), 1);
    // Everything the guest can read is as it was, on both targets.
    assert_eq!(guest_view(&mut same, 0), before);
    assert_eq!(guest_view(&mut other, 1), before);
    assert_eq!(
        other.with_vm(1, |v, env| v.display_plane(&env.st)).unwrap(),
        plane
    );
    // The same work on both: what the guest observes is identical.
    let (mut d1, mut d2) = (d.clone(), d);
    carry_on(&mut same, 0, &mut d1);
    carry_on(&mut other, 1, &mut d2);
    assert_eq!(observed(&mut same, 0), observed(&mut other, 1));
    // The physical side is the placement's: VM 1's host slices map the
    // moved guest's pages, its fence covers its own high slice...
    let vm1_pages = |p: Pte| {
        p.page() == other.vms[1].scratch
            || (RAM_GFN..RAM_GFN + RAM_PAGES).any(|g| other.vms[1].ram.backing(g) == Some(p.page()))
    };
    for r in [part(1).aperture, part(1).high] {
        assert!(phys_entries(&other, r)
            .into_iter()
            .all(|p| p.present() && vm1_pages(p)));
    }
    let f = phys_fence(&mut other, part(1).fence_base + 1);
    let hi = part(1).high;
    assert_eq!(f, ((hi.end() - PAGE_SIZE) << 32) | hi.base | 1);
    // ... and the neighbour whose placement the moved guest's view names
    // lost nothing: its GGTT, its pixels, its RAM.
    assert_eq!(
        (
            phys_entries(&other, part(0).aperture),
            phys_entries(&other, part(0).high)
        ),
        neighbour_ggtt
    );
    check_blit(&mut other, 0, &neighbour, 0x0011_2233, 0xFEED);
    // The moved guest's GGTT window answers in its view only: its host
    // placement's entries read 0 and writes there are dropped.
    let host_entry = gvt_core::mmio::GGTT_VIEW_BASE + (part(1).aperture.base / PAGE_SIZE) * 8;
    let mut b8 = [0u8; 8];
    assert!(other.bus(1).bar0_read(host_entry, &mut b8));
    assert_eq!(u64::from_le_bytes(b8), 0);
    let mut bus = other.bus(1);
    assert!(bus.bar0_write(host_entry, &((RAM_GFN << 12) | 1).to_le_bytes()));
    assert_eq!(bus.last().pte(), Some(PteWrite::Dropped { log: true }));
    // A second move, from the translated vGPU back to a vGPU at the
    // source's placement: the stream carries the view, and there it is the
    // identity again.
    let again = save(&mut other, 1).expect("save from a translated vGPU");
    let mut back = World::new(test_config());
    copy_ram_to(&other, 1, &mut back, 0);
    back.with_vm(0, |v, env| v.restore_state(env, TYPE, &again))
        .expect("restore at the source's placement");
    assert!(back.vgpu(0).gm_view().is_identity());
    assert_eq!(observed(&mut back, 0), observed(&mut other, 1));
    // A reset keeps the view (a guest reboot reads the same PVINFO); a new
    // owner gets the placement back.
    other.with_vm(1, |v, env| v.reset(env));
    assert_eq!(other.vgpu(1).gm_view().view().aperture, part(0).aperture);
    other.with_vm(1, |v, env| v.reset_for_new_owner(env));
    assert!(other.vgpu(1).gm_view().is_identity());
    let fresh = GuestDriver::probe(&mut other.bus(1)).expect("probe");
    assert_eq!(fresh.aperture, part(1).aperture);
    assert_eq!(other.vms[1].ram.outstanding_pins(), 0);
}

/// The guest's GGTT entry for GM page `page` through the window.
fn pte(w: &mut World, k: usize, page: u64) -> u64 {
    let mut b = [0u8; 8];
    assert!(w
        .bus(k)
        .bar0_read(gvt_core::mmio::GGTT_VIEW_BASE + page * 8, &mut b));
    u64::from_le_bytes(b)
}

fn set_pte(w: &mut World, k: usize, page: u64, v: u64) {
    assert!(w
        .bus(k)
        .bar0_write(gvt_core::mmio::GGTT_VIEW_BASE + page * 8, &v.to_le_bytes()));
}

/// Issue 14, PRE_COPY: the initial part (header, config space, vregs,
/// PVINFO, the whole guest GGTT, EDID) is written while the guest runs; the
/// guest then writes GGTT entries (one mapped anew, one unmapped), a plain
/// register and its PVINFO; the final part, written stopped, carries only
/// the chunks it wrote (delta records), the sections that changed and the
/// volatile state.  A target that takes both parts ends exactly where a
/// target of a whole stream saved at the same moment does; a final part
/// whose GGTT delta is dropped (an old, stale GGTT) does not.
#[test]
fn precopy_moves_the_bulk_first_and_stop_copy_only_what_changed() {
    let (mut a, _d) = busy_source();
    let cap = a.vgpu(0).max_stream_len();
    let mut initial = vec![0u8; cap];
    let mut pre = Precopy::default();
    let n1 = a
        .with_vm(0, |v, env| {
            v.save_initial(env, TYPE, Some(&EDID), &mut initial, &mut pre)
        })
        .expect("initial part");
    initial.truncate(n1);
    assert_eq!(pre.initial, n1);
    assert_eq!(a.vgpu(0).precopy_dirty_bytes(), 0, "nothing dirty yet");
    // The guest runs on.
    let gm = a.vgpu(0).gm_view().view();
    let pages: Vec<u64> = (gm.aperture.base / PAGE_SIZE..gm.aperture.end() / PAGE_SIZE)
        .chain(gm.high.base / PAGE_SIZE..gm.high.end() / PAGE_SIZE)
        .collect();
    let mapped: Vec<u64> = pages
        .iter()
        .copied()
        .filter(|p| pte(&mut a, 0, *p) != 0)
        .collect();
    assert!(mapped.len() >= 3);
    // Remap the last mapped entry to the first one's frame, unmap the second.
    let free = *mapped.last().unwrap();
    let v = pte(&mut a, 0, mapped[0]);
    assert_ne!(pte(&mut a, 0, free), v);
    set_pte(&mut a, 0, free, v);
    set_pte(&mut a, 0, mapped[1], 0);
    use gvt_core::pvinfo::{vgtif, PVINFO_BASE};
    w32(&mut a, 0, PVINFO_BASE + vgtif::DISPLAY_READY, 0);
    w32(&mut a, 0, RCS.reg(ring::HWSTAM), 0x1234_5678);
    let dirty = a.vgpu(0).precopy_dirty_bytes();
    assert!(dirty > 0, "the written chunks are dirty");
    // A PRE_COPY round while it runs: what changed so far.
    let mut round = vec![0u8; cap];
    let nr = a
        .with_vm(0, |v, env| {
            v.save_round(env, Some(&EDID), &mut round, &mut pre)
        })
        .expect("round");
    round.truncate(nr);
    assert!(nr > 0 && pre.rounds == nr);
    assert_eq!(a.vgpu(0).precopy_dirty_bytes(), 0, "sent in the round");
    let nothing = a
        .with_vm(0, |v, env| {
            v.save_round(env, Some(&EDID), &mut vec![0u8; cap], &mut pre)
        })
        .expect("empty round");
    assert_eq!(nothing, 0, "nothing changed since the round");
    // The guest writes on: the entry it unmapped is mapped again (its chunk
    // goes twice: the later record counts), a register changes again.
    let was1 = initial_pte(&initial, mapped[1]);
    set_pte(&mut a, 0, mapped[1], was1);
    set_pte(&mut a, 0, mapped[2], 0);
    w32(&mut a, 0, RCS.reg(ring::HWSTAM), 0x1234_5679);
    let dirty = a.vgpu(0).precopy_dirty_bytes();
    // Stop: the final part.
    let mut fin = vec![0u8; cap];
    let n2 = a
        .with_vm(0, |v, env| {
            v.save_final(env, Some(&EDID), &mut fin, &mut pre)
        })
        .expect("final part");
    fin.truncate(n2);
    assert_eq!(a.vgpu(0).precopy_dirty_bytes(), 0, "sent");
    let whole = save(&mut a, 0).expect("whole stream, same moment");
    let two = [&initial[..], &round[..], &fin[..]].concat();
    let st = migration::parse(&two, 2).expect("one stream");
    // The final part: no Ggtt, Config or EDID again; Vregs and PvInfo
    // (changed), delta records for at most the two written chunks.
    let tags: Vec<u16> = {
        let mut at = 0;
        let mut t = Vec::new();
        while at < fin.len() {
            t.push(u16::from_le_bytes([fin[at], fin[at + 1]]));
            at += 8 + u32::from_le_bytes(fin[at + 4..at + 8].try_into().unwrap()) as usize;
        }
        t
    };
    for (tag, want) in [
        (Tag::Ggtt, false),
        (Tag::Config, false),
        (Tag::Edid, false),
        (Tag::Vregs, true),
        (Tag::PvInfo, false),
        (Tag::GgttDelta, true),
        (Tag::Mmio, true),
    ] {
        assert_eq!(
            tags.contains(&(tag as u16)),
            want,
            "{tag:?} in the final part: {tags:?}"
        );
    }
    let delta = st.section(Tag::GgttDelta).unwrap();
    let covered: u32 = migration::delta_records(delta).map(|r| r.pages).sum();
    assert!(covered as usize <= 2 * a.vgpu(0).ggtt_dirty_chunk_len());
    assert!(n2 < whole.len(), "final {n2} bytes, whole {}", whole.len());
    assert!(
        delta.len() <= dirty && dirty - delta.len() <= 12 * 2,
        "the estimate bounds the delta: {dirty} vs {}",
        delta.len()
    );
    eprintln!(
        "PRE_COPY: initial {n1} bytes, round {nr}, final {n2} bytes (whole stream {})",
        whole.len()
    );
    // Both targets end in the same state.
    let mut b1 = World::new(test_config());
    let mut b2 = World::new(test_config());
    copy_ram(&a, &mut b1, 0);
    copy_ram(&a, &mut b2, 0);
    b1.with_vm(0, |v, env| v.restore_state(env, TYPE, &two))
        .expect("restore the two parts");
    b2.with_vm(0, |v, env| v.restore_state(env, TYPE, &whole))
        .expect("restore the whole stream");
    assert_eq!(pte(&mut b1, 0, free), v);
    assert_eq!(pte(&mut b1, 0, mapped[1]), was1);
    assert_eq!(pte(&mut b1, 0, mapped[2]), 0);
    assert_eq!(r32(&mut b1, 0, RCS.reg(ring::HWSTAM)), 0x1234_5679);
    assert_eq!(guest_view(&mut b1, 0), guest_view(&mut b2, 0));
    assert_eq!(target_state(&mut b1, 0), target_state(&mut b2, 0));
    // Without the delta records the target would keep the stale entries.
    let mut stale = World::new(test_config());
    copy_ram(&a, &mut stale, 0);
    let cut = {
        // The final part's delta (the last one) dropped.
        let d = (0..two.len() - 8)
            .rev()
            .find(|at| {
                two[*at..*at + 2] == (Tag::GgttDelta as u16).to_le_bytes()
                    && u32::from_le_bytes(two[at + 4..at + 8].try_into().unwrap()) as usize
                        == delta.len()
                    && two[at + 8..at + 8 + delta.len()] == *delta
            })
            .unwrap();
        let mut s = [&two[..d], &two[d + 8 + delta.len()..]].concat();
        reseal(&mut s);
        s
    };
    stale
        .with_vm(0, |v, env| v.restore_state(env, TYPE, &cut))
        .expect("a stream without the delta");
    assert_ne!(target_state(&mut stale, 0), target_state(&mut b2, 0));
    assert_ne!(was1, 0);
    assert_eq!(pte(&mut stale, 0, mapped[1]), 0, "the round's stale entry");
}

/// The PTE of GM page `page` in the Ggtt section of an initial part.
fn initial_pte(initial: &[u8], page: u64) -> u64 {
    let at = section_at(initial, Tag::Ggtt);
    let len = u32::from_le_bytes(initial[at - 4..at].try_into().unwrap()) as usize;
    initial[at..at + len]
        .chunks_exact(12)
        .find(|e| u64::from(u32::from_le_bytes(e[..4].try_into().unwrap())) == page)
        .map(|e| u64::from_le_bytes(e[4..].try_into().unwrap()))
        .unwrap_or(0)
}
