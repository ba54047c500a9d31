//! Fuzz target: ring submission (audit + shadow) of arbitrary command streams,
//! then execution of whatever was accepted, with the isolation oracle of the
//! property test: an accepted stream never makes the engine write outside the
//! submitting vGPU's pages, nor read outside them and its shadows, and always
//! executes without a fault.  A rejected stream must not execute at all.
//!
//! The work oracle (review finding 1): an accepted stream runs in slices of
//! [`SLICE_NS`] of engine time, as the scheduler runs it; no run may overrun
//! its slice by more than one engine step ([`CostModel::max_step_ns`]), and
//! what the engine did to memory — every access and byte the host saw,
//! priced by the published cost model — never exceeds what the engine
//! charged, plus one command's cost.  So an engine that did work it did not
//! charge (a blit writing more than its charged bytes) or that ran unbounded
//! between two budget checks fails here.
//!
//! Input: little-endian dwords.  dword 0: bit 0 engine (0 RCS, 1 BCS), bits
//! 1–11 ring length in dwords; then the ring dwords; the rest is placed at the
//! batch area (vGPU 0 GM 0x40000), where ring BB_STARTs can reach it.
#![no_main]

use std::sync::Mutex;

use gvt_core::backend::{EngineId, Pte};
use gvt_core::cmd::{self, MI_NOOP};
use gvt_core::engine::{CostModel, StepStatus};
use gvt_core::fakes::FakeHostMemory;
use gvt_core::mem::{HostPage, PAGE_SIZE};
use gvt_core::services::HostMemory;
use gvt_core::ring::SubmitError;
use gvt_core::sim::kit::*;
use gvt_core::sim::GvtSim;
use libfuzzer_sys::fuzz_target;

const BATCH: u64 = 0x40000;
const MAX_BATCH_DWORDS: usize = 0x4000;
/// Engine time per run (50 µs: a big blit takes many runs).
const SLICE_NS: u64 = 50_000;

struct World {
    host: Recording<FakeHostMemory>,
    ggtt: Vec<Pte>,
}

static WORLD: Mutex<Option<World>> = Mutex::new(None);

fn check(data: &[u8], w: &mut World) {
    let words: Vec<u32> = data.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let Some((&ctl, rest)) = words.split_first() else { return };
    // The decoder alone never panics on any dword.
    for &d in rest.iter().take(64) {
        if let Ok((op, n)) = cmd::decode(d) {
            let mut buf = [0u32; cmd::MAX_CMD_DWORDS];
            buf[0] = d;
            let _ = cmd::parse(op, &buf[..n.min(cmd::MAX_CMD_DWORDS)]);
        }
    }
    let e = if ctl & 1 == 0 { EngineId::Rcs } else { EngineId::Bcs };
    let ring_max = (GUEST_RING_PAGES as usize * PAGE_SIZE as usize - 8) / 4;
    let n = (((ctl >> 1) & 0x7ff) as usize).min(rest.len()).min(ring_max);
    let (ring, batch) = rest.split_at(n);
    let mut ring = ring.to_vec();
    if ring.len() % 2 == 1 {
        ring.push(MI_NOOP);
    }
    let batch = &batch[..batch.len().min(MAX_BATCH_DWORDS)];
    write_dwords(&mut w.host, BATCH, batch);
    let mut sim = GvtSim::new(&mut w.ggtt);
    let mut g = Guest::new(0);
    g.push(&mut w.host, e, &ring);
    let r = g.submit(&sim, &mut w.host, e);
    w.host.clear();
    match r {
        Ok(_) => {
            let m = CostModel::DEFAULT;
            let bound = SLICE_NS + m.max_step_ns();
            let (r, charged) = g.execute_sliced(&mut sim, &mut w.host, e, SLICE_NS, 1 << 20, |r| {
                assert!(r.cost_ns <= bound, "a run cost {} ns, over its slice plus one step ({bound})", r.cost_ns);
            });
            assert_eq!(r.status, StepStatus::Idle, "accepted stream faulted or did not finish");
            let done = w.host.io_cost(&m);
            assert!(done <= charged + m.cmd_ns, "the engine did {done} ns of work and charged {charged} ns");
            for p in w.host.writes.iter() {
                assert!(vgpu_pages(0).contains(p), "accepted stream wrote host page {p}");
            }
            for p in w.host.reads.borrow().iter() {
                assert!(vgpu_pages(0).contains(p) || shadow_pages(0).contains(p), "accepted stream read host page {p}");
            }
        }
        Err(SubmitError::Busy) => panic!("an idle ring is never busy"),
        Err(SubmitError::Rejected(_)) => {
            let r = g.execute(&mut sim, &mut w.host, e, 1 << 20);
            assert_eq!(r.executed, 0, "rejected stream executed");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut guard = WORLD.lock().unwrap_or_else(|p| p.into_inner());
    let w = guard.get_or_insert_with(|| {
        let mut ggtt = new_ggtt();
        map_shadows(&mut GvtSim::new(&mut ggtt));
        World { host: Recording::new(new_host()), ggtt }
    });
    w.host.clear();
    check(data, w);
    // Reset every page written (setup and execution) for the next input.
    let zero = [0u8; PAGE_SIZE as usize];
    let written: Vec<u64> = w.host.writes.iter().copied().collect();
    for p in written.into_iter().chain(vgpu_pages(0).start..vgpu_pages(0).start + 12).chain((BATCH / PAGE_SIZE)..(BATCH / PAGE_SIZE + 16)) {
        let _ = w.host.inner.write(HostPage(p), 0, &zero);
    }
    w.host.clear();
});
