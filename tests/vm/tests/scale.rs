//! Scaling (issue 18): the default parent and 64 vGPUs on one parent.
//!
//! - With the **default** module parameters (aperture 512 MiB, as a GVT-g
//!   host), `gvtctl create --aperture 512M` — the command users are shown
//!   first — works, and the types are GVT-g's four (64M..512M).
//! - With `max_vgpus=64`, 64 vGPUs of the smallest type (8 MiB of aperture)
//!   live at once on the one parent, each opened through VFIO by the
//!   reference guest driver (its own container and 1 MiB of guest RAM, as 64
//!   VMs would), each keeping its blitter backlogged with small fills; every
//!   vGPU's work completes, and the blitter time the driver charged each of
//!   them (`gvt/stats` `bcs_time_ns`) over a window splits by weight: every
//!   share within 2% of its fair share, Jain's fairness index ≥ 0.99.  The
//!   aggregate blitter throughput is compared with one vGPU alone in the same
//!   run (the scaling ratio), and the host memory per vGPU is read from the
//!   driver (`host_memory_bytes`) and from `/proc/meminfo`.  Printed as
//!   `bench:` lines; `bench_scale_64_vgpus` is the same run for
//!   `cargo xtask bench`.

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use gvt_guest_driver::gvt_core::cmd::encode::color_blt;
use gvt_guest_driver::vfio::VfioBackend;
use gvt_guest_driver::{Driver, Layout, BCS};
use gvt_vmtests::guest::{driver, stat, state, stats, TIMEOUT};
use gvt_vmtests::gvt::{kernel_log, LoadedWith, PARENT};
use gvt_vmtests::{types_of, Mdev};

type Drv = Driver<VfioBackend>;

const PAGE: u64 = 4096;
const N: usize = 64;
/// Rows of 4 KiB per fill: 256 KiB, a small submission (65 µs of the
/// engine's cost model).
const ROWS: u32 = 64;
/// Fills per submission (one TAIL write): 1 MiB, 260 µs of the cost model.
/// With one fill per submission the feeder below, one thread on the VM's
/// one vCPU beside the engine's worker, needed about as much CPU as the
/// engine (a trapped TAIL write per 65 µs of engine time): a sweep over the
/// 64 vGPUs took up to 0.7 s, longer than a scheduling round of all 64, so
/// queues ran dry, a vGPU with no work at a period's refill lost its banked
/// credit (as it must: idle time is not banked), and shares measured the
/// feeder, not the scheduler (min 0.965..0.977 of fair in 5 runs out of 7,
/// at 270e193 as at 102620e).
const FILLS: u64 = 4;
/// Submissions kept queued per vGPU: refilled by `BATCH` when fewer than
/// this.  24 submissions are 6.2 ms of the cost model: six turns of a 1 ms
/// quantum, a vGPU stays backlogged through a sweep that lasts six rounds.
/// At most 31 queued submissions (124 commands, 3.5 KiB of ring), within the
/// scheduler's 64 submissions and 1024 commands.
const LOW: u32 = 24;
const BATCH: u32 = 8;

/// One submission of vGPU `k`, its `i`-th: `FILLS` fills into its own high GM.
fn fill(d: &Drv, k: usize, i: u64) -> Vec<u32> {
    (0..FILLS)
        .flat_map(|f| {
            let n = i * FILLS + f;
            let surf = d.layout().surfaces() + (1 << 20) + (n % 4) * u64::from(ROWS) * PAGE;
            let c = 0xFF00_0000 | ((k as u32) << 16) | (n as u32 & 0xFFFF);
            color_blt(surf, 4096, (0, 0, 1024, ROWS), c)
        })
        .collect()
}

/// Bytes of ring the commands queued on `d`'s blitter take.
fn queued(d: &mut Drv) -> u32 {
    let ring = Layout::RING_PAGES * PAGE as u32;
    (d.tail(BCS) + ring - d.head(BCS).expect("HEAD")) % ring
}

