//! Per-vGPU statistics (paper §4: the trap break-down of Figure 13, the
//! command rates of Figure 11, and the scheduler's own figures of §3.2).
//!
//! One [`VgpuStats`] per vGPU.  The scheduler ([`super::sched`]) keeps the
//! table and updates the fields it owns (engine time, context switches, hangs,
//! submissions, flow-control refusals, state); the command auditor updates
//! its own through `Scheduler::stats_mut` with [`VgpuStats::count_audited`]
//! and [`VgpuStats::count_reject`].  Traps are counted where they happen,
//! per vGPU and without the GPU lock (`mmio::TrapStats`, the `traps_<kind>`
//! lines of `gvt/stats`), not here.  [`VgpuStats::format`] renders everything as
//! `key value` lines into any [`core::fmt::Write`], e.g. a
//! [`super::vgpu_types::SliceWriter`] over a sysfs `show` page.

use core::fmt::{self, Write};

use super::backend::EngineId;

/// Why a submission or a command was refused (paper §3.5: isolation, DoS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectClass {
    /// Unknown or unsupported opcode.
    UnknownCommand = 0,
    /// Privileged command or register (LRI outside the whitelist, ...).
    Privileged = 1,
    /// A graphics address outside the vGPU's own memory.
    BadAddress = 2,
    /// Bad length, truncated command, batch nesting too deep, ring overrun.
    Malformed = 3,
    /// Flow control: the vGPU already has as much work queued as allowed.
    Backpressure = 4,
    /// The vGPU is in the Failed state (too many hangs).
    Failed = 5,
    /// A blit whose geometry lies about its work (overlapping rows, pitch
    /// below a row's bytes, absurd size): [`super::cmd::Reject::BadGeometry`].
    BadGeometry = 6,
}

impl RejectClass {
    pub const COUNT: usize = 7;
    pub const ALL: [RejectClass; 7] = [
        RejectClass::UnknownCommand,
        RejectClass::Privileged,
        RejectClass::BadAddress,
        RejectClass::Malformed,
        RejectClass::Backpressure,
        RejectClass::Failed,
        RejectClass::BadGeometry,
    ];
    pub const fn name(self) -> &'static str {
        match self {
            RejectClass::UnknownCommand => "unknown_cmd",
            RejectClass::Privileged => "privileged",
            RejectClass::BadAddress => "bad_address",
            RejectClass::Malformed => "malformed",
            RejectClass::Backpressure => "backpressure",
            RejectClass::Failed => "failed",
            RejectClass::BadGeometry => "bad_geometry",
        }
    }
}

/// Scheduling state of a vGPU as the host shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum VgpuState {
    /// Slot not in use.
    #[default]
    Absent,
    /// No queued work.
    Idle,
    /// Queued work, waiting for an engine.
    Runnable,
    /// Owns at least one engine.
    Running,
    /// Hung too often: submissions refused until the vGPU is reset or destroyed.
    Failed,
}

impl VgpuState {
    pub const fn name(self) -> &'static str {
        match self {
            VgpuState::Absent => "absent",
            VgpuState::Idle => "idle",
            VgpuState::Runnable => "runnable",
            VgpuState::Running => "running",
            VgpuState::Failed => "failed",
        }
    }
}

/// Counters of one vGPU.  All counters saturate; none is guest-resettable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VgpuStats {
    /// Engine time charged to the vGPU, per engine (ns), mediation work
    /// done on its behalf included.
    pub engine_ns: [u64; EngineId::COUNT],
    /// Part of `engine_ns` that was mediator work on the vGPU's behalf
    /// (shadow PPGTT re-validation and re-shadowing), not engine execution.
    pub mediation_ns: u64,
    /// Submissions admitted by flow control.
    pub submissions: u64,
    /// Commands audited (and admitted) for the vGPU.
    pub cmds_audited: u64,
    /// Refusals per [`RejectClass`].
    pub rejections: [u64; RejectClass::COUNT],
    /// Render/blitter context switches into this vGPU.
    pub ctx_switches: u64,
    /// Scheduling decisions that picked this vGPU (a pick of the engine's
    /// owner needs no switch: `picks >= ctx_switches`).
    pub picks: u64,
    /// Period refills at which this vGPU had had work during the period
    /// but had none at that instant (the policy kept at most one allocation
    /// of its credit and left it out of the normalisation): a vGPU that is
    /// backlogged from its guest's view should show none.
    pub refills_without_work: u64,
    /// Engine hangs this vGPU was found guilty of (since its last reset).
    pub hangs: u32,
    /// Hangs, all time.
    pub hangs_total: u64,
    /// Current state.
    pub state: VgpuState,
}

