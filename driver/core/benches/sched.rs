//! Scheduler benchmark (paper §3.2): cost of one scheduling decision and of a
//! whole round with a context switch (host CPU time, ns), and the fairness /
//! throughput the policy reaches for 1, 7 (the paper's maximum) and 64
//! backlogged vGPUs on a simulated engine, with the paper's GPU context-switch
//! cost (~700 µs) modelled, for GVT-g's 1 ms quantum and the paper's 16 ms.
//!
//! Plain `main` (harness = false): prints figures measured in this run,
//! asserts nothing about time.  `cargo bench -p gvt-core --bench sched`.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use gvt_core::backend::{Backend, EngineId, Pte};
use gvt_core::ctx::{
    CTL_ENABLE, MI_MODE_IDLE, MI_MODE_STOP_RING, RING_CTL, RING_MI_MODE, RING_START,
};
use gvt_core::sched::{
    Engines, Preemption, RunBudget, RunReport, SchedConfig, Scheduler, SlotId, StopReason,
};
use gvt_core::sched_policy::{CreditPolicy, DEFAULT_PERIOD_NS, GVTG_QUANTUM_NS, PAPER_QUANTUM_NS};
use gvt_core::services::Clock;

/// GPU context switch cost measured by the paper (~700 µs).
const SWITCH_NS: u64 = 700_000;