/// Keep every driver's blitter backlogged (at least `LOW` submissions
/// queued) from this one thread, sweeping all of them, until `until`;
/// counts the submissions per vGPU in `sent`.  Returns how many times a
/// sweep found a vGPU's queue empty (it may have run dry: not backlogged).
fn keep_backlogged(ds: &mut [Drv], sent: &mut [u64], until: Instant) -> u64 {
    let per = fill(&ds[0], 0, 0).len() as u32 * 4;
    let mut dry = 0;
    while Instant::now() < until {
        for (k, d) in ds.iter_mut().enumerate() {
            let q = queued(d);
            dry += u64::from(q == 0);
            if q < LOW * per {
                for _ in 0..BATCH {
                    let c = fill(d, k, sent[k]);
                    d.submit(BCS, &c)
                        .unwrap_or_else(|e| panic!("vGPU {k} submission {}: {e}", sent[k]));
                    sent[k] += 1;
                }
            }
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    dry
}

fn bcs_ns(ms: &[Mdev]) -> Vec<u64> {
    ms.iter().map(|m| stat(m, "bcs_time_ns")).collect()
}

fn weight(m: &Mdev) -> u64 {
    fs::read_to_string(m.sysfs_path().join("gvt/weight"))
        .expect("gvt/weight")
        .trim()
        .parse()
        .expect("weight")
}

fn mem_available_kib() -> u64 {
    let s = fs::read_to_string("/proc/meminfo").expect("meminfo");
    s.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("MemAvailable")
}

/// What `ms` (driven by `ds`) did once all were backlogged, over a window
/// of at least `window` that lasts until the blitter time charged to them
/// reaches `target_ns` (or `limit` passed): the blitter time charged to each,
/// and the window.  A share is exact to about one quantum (1 ms) at each
/// end of the window: `target_ns` sets how many quanta each vGPU gets.
fn measure(
    ms: &[Mdev],
    ds: &mut [Drv],
    sent: &mut [u64],
    window: Duration,
    target_ns: u64,
    limit: Duration,
) -> (Vec<u64>, Duration, u64) {
    // Everyone backlogged before anything is measured.
    keep_backlogged(ds, sent, Instant::now() + Duration::from_millis(500));
    let e0 = bcs_ns(ms);
    let t0 = Instant::now();
    let mut dry = keep_backlogged(ds, sent, t0 + window);
    let mut e1 = bcs_ns(ms);
    while e1.iter().sum::<u64>() - e0.iter().sum::<u64>() < target_ns && t0.elapsed() < limit {
        dry += keep_backlogged(ds, sent, Instant::now() + Duration::from_secs(5));
        e1 = bcs_ns(ms);
    }
    let took = t0.elapsed();
    for (k, d) in ds.iter_mut().enumerate() {
        d.wait_idle(BCS, TIMEOUT)
            .unwrap_or_else(|e| panic!("vGPU {k}: its fills did not complete: {e}"));
    }
    (e0.iter().zip(&e1).map(|(a, b)| b - a).collect(), took, dry)
}

/// Jain's fairness index of `x`: 1 when all equal, 1/n when one has all.
fn jain(x: &[f64]) -> f64 {
    let s: f64 = x.iter().sum();
    let q: f64 = x.iter().map(|v| v * v).sum();
    s * s / (x.len() as f64 * q)
}

fn scale_body() {
    let _m = LoadedWith::new(&["max_vgpus=64"]);
    let small = types_of(PARENT)
        .into_iter()
        .find(|t| t.ends_with("GVTsim_8M"))
        .unwrap_or_else(|| panic!("no 8M type with max_vgpus=64: {:?}", types_of(PARENT)));
    let log = kernel_log();
    let parent_line = log
        .lines()
        .rev()
        .find(|l| l.contains("gvt-sim parent gvt-sim0: aperture"))
        .unwrap_or("")
        .to_string();
    println!("parent: {parent_line}");

    // The baseline: one vGPU alone.
    let window = Duration::from_secs(4);
    let single = {
        let m = vec![Mdev::create(PARENT, &small).expect("a vGPU")];
        let mut d = vec![driver(&m[0])];
        let mut sent = vec![0u64];
        let (ns, took, _) = measure(&m, &mut d, &mut sent, window, 0, window);
        drop(d);
        ns[0] as f64 / took.as_secs_f64()
    };

    // 64 at once.
    let mem0 = mem_available_kib();
    let t0 = Instant::now();
    let ms: Vec<Mdev> = (0..N)
        .map(|i| Mdev::create(PARENT, &small).unwrap_or_else(|e| panic!("vGPU {i}: {e}")))
        .collect();
    assert!(
        Mdev::create(PARENT, &small).is_err(),
        "a 65th vGPU is refused"
    );
    let mem_created = mem_available_kib();
    let mut ds: Vec<Drv> = ms.iter().map(driver).collect();
    let setup = t0.elapsed();
    let mem_open = mem_available_kib();
    let hm = stat(&ms[0], "host_memory_bytes");
    println!(
        "{N} vGPUs created and opened in {:.1} s; driver's host memory per vGPU {} KiB (vregs {} KiB, GGTT {} KiB, PPGTT {} KiB, shadow {} KiB); MemAvailable fell {} KiB per vGPU at creation, {} KiB per vGPU with the devices open (guest RAM and pins included)",
        setup.as_secs_f64(),
        hm >> 10,
        stat(&ms[0], "host_memory_vregs") >> 10,
        stat(&ms[0], "host_memory_ggtt") >> 10,
        stat(&ms[0], "host_memory_ppgtt") >> 10,
        stat(&ms[0], "host_memory_shadow") >> 10,
        mem0.saturating_sub(mem_created) / N as u64,
        mem0.saturating_sub(mem_open) / N as u64,
    );
    let w: Vec<u64> = ms.iter().map(weight).collect();
    let acc0: Vec<u64> = ms.iter().map(|m| stat(m, "submissions_accepted")).collect();
    let mut sent = vec![0u64; N];
    // 150 quanta (1 ms) each: a share exact to about 1%.
    let (d, window64, dry) = measure(
        &ms,
        &mut ds,
        &mut sent,
        Duration::from_secs(30),
        150 * N as u64 * 1_000_000,
        Duration::from_secs(240),
    );
    let total: u64 = d.iter().sum();
    let wsum: u64 = w.iter().sum();
    // Each vGPU's share over its fair share (weight / sum of weights).
    let x: Vec<f64> = d
        .iter()
        .zip(&w)
        .map(|(&di, &wi)| (di as f64 / total.max(1) as f64) / (wi as f64 / wsum as f64))
        .collect();
    let j = jain(&x);
    let (lo, hi) = x
        .iter()
        .fold((f64::MAX, 0f64), |(a, b), &v| (a.min(v), b.max(v)));
    let agg = total as f64 / window64.as_secs_f64();
    println!(
        "bench: 64 vGPUs on one parent, blitters backlogged with {} KiB fills for {:.0} s ({:.0} ms of blitter time each): shares / fair share min {lo:.3} max {hi:.3}, Jain {j:.4}; \
         blitter time delivered {:.0} ms/s in all vs {:.0} ms/s for 1 vGPU alone: scaling ratio {:.2} (1.0: no loss from 64); fills {} (min {} per vGPU); a queue found empty {dry} times in the window",
        ROWS * 4,
        window64.as_secs_f64(),
        total as f64 / N as f64 / 1e6,
        agg / 1e6,
        single / 1e6,
        agg / single,
        sent.iter().sum::<u64>() * FILLS,
        sent.iter().min().unwrap() * FILLS,
    );
    // The policy's view (since creation, warm-up included): a refill that
    // found a backlogged vGPU without work would cost it its banked credit.
    let rww: Vec<u64> = ms.iter().map(|m| stat(m, "refills_without_work")).collect();
    println!(
        "scheduler: refills that found a vGPU without work: {} in all, at most {} for one vGPU",
        rww.iter().sum::<u64>(),
        rww.iter().max().copied().unwrap_or(0)
    );
    for (k, m) in ms.iter().enumerate() {
        assert!(d[k] > 0, "vGPU {k} got no blitter time");
        assert_ne!(state(m), "failed", "vGPU {k}");
        let s = stats(m);
        assert_eq!(
            s.get("submissions_accepted").map(|a| a - acc0[k]),
            Some(sent[k]),
            "vGPU {k}: every submission accepted"
        );
        assert_eq!(s.get("submissions_rejected").copied(), Some(0), "vGPU {k}");
    }
    if j < 0.99 || lo < 0.98 || hi > 1.02 {
        // What the driver says of the two ends: `picks` and
        // `refills_without_work` tell a vGPU the policy passed over from one
        // it found idle (before 8c1ff75, vGPUs whose first work met a period
        // refill got 0.53-0.65 of their share, passed over: the policy did
        // not level them).
        for (what, v) in [(lo, "lowest"), (hi, "highest")].map(|(v, w)| (w, v)) {
            let k = x.iter().position(|&s| s == v).unwrap_or(0);
            println!(
                "vGPU {k} ({what} share {v:.3}): {} submissions sent, driver stats {:?}",
                sent[k],
                stats(&ms[k])
            );
        }
    }
    assert!(j >= 0.99, "Jain {j:.4} < 0.99: {x:?}");
    assert!(
        lo >= 0.98 && hi <= 1.02,
        "a share is not within 2% of its fair share: min {lo:.3} max {hi:.3} (a queue found empty {dry} times in the window): {x:?}"
    );
    drop(ds);
    drop(ms);
}

#[test]
#[ignore = "runs inside the VM rig"]
fn scale_64_vgpus_on_one_parent_share_the_blitter_by_weight() {
    scale_body();
}

/// The same run for `cargo xtask bench`.
#[test]
#[ignore = "runs inside the VM rig"]
fn bench_scale_64_vgpus() {
    scale_body();
}

/// With the default module parameters, the command users are shown first
/// works: `gvtctl create --aperture 512M`.
#[test]
#[ignore = "runs inside the VM rig"]
fn scale_default_parameters_offer_a_512m_vgpu() {
    let _m = LoadedWith::new(&[]);
    assert_eq!(
        types_of(PARENT),
        [
            "gvt_rs-GVTsim_128M",
            "gvt_rs-GVTsim_256M",
            "gvt_rs-GVTsim_512M",
            "gvt_rs-GVTsim_64M"
        ],
        "GVT-g's four types"
    );
    let log = kernel_log();
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("gvt-sim parent gvt-sim0: aperture 512 MiB"))
        .unwrap_or_else(|| panic!("no load line for the default parent in:\n{log}"));
    println!("default parent: {}", line.trim());
    let out = Command::new("gvtctl")
        .args(["create", "--aperture", "512M"])
        .output()
        .expect("run gvtctl");
    assert!(
        out.status.success(),
        "gvtctl create --aperture 512M with the default parameters: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    let uuid = stdout.lines().next().unwrap().trim().to_string();
    let m = Mdev::existing(&uuid);
    let ty = fs::read_link(m.sysfs_path().join("mdev_type")).expect("mdev_type");
    assert!(
        ty.ends_with("gvt_rs-GVTsim_512M"),
        "the 512M type: {}",
        ty.display()
    );
    println!(
        "a 512M vGPU: host memory {} KiB",
        stat(&m, "host_memory_bytes") >> 10
    );
    fs::write(m.sysfs_path().join("remove"), "1").expect("remove the 512M vGPU");
}
