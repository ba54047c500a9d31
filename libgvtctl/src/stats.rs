//! Live statistics of gvt-rs vGPUs (`gvtctl stats`, `gvtctl top`), from two readings of
//! each vGPU's `gvt/stats` and the time between them.
//!
//! `gvt/stats` is the driver's text, one `name value` per line (gvt-core
//! `Vgpu::write_stats` and the scheduler's `VgpuStats::format`): counters that only grow
//! (`rcs_time_ns`, `bcs_time_ns`: nanoseconds the engine ran the vGPU's work;
//! `submissions`, `cmds_audited`, `reject_<class>`, `trap_<kind>`, `hangs_total`, ...)
//! and `state` (`idle`, `runnable`, `running`, `failed`). A [`Report`] turns two
//! [`Sample`]s into engine utilisation (engine time over wall time) and rates; the raw
//! counters of the second sample come along, so a reader can check every figure.
//!
//! Time comes from [`crate::Sysfs::now_ns`]: the monotonic clock on a host, a simulated
//! clock on the fake tree ([`crate::fake_sysfs`]), whose counters move by a programmed
//! load each simulated second.

use crate::holders::Holder;
use crate::uuid::Uuid;
use serde::Serialize;
use std::collections::BTreeMap;

/// Version of the `--json` shape of [`Report`]; raised on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// `gvt/stats`, parsed. Lines that are not `name value` are ignored; values that are
/// not numbers are kept as text (only `state` is, today).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct StatsText {
    pub counters: BTreeMap<String, u64>,
    pub text: BTreeMap<String, String>,
}

impl StatsText {
    pub fn parse(s: &str) -> StatsText {
        let mut out = StatsText::default();
        for line in s.lines() {
            let Some((k, v)) = line.trim().split_once(' ') else {
                continue;
            };
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() {
                continue;
            }
            match v.parse::<u64>() {
                Ok(n) => {
                    out.counters.insert(k.to_string(), n);
                }
                Err(_) => {
                    out.text
                        .insert(k.to_string(), crate::escape::escape(v).into_owned());
                }
            }
        }
        out
    }

    pub fn get(&self, k: &str) -> Option<u64> {
        self.counters.get(k).copied()
    }
}

/// One vGPU's reading.
#[derive(Debug, Clone)]
pub struct VgpuSample {
    pub uuid: Uuid,
    pub parent: String,
    pub type_id: String,
    /// `gvt/weight`.
    pub weight: Option<u64>,
    pub stats: StatsText,
    pub holders: Vec<Holder>,
}

/// The readings of every vGPU asked for, at one time.
#[derive(Debug, Clone)]
pub struct Sample {
    /// [`crate::Sysfs::now_ns`] just before the readings.
    pub at_ns: u64,
    pub vgpus: Vec<VgpuSample>,
}

/// A counter over the interval: its value at the end, its growth, its rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Rate {
    /// The value at the second reading.
    pub total: u64,
    /// Growth since the first reading; `null` when the vGPU was not there then or the
    /// counter went back (the vGPU was recreated).
    pub delta: Option<u64>,
    /// `delta` per second; `null` without a delta or with a zero interval.
    pub per_s: Option<f64>,
}

/// An engine's share over the interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, schemars::JsonSchema)]
pub struct EngineUse {
    /// Nanoseconds the engine ran this vGPU's work in the interval (`*_time_ns` delta).
    pub busy_ns: Option<u64>,
    /// `busy_ns` over the interval, in percent.
    pub util_pct: Option<f64>,
}

/// Who holds the vGPU (as in `gvtctl list`), with the VM's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct HolderSummary {
    pub pid: u32,
    pub command: String,
    pub vm_name: Option<String>,
}

/// One vGPU's figures over the interval.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct VgpuReport {
    pub uuid: Uuid,
    pub parent: String,
    #[serde(rename = "type")]
    pub type_id: String,
    /// The scheduler state (`idle`, `runnable`, `running`, `failed`).
    pub state: Option<String>,
    pub weight: Option<u64>,
    pub rcs: EngineUse,
    pub bcs: EngineUse,
    pub submissions: Rate,
    pub cmds_audited: Rate,
    /// All rejected submissions (the sum of `rejects`).
    pub rejected: Rate,
    /// Rejected submissions by class (`unknown_cmd`, `privileged`, `bad_address`, ...).
    pub rejects: BTreeMap<String, Rate>,
    /// Trapped MMIO accesses by kind (`pm`, `tail`, `pte`, `other`): the mediator's
    /// `traps_<kind>` counters (the scheduler's `trap_<kind>` when those are absent).
    pub traps: BTreeMap<String, Rate>,
    /// Hangs of the current context and since creation.
    pub hangs: u64,
    pub hangs_total: u64,
    pub holders: Vec<HolderSummary>,
    /// Every counter of `gvt/stats` at the second reading, as the driver wrote it.
    pub counters: BTreeMap<String, u64>,
}

