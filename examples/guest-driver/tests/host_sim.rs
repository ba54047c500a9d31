//! The reference driver on the host, against gvt-core's mediated GPU with
//! fake memories (the same facade the kernel glue calls): the backend runs
//! the engine worker whenever the driver waits, as the kernel's workqueue
//! would run meanwhile, and hands the driver RAM pages in a scattered order
//! (as the sysfs backend's locked pages are).

use std::cell::Cell;
use std::time::Duration;

use gvt_core::backend::Pte;
use gvt_core::cfgspace::off as cfgoff;
use gvt_core::cmd::encode::{color_blt, sdi};
use gvt_core::cmd::{Space, MI_USER_INTERRUPT};
use gvt_core::fakes::{FakeGuestMemory, FakeHostMemory, FakeHostPages};
use gvt_core::gpu::{Gpu, GpuConfig, WorkBudget, SHADOW_PAGES_PER_VGPU};
use gvt_core::mem::{GmRange, HostPage, PAGE_SIZE};
use gvt_core::partition::Partition;
use gvt_core::services::{Clock, CpuMappings, Held, HostMemory};
use gvt_core::vgpu::{storage_sizes, Env, Vgpu, VgpuParams, VgpuStorage};
use gvt_guest_driver::driver::{error_irq, user_irq};
use gvt_guest_driver::jobs::{self, Ppgtt};
use gvt_guest_driver::{
    selftest, Backend, BootConfig, Driver, Error, GuestBus, IrqWait, PteWidth, BCS, RCS,
};

const MIB: u64 = 1 << 20;
const GM: u64 = 32 * MIB;
const RAM_GFN: u64 = 0x1000;
const RAM_PAGES: u64 = 1024;
const PPGTT_POOL: u64 = 2400;
const HOST_PAGES: u64 = 2600;
const T: Duration = Duration::from_secs(5);

struct TestClock(Cell<u64>);
impl Clock for TestClock {
    fn now_ns(&self) -> u64 {
        let t = self.0.get() + 10_000;
        self.0.set(t);
        t
    }
}

struct NoCpu;
impl CpuMappings for NoCpu {
    fn invalidate(&mut self, _page: u64) {}
}

/// One vGPU on its own simulated GPU, as a [`Backend`].
struct Sim {
    gpu: Gpu<2>,
    phys: Vec<Pte>,
    host: FakeHostMemory,
    pages: FakeHostPages,
    clock: TestClock,
    vgpu: Option<Vgpu<8>>,
    vregs: Vec<u32>,
    gg: Vec<u64>,
    gs: Vec<u64>,
    snap: Vec<u64>,
    ram: FakeGuestMemory,
    msi: u64,
    /// Run the engines when the driver waits (false: a wedged worker).
    worker: bool,
}

macro_rules! with_vgpu {
    ($s:expr, |$v:ident, $env:ident| $body:expr) => {{
        let Sim {
            gpu,
            phys,
            host,
            pages,
            clock,
            vgpu,
            vregs,
            gg,
            gs,
            snap,
            ram,
            ..
        } = &mut *$s;
        let st = VgpuStorage {
            vregs,
            ggtt_guest: gg,
            ggtt_shadow: gs,
            ppgtt_snap: snap,
        };
        let (mut lock, mut cpu) = (Held::new(gpu, phys), NoCpu);
        let mut $env = Env::new(st, &mut lock, host, pages, &*clock, ram, &mut cpu);
        let $v = vgpu.as_mut().expect("vGPU");
        $body
    }};
}

impl Sim {
    fn new() -> Sim {
        let mut phys = vec![Pte::default(); (GM / PAGE_SIZE) as usize];
        let mut cfg = GpuConfig::DEFAULT;
        cfg.sched.hang_timeout_ns = 20_000_000;
        let gpu = Gpu::<2>::new(cfg, &mut phys).expect("gpu");
        let part = Partition {
            aperture: GmRange::new(MIB, MIB),
            high: GmRange::new(9 * MIB, MIB),
            fence_base: 4,
            fence_count: 4,
        };
        let (nv, ng, ns) = storage_sizes::<8>(&part);
        let mut s = Sim {
            gpu,
            phys,
            host: FakeHostMemory::new(HOST_PAGES),
            pages: FakeHostPages::new(PPGTT_POOL, HOST_PAGES - PPGTT_POOL),
            clock: TestClock(Cell::new(0)),
            vgpu: None,
            vregs: vec![0; nv],
            gg: vec![0; ng],
            gs: vec![0; ng],
            snap: vec![0; ns],
            ram: FakeGuestMemory::new(RAM_GFN, RAM_PAGES, 0),
            msi: 0,
            worker: true,
        };
        let shadow: Vec<HostPage> = (0..SHADOW_PAGES_PER_VGPU as u64)
            .map(|i| HostPage(2100 + i))
            .collect();
        let params = VgpuParams {
            id: 1,
            part,
            aperture_size: 4 * MIB,
            weight: 1,
            scratch: HostPage(2048),
            shadow_pages: &shadow,
        };
        let Sim {
            gpu,
            phys,
            host,
            pages,
            clock,
            vregs,
            gg,
            gs,
            snap,
            ram,
            ..
        } = &mut s;
        let st = VgpuStorage {
            vregs,
            ggtt_guest: gg,
            ggtt_shadow: gs,
            ppgtt_snap: snap,
        };
        let (mut lock, mut cpu) = (Held::new(gpu, phys), NoCpu);
        let mut env = Env::new(st, &mut lock, host, pages, &*clock, ram, &mut cpu);
        s.vgpu = Some(Vgpu::create(params, &mut env).expect("vgpu"));
        s
    }
}

