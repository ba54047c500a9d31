//! End-to-end host tests of the mediated GPU (paper §3 as a whole; §3.5's
//! isolation and DoS claims): two vGPUs on one gvt-sim, each driven only the
//! way a VM can drive it — BAR0 accesses, CPU writes through its aperture
//! and to its RAM — by the reference guest driver ([`gvt_guest`]), with
//! the engines run only the way the kernel's worker runs them
//! ([`Gpu::run_engines`]).  The harness below ([`World`], [`Bus`]) is the
//! host-side twin of the kernel glue: every guest access goes through the
//! facade ([`Vgpu`]) exactly as the VFIO callbacks do, so the kernel VM
//! tests can mirror these scenarios one for one.

use core::cell::Cell;
use std::vec;
use std::vec::Vec;

use gvt_core::backend::{EngineId, Pte};
use gvt_core::cfgspace::off as cfgoff;
use gvt_core::cmd::encode::*;
use gvt_core::cmd::{Reject, Space, MI_BATCH_BUFFER_END, MI_NOOP, MI_USER_INTERRUPT};
use gvt_core::fakes::{CheckedLock, FakeGuestMemory, FakeHostMemory, FakeHostPages};
use gvt_core::ggtt::{AuditReject, PteWrite};
use gvt_core::gpu::{
    EngineReport, Gpu, GpuConfig, SubmitOutcome, SubmitReject, WorkBudget, SHADOW_PAGES_PER_VGPU,
};
use gvt_core::irq;
use gvt_core::mem::{GmRange, HostPage, PAGE_SIZE};
use gvt_core::partition::Partition;
use gvt_core::services::{Clock, CpuMappings, HostMemory};
use gvt_core::stats::VgpuState;
use gvt_core::vgpu::{storage_sizes, Bar0Write, Env, Signal, Vgpu, VgpuParams, VgpuStorage};
use gvt_guest::{GuestBus, GuestDriver, PteWidth};

const NV: usize = 4;
const TABLES: usize = 8;
const MIB: u64 = 1 << 20;
const GM: u64 = 32 * MIB;
const APERTURE: u64 = 4 * MIB;
/// Both VMs' RAM starts at the same guest frame: only the host pages differ.
const RAM_GFN: u64 = 0x1000;
const RAM_PAGES: u64 = 1024;
const PPGTT_POOL: u64 = 2400;
const HOST_PAGES: u64 = 2600;

const RCS: EngineId = EngineId::Rcs;
const BCS: EngineId = EngineId::Bcs;

fn part(k: usize) -> Partition {
    let k = k as u64;
    Partition {
        aperture: GmRange::new(k * MIB, MIB),
        high: GmRange::new((8 + k) * MIB, MIB),
        fence_base: 4 * k as u32,
        fence_count: 4,
    }
}

/// Simulated time: every reading advances it a little.
struct TestClock(Cell<u64>);
impl Clock for TestClock {
    fn now_ns(&self) -> u64 {
        let t = self.0.get() + 10_000;
        self.0.set(t);
        t
    }
}

#[derive(Default)]
struct Cpu {
    invalidated: Vec<u64>,
}
impl CpuMappings for Cpu {
    fn invalidate(&mut self, page: u64) {
        self.invalidated.push(page);
    }
}

/// One VM: its vGPU, the storage the kernel would vmalloc, its RAM.
struct Vm {
    vgpu: Option<Vgpu<TABLES>>,
    vregs: Vec<u32>,
    gg: Vec<u64>,
    gs: Vec<u64>,
    snap: Vec<u64>,
    ram: FakeGuestMemory,
    cpu: Cpu,
    scratch: HostPage,
    signals: Vec<Signal>,
    last: Option<Bar0Write>,
}

/// The services of the harness's calls: the GPU lock checked as the kernel
/// takes it, fake host and guest memory, the test clock, a recording CPU.
type Svc<'l> = (
    CheckedLock<'l, Gpu<NV>>,
    FakeHostMemory,
    FakeHostPages,
    TestClock,
    FakeGuestMemory,
    Cpu,
);

struct World {
    gpu: Gpu<NV>,
    phys: Vec<Pte>,
    host: FakeHostMemory,
    pages: FakeHostPages,
    clock: TestClock,
    vms: Vec<Vm>,
}

fn test_config() -> GpuConfig {
    let mut c = GpuConfig::DEFAULT;
    c.limits.max_commands = 512;
    c.sched.max_pending_cmds = 4096;
    c.sched.hang_timeout_ns = 20_000_000;
    c.sched.hang_limit = 2;
    c
}

impl World {
    fn new(cfg: GpuConfig) -> World {
        let mut phys = vec![Pte::default(); (GM / PAGE_SIZE) as usize];
        let gpu = Gpu::<NV>::new(cfg, &mut phys).expect("gpu");
        let mut w = World {
            gpu,
            phys,
            host: FakeHostMemory::new(HOST_PAGES),
            pages: FakeHostPages::new(PPGTT_POOL, HOST_PAGES - PPGTT_POOL),
            clock: TestClock(Cell::new(0)),
            vms: Vec::new(),
        };
        for k in 0..2 {
            let p = part(k);
            let (nv, ng, ns) = storage_sizes::<TABLES>(&p);
            let mut vm = Vm {
                vgpu: None,
                vregs: vec![0; nv],
                gg: vec![0; ng],
                gs: vec![0; ng],
                snap: vec![0; ns],
                ram: FakeGuestMemory::new(RAM_GFN, RAM_PAGES, RAM_PAGES * k as u64),
                cpu: Cpu::default(),
                scratch: HostPage(2048 + k as u64),
                signals: Vec::new(),
                last: None,
            };
            let shadow: Vec<HostPage> = (0..SHADOW_PAGES_PER_VGPU as u64)
                .map(|i| HostPage(2100 + 128 * k as u64 + i))
                .collect();
            let params = VgpuParams {
                id: k as u32 + 1,
                part: p,
                aperture_size: APERTURE,
                weight: 1,
                scratch: vm.scratch,
                shadow_pages: &shadow,
            };
            let Vm {
                vregs,
                gg,
                gs,
                snap,
                ram,
                cpu,
                ..
            } = &mut vm;
            let st = VgpuStorage {
                vregs,
                ggtt_guest: gg,
                ggtt_shadow: gs,
                ppgtt_snap: snap,
            };
            let mut lock = CheckedLock::new(&mut w.gpu, &mut w.phys);
            let mut env = Env::new(st, &mut lock, &mut w.host, &mut w.pages, &w.clock, ram, cpu);
            vm.vgpu = Some(Vgpu::create(params, &mut env).expect("vgpu"));
            w.vms.push(vm);
        }
        w
    }