impl VgpuStats {
    pub const EMPTY: VgpuStats = VgpuStats {
        engine_ns: [0; EngineId::COUNT],
        mediation_ns: 0,
        submissions: 0,
        cmds_audited: 0,
        rejections: [0; RejectClass::COUNT],
        ctx_switches: 0,
        picks: 0,
        refills_without_work: 0,
        hangs: 0,
        hangs_total: 0,
        state: VgpuState::Absent,
    };

    pub fn count_reject(&mut self, class: RejectClass) {
        if let Some(c) = self.rejections.get_mut(class as usize) {
            *c = c.saturating_add(1);
        }
    }
    pub fn count_audited(&mut self, cmds: u64) {
        self.cmds_audited = self.cmds_audited.saturating_add(cmds);
    }
    pub fn add_engine_time(&mut self, e: EngineId, ns: u64) {
        if let Some(t) = self.engine_ns.get_mut(e.index()) {
            *t = t.saturating_add(ns);
        }
    }
    /// All refusals.
    pub fn rejections_total(&self) -> u64 {
        self.rejections
            .iter()
            .fold(0u64, |a, b| a.saturating_add(*b))
    }

    /// `key value` lines, one counter a line (sysfs style).
    pub fn format<W: Write>(&self, w: &mut W) -> fmt::Result {
        writeln!(w, "state {}", self.state.name())?;
        writeln!(w, "rcs_time_ns {}", self.engine_ns[EngineId::Rcs.index()])?;
        writeln!(w, "bcs_time_ns {}", self.engine_ns[EngineId::Bcs.index()])?;
        writeln!(w, "mediation_ns {}", self.mediation_ns)?;
        writeln!(w, "submissions {}", self.submissions)?;
        writeln!(w, "cmds_audited {}", self.cmds_audited)?;
        for c in RejectClass::ALL {
            writeln!(w, "reject_{} {}", c.name(), self.rejections[c as usize])?;
        }
        writeln!(w, "ctx_switches {}", self.ctx_switches)?;
        writeln!(w, "picks {}", self.picks)?;
        writeln!(w, "refills_without_work {}", self.refills_without_work)?;
        writeln!(w, "hangs {}", self.hangs)?;
        writeln!(w, "hangs_total {}", self.hangs_total)
    }
}

#[cfg(test)]
mod tests {
    use super::super::vgpu_types::SliceWriter;
    use super::*;
    use std::string::String;

    /// `s` formatted into a `N`-byte buffer: the text and whether it all fit.
    fn format<const N: usize>(s: &VgpuStats) -> (String, bool) {
        let mut buf = [0u8; N];
        let mut w = SliceWriter::new(&mut buf);
        let fit = s.format(&mut w).is_ok();
        let len = w.len();
        (String::from_utf8(buf[..len].to_vec()).unwrap(), fit)
    }

    #[test]
    fn counters_and_format() {
        let mut s = VgpuStats::EMPTY;
        s.state = VgpuState::Running;
        s.count_reject(RejectClass::BadAddress);
        s.count_audited(17);
        s.add_engine_time(EngineId::Bcs, 1234);
        assert_eq!(s.rejections_total(), 1);
        let (t, fit) = format::<1024>(&s);
        assert!(fit);
        assert!(t.starts_with("state running\n"));
        assert!(t.contains("\nbcs_time_ns 1234\n"));
        assert!(t.contains("\ncmds_audited 17\n"));
        // The scheduler counts no traps: `gvt/stats` once showed its
        // never-fed `trap_*` zeros next to the live `traps_*` counters.
        assert!(!t.contains("trap_"), "{t}");
        assert!(t.contains("\nreject_bad_address 1\n"));
        assert!(t.ends_with("hangs_total 0\n"));
    }

    #[test]
    fn a_full_page_refuses_the_rest_and_keeps_whole_lines() {
        let mut buf = [0u8; 8];
        let mut w = SliceWriter::new(&mut buf);
        assert!(w.write_str("abcd").is_ok());
        assert!(w.write_str("efghi").is_err());
        assert!(w.write_str("efgh").is_ok());
        assert_eq!(w.len(), 8);
        assert_eq!(&buf, b"abcdefgh");
        let mut s = VgpuStats::EMPTY;
        s.state = VgpuState::Idle;
        let (t, fit) = format::<20>(&s);
        assert!(!fit);
        assert!(t.starts_with("state idle\n"), "{t}");
    }

    #[test]
    fn counters_saturate() {
        let mut s = VgpuStats::EMPTY;
        s.count_audited(u64::MAX);
        s.count_audited(5);
        assert_eq!(s.cmds_audited, u64::MAX);
    }
}