struct SimClock(Cell<u64>);
impl Clock for SimClock {
    fn now_ns(&self) -> u64 {
        self.0.get()
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Every vGPU always has work on the render engine; commands cost 2–100 µs
/// (drawn per run); a run stops at the command boundary before its budget.
/// A run on a context other than the last one pays `switch_ns` of engine time.
struct BenchGpu {
    regs: BTreeMap<u32, u32>,
    rng: Rng,
    used: Vec<u64>,
    last_start: u32,
    switch_ns: u64,
    overhead: u64,
    cheap: bool,
}

impl Backend for BenchGpu {
    fn read_reg(&mut self, off: u32) -> u32 {
        let v = self.regs.get(&off).copied().unwrap_or(0);
        if off & 0xfff == RING_MI_MODE && v & MI_MODE_STOP_RING != 0 {
            return v | MI_MODE_IDLE;
        }
        v
    }
    fn write_reg(&mut self, off: u32, v: u32) {
        let v = if off & 0xfff == RING_MI_MODE {
            let old = self.regs.get(&off).copied().unwrap_or(0);
            (old & !(v >> 16)) | (v & (v >> 16) & 0xffff)
        } else {
            v
        };
        self.regs.insert(off, v);
    }
    fn ggtt_entries(&self) -> u32 {
        0
    }
    fn write_ggtt(&mut self, _: u32, _: Pte) {}
    fn read_ggtt(&self, _: u32) -> Pte {
        Pte(0)
    }
}

impl Engines for BenchGpu {
    fn has_work(&self, e: EngineId, _: SlotId) -> bool {
        e == EngineId::Rcs
    }
    fn run(&mut self, e: EngineId, v: SlotId, b: RunBudget) -> RunReport {
        let start = self
            .regs
            .get(&(e.mmio_base() + RING_START))
            .copied()
            .unwrap_or(0);
        if start != self.last_start {
            self.last_start = start;
            self.overhead += self.switch_ns;
        }
        let mut consumed = 0u64;
        let mut cmds = 0u32;
        if self.cheap {
            consumed = b.ns;
            cmds = 1;
        } else {
            loop {
                let c = 2_000 + self.rng.next() % 98_001;
                if consumed > 0 && consumed + c > b.ns {
                    break;
                }
                consumed += c;
                cmds += 1;
            }
        }
        self.used[v.index()] += consumed;
        RunReport {
            consumed_ns: consumed,
            cmds,
            retired: cmds,
            since_retire_ns: 0,
            stop: StopReason::Preempted,
        }
    }
    fn drop_work(&mut self, _: EngineId, _: SlotId) -> u32 {
        0
    }
}

fn setup<const N: usize>(
    weights: &[u32],
    quantum: u64,
    cheap: bool,
    switch_ns: u64,
) -> (Box<Scheduler<N>>, BenchGpu) {
    let cfg = SchedConfig {
        quantum_ns: quantum,
        preemption: Preemption::Command,
        ..SchedConfig::DEFAULT
    };
    let mut s = Box::new(Scheduler::<N>::new(cfg));
    let mut g = BenchGpu {
        regs: BTreeMap::new(),
        rng: Rng(0x9e37_79b9_7f4a_7c15),
        used: vec![0; weights.len()],
        last_start: 0,
        switch_ns,
        overhead: 0,
        cheap,
    };
    for (i, w) in weights.iter().enumerate() {
        let id = s.create_vgpu(*w).unwrap();
        s.write_ctx_reg(
            &mut g,
            id,
            EngineId::Rcs,
            RING_START,
            0x10_0000 * (i as u32 + 1),
        )
        .unwrap();
        s.write_ctx_reg(&mut g, id, EngineId::Rcs, RING_CTL, CTL_ENABLE)
            .unwrap();
    }
    (s, g)
}

/// Host CPU cost of `round()` (decision + context switch + bookkeeping),
/// with a trivial engine.
fn round_cost<const N: usize>(n: usize) -> (f64, Option<f64>) {
    let weights = vec![10u32; n];
    let (mut s, mut g) = setup::<N>(&weights, GVTG_QUANTUM_NS, true, 0);
    let clk = SimClock(Cell::new(0));
    let rounds = 200_000u64;
    let sw0 = s.ctx_stats(EngineId::Rcs).switches;
    let t = Instant::now();
    for _ in 0..rounds {
        let r = s.round(&mut g, &clk);
        clk.0.set(clk.0.get() + r.wall_ns);
        black_box(&r);
    }
    let ns = t.elapsed().as_nanos() as f64;
    let switches = s.ctx_stats(EngineId::Rcs).switches - sw0;
    (
        ns / rounds as f64,
        (switches > 1).then(|| ns / switches as f64),
    )
}

/// Host CPU cost of the policy alone: one `pick` + `charge`.
fn pick_cost<const N: usize>(n: usize) -> f64 {
    let mut p = CreditPolicy::<N>::new(DEFAULT_PERIOD_NS, GVTG_QUANTUM_NS);
    for i in 0..n {
        p.add(i, 1 + (i as u32 * 37) % 100).unwrap();
    }
    let elig = [true; N];
    let mut now = 0u64;
    let iters = 500_000u64;
    let t = Instant::now();
    for _ in 0..iters {
        p.tick(now, &elig);
        let pk = p.pick(now, black_box(&elig)).unwrap();
        p.charge(pk.slot, pk.slice_ns);
        now += pk.slice_ns;
    }
    t.elapsed().as_nanos() as f64 / iters as f64
}

struct Figures {
    worst_rel_err: f64,
    worst_abs_err: f64,
    jain: f64,
    useful: f64,
    switches_per_s: f64,
}

/// `secs` simulated seconds of backlogged vGPUs.
fn fairness<const N: usize>(weights: &[u32], quantum: u64, secs: u64) -> Figures {
    let (mut s, mut g) = setup::<N>(weights, quantum, false, SWITCH_NS);
    let clk = SimClock(Cell::new(0));
    let horizon = secs * 1_000_000_000;
    let mut last_overhead = 0;
    while clk.0.get() < horizon {
        let r = s.round(&mut g, &clk);
        // The switch cost occupies the engine but is charged to nobody.
        let dt = r.wall_ns + (g.overhead - last_overhead);
        last_overhead = g.overhead;
        clk.0.set(clk.0.get() + dt.max(1));
    }
    let total: u64 = g.used.iter().sum();
    let wsum: u32 = weights.iter().sum();
    let mut worst: f64 = 0.0;
    let mut worst_abs: f64 = 0.0;
    let shares: Vec<f64> = g.used.iter().map(|u| *u as f64 / total as f64).collect();
    for (i, w) in weights.iter().enumerate() {
        let want = *w as f64 / wsum as f64;
        worst = worst.max((shares[i] - want).abs() / want);
        worst_abs = worst_abs.max((shares[i] - want).abs());
    }
    let norm: Vec<f64> = shares
        .iter()
        .zip(weights)
        .map(|(s, w)| s / *w as f64)
        .collect();
    let sum: f64 = norm.iter().sum();
    let sq: f64 = norm.iter().map(|x| x * x).sum();
    let elapsed = clk.0.get() as f64;
    Figures {
        worst_rel_err: worst,
        worst_abs_err: worst_abs,
        jain: sum * sum / (norm.len() as f64 * sq),
        useful: total as f64 / elapsed,
        switches_per_s: s.ctx_stats(EngineId::Rcs).switches as f64 / (elapsed / 1e9),
    }
}

fn main() {
    println!(
        "gvt-core scheduler benchmark (host CPU time for costs; simulated engine time for shares)"
    );
    println!();
    println!("decision cost (policy pick+charge), ns:");
    println!("  1 vGPU: {:8.1}", pick_cost::<1>(1));
    println!("  7 vGPUs: {:7.1}", pick_cost::<8>(7));
    println!("  64 vGPUs: {:6.1}", pick_cost::<64>(64));
    println!();
    println!("full round (has_work x2 engines, tick, pick, context switch via registers, run, charge), ns:");
    for (n, (per_round, per_switch)) in [
        (1usize, round_cost::<1>(1)),
        (7, round_cost::<8>(7)),
        (64, round_cost::<64>(64)),
    ] {
        match per_switch {
            Some(ps) => {
                println!("  {n:2} vGPUs: {per_round:8.1} per round, {ps:8.1} per context switch")
            }
            None => println!("  {n:2} vGPUs: {per_round:8.1} per round (never switches)"),
        }
    }
    println!();
    println!("fairness and throughput over 60 s simulated, all vGPUs backlogged, GPU switch cost 700 us modelled:");
    println!(
        "  (weights: 'eq' all 10; 'mix' 1..100; rel = worst |share - weight share| / weight share;"
    );
    println!("   abs = the same in percentage points; jain over share/weight;");
    println!("   useful = engine time doing vGPU work / elapsed; whole quanta per pick, so a tiny");
    println!(
        "   share s over T seconds is served in ~s*T/quantum slices: rel error ~ quantum/(s*T))"
    );
    let mut rng = Rng(42);
    for (n, label) in [
        (1usize, "eq"),
        (7, "eq"),
        (7, "mix"),
        (64, "eq"),
        (64, "mix"),
    ] {
        let weights: Vec<u32> = if label == "eq" {
            vec![10; n]
        } else {
            (0..n).map(|_| 1 + (rng.next() % 100) as u32).collect()
        };
        for (qn, q) in [("1ms", GVTG_QUANTUM_NS), ("16ms", PAPER_QUANTUM_NS)] {
            let f = if n <= 8 {
                fairness::<8>(&weights, q, 60)
            } else {
                fairness::<64>(&weights, q, 60)
            };
            println!(
                "  {n:2} vGPUs {label:3} q={qn:4}: rel {:6.3}%  abs {:6.4}pp  jain {:.5}  useful {:5.1}%  switches/s {:6.1}",
                f.worst_rel_err * 100.0,
                f.worst_abs_err * 100.0,
                f.jain,
                f.useful * 100.0,
                f.switches_per_s
            );
        }
    }
}