impl GuestBus for Sim {
    fn bar0_read(&mut self, offset: u64, buf: &mut [u8]) -> bool {
        with_vgpu!(self, |v, env| v.bar0_read(&mut env, offset, buf).is_ok())
    }
    fn bar0_write(&mut self, offset: u64, data: &[u8]) -> bool {
        let r = with_vgpu!(self, |v, env| v
            .bar0_write(&mut env, offset, data)
            .map(|w| v.signal(w.delivery)));
        match r {
            Ok(s) => {
                self.msi += u64::from(s.msi);
                true
            }
            Err(_) => false,
        }
    }
    fn aperture_write(&mut self, offset: u64, data: &[u8]) -> bool {
        let p = with_vgpu!(self, |v, env| v
            .aperture_fault(&mut env.st, offset & !(PAGE_SIZE - 1)));
        p.is_ok_and(|p| {
            self.host
                .write(p, (offset % PAGE_SIZE) as usize, data)
                .is_ok()
        })
    }
    fn aperture_read(&mut self, offset: u64, buf: &mut [u8]) -> bool {
        let p = with_vgpu!(self, |v, env| v
            .aperture_fault(&mut env.st, offset & !(PAGE_SIZE - 1)));
        p.is_ok_and(|p| {
            self.host
                .read(p, (offset % PAGE_SIZE) as usize, buf)
                .is_ok()
        })
    }
    fn ram_write(&mut self, gpa: u64, data: &[u8]) -> bool {
        self.ram
            .backing(gpa >> 12)
            .is_some_and(|p| self.host.write(p, (gpa % PAGE_SIZE) as usize, data).is_ok())
    }
    fn ram_read(&mut self, gpa: u64, buf: &mut [u8]) -> bool {
        self.ram
            .backing(gpa >> 12)
            .is_some_and(|p| self.host.read(p, (gpa % PAGE_SIZE) as usize, buf).is_ok())
    }
}

impl Backend for Sim {
    fn describe(&self) -> String {
        "simulated vGPU".into()
    }
    /// Scattered: frame i*7 mod n (7 is prime to 1024).
    fn ram_pages(&self) -> Vec<u64> {
        (0..RAM_PAGES)
            .map(|i| (RAM_GFN + (i * 7) % RAM_PAGES) << 12)
            .collect()
    }
    fn enable(&mut self) -> gvt_guest_driver::Result<()> {
        let v = self.vgpu.as_mut().expect("vgpu");
        v.cfg_write(cfgoff::MSI_CTRL as u32, &1u16.to_le_bytes())
            .expect("MSI enable");
        v.cfg_write(cfgoff::COMMAND as u32, &6u16.to_le_bytes())
            .expect("command");
        Ok(())
    }
    fn wait_irq(&mut self, _timeout: Duration) -> gvt_guest_driver::Result<IrqWait> {
        if self.worker {
            let rep = self.gpu.run_engines(
                &mut self.phys,
                &mut self.host,
                &self.clock,
                WorkBudget::rounds(200),
            );
            for (_, d) in rep.pending() {
                let s = self.vgpu.as_mut().expect("vgpu").signal(d);
                self.msi += u64::from(s.msi);
            }
        }
        let n = std::mem::take(&mut self.msi);
        Ok(if n > 0 {
            IrqWait::Fired(n)
        } else {
            IrqWait::TimedOut
        })
    }
    fn take_error(&mut self) -> Option<String> {
        None
    }
}

fn booted(cfg: BootConfig) -> Driver<Sim> {
    let mut d = Driver::probe(Sim::new()).expect("probe");
    d.boot(cfg).expect("boot");
    d
}

#[test]
fn probe_reads_the_slices_from_pvinfo() {
    let d = Driver::probe(Sim::new()).expect("probe");
    assert_eq!(
        (d.aperture(), d.high(), d.fences(), d.vgt_id()),
        (GmRange::new(MIB, MIB), GmRange::new(9 * MIB, MIB), 4, 1)
    );
}