    fn bus(&mut self, k: usize) -> Bus<'_> {
        Bus { w: self, k }
    }

    fn vgpu(&self, k: usize) -> &Vgpu<TABLES> {
        self.vms[k].vgpu.as_ref().expect("live vGPU")
    }

    /// The engine worker, then the signals it asks for.
    fn run(&mut self, rounds: u32) -> EngineReport<NV> {
        let rep = self.gpu.run_engines(
            &mut self.phys,
            &mut self.host,
            &self.clock,
            WorkBudget::rounds(rounds),
        );
        for (slot, d) in rep.pending() {
            for vm in self.vms.iter_mut() {
                if let Some(v) = vm.vgpu.as_mut().filter(|v| v.slot() == slot) {
                    let s = v.signal(d);
                    vm.signals.push(s);
                }
            }
        }
        rep
    }

    fn cfg_write(&mut self, k: usize, off: usize, data: &[u8]) {
        self.vms[k]
            .vgpu
            .as_mut()
            .expect("vgpu")
            .cfg_write(off as u32, data)
            .expect("cfg write");
    }

    /// `f` with VM `k`'s vGPU and a call's [`Env`] (the GPU lock checked).
    fn with_vm<R>(
        &mut self,
        k: usize,
        f: impl FnOnce(&mut Vgpu<TABLES>, &mut Env<'_, Svc<'_>>) -> R,
    ) -> R {
        let World {
            gpu,
            phys,
            host,
            pages,
            clock,
            vms,
        } = self;
        let Vm {
            vgpu,
            vregs,
            gg,
            gs,
            snap,
            ram,
            cpu,
            ..
        } = &mut vms[k];
        let st = VgpuStorage {
            vregs,
            ggtt_guest: gg,
            ggtt_shadow: gs,
            ppgtt_snap: snap,
        };
        let mut lock = CheckedLock::new(gpu, phys);
        f(
            vgpu.as_mut().expect("vgpu"),
            &mut Env::new(st, &mut lock, host, pages, clock, ram, cpu),
        )
    }

    fn destroy(&mut self, k: usize) {
        let World {
            gpu,
            phys,
            host,
            pages,
            clock,
            vms,
        } = self;
        let Vm {
            vgpu,
            vregs,
            gg,
            gs,
            snap,
            ram,
            cpu,
            ..
        } = &mut vms[k];
        let st = VgpuStorage {
            vregs,
            ggtt_guest: gg,
            ggtt_shadow: gs,
            ppgtt_snap: snap,
        };
        let mut lock = CheckedLock::new(gpu, phys);
        vgpu.take()
            .expect("vgpu")
            .destroy(&mut Env::new(st, &mut lock, host, pages, clock, ram, cpu));
    }

    /// The host page a guest's RAM frame lives in.
    fn ram_page(&self, k: usize, gpa: u64) -> HostPage {
        self.vms[k].ram.backing(gpa >> 12).expect("RAM")
    }
}

/// What the VFIO glue does for one VM's accesses.
struct Bus<'w> {
    w: &'w mut World,
    k: usize,
}

impl GuestBus for Bus<'_> {
    fn bar0_read(&mut self, offset: u64, buf: &mut [u8]) -> bool {
        self.w
            .with_vm(self.k, |v, env| v.bar0_read(env, offset, buf).is_ok())
    }
    fn bar0_write(&mut self, offset: u64, data: &[u8]) -> bool {
        let k = self.k;
        let r = self.w.with_vm(k, |v, env| {
            let r = v.bar0_write(env, offset, data);
            let sig = r.as_ref().ok().map(|r| v.signal(r.delivery));
            (r, sig)
        });
        let vm = &mut self.w.vms[k];
        if let Some(s) = r.1.filter(|s| s.msi || s.intx.is_some()) {
            vm.signals.push(s);
        }
        vm.last = r.0.ok();
        vm.last.is_some()
    }
    fn aperture_write(&mut self, offset: u64, data: &[u8]) -> bool {
        let page = self.w.with_vm(self.k, |v, env| {
            v.aperture_fault(&mut env.st, offset & !(PAGE_SIZE - 1))
        });
        page.is_ok_and(|p| {
            self.w
                .host
                .write(p, (offset % PAGE_SIZE) as usize, data)
                .is_ok()
        })
    }
    fn aperture_read(&mut self, offset: u64, buf: &mut [u8]) -> bool {
        let page = self.w.with_vm(self.k, |v, env| {
            v.aperture_fault(&mut env.st, offset & !(PAGE_SIZE - 1))
        });
        page.is_ok_and(|p| {
            self.w
                .host
                .read(p, (offset % PAGE_SIZE) as usize, buf)
                .is_ok()
        })
    }
    fn ram_write(&mut self, gpa: u64, data: &[u8]) -> bool {
        let Some(p) = self.w.vms[self.k].ram.backing(gpa >> 12) else {
            return false;
        };
        self.w
            .host
            .write(p, (gpa % PAGE_SIZE) as usize, data)
            .is_ok()
    }
    fn ram_read(&mut self, gpa: u64, buf: &mut [u8]) -> bool {
        let Some(p) = self.w.vms[self.k].ram.backing(gpa >> 12) else {
            return false;
        };
        self.w.host.read(p, (gpa % PAGE_SIZE) as usize, buf).is_ok()
    }
}

impl Bus<'_> {
    fn last(&self) -> Bar0Write {
        self.w.vms[self.k].last.expect("a BAR0 write happened")
    }
}

