//! Issue 14: a running vGPU saved into a migration stream and restored into
//! a fresh vGPU of the same type and placement on another host (a second
//! [`World`]: another gvt-sim, other host pages), with the guest's RAM
//! copied as the VMM copies it.  The guest driver carries on where it was:
//! its next blits and PPGTT stores verify, its interrupts arrive, its
//! display plane and counters are those of the source.  Streams of another
//! type or placement, newer, truncated, damaged or hostile are refused and
//! leave the target untouched.

use gvt_core::migration::{self, StreamError, Tag};
use gvt_core::regs::{self, ring, DE_IER, DE_IMR, DSPACNTR, DSPASTRIDE, DSPASURF, PIPEASRC};
use gvt_core::vblank::{PIPEA_FLIPCOUNT, PIPEA_FRMCOUNT};
use gvt_core::vgpu_migrate::MigrationError;
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
    for gfn in RAM_GFN..RAM_GFN + RAM_PAGES {
        let pa = a.vms[k].ram.backing(gfn).expect("source RAM");
        let pb = b.vms[k].ram.backing(gfn).expect("target RAM");
        let data = a.host.page(pa).to_vec();
        b.host.write(pb, 0, &data).expect("copy");
    }
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
    let mut bus = b.bus(0);
    assert_eq!(d.iir(&mut bus).unwrap(), USERS, "pending interrupts moved");
    d.ack(&mut bus, USERS).unwrap();
    check_blit(&mut b, 0, &d, 0x00AA_0000, 0xD0_0E00);
    // ... and it carries on: new blits, a PPGTT store through the shadow
    // the target rebuilt, their interrupts.
    let job = blit_job(&d, 0x0000_BB00, 0xD0_0E01);
    let mut bus = b.bus(0);
    d.run(&mut bus, BCS, &job).unwrap();
    assert!(accepted(&bus), "blit accepted on the target");
    d.run(
        &mut bus,
        RCS,
        &[&sdi(Space::Ppgtt, 0x44, 0xBEEF)[..], &[MI_USER_INTERRUPT]].concat(),
    )
    .unwrap();
    assert!(accepted(&bus), "PPGTT store accepted on the target");
    b.vms[0].signals.clear();
    run_idle(&mut b);
    check_blit(&mut b, 0, &d, 0x0000_BB00, 0xD0_0E01);
    let mut v = [0u8; 4];
    let mut bus = b.bus(0);
    assert!(bus.ram_read(((RAM_GFN + 700) << 12) + 0x44, &mut v));
    assert_eq!(u32::from_le_bytes(v), 0xBEEF);
    assert_eq!(d.iir(&mut bus).unwrap(), USERS);
    assert!(d.idle(&mut bus, RCS).unwrap() && d.idle(&mut bus, BCS).unwrap());
    assert!(b.vms[0].signals.iter().any(|s| s.msi), "MSI after the move");
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
    // VM 1's vGPU has the same type and another slice.
    assert_eq!(
        restore(&mut b, 1, TYPE, &stream),
        Err(MigrationError::OtherPlacement)
    );
    let mut newer = stream.clone();
    newer[8] = 2;
    assert_eq!(
        restore(&mut b, 0, TYPE, &newer),
        Err(MigrationError::Stream(StreamError::NewerVersion(2)))
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
