//! BAR0 trap emulation cost (paper §3.3 / §4: every trapped MMIO access pays
//! this on top of the VM exit).  Prints ns per emulated access for the
//! common kinds and the ratio of the table-driven register lookup to a
//! linear scan of the same table, all measured in this one run.
use std::hint::black_box;
use std::time::Instant;

use gvt_core::backend::{EngineId, Pte};
use gvt_core::fakes::{FakeGuestMemory, FakeHostMemory, FakeHostPages};
use gvt_core::gpu::{Gpu, GpuConfig, SHADOW_PAGES_PER_VGPU};
use gvt_core::mem::GmRange;
use gvt_core::mem::HostPage;
use gvt_core::mmio::{self, VgpuMmio, GGTT_VIEW_BASE};
use gvt_core::partition::Partition;
use gvt_core::pvinfo::{PvInfo, PVINFO_BASE};
use gvt_core::regs::{self, REGISTERS, VREG_DWORDS};
use gvt_core::services::{Clock, CpuMappings, Held};
use gvt_core::vgpu::{storage_sizes, Env, Vgpu, VgpuParams, VgpuStorage};

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

struct ZeroClock;
impl Clock for ZeroClock {
    fn now_ns(&self) -> u64 {
        0
    }
}
struct NoCpu;
impl CpuMappings for NoCpu {
    fn invalidate(&mut self, _: u64) {}
}

/// One vGPU behind the facade, as the module's trap path calls it: each
/// access builds its call's [`Env`] and goes through `Vgpu::bar0_read` /
/// `Vgpu::bar0_write` (the GPU lock is a plain `Held`, so what is counted
/// is the core's work, not a lock's).
struct Facade {
    gpu: Gpu<2>,
    phys: Vec<Pte>,
    host: FakeHostMemory,
    pages: FakeHostPages,
    ram: FakeGuestMemory,
    vregs: Vec<u32>,
    gg: Vec<u64>,
    gs: Vec<u64>,
    snap: Vec<u64>,
    v: Option<Vgpu<4>>,
}

/// `$body` with `$env`, a call's [`Env`] over `$f`'s storage and services
/// (`$f`, a `&mut Facade`; the body reaches the vGPU as `$f.v`).
macro_rules! facade_env {
    ($f:ident, |$env:ident| $body:expr) => {{
        let mut lock = Held::new(&mut $f.gpu, &mut $f.phys);
        let mut cpu = NoCpu;
        let st = VgpuStorage {
            vregs: &mut $f.vregs,
            ggtt_guest: &mut $f.gg,
            ggtt_shadow: &mut $f.gs,
            ppgtt_snap: &mut $f.snap,
        };
        let mut $env = Env::new(
            st,
            &mut lock,
            &mut $f.host,
            &mut $f.pages,
            &ZeroClock,
            &mut $f.ram,
            &mut cpu,
        );
        $body
    }};
}

impl Facade {
    fn new(part: &Partition) -> Facade {
        let mut phys = vec![Pte::default(); 8192];
        let gpu = Gpu::new(GpuConfig::DEFAULT, &mut phys).expect("gpu");
        let (nv, ng, ns) = storage_sizes::<4>(part);
        let mut f = Facade {
            gpu,
            phys,
            host: FakeHostMemory::new(700),
            pages: FakeHostPages::new(600, 100),
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
            part: *part,
            aperture_size: 4 << 20,
            weight: 1,
            scratch: HostPage(99),
            shadow_pages: &shadow,
        };
        let g = &mut f;
        let v = facade_env!(g, |env| Vgpu::create(p, &mut env).expect("vgpu"));
        f.v = Some(v);
        f
    }
}

#[inline(never)]
fn facade_scratch_read(f: &mut Facade) -> f64 {
    time(|i| {
        let mut b = [0u8; 4];
        let off = 0x4000 + (i as u64 & 0xFF) * 4;
        black_box(
            facade_env!(f, |env| f
                .v
                .as_mut()
                .expect("created")
                .bar0_read(&mut env, off, &mut b))
            .ok(),
        );
    })
}

#[inline(never)]
fn facade_scratch_write(f: &mut Facade) -> f64 {
    time(|i| {
        let off = 0x4000 + (i as u64 & 0xFF) * 4;
        let d = i.to_le_bytes();
        black_box(
            facade_env!(f, |env| f
                .v
                .as_mut()
                .expect("created")
                .bar0_write(&mut env, off, &d))
            .ok(),
        );
    })
}

#[inline(never)]
fn facade_forcewake_write(f: &mut Facade) -> f64 {
    time(|i| {
        let d = (0x1_0001u32 ^ (i & 1)).to_le_bytes();
        let off = regs::FORCEWAKE_REQ as u64;
        black_box(
            facade_env!(f, |env| f
                .v
                .as_mut()
                .expect("created")
                .bar0_write(&mut env, off, &d))
            .ok(),
        );
    })
}

#[inline(never)]
fn facade_head_read(f: &mut Facade) -> f64 {
    time(|_| {
        let mut b = [0u8; 4];
        let off = u64::from(EngineId::Rcs.reg(regs::ring::HEAD));
        black_box(
            facade_env!(f, |env| f
                .v
                .as_mut()
                .expect("created")
                .bar0_read(&mut env, off, &mut b))
            .ok(),
        );
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
    // The same accesses through the facade, as the module's BAR0 trap
    // calls it (a ring disabled: no submission behind a TAIL write).
    // A small vGPU (the facade's GPU has an 8192-entry GGTT).
    let mut f = Facade::new(&Partition {
        aperture: GmRange::new(1 << 20, 1 << 20),
        high: GmRange::new(8 << 20, 1 << 20),
        fence_base: 4,
        fence_count: 4,
    });
    let (f_rd, f_wr, f_fw, f_head) = (
        facade_scratch_read(&mut f),
        facade_scratch_write(&mut f),
        facade_forcewake_write(&mut f),
        facade_head_read(&mut f),
    );
    println!(
        "through the facade (ns): scratch read {f_rd:.1}, scratch write {f_wr:.1}, forcewake write {f_fw:.1}, ring HEAD read {f_head:.1}; facade / dispatch, scratch read = {:.2}",
        f_rd / t_rd
    );
    println!("stats: {:?}", m.stats());
}