/// Whether the last BAR0 write was a submission that was accepted.
fn accepted(b: &Bus<'_>) -> bool {
    matches!(b.last().submit(), Some(SubmitOutcome::Accepted { .. }))
}

const ERRORS: u32 = irq::RCS_ERROR_INTERRUPT | irq::BCS_ERROR_INTERRUPT;
const USERS: u32 = irq::RCS_USER_INTERRUPT | irq::BCS_USER_INTERRUPT;

/// What every test guest does at boot: bind, map its whole aperture slice to
/// RAM frames `RAM_GFN..` and its high slice to the next ones, program a
/// 4-page ring per engine at the start of its aperture, enable interrupts.
/// VM 0 uses 8-byte PTE writes and MSI, VM 1 4-byte halves and INTx.
fn boot(w: &mut World, k: usize) -> GuestDriver {
    if k == 0 {
        w.cfg_write(0, cfgoff::MSI_CTRL, &1u16.to_le_bytes());
    }
    w.cfg_write(k, cfgoff::COMMAND, &6u16.to_le_bytes());
    let width = if k == 0 {
        PteWidth::Qword
    } else {
        PteWidth::Halves
    };
    let mut b = w.bus(k);
    let mut d = GuestDriver::probe(&mut b).expect("probe");
    assert_eq!(d.aperture, part(k).aperture);
    assert_eq!(d.high, part(k).high);
    let ap = d.aperture;
    let hi = d.high;
    d.map(&mut b, ap.base, RAM_GFN, ap.size / PAGE_SIZE, width)
        .expect("map aperture");
    d.map(
        &mut b,
        hi.base,
        RAM_GFN + ap.size / PAGE_SIZE,
        hi.size / PAGE_SIZE,
        width,
    )
    .expect("map high");
    d.init_ring(&mut b, RCS, ap.base, 4).expect("rcs ring");
    d.init_ring(&mut b, BCS, ap.base + 0x8000, 4)
        .expect("bcs ring");
    d.enable_irqs(&mut b, USERS | ERRORS).expect("irqs");
    d
}

fn run_idle(w: &mut World) -> EngineReport<NV> {
    let r = w.run(1000);
    assert!(r.idle, "engines drained");
    r
}

const PITCH: u32 = 512; // 128 pixels of 32 bpp

/// A blitter job: fill 64x16 at the start of high GM, copy a 32x8 part of
/// it into the aperture, post-sync store, user interrupt.
fn blit_job(d: &GuestDriver, color: u32, marker: u32) -> Vec<u32> {
    let fill = color_blt(d.high.base, PITCH, (0, 0, 64, 16), color);
    let copy = src_copy_blt(
        d.aperture.base + 0x40000,
        PITCH,
        (0, 0, 32, 8),
        d.high.base,
        PITCH,
        (8, 4),
    );
    let store = flush_dw_store(Space::Ggtt, d.aperture.base + 0x50000, marker, false);
    [&fill[..], &copy[..], &store[..], &[MI_USER_INTERRUPT]].concat()
}

fn check_blit(w: &mut World, k: usize, d: &GuestDriver, color: u32, marker: u32) {
    let mut b = w.bus(k);
    for y in 0..20u64 {
        for x in 0..66u64 {
            let v = d
                .read_gm(&mut b, d.high.base + y * u64::from(PITCH) + 4 * x)
                .unwrap();
            let inside = x < 64 && y < 16;
            assert_eq!(v, if inside { color } else { 0 }, "vm{k} fill ({x},{y})");
        }
    }
    for y in 0..9u64 {
        for x in 0..33u64 {
            let v = d
                .read_gm(
                    &mut b,
                    d.aperture.base + 0x40000 + y * u64::from(PITCH) + 4 * x,
                )
                .unwrap();
            assert_eq!(
                v,
                if x < 32 && y < 8 { color } else { 0 },
                "vm{k} copy ({x},{y})"
            );
        }
    }
    assert_eq!(
        d.read_gm(&mut b, d.aperture.base + 0x50000).unwrap(),
        marker,
        "vm{k} post-sync store"
    );
}

#[test]
#[allow(clippy::needless_range_loop)]
fn two_guests_fill_copy_store_and_get_their_interrupts() {
    let mut w = World::new(test_config());
    let mut d = [boot(&mut w, 0), boot(&mut w, 1)];
    for k in 0..2 {
        let ap = d[k].aperture.base;
        let job = blit_job(&d[k], 0x00AA_0000 | k as u32, 0xD0_0E00 + k as u32);
        let mut b = w.bus(k);
        d[k].run(&mut b, BCS, &job).unwrap();
        assert!(accepted(&b), "accepted");
        d[k].run(
            &mut b,
            RCS,
            &[
                &sdi(Space::Ggtt, ap + 0x50010, 0x5000 + k as u32)[..],
                &[MI_USER_INTERRUPT],
            ]
            .concat(),
        )
        .unwrap();
        assert!(accepted(&b), "accepted");
        assert_eq!(
            w.vms[k].signals.len(),
            0,
            "nothing signalled before the engines ran"
        );
    }
    let rep = run_idle(&mut w);
    assert_eq!(rep.hangs, 0);
    for k in 0..2 {
        check_blit(
            &mut w,
            k,
            &d[k],
            0x00AA_0000 | k as u32,
            0xD0_0E00 + k as u32,
        );
        let mut b = w.bus(k);
        assert_eq!(
            d[k].read_gm(&mut b, d[k].aperture.base + 0x50010).unwrap(),
            0x5000 + k as u32
        );
        assert_eq!(
            d[k].iir(&mut b).unwrap(),
            USERS,
            "vm{k}: both user interrupts, no error"
        );
        assert!(
            d[k].idle(&mut b, RCS).unwrap() && d[k].idle(&mut b, BCS).unwrap(),
            "vm{k}: HEAD reached TAIL"
        );
        d[k].ack(&mut b, USERS).unwrap();
        assert_eq!(d[k].iir(&mut b).unwrap(), 0);
    }
    // VM 0 enabled MSI: one MSI per edge; VM 1 uses INTx: the line went up
    // (and the acknowledgement brought it down).
    assert!(
        w.vms[0].signals.iter().any(|s| s.msi) && w.vms[0].signals.iter().all(|s| s.intx.is_none())
    );
    assert_eq!(
        w.vms[1].signals.first(),
        Some(&Signal {
            msi: false,
            intx: Some(true)
        })
    );
    assert_eq!(
        w.vms[1].signals.last(),
        Some(&Signal {
            msi: false,
            intx: Some(false)
        })
    );
    // The pixels are in each VM's own RAM (host pages of that VM only).
    let gpa = d[1].gpa(d[1].high.base).unwrap();
    let p = w.ram_page(1, gpa);
    assert!((RAM_PAGES..2 * RAM_PAGES).contains(&p.0));
    assert_eq!(&w.host.page(p)[..4], &0x00AA_0001u32.to_le_bytes());
}

