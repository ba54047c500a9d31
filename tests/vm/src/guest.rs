//! Helpers for the submission tests: the reference guest driver
//! (`examples/guest-driver`) on a gvt_rs vGPU through VFIO, and the per-vGPU
//! sysfs counters (`gvt/stats`, `gvt/state`) the tests compare with what
//! they submitted.

use std::collections::BTreeMap;
use std::fs;
use std::time::Duration;

use gvt_guest_driver::vfio::{RamConfig, VfioBackend};
use gvt_guest_driver::{BootConfig, Driver};

use crate::gvt;
use crate::Mdev;

/// Generous: the rig is a TCG guest.
pub const TIMEOUT: Duration = Duration::from_secs(60);
/// Every test VM's RAM: 1 MiB of shared anonymous memory at IOVA 1 GiB —
/// the same IOVA for every vGPU (each has its own container), so only the
/// host pages differ, as with VMs.
pub const RAM: RamConfig = RamConfig {
    iova: 1 << 30,
    pages: 256,
    shared: true,
};

/// A vGPU of the `mb` MiB type.
pub fn vgpu(mb: u64) -> Mdev {
    Mdev::create(gvt::PARENT, &gvt::type_mb(mb)).expect("create vGPU")
}

/// Open `m` through VFIO with [`RAM`], bind the reference driver, boot it.
pub fn driver(m: &Mdev) -> Driver<VfioBackend> {
    driver_with(m, RAM)
}

/// [`driver`] with another guest RAM.
pub fn driver_with(m: &Mdev, ram: RamConfig) -> Driver<VfioBackend> {
    let bus =
        VfioBackend::open(&m.sysfs_path(), ram).unwrap_or_else(|e| panic!("open {}: {e}", m.uuid));
    let mut d = Driver::probe(bus).unwrap_or_else(|e| panic!("probe {}: {e}", m.uuid));
    d.boot(BootConfig::DEFAULT)
        .unwrap_or_else(|e| panic!("boot {}: {e}", m.uuid));
    d
}

/// `gvt/stats` as `key → value` (lines `key value`; non-numeric values
/// are left out).
pub fn stats(m: &Mdev) -> BTreeMap<String, u64> {
    let p = m.sysfs_path().join("gvt").join("stats");
    let s = fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    s.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

/// The mediator's refusal counters of `gvt/stats` that are not zero
/// (`reject_*`, `mmio_rejected`, `ggtt_rejected`, `ggtt_dropped`): what a
/// well-behaved guest driver must never cause.
pub fn refusals(st: &BTreeMap<String, u64>) -> Vec<(&str, u64)> {
    st.iter()
        .filter(|(k, v)| {
            (k.starts_with("reject_")
                || *k == "mmio_rejected"
                || *k == "ggtt_rejected"
                || *k == "ggtt_dropped")
                && **v != 0
        })
        .map(|(k, v)| (k.as_str(), *v))
        .collect()
}

/// One counter of `gvt/stats`; panics (naming the counters there are) if
/// the driver does not export it.
pub fn stat(m: &Mdev, key: &str) -> u64 {
    let s = stats(m);
    *s.get(key).unwrap_or_else(|| {
        panic!(
            "gvt/stats has no {key}; it has {:?}",
            s.keys().collect::<Vec<_>>()
        )
    })
}

/// `gvt/state` (idle, runnable, running, failed).
pub fn state(m: &Mdev) -> String {
    let p = m.sysfs_path().join("gvt").join("state");
    fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

/// While alive, no other task runs on any CPU — the gvt_rs engine worker
/// included: this thread is pinned to CPU 0 at `SCHED_FIFO`, every other
/// online CPU spins in a `SCHED_FIFO` thread (RT throttling is lifted
/// meanwhile).  A test uses it to do several things as one guest action
/// (e.g. submit, then change its page table and submit again) before the
/// asynchronous engine runs — what the host tests get by running the engine
/// worker only when they choose to.  Keep the section short.
pub struct Exclusive {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    spinners: Vec<std::thread::JoinHandle<()>>,
    rt_runtime: Option<String>,
}

const RT_RUNTIME: &str = "/proc/sys/kernel/sched_rt_runtime_us";

fn pin_to(cpus: &[usize]) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET/sched_* only
    // touch it and the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0,
            "sched_setaffinity {cpus:?}"
        );
    }
}

fn set_policy(policy: i32, prio: i32) {
    let p = libc::sched_param {
        sched_priority: prio,
    };
    // SAFETY: plain syscall on the calling thread.
    let r = unsafe { libc::sched_setscheduler(0, policy, &p) };
    assert_eq!(
        r,
        0,
        "sched_setscheduler({policy}, {prio}): {}",
        std::io::Error::last_os_error()
    );
}

fn online_cpus() -> usize {
    // SAFETY: plain sysconf.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}

impl Exclusive {
    pub fn new() -> Exclusive {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::Arc;
        let rt_runtime = fs::read_to_string(RT_RUNTIME).ok();
        let _ = fs::write(RT_RUNTIME, "-1");
        let n = online_cpus();
        let stop = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicUsize::new(0));
        let spinners = (1..n)
            .map(|cpu| {
                let (stop, started) = (stop.clone(), started.clone());
                std::thread::spawn(move || {
                    pin_to(&[cpu]);
                    set_policy(libc::SCHED_FIFO, 50);
                    started.fetch_add(1, Ordering::SeqCst);
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        while started.load(Ordering::SeqCst) < n - 1 {
            std::thread::sleep(Duration::from_millis(1));
        }
        pin_to(&[0]);
        set_policy(libc::SCHED_FIFO, 50);
        Exclusive {
            stop,
            spinners,
            rt_runtime,
        }
    }
}

impl Default for Exclusive {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Exclusive {
    fn drop(&mut self) {
        set_policy(libc::SCHED_OTHER, 0);
        pin_to(&(0..online_cpus()).collect::<Vec<_>>());
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.spinners.drain(..) {
            let _ = t.join();
        }
        if let Some(v) = self.rt_runtime.take() {
            let _ = fs::write(RT_RUNTIME, v.trim());
        }
    }
}