#[test]
fn selftest_passes_with_scattered_ram_and_counts_msis() {
    let mut d = booted(BootConfig::DEFAULT);
    let irqs = selftest(&mut d, 7, 4, T).expect("selftest");
    assert!(irqs >= 4, "an MSI per round at least ({irqs})");
    // The pixels are in the RAM page the driver chose, which is not the
    // one after its predecessor: the mapping really is page by page.
    let s = d.layout().surfaces();
    let (a, b) = (d.gpa_of(s).unwrap(), d.gpa_of(s + PAGE_SIZE).unwrap());
    assert_ne!(b, a + PAGE_SIZE);
    assert_eq!(d.read_pte(s / PAGE_SIZE).unwrap(), a | 1);
}

#[test]
fn thirty_two_bit_pte_writes_work_too() {
    let mut d = booted(BootConfig {
        width: PteWidth::Halves,
        ..BootConfig::DEFAULT
    });
    selftest(&mut d, 3, 1, T).expect("selftest");
}

#[test]
fn the_driver_keeps_to_its_slices() {
    let mut d = booted(BootConfig::DEFAULT);
    let outside = d.aperture().end();
    assert!(matches!(d.map(outside, 1), Err(Error::NotMine { .. })));
    assert!(matches!(d.write(outside, &[1]), Err(Error::NotMine { .. })));
    assert!(matches!(d.read(0), Err(Error::NotMine { .. })));
    assert!(matches!(
        d.map(d.aperture().base + 1, 1),
        Err(Error::BadInput(_))
    ));
    assert!(matches!(
        d.map(d.aperture().base, u64::MAX),
        Err(Error::BadInput(_))
    ));
    let end = d.high().end() - PAGE_SIZE;
    assert!(
        matches!(d.read(end), Err(Error::NotMapped { .. })),
        "inside the slice, not backed"
    );
    assert!(matches!(d.submit(RCS, &[]), Err(Error::BadInput(_))));
    assert!(matches!(
        d.submit(RCS, &vec![0; 8192]),
        Err(Error::BadInput(_))
    ));
}

#[test]
fn a_rejected_submission_is_an_engine_error_and_the_driver_recovers() {
    let mut d = booted(BootConfig::DEFAULT);
    // A store outside its graphics memory (the auditor refuses it).
    d.submit(RCS, &sdi(Space::Ggtt, 0, 0x666)).unwrap();
    match d.wait_idle(RCS, T) {
        Err(Error::EngineError { engine, iir, eir }) => {
            assert_eq!(engine, RCS);
            assert_ne!(iir & error_irq(RCS), 0);
            assert_ne!(eir, 0);
        }
        other => panic!("expected an engine error, got {other:?}"),
    }
    // A blit crossing the end of its aperture slice.
    let blt = color_blt(d.aperture().end() - 512, 512, (0, 0, 64, 2), 1);
    d.submit(BCS, &blt).unwrap();
    assert!(matches!(
        d.wait_idle(BCS, T),
        Err(Error::EngineError { engine: BCS, .. })
    ));
    for e in [RCS, BCS] {
        d.recover(e).unwrap();
    }
    assert_eq!(d.iir().unwrap() & (error_irq(RCS) | error_irq(BCS)), 0);
    selftest(&mut d, 9, 1, T).expect("works again");
}

#[test]
fn ppgtt_store_lands_in_the_data_page() {
    let mut d = booted(BootConfig::DEFAULT);
    let p = Ppgtt::setup(&mut d).unwrap();
    d.submit(
        RCS,
        &[&sdi(Space::Ppgtt, 0x40, 0xABCD)[..], &[MI_USER_INTERRUPT]].concat(),
    )
    .unwrap();
    d.wait_all(user_irq(RCS), T).unwrap();
    d.wait_idle(RCS, T).unwrap();
    assert_eq!(d.read_phys(p.data_gpa + 0x40).unwrap(), 0xABCD);
    // Unmapped in the guest's table: the next submission is refused at audit.
    p.set_present(&mut d, false).unwrap();
    d.submit(RCS, &sdi(Space::Ppgtt, 0x80, 1)).unwrap();
    assert!(matches!(
        d.wait_idle(RCS, T),
        Err(Error::EngineError { engine: RCS, .. })
    ));
}

#[test]
fn a_wedged_worker_is_a_timeout_not_a_hang_of_the_driver() {
    let mut d = booted(BootConfig::DEFAULT);
    d.bus_mut().worker = false;
    d.submit(RCS, &jobs::store_job(&d, 5)).unwrap();
    assert!(matches!(
        d.wait_idle(RCS, Duration::from_millis(100)),
        Err(Error::Timeout { .. })
    ));
}