#[test]
fn guest_ggtt_view_reads_back_what_was_written_and_pins_follow() {
    let mut w = World::new(test_config());
    let d0 = boot(&mut w, 0);
    let d1 = boot(&mut w, 1);
    let idx0 = d0.aperture.base / PAGE_SIZE;
    let idx1 = d1.high.base / PAGE_SIZE + 3;
    let mut b = w.bus(0);
    assert_eq!(
        d0.read_pte(&mut b, idx0 + 2).unwrap(),
        ((RAM_GFN + 2) << 12) | 1
    );
    // Junk bits are kept in the view (hardware ignores them).
    d0.write_pte(
        &mut b,
        idx0 + 2,
        ((RAM_GFN + 2) << 12) | 0xFF0_0000_0000_0FF1,
        PteWidth::Qword,
    )
    .unwrap();
    assert_eq!(
        d0.read_pte(&mut b, idx0 + 2).unwrap(),
        ((RAM_GFN + 2) << 12) | 0xFF0_0000_0000_0FF1
    );
    // Another vGPU's entry reads 0 here.
    assert_eq!(d0.read_pte(&mut b, idx1).unwrap(), 0);
    let mut b = w.bus(1);
    let gfn = RAM_GFN + 256 + 3;
    assert_eq!(
        d1.read_pte(&mut b, idx1).unwrap(),
        (gfn << 12) | 1,
        "halves combine"
    );
    let mut half = [0u8; 4];
    assert!(b.bar0_read(gvt_core::mmio::GGTT_VIEW_BASE + 8 * idx1, &mut half));
    assert_eq!(u32::from_le_bytes(half), ((gfn << 12) | 1) as u32);
    // One pin per mapped entry, per VM.
    for k in 0..2 {
        assert_eq!(w.vms[k].ram.outstanding_pins(), 512);
        assert_eq!(w.vgpu(k).pinned_pages(), 512);
    }
    // The physical entry maps the VM's own host page.
    let p = w.phys[idx1 as usize];
    assert_eq!(Some(p.page()), w.vms[1].ram.backing(gfn));
}

/// Run `attack` as VM 0 while VM 1 does honest blitter work; the attack is
/// refused, VM 0 gets an error interrupt, VM 1's work and memory are intact.
fn attack(
    w: &mut World,
    d0: &mut GuestDriver,
    d1: &mut GuestDriver,
    e: EngineId,
    cmds: &[u32],
    expect: Reject,
) {
    let mut b = w.bus(0);
    d0.run(&mut b, e, cmds).unwrap();
    assert_eq!(
        b.last().submit(),
        Some(SubmitOutcome::Rejected(SubmitReject::Audit(expect)))
    );
    assert_ne!(
        d0.iir(&mut b).unwrap() & irq::GtEvent::Error(e).bit(),
        0,
        "the attacker is told"
    );
    assert_ne!(d0.eir(&mut b, e).unwrap(), 0);
    let mut b = w.bus(1);
    d1.run(&mut b, BCS, &blit_job(d1, 0x0011_2233, 0x7777))
        .unwrap();
    assert!(accepted(&b), "accepted");
    run_idle(w);
    check_blit(w, 1, d1, 0x0011_2233, 0x7777);
    // The attacker's ring is refused until it resets it.
    let mut b = w.bus(0);
    d0.reset_engine(&mut b, e).unwrap();
    let ring = if e == RCS {
        d0.aperture.base
    } else {
        d0.aperture.base + 0x8000
    };
    d0.init_ring(&mut b, e, ring, 4).unwrap();
    d0.ack(&mut b, ERRORS).unwrap();
    d0.run(
        &mut b,
        e,
        &sdi(Space::Ggtt, d0.aperture.base + 0x60000, 0x600D),
    )
    .unwrap();
    assert!(accepted(&b), "accepted");
    run_idle(w);
    let mut b = w.bus(0);
    assert_eq!(
        d0.read_gm(&mut b, d0.aperture.base + 0x60000).unwrap(),
        0x600D,
        "the attacker recovers"
    );
    assert_eq!(d0.eir(&mut b, e).unwrap(), 0, "GDRST cleared EIR");
}

/// With the default configuration a stream longer than the flow-control
/// bound is stopped by the auditor (a runaway, nothing shadowed), and the
/// longest admissible stream runs.
#[test]
fn default_limits_refuse_unadmittable_streams_in_the_auditor() {
    let cfg = GpuConfig::DEFAULT;
    let mut w = World::new(cfg);
    let mut d0 = boot(&mut w, 0);
    let max = cfg.sched.max_pending_cmds as usize;
    let (long, fits) = (d0.high.base + 0x4000, d0.high.base + 0x8000);
    for (at, noops) in [(long, max), (fits, max - 8)] {
        let mut cmds = vec![MI_NOOP; noops];
        cmds.push(MI_BATCH_BUFFER_END);
        let mut b = w.bus(0);
        d0.write_gm(&mut b, at, &cmds).unwrap();
    }
    let mut b = w.bus(0);
    d0.run(&mut b, BCS, &bb_start(Space::Ggtt, long, false))
        .unwrap();
    assert_eq!(
        b.last().submit(),
        Some(SubmitOutcome::Rejected(SubmitReject::Audit(
            Reject::Runaway
        )))
    );
    d0.reset_engine(&mut b, BCS).unwrap();
    d0.init_ring(&mut b, BCS, d0.aperture.base + 0x8000, 4)
        .unwrap();
    d0.ack(&mut b, ERRORS).unwrap();
    d0.run(&mut b, BCS, &bb_start(Space::Ggtt, fits, false))
        .unwrap();
    assert!(accepted(&b), "the longest admissible stream is accepted");
    run_idle(&mut w);
    let st = w.gpu.slot_stats(w.vgpu(0).slot()).unwrap();
    assert_eq!((st.rejected.total(), st.accepted), (1, 1));
}

