//! BAR0 trap emulation cost (paper §3.3 / §4: every trapped MMIO access pays
//! this on top of the VM exit).  Prints ns per emulated access for the
//! common kinds and the ratio of the table-driven register lookup to a
//! linear scan of the same table, all measured in this one run.
use std::hint::black_box;
use std::time::Instant;

use gvt_core::backend::EngineId;
use gvt_core::mem::GmRange;
use gvt_core::mmio::{self, VgpuMmio, GGTT_VIEW_BASE};
use gvt_core::partition::Partition;
use gvt_core::pvinfo::{PvInfo, PVINFO_BASE};
use gvt_core::regs::{self, REGISTERS, VREG_DWORDS};

/// Calls per figure; `GVT_BENCH_CALLS=N` sets another count (under
/// `valgrind --tool=callgrind`, where each access's instructions are
/// counted: every figure is one named function below, called N + N/10
/// times).
fn calls() -> u32 {
    std::env::var("GVT_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000)
}

fn time(mut f: impl FnMut(u32)) -> f64 {
    let n = calls();
    for i in 0..n / 10 {
        f(i);
    }
    let t = Instant::now();
    for i in 0..n {
        f(i);
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

// One function per figure, each timing its access in the loop of `time`
// as before (their own symbols for callgrind: a function's instructions
// divided by its N + N/10 calls of the access).
#[inline(never)]
fn forcewake_write(m: &mut VgpuMmio, vregs: &mut [u32]) -> f64 {
    time(|i| {
        black_box(
            m.write(
                vregs,
                regs::FORCEWAKE_REQ as u64,
                4,
                0x1_0001 ^ (i as u64 & 1),
            )
            .ok(),
        );
    })
}

#[inline(never)]
fn tail_write(m: &mut VgpuMmio, vregs: &mut [u32]) -> f64 {
    time(|i| {
        black_box(
            m.write(
                vregs,
                u64::from(EngineId::Rcs.reg(regs::ring::TAIL)),
                4,
                (i as u64 * 8) & 0xFFF,
            )
            .ok(),
        );
    })
}

#[inline(never)]
fn pte_classify() -> f64 {
    time(|i| {
        let idx = (i as u64) & 0xFFFFF;
        black_box(mmio::classify(black_box(GGTT_VIEW_BASE + idx * 8), 8).ok());
    })
}

#[inline(never)]
fn scratch_read(m: &mut VgpuMmio, vregs: &[u32]) -> f64 {
    time(|i| {
        black_box(m.read(vregs, 0x4000 + (i as u64 & 0xFF) * 4, 4).ok());
    })
}

#[inline(never)]
fn pvinfo_read(m: &mut VgpuMmio, vregs: &[u32]) -> f64 {
    time(|i| {
        black_box(
            m.read(vregs, PVINFO_BASE as u64 + (i as u64 & 0x1F) * 4, 4)
                .ok(),
        );
    })
}

#[inline(never)]
fn table_lookup(offs: &[u32]) -> f64 {
    time(|i| {
        black_box(regs::lookup(black_box(offs[i as usize % offs.len()])));
    })
}

fn main() {
    let part = Partition {
        aperture: GmRange::new(0, 64 << 20),
        high: GmRange::new(256 << 20, 384 << 20),
        fence_base: 0,
        fence_count: 4,
    };
    let mut m = VgpuMmio::new(PvInfo::new(1, 0, &part).unwrap());
    let mut vregs = vec![0u32; VREG_DWORDS];
    m.reset_vregs(&mut vregs);

    // the offsets a native driver hits most: forcewake, tail, PTEs, others
    let offs: Vec<u32> = REGISTERS
        .iter()
        .map(|r| r.offset)
        .chain([0x4000, 0x9400, 0x12_0000])
        .collect();
    let linear = |off: u32| {
        REGISTERS.iter().find(|r| {
            (0..r.count).any(|i| {
                let s = r.offset + i * r.stride;
                off >= s && off < s + r.width.dwords() * 4
            })
        })
    };
    let t_bin = table_lookup(&offs);
    let t_lin = time(|i| {
        black_box(linear(black_box(offs[i as usize % offs.len()])));
    });

    let t_fw = forcewake_write(&mut m, &mut vregs);
    let t_tail = tail_write(&mut m, &mut vregs);
    // A PTE write is only classified here; its emulation (audit, pin,
    // physical write) is the shadow GGTT's, measured by benches/ggtt.rs.
    let t_pte = pte_classify();
    let t_rd = scratch_read(&mut m, &vregs);
    let t_pv = pvinfo_read(&mut m, &vregs);

    println!("register table: {} entries", REGISTERS.len());
    println!(
        "lookup: table {t_bin:.1} ns, linear {t_lin:.1} ns, linear/table = {:.2}",
        t_lin / t_bin
    );
    println!("emulated access (ns): forcewake write {t_fw:.1}, TAIL write {t_tail:.1}, PTE classify {t_pte:.1}, scratch read {t_rd:.1}, PVINFO read {t_pv:.1}");
    println!("TAIL write / scratch read = {:.2}", t_tail / t_rd);
    println!("stats: {:?}", m.stats());
}
