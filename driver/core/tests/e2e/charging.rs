//! Issue 12's interfaces, end to end: the engine worker's work budget, the
//! new reject class in `gvt/stats`, the PPGTT sync charge.  (They use
//! interfaces that 8b98663 did not have; the behavioural regression tests
//! that also run against it are in [`super::hostile`].)

use super::hostile::{copy_batch, long_batch_world, marker, patient_config, two_directories};
use super::*;

/// One worker call does at most its [`WorkBudget`] of engine work plus one
/// round (a slice and one step per engine), whatever the guest submitted.
#[test]
fn a_worker_call_stops_after_its_work_budget() {
    use gvt_core::engine::CostModel;
    let cfg = patient_config();
    let (mut w, d0, mut d1) = long_batch_world(cfg);
    let cmds = copy_batch(&mut w, 1, &d1, 0xF11D);
    let mut b = w.bus(1);
    d1.run(&mut b, BCS, &cmds).unwrap();
    assert!(accepted(&b));
    let budget = WorkBudget {
        rounds: 1000,
        engine_ns: 3_000_000,
    };
    let round_max = 2 * (cfg.sched.quantum_ns + CostModel::DEFAULT.max_step_ns());
    let mut calls = 0;
    loop {
        let rep = w
            .gpu
            .run_engines(&mut w.phys, &mut w.host, &w.clock, budget);
        calls += 1;
        assert!(
            rep.work_ns <= budget.engine_ns + round_max,
            "call {calls} did {} ns of work",
            rep.work_ns
        );
        if rep.idle {
            break;
        }
        assert!(
            rep.work_ns >= budget.engine_ns,
            "a call that is not idle used its budget"
        );
        assert!(calls < 100);
    }
    // 2 × 64 MiB of copies, ~72 ms by the cost model: about 24 calls of 3 ms.
    assert!(calls >= 20, "{calls} calls");
    assert_eq!(
        (marker(&mut w, 0, &d0), marker(&mut w, 1, &d1)),
        (0xF00D, 0xF11D)
    );
}

/// The finding's blit through the facade: pitch 0, 65535 × 65535 at 32 bpp
/// (a 256 KiB span, 17 GB of writes) is refused and counted in its own
/// class; nothing runs.
#[test]
fn the_17_gb_blit_is_refused_and_counted() {
    let mut w = World::new(test_config());
    let mut d0 = boot(&mut w, 0);
    let mut b = w.bus(0);
    d0.run(
        &mut b,
        BCS,
        &color_blt(d0.high.base, 0, (0, 0, 0xffff, 0xffff), 0xBAD),
    )
    .unwrap();
    assert_eq!(
        b.last().submit(),
        Some(SubmitOutcome::Rejected(SubmitReject::Audit(
            Reject::BadGeometry
        )))
    );
    assert_ne!(
        d0.iir(&mut b).unwrap() & irq::BCS_ERROR_INTERRUPT,
        0,
        "the guest is told"
    );
    let rep = w.run(10);
    assert!(rep.idle && rep.work_ns == 0, "nothing ran");
    let slot = w.vgpu(0).slot();
    assert_eq!(
        w.gpu
            .slot_stats(slot)
            .unwrap()
            .rejected
            .get(Reject::BadGeometry),
        1
    );
    let mut text = std::string::String::new();
    w.vgpu(0).write_stats(&w.gpu, &mut text).unwrap();
    assert!(text.contains("\nreject_bad_geometry 1\n"), "{text}");
}

/// Re-shadowing is charged to the guest that causes it: the PPGTT syncs'
/// modelled cost shows in its render engine time and `mediation_ns`, and a
/// thrash that fits the cache costs table reads only (no pins after the
/// first round).
#[test]
fn ppgtt_sync_work_is_charged_to_the_guest() {
    use gvt_core::ppgtt::SYNC_PIN_NS;
    let mut w = World::new(test_config());
    let mut d0 = boot(&mut w, 0);
    let pds = two_directories(&mut w, &d0);
    let slot = w.vgpu(0).slot();
    let mut last = 0;
    for i in 0..6u32 {
        let mut b = w.bus(0);
        d0.set_ppgtt(&mut b, pds[(i % 2) as usize]).unwrap();
        d0.run(&mut b, RCS, &sdi(Space::Ppgtt, 0x80, i)).unwrap();
        assert!(accepted(&b));
        run_idle(&mut w);
        let st = w.gpu.scheduler().stats(slot).unwrap();
        let pp = w.vgpu(0).ppgtt().stats();
        assert_eq!(st.mediation_ns, pp.sync_ns, "every sync's cost charged");
        assert!(st.engine_ns[RCS.index()] >= st.mediation_ns);
        let spent = st.mediation_ns - last;
        last = st.mediation_ns;
        if i < 2 {
            assert!(
                spent >= 192 * SYNC_PIN_NS,
                "first sync of a directory pins its 192 pages: {spent} ns"
            );
        } else {
            // 2048 entry reads, the PD and three PT frames pinned and unpinned.
            assert!(
                spent < 16 * SYNC_PIN_NS,
                "a re-used directory costs reads and the PD/PT frame pins: {spent} ns"
            );
        }
    }
    assert_eq!(w.vgpu(0).ppgtt().stats().pd_switches, 5);
}