#[test]
fn every_command_attack_is_rejected_and_the_neighbour_is_unaffected() {
    let mut w = World::new(test_config());
    let mut d0 = boot(&mut w, 0);
    let mut d1 = boot(&mut w, 1);
    let victim = d1.aperture.base + 0x50000;
    // The victim's data that the attacks aim at.
    let mut b = w.bus(1);
    d1.write_gm(&mut b, victim, &[0x5AFE]).unwrap();

    // A store into the neighbour's graphics memory.
    attack(
        &mut w,
        &mut d0,
        &mut d1,
        RCS,
        &sdi(Space::Ggtt, victim, 0x666),
        Reject::AddressNotAllowed,
    );
    // A blit reaching past its own slice into the neighbour's.
    let blt = color_blt(
        d0.aperture.base + MIB - PITCH as u64,
        PITCH,
        (0, 0, 64, 2),
        0x666,
    );
    attack(
        &mut w,
        &mut d0,
        &mut d1,
        BCS,
        &blt,
        Reject::AddressNotAllowed,
    );
    // Privileged register: reset the whole GPU from the command stream.
    attack(
        &mut w,
        &mut d0,
        &mut d1,
        RCS,
        &lri(gvt_core::regs::GDRST, 1),
        Reject::RegisterNotAllowed,
    );
    // A batch that chains to itself forever.
    let bb = d0.high.base + 0x1000;
    let mut b = w.bus(0);
    d0.write_gm(
        &mut b,
        bb,
        &[
            &sdi(Space::Ggtt, d0.high.base, 1)[..],
            &bb_start(Space::Ggtt, bb, false),
        ]
        .concat(),
    )
    .unwrap();
    attack(
        &mut w,
        &mut d0,
        &mut d1,
        RCS,
        &bb_start(Space::Ggtt, bb, false),
        Reject::ChainLoop,
    );
    // A runaway stream: more commands than one submission may hold.
    let long = d0.high.base + 0x4000;
    let mut noops = vec![MI_NOOP; 600];
    noops.push(MI_BATCH_BUFFER_END);
    let mut b = w.bus(0);
    d0.write_gm(&mut b, long, &noops).unwrap();
    attack(
        &mut w,
        &mut d0,
        &mut d1,
        BCS,
        &bb_start(Space::Ggtt, long, false),
        Reject::Runaway,
    );
    // A batch buffer in the neighbour's memory.
    let theirs = bb_start(Space::Ggtt, d1.high.base, false);
    attack(
        &mut w,
        &mut d0,
        &mut d1,
        BCS,
        &theirs,
        Reject::AddressNotAllowed,
    );

    let mut b = w.bus(1);
    assert_eq!(
        d1.read_gm(&mut b, victim).unwrap(),
        0x7777,
        "only the victim's own post-sync store landed"
    );
    let st = w.gpu.slot_stats(w.vgpu(0).slot()).unwrap();
    assert_eq!(st.rejected.total(), 6);
    assert_eq!(
        w.gpu.slot_stats(w.vgpu(1).slot()).unwrap().rejected.total(),
        0
    );
}

#[test]
fn pte_attacks_are_refused() {
    let mut w = World::new(test_config());
    let d0 = boot(&mut w, 0);
    let mut d1 = boot(&mut w, 1);
    let theirs = d1.aperture.base / PAGE_SIZE + 5;
    let before = w.phys[theirs as usize];
    // A PTE into the neighbour's slice: dropped, nothing physical changes.
    let mut b = w.bus(0);
    d0.write_pte(&mut b, theirs, (RAM_GFN << 12) | 1, PteWidth::Qword)
        .unwrap();
    assert_eq!(b.last().pte(), Some(PteWrite::Dropped { log: true }));
    assert_eq!(w.phys[theirs as usize], before);
    // A PTE naming a frame that is not the guest's RAM: the entry maps the
    // vGPU's scratch page, never what the frame number would name.
    let mine = d0.aperture.base / PAGE_SIZE + 7;
    let mut b = w.bus(0);
    d0.write_pte(
        &mut b,
        mine,
        ((RAM_GFN + RAM_PAGES + 5) << 12) | 1,
        PteWidth::Qword,
    )
    .unwrap();
    assert_eq!(
        b.last().pte(),
        Some(PteWrite::Rejected(AuditReject::FrameNotMapped))
    );
    assert_eq!(w.phys[mine as usize], Pte::new(w.vms[0].scratch));
    // A low half alone naming a frame of the neighbour's host range is
    // still just a guest frame number: translated through this VM's RAM.
    let mut b = w.bus(0);
    d0.write_pte(&mut b, mine, (RAM_GFN + 9) << 12 | 1, PteWidth::Halves)
        .unwrap();
    assert_eq!(b.last().pte(), Some(PteWrite::Mapped));
    assert_eq!(
        Some(w.phys[mine as usize].page()),
        w.vms[0].ram.backing(RAM_GFN + 9)
    );
    // The neighbour's work is unaffected.
    let mut b = w.bus(1);
    d1.run(&mut b, BCS, &blit_job(&d1, 0x0033_4455, 0x99))
        .unwrap();
    run_idle(&mut w);
    check_blit(&mut w, 1, &d1, 0x0033_4455, 0x99);
    assert_eq!(w.vgpu(0).counters().pte_dropped, 1);
    assert_eq!(w.vgpu(0).counters().pte_rejected, 1);
}