/// `gvtctl stats` / `gvtctl top` output.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Report {
    pub schema_version: u32,
    /// Seconds between the two readings.
    pub interval_s: f64,
    pub vgpus: Vec<VgpuReport>,
}

impl Report {
    /// The figures between `before` and `after` (vGPUs of `after`; one absent from
    /// `before` has totals and no deltas).
    pub fn between(before: &Sample, after: &Sample) -> Report {
        let interval_ns = after.at_ns.saturating_sub(before.at_ns);
        let secs = interval_ns as f64 / 1e9;
        let vgpus = after
            .vgpus
            .iter()
            .map(|v| {
                let prev = before.vgpus.iter().find(|p| p.uuid == v.uuid);
                vgpu_report(v, prev.map(|p| &p.stats), interval_ns)
            })
            .collect();
        Report {
            schema_version: SCHEMA_VERSION,
            interval_s: secs,
            vgpus,
        }
    }
}

fn vgpu_report(v: &VgpuSample, prev: Option<&StatsText>, interval_ns: u64) -> VgpuReport {
    let rate = |total: u64, before: Option<u64>| {
        let delta = before.and_then(|b| total.checked_sub(b));
        Rate {
            total,
            delta,
            per_s: delta
                .filter(|_| interval_ns > 0)
                .map(|d| d as f64 * 1e9 / interval_ns as f64),
        }
    };
    let counter = |k: &str| {
        rate(
            v.stats.get(k).unwrap_or(0),
            prev.map(|p| p.get(k).unwrap_or(0)),
        )
    };
    let engine = |k: &str| {
        let busy = counter(k).delta;
        EngineUse {
            busy_ns: busy,
            util_pct: busy
                .filter(|_| interval_ns > 0)
                .map(|b| b as f64 * 100.0 / interval_ns as f64),
        }
    };
    let by_prefix = |prefix: &str| -> BTreeMap<String, Rate> {
        v.stats
            .counters
            .keys()
            .filter_map(|k| Some((k.strip_prefix(prefix)?.to_string(), counter(k))))
            .collect()
    };
    let rejects = by_prefix("reject_");
    let sum = |m: &BTreeMap<String, Rate>| {
        let total = m.values().map(|r| r.total).fold(0u64, u64::saturating_add);
        let before = m
            .values()
            .map(|r| r.delta.map(|d| r.total - d))
            .try_fold(0u64, |a, b| b.map(|b| a.saturating_add(b)));
        rate(total, before)
    };
    VgpuReport {
        uuid: v.uuid,
        parent: v.parent.clone(),
        type_id: v.type_id.clone(),
        state: v.stats.text.get("state").cloned(),
        weight: v.weight,
        rcs: engine("rcs_time_ns"),
        bcs: engine("bcs_time_ns"),
        submissions: counter("submissions"),
        cmds_audited: counter("cmds_audited"),
        rejected: sum(&rejects),
        rejects,
        traps: match by_prefix("traps_") {
            m if m.is_empty() => by_prefix("trap_"),
            m => m,
        },
        hangs: v.stats.get("hangs").unwrap_or(0),
        hangs_total: v.stats.get("hangs_total").unwrap_or(0),
        holders: v
            .holders
            .iter()
            .map(|h| HolderSummary {
                pid: h.pid,
                command: h.command.clone(),
                vm_name: h.vm_name.clone(),
            })
            .collect(),
        counters: v.stats.counters.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ns: u64, stats: &str) -> Sample {
        Sample {
            at_ns,
            vgpus: vec![VgpuSample {
                uuid: Uuid::parse("83b8f4f2-509f-382f-3c1e-e6bfe0fa1001").unwrap(),
                parent: "gvt-sim0".into(),
                type_id: "gvt_rs-GVTsim_64M".into(),
                weight: Some(4),
                stats: StatsText::parse(stats),
                holders: vec![],
            }],
        }
    }

    #[test]
    fn parses_the_drivers_text() {
        let s =
            StatsText::parse("traps_pm 3\nstate running\nrcs_time_ns 12\n\njunk\n x 1\nbad -1\n");
        assert_eq!(s.get("traps_pm"), Some(3));
        assert_eq!(s.get("rcs_time_ns"), Some(12));
        assert_eq!(s.get("x"), Some(1));
        assert_eq!(s.text.get("state").map(String::as_str), Some("running"));
        assert_eq!(s.text.get("bad").map(String::as_str), Some("-1"));
        assert_eq!(s.get("junk"), None);
        let s = StatsText::parse("state \u{1b}[2J\n");
        assert_eq!(s.text["state"], "\\x1b[2J");
    }

    #[test]
    fn utilisation_and_rates_from_deltas() {
        let a = sample(
            1_000_000_000,
            "state idle\nrcs_time_ns 100\nbcs_time_ns 0\nsubmissions 10\ncmds_audited 5\n\
             reject_privileged 1\nreject_malformed 0\ntraps_pm 7\ntrap_pm 0\nhangs 0\nhangs_total 2\n",
        );
        let b = sample(
            3_000_000_000,
            "state running\nrcs_time_ns 500000100\nbcs_time_ns 200000000\nsubmissions 30\n\
             cmds_audited 45\nreject_privileged 3\nreject_malformed 1\ntraps_pm 2007\ntrap_pm 0\nhangs 1\nhangs_total 3\n",
        );
        let r = Report::between(&a, &b);
        assert_eq!(r.schema_version, SCHEMA_VERSION);
        assert_eq!(r.interval_s, 2.0);
        let v = &r.vgpus[0];
        assert_eq!(v.state.as_deref(), Some("running"));
        assert_eq!(v.rcs.busy_ns, Some(500_000_000));
        assert_eq!(v.rcs.util_pct, Some(25.0));
        assert_eq!(v.bcs.util_pct, Some(10.0));
        assert_eq!(
            v.submissions,
            Rate {
                total: 30,
                delta: Some(20),
                per_s: Some(10.0)
            }
        );
        assert_eq!(v.cmds_audited.per_s, Some(20.0));
        assert_eq!(v.rejects["privileged"].delta, Some(2));
        assert_eq!(v.rejects["malformed"].delta, Some(1));
        assert_eq!(
            v.rejected,
            Rate {
                total: 4,
                delta: Some(3),
                per_s: Some(1.5)
            }
        );
        assert_eq!(v.traps["pm"].per_s, Some(1000.0));
        assert_eq!((v.hangs, v.hangs_total), (1, 3));
        assert_eq!(v.counters["traps_pm"], 2007);
        assert_eq!(
            v.traps.len(),
            1,
            "traps_pm only, not trap_pm: {:?}",
            v.traps
        );
        // Without the mediator's traps_* counters, the scheduler's trap_* are used.
        let r = Report::between(
            &sample(0, "trap_tail 1\n"),
            &sample(1_000_000_000, "trap_tail 5\n"),
        );
        assert_eq!(r.vgpus[0].traps["tail"].per_s, Some(4.0));
    }

    #[test]
    fn no_deltas_without_a_first_reading_or_time() {
        let b = sample(5, "rcs_time_ns 10\nsubmissions 3\n");
        let empty = Sample {
            at_ns: 5,
            vgpus: vec![],
        };
        let r = Report::between(&empty, &b);
        let v = &r.vgpus[0];
        assert_eq!(
            v.rcs,
            EngineUse {
                busy_ns: None,
                util_pct: None
            }
        );
        assert_eq!(
            v.submissions,
            Rate {
                total: 3,
                delta: None,
                per_s: None
            }
        );
        // Same instant: a delta, no rate.
        let r = Report::between(&sample(5, "submissions 1\n"), &b);
        assert_eq!(
            r.vgpus[0].submissions,
            Rate {
                total: 3,
                delta: Some(2),
                per_s: None
            }
        );
        // A counter that went back (recreated vGPU): no delta.
        let r = Report::between(&sample(1, "submissions 9\n"), &b);
        assert_eq!(r.vgpus[0].submissions.delta, None);
    }
}