#[test]
fn rewriting_ring_and_batch_after_tail_changes_nothing() {
    let mut w = World::new(test_config());
    let mut d0 = boot(&mut w, 0);
    let d1 = boot(&mut w, 1);
    let (x, y, z) = (
        d0.aperture.base + 0x50000,
        d0.aperture.base + 0x50004,
        d0.aperture.base + 0x50008,
    );
    let bb = d0.high.base + 0x2000;
    let mut b = w.bus(0);
    d0.write_gm(
        &mut b,
        bb,
        &[&sdi(Space::Ggtt, y, 2)[..], &[MI_BATCH_BUFFER_END]].concat(),
    )
    .unwrap();
    let ring_at = d0.aperture.base + u64::from(d0.tail(RCS));
    d0.run(
        &mut b,
        RCS,
        &[
            &sdi(Space::Ggtt, x, 1)[..],
            &bb_start(Space::Ggtt, bb, false),
        ]
        .concat(),
    )
    .unwrap();
    assert!(accepted(&b), "accepted");
    // After TAIL, before the engine runs: the guest rewrites both the ring
    // and the batch, to hit its neighbour and another address of its own.
    d0.write_gm(
        &mut b,
        ring_at,
        &sdi(Space::Ggtt, d1.aperture.base + 0x50000, 0x666),
    )
    .unwrap();
    d0.write_gm(
        &mut b,
        bb,
        &[&sdi(Space::Ggtt, z, 0x777)[..], &[MI_BATCH_BUFFER_END]].concat(),
    )
    .unwrap();
    run_idle(&mut w);
    let mut b = w.bus(0);
    assert_eq!(
        (
            d0.read_gm(&mut b, x).unwrap(),
            d0.read_gm(&mut b, y).unwrap(),
            d0.read_gm(&mut b, z).unwrap()
        ),
        (1, 2, 0)
    );
    let mut b = w.bus(1);
    assert_eq!(d1.read_gm(&mut b, d1.aperture.base + 0x50000).unwrap(), 0);
}

/// VM 0 sets up a PPGTT whose page 0 maps a RAM page; returns the RAM
/// address of its page-table entry 0.
fn setup_ppgtt(w: &mut World, d: &GuestDriver) -> u64 {
    let (pd, pt) = (d.high.base + 0x10000, d.high.base + 0x11000);
    let data_gfn = RAM_GFN + 700; // RAM that is not graphics memory
    let pt_gpa = d.gpa(pt).unwrap();
    let mut b = w.bus(0);
    d.write_gm(&mut b, pd, &[((pt_gpa >> 12) << 12) as u32 | 1, 0])
        .unwrap();
    d.write_gm(&mut b, pt, &[(data_gfn << 12) as u32 | 1, 0])
        .unwrap();
    d.set_ppgtt(&mut b, pd).unwrap();
    pt_gpa
}

#[test]
fn ppgtt_store_reaches_the_guest_page_its_tables_name() {
    let mut w = World::new(test_config());
    let mut d0 = boot(&mut w, 0);
    setup_ppgtt(&mut w, &d0);
    let mut b = w.bus(0);
    d0.run(
        &mut b,
        RCS,
        &[&sdi(Space::Ppgtt, 0x40, 0xABCD)[..], &[MI_USER_INTERRUPT]].concat(),
    )
    .unwrap();
    assert!(accepted(&b), "accepted");
    // Unmapped local addresses are refused at audit time.
    d0.run(&mut b, RCS, &sdi(Space::Ppgtt, 0x20_0000, 1))
        .unwrap();
    assert_eq!(
        b.last().submit(),
        Some(SubmitOutcome::Rejected(SubmitReject::Audit(
            Reject::PpgttNotMapped
        )))
    );
    run_idle(&mut w);
    let mut v = [0u8; 4];
    let mut b = w.bus(0);
    assert!(b.ram_read(((RAM_GFN + 700) << 12) + 0x40, &mut v));
    assert_eq!(u32::from_le_bytes(v), 0xABCD);
    assert!(w.vgpu(0).ppgtt().pinned_pages() >= 1);
}

/// VM 0 makes its render engine fault after the audit: a PPGTT store is
/// accepted, then the guest unmaps the page in its own tables and submits
/// again (the sync on that submission drops the translation) — the engine
/// faults on the first store and makes no progress.
fn hang_vm0(w: &mut World, d0: &mut GuestDriver) {
    let pt_gpa = setup_ppgtt(w, d0);
    let mut b = w.bus(0);
    d0.run(&mut b, RCS, &sdi(Space::Ppgtt, 0x40, 1)).unwrap();
    assert!(accepted(&b), "accepted");
    assert!(b.ram_write(pt_gpa, &0u64.to_le_bytes()));
    d0.run(&mut b, RCS, &[MI_NOOP, MI_NOOP]).unwrap();
    assert!(accepted(&b), "accepted");
}

#[test]
fn a_hanging_guest_is_reset_alone_and_failed_at_the_threshold() {
    let mut w = World::new(test_config());
    let mut d0 = boot(&mut w, 0);
    let mut d1 = boot(&mut w, 1);
    for round in 0..2u32 {
        hang_vm0(&mut w, &mut d0);
        // The neighbour keeps working on both engines meanwhile.
        let mut b = w.bus(1);
        d1.run(&mut b, BCS, &blit_job(&d1, 0x0100 + round, 0x200 + round))
            .unwrap();
        d1.run(
            &mut b,
            RCS,
            &sdi(Space::Ggtt, d1.aperture.base + 0x50020, 0x300 + round),
        )
        .unwrap();
        let rep = w.run(2000);
        assert!(rep.idle);
        assert_eq!(rep.hangs, 1, "round {round}: one hang");
        check_blit(&mut w, 1, &d1, 0x0100 + round, 0x200 + round);
        let mut b = w.bus(1);
        assert_eq!(
            d1.read_gm(&mut b, d1.aperture.base + 0x50020).unwrap(),
            0x300 + round
        );
        assert_eq!(
            d1.iir(&mut b).unwrap() & ERRORS,
            0,
            "the neighbour sees no error"
        );
        d1.ack(&mut b, USERS).unwrap();
        let mut b = w.bus(0);
        assert_ne!(
            d0.iir(&mut b).unwrap() & irq::RCS_ERROR_INTERRUPT,
            0,
            "the guilty vGPU is told"
        );
        assert_ne!(d0.eir(&mut b, RCS).unwrap(), 0);
        assert!(w.vms[0].signals.iter().any(|s| s.msi));
        let sched = w.gpu.scheduler();
        assert_eq!(sched.stats(w.vgpu(0).slot()).unwrap().hangs, round + 1);
        assert_eq!(sched.stats(w.vgpu(1).slot()).unwrap().hangs, 0);
        // The guest recovers as a driver does: reset the engine, reprogram.
        let mut b = w.bus(0);
        d0.reset_engine(&mut b, RCS).unwrap();
        d0.init_ring(&mut b, RCS, d0.aperture.base, 4).unwrap();
        d0.ack(&mut b, ERRORS).unwrap();
    }
    // Two hangs: Failed.  A guest GDRST does not clear that.
    assert_eq!(w.gpu.scheduler().state(w.vgpu(0).slot()), VgpuState::Failed);
    let mut b = w.bus(0);
    d0.run(
        &mut b,
        BCS,
        &sdi(Space::Ggtt, d0.aperture.base + 0x60000, 1),
    )
    .unwrap();
    assert_eq!(
        b.last().submit(),
        Some(SubmitOutcome::Rejected(SubmitReject::Failed))
    );
    // A device reset (VFIO reset) gives the VM a fresh vGPU.
    w.with_vm(0, |v, env| v.reset(env));
    assert_eq!(
        w.vms[0].ram.outstanding_pins(),
        0,
        "reset released every pin"
    );
    let mut d0 = boot(&mut w, 0);
    let mut b = w.bus(0);
    d0.run(
        &mut b,
        BCS,
        &sdi(Space::Ggtt, d0.aperture.base + 0x60000, 0xA11),
    )
    .unwrap();
    assert!(accepted(&b), "accepted");
    run_idle(&mut w);
    let mut b = w.bus(0);
    assert_eq!(
        d0.read_gm(&mut b, d0.aperture.base + 0x60000).unwrap(),
        0xA11
    );
}

#[test]
fn backpressure_holds_tail_and_the_worker_retries() {
    let mut cfg = test_config();
    cfg.sched.max_pending_submissions = 2;
    let mut w = World::new(cfg);
    let mut d0 = boot(&mut w, 0);
    let base = d0.aperture.base + 0x50000;
    let mut b = w.bus(0);
    for i in 0..4u32 {
        d0.run(
            &mut b,
            RCS,
            &sdi(Space::Ggtt, base + 4 * u64::from(i), 10 + i),
        )
        .unwrap();
        if i < 2 {
            assert!(accepted(&b), "submission {i}");
        } else {
            assert_eq!(
                b.last().submit(),
                Some(SubmitOutcome::Held),
                "submission {i}"
            );
        }
    }
    let rep = run_idle(&mut w);
    assert!(rep.retried >= 1);
    let mut b = w.bus(0);
    for i in 0..4u32 {
        assert_eq!(d0.read_gm(&mut b, base + 4 * u64::from(i)).unwrap(), 10 + i);
    }
    assert!(d0.idle(&mut b, RCS).unwrap());
}

#[test]
fn dma_unmap_releases_pins_and_destroy_leaves_nothing() {
    let mut w = World::new(test_config());
    let mut d0 = boot(&mut w, 0);
    let mut d1 = boot(&mut w, 1);
    setup_ppgtt(&mut w, &d0);
    let mut b = w.bus(0);
    d0.run(&mut b, RCS, &sdi(Space::Ppgtt, 0x40, 5)).unwrap();
    let mut b = w.bus(1);
    d1.run(&mut b, BCS, &blit_job(&d1, 1, 2)).unwrap();
    run_idle(&mut w);
    let pins = w.vms[0].ram.outstanding_pins();
    assert_eq!(pins, w.vgpu(0).pinned_pages());
    assert!(pins > 512, "GGTT and PPGTT pins");
    // The VMM unmaps the first 16 frames of VM 0's RAM.
    w.vms[0].ram.unmap(RAM_GFN, 16);
    let n = w.with_vm(0, |v, env| v.dma_unmap(env, RAM_GFN << 12, 16 * PAGE_SIZE));
    assert_eq!(n, 16);
    assert_eq!(w.vms[0].ram.outstanding_pins(), pins - 16);
    let first = (d0.aperture.base / PAGE_SIZE) as usize;
    assert_eq!(
        w.phys[first],
        Pte::new(w.vms[0].scratch),
        "evicted entries map scratch"
    );
    assert!(
        w.vms[0].cpu.invalidated.contains(&(first as u64)),
        "the CPU mapping was zapped"
    );
    let mut b = w.bus(0);
    assert_eq!(
        d0.read_pte(&mut b, first as u64).unwrap(),
        (RAM_GFN << 12) | 1,
        "the guest view is unchanged"
    );
    // Destroy both: no pin, no shadow page, no physical entry left.
    w.destroy(0);
    w.destroy(1);
    assert_eq!(w.vms[0].ram.outstanding_pins(), 0);
    assert_eq!(w.vms[1].ram.outstanding_pins(), 0);
    assert_eq!(w.pages.live(), 0, "every shadow page table freed");
    assert!(
        w.phys.iter().all(|p| *p == Pte::default()),
        "the physical GGTT is empty"
    );
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        /// A BAR0 write of `size` bytes at one of the interesting offsets.
        Reg {
            at: usize,
            size: u8,
            value: u64,
        },
        /// A GGTT entry write anywhere in the window.
        Pte {
            index: u64,
            value: u64,
            half: Option<bool>,
        },
        /// CPU writes of arbitrary dwords into its ring/batch area.
        Mem {
            off: u64,
            words: Vec<u32>,
        },
        /// A sensible command, to reach the engines.
        Cmd {
            e: bool,
            which: u8,
            addr: u64,
        },
        Run,
    }

    const OFFSETS: [u32; 16] = [
        EngineId::Rcs.reg(regs::ring::TAIL),
        EngineId::Rcs.reg(regs::ring::HEAD),
        EngineId::Rcs.reg(regs::ring::START),
        EngineId::Rcs.reg(regs::ring::CTL),
        EngineId::Bcs.reg(regs::ring::TAIL),
        EngineId::Bcs.reg(regs::ring::HEAD),
        EngineId::Bcs.reg(regs::ring::START),
        EngineId::Bcs.reg(regs::ring::CTL),
        EngineId::Rcs.reg(regs::ring::PP_DIR_BASE),
        regs::GDRST,
        regs::GT_IIR,
        regs::GT_IMR,
        regs::GT_IER,
        regs::FENCE,
        EngineId::Rcs.reg(regs::ring::EIR),
        regs::FORCEWAKE_REQ,
    ];

    use gvt_core::regs;

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0..OFFSETS.len(), prop_oneof![Just(1u8), Just(2), Just(4), Just(8)], any::<u64>()).prop_map(|(at, size, value)| Op::Reg { at, size, value }),
            3 => (0u64..8192, (0u64..0x1500, any::<u16>(), 0u8..4), prop_oneof![Just(None), Just(Some(false)), Just(Some(true))])
                .prop_map(|(index, (gfn, junk, p), half)| Op::Pte { index, value: (gfn << 12) | u64::from(junk & 0xffe) | u64::from(p != 0), half }),
            2 => (0u64..0x10000, proptest::collection::vec(any::<u32>(), 1..12)).prop_map(|(off, words)| Op::Mem { off: off & !3, words }),
            3 => (any::<bool>(), 0u8..6, any::<u64>()).prop_map(|(e, which, addr)| Op::Cmd { e, which, addr }),
            1 => Just(Op::Run),
        ]
    }

    /// Any sequence of guest actions by VM 0 leaves VM 1's memory, GGTT
    /// entries and ability to work intact, never panics, and never leaks a
    /// pin once VM 0 is destroyed.
    fn run_ops(ops: Vec<Op>) -> Result<(), TestCaseError> {
        let mut w = World::new(test_config());
        let mut d0 = boot(&mut w, 0);
        let mut d1 = boot(&mut w, 1);
        let mut b = w.bus(1);
        d1.write_gm(&mut b, d1.high.base + 0x8000, &[0xC0DE; 64])
            .unwrap();
        let ram1: Vec<u8> = (RAM_PAGES..2 * RAM_PAGES)
            .flat_map(|p| w.host.page(HostPage(p)).to_vec())
            .collect();
        let ggtt1: Vec<Pte> = [part(1).aperture, part(1).high]
            .iter()
            .flat_map(|r| {
                (r.base / PAGE_SIZE..r.end() / PAGE_SIZE)
                    .map(|i| w.phys[i as usize])
                    .collect::<Vec<_>>()
            })
            .collect();
        for op in ops {
            let mut b = w.bus(0);
            match op {
                Op::Reg { at, size, value } => {
                    let off = u64::from(OFFSETS[at]) & !(u64::from(size) - 1);
                    let _ = b.bar0_write(off, &value.to_le_bytes()[..size as usize]);
                }
                Op::Pte { index, value, half } => {
                    let off = gvt_core::mmio::GGTT_VIEW_BASE + 8 * index;
                    let _ = match half {
                        None => b.bar0_write(off, &value.to_le_bytes()),
                        Some(h) => b.bar0_write(
                            off + 4 * u64::from(h),
                            &((value >> (32 * u32::from(h))) as u32).to_le_bytes(),
                        ),
                    };
                }
                Op::Mem { off, words } => {
                    let _ = d0.write_gm(&mut b, d0.aperture.base + off, &words);
                }
                Op::Cmd { e, which, addr } => {
                    let e = if e { RCS } else { BCS };
                    // Half of them in its own aperture (they run), the rest
                    // anywhere in GM, the neighbour's and the host's included.
                    let a = if addr & 1 == 0 {
                        d0.aperture.base + 0x10000 + (addr >> 1) % 0xE0000
                    } else {
                        (addr >> 1) % GM
                    } & !7;
                    let c: Vec<u32> = match which {
                        0 => sdi(Space::Ggtt, a, 0xBAD).to_vec(),
                        1 => color_blt(a, PITCH, (0, 0, 16, 4), 0xBAD).to_vec(),
                        2 => bb_start(Space::Ggtt, a, false).to_vec(),
                        3 => lri(a as u32 & 0x3_fffc, 1).to_vec(),
                        4 => sdi(Space::Ppgtt, a % (4 << 20), 0xBAD).to_vec(),
                        _ => vec![MI_USER_INTERRUPT],
                    };
                    let _ = d0.run(&mut b, e, &c);
                }
                Op::Run => {
                    w.run(50);
                }
            }
        }
        w.run(3000);
        let now: Vec<u8> = (RAM_PAGES..2 * RAM_PAGES)
            .flat_map(|p| w.host.page(HostPage(p)).to_vec())
            .collect();
        prop_assert!(now == ram1, "VM 1's RAM changed");
        let g1: Vec<Pte> = [part(1).aperture, part(1).high]
            .iter()
            .flat_map(|r| {
                (r.base / PAGE_SIZE..r.end() / PAGE_SIZE)
                    .map(|i| w.phys[i as usize])
                    .collect::<Vec<_>>()
            })
            .collect();
        prop_assert!(g1 == ggtt1, "VM 1's GGTT entries changed");
        // VM 1 still works.
        let mut b = w.bus(1);
        d1.ack(&mut b, USERS | ERRORS).unwrap();
        d1.run(&mut b, BCS, &blit_job(&d1, 0x4242, 0x4343)).unwrap();
        prop_assert!(accepted(&b));
        let r = w.run(3000);
        prop_assert!(r.idle);
        check_blit(&mut w, 1, &d1, 0x4242, 0x4343);
        w.destroy(0);
        prop_assert_eq!(w.vms[0].ram.outstanding_pins(), 0);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
        #[test]
        fn a_guest_doing_anything_cannot_touch_its_neighbour(ops in proptest::collection::vec(op(), 1..60)) {
            run_ops(ops)?;
        }
    }
}

mod charging;
mod hostile;
mod migration;
