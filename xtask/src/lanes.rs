//! Parallel VM runs for `cargo xtask test`.
//!
//! The rig's guest is QEMU TCG: one busy host core per vCPU.  `cargo xtask
//! test` has several VM runs (the main set, the 2-vCPU set, the nested guest
//! driver's set, the rig's self-check) and the main set alone is minutes of
//! single-threaded emulation, so on a machine with N cores the runs go in N
//! *lanes* at once: the main set is split by test binary, and the binaries and
//! the other runs are packed onto the lanes longest first (each lane then runs
//! its share one after the other; one VM boot per lane for its binaries).
//!
//! The estimates come from the previous runs' own logs (`vm-times.tsv` in the
//! VM directory: seconds per test binary and per run), so the split follows
//! the tests as they grow; what has never run gets [`UNKNOWN_BINARY_S`].
//! Nothing here decides a verdict: every VM run is judged by
//! tools/vm-judge.sh against the list of its tests made on the host, and
//! [`check_partition`] proves that the lanes' binaries are exactly the set's.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

/// Estimate for a test binary no earlier run has timed (seconds).
pub const UNKNOWN_BINARY_S: f64 = 60.0;
/// Estimate for a run no earlier run has timed (seconds).
pub const UNKNOWN_RUN_S: f64 = 120.0;

/// What one lane runs: the indices of whole runs, and the test binaries of
/// the split set it runs in one VM boot.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Lane {
    pub runs: Vec<usize>,
    pub bins: Vec<String>,
    pub load: f64,
}

/// Pack `runs` (estimates, by index) and the split set's `bins` (name,
/// estimate) onto `lanes` lanes, longest first, each to the least loaded lane
/// (LPT).  A lane's first binary also costs it `boot` seconds.
pub fn plan(lanes: usize, runs: &[f64], bins: &[(String, f64)], boot: f64) -> Vec<Lane> {
    let mut out = vec![Lane::default(); lanes.max(1)];
    enum Item<'a> {
        Run(usize),
        Bin(&'a str),
    }
    let mut items: Vec<(f64, Item)> = runs
        .iter()
        .enumerate()
        .map(|(i, e)| (*e, Item::Run(i)))
        .chain(bins.iter().map(|(b, e)| (*e, Item::Bin(b))))
        .collect();
    // Longest first; ties in a fixed order so the plan is reproducible.
    items.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (est, item) in items {
        let cost = |l: &Lane| {
            l.load
                + est
                + match item {
                    Item::Bin(_) if l.bins.is_empty() => boot,
                    _ => 0.0,
                }
        };
        let (i, _) = out
            .iter()
            .enumerate()
            .min_by(|a, b| cost(a.1).total_cmp(&cost(b.1)))
            .expect("at least one lane");
        let c = cost(&out[i]);
        let l = &mut out[i];
        l.load = c;
        match item {
            Item::Run(r) => l.runs.push(r),
            Item::Bin(b) => l.bins.push(b.to_string()),
        }
    }
    out
}

/// The lanes' binaries are exactly `all`, each once.
pub fn check_partition(lanes: &[Lane], all: &[String]) -> Result<(), String> {
    let mut got: Vec<&String> = lanes.iter().flat_map(|l| &l.bins).collect();
    got.sort();
    let mut want: Vec<&String> = all.iter().collect();
    want.sort();
    if got != want {
        return Err(format!(
            "the lanes' test binaries {got:?} are not the set's {want:?}"
        ));
    }
    Ok(())
}

/// Estimates from earlier runs: `vm-times.tsv` lines `KEY<TAB>SECONDS`
/// (`bin:NAME` for a test binary, `run:NAME` for a whole VM run).
pub fn load_times(path: &Path) -> BTreeMap<String, f64> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('\t')?;
            Some((k.to_string(), v.trim().parse::<f64>().ok()?))
        })
        .filter(|(_, v)| v.is_finite() && *v >= 0.0)
        .collect()
}

pub fn save_times(path: &Path, t: &BTreeMap<String, f64>) {
    let s: String = t.iter().map(|(k, v)| format!("{k}\t{v:.1}\n")).collect();
    let _ = fs::write(path, s);
}

/// Seconds each test binary's tests took in a VM run's output: libtest's
/// `finished in Xs` after each `GVT-RIG: test-begin BINARY TEST`, plus one
/// second per test for its process start.
pub fn binary_times(log: &str) -> BTreeMap<String, f64> {
    let mut t = BTreeMap::new();
    let mut cur: Option<&str> = None;
    for l in log.lines() {
        if let Some(rest) = l.split("GVT-RIG: test-begin ").nth(1) {
            cur = rest.split_whitespace().next();
            continue;
        }
        if let (Some(b), Some(rest)) = (cur, l.split("finished in ").nth(1)) {
            if let Some(s) = rest.strip_suffix('s').and_then(|s| s.parse::<f64>().ok()) {
                *t.entry(b.to_string()).or_insert(0.0) += s + 1.0;
                cur = None;
            }
        }
    }
    t
}

/// The IGT run's own summary (tests/vm/tests/gvt_drm_igt.rs prints
/// `igt: N results in T s of IGT (U s in all): pass P, skip S, ...`), without
/// its `igt: ` prefix: the last such line in `log`, if any.
pub fn igt_summary(log: &str) -> Option<&str> {
    log.lines()
        .rev()
        .filter_map(|l| l.trim().strip_prefix("igt: "))
        .find(|l| l.contains(" results in "))
}

/// The judge's summary of a VM run (`vm-tests: P passed, F failed, M missing[, S skipped] (...)`).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Tally {
    pub passed: u32,
    pub failed: u32,
    pub missing: u32,
    pub skipped: u32,
}

impl Tally {
    /// The last judge line in `log`, if any.
    pub fn from_log(log: &str) -> Option<Tally> {
        let l = log.lines().rev().find(|l| l.starts_with("vm-tests: "))?;
        let head = l.strip_prefix("vm-tests: ")?.split(" (").next()?;
        let mut t = Tally::default();
        for part in head.split(", ") {
            let (n, what) = part.split_once(' ')?;
            let n: u32 = n.parse().ok()?;
            match what {
                "passed" => t.passed = n,
                "failed" => t.failed = n,
                "missing" => t.missing = n,
                "skipped" => t.skipped = n,
                _ => return None,
            }
        }
        Some(t)
    }

    pub fn add(&mut self, o: Tally) {
        self.passed += o.passed;
        self.failed += o.failed;
        self.missing += o.missing;
        self.skipped += o.skipped;
    }
}

/// The judge's failure lines a hung VM leaves (tools/vm-judge.sh): the hang
/// itself, no exit marker, the test it was running and the tests after it.
fn is_hang_failure(f: &str) -> bool {
    f.starts_with("the VM hung: ")
        || f == "the guest never reported its exit status (kernel crash, hang or timeout)"
        || (f.starts_with("missing: ")
            && f.ends_with("(listed on the host, never reported by the guest)"))
        || f.ends_with("(never finished: the guest crashed, hung or timed out)")
}

/// A run that tools/vm-run.sh's watchdog stopped as hung (`hung`: its file is
/// there) and that failed for nothing else — no test failed, no kernel splat,
/// no binary that cannot start: the tests it never finished (`expected`'s
/// lines without an ok or skipped result in the judge's `results`), which
/// may run once more in a new VM.  `None` for any other run.
pub fn unfinished_after_hang(
    hung: bool,
    log: &str,
    results: &str,
    expected: &str,
) -> Option<Vec<(String, String)>> {
    if !hung {
        return None;
    }
    let mut failures = log
        .lines()
        .filter_map(|l| l.strip_prefix("vm-test: FAILED: "))
        .peekable();
    failures.peek()?;
    if !failures.all(is_hang_failure) {
        return None;
    }
    let done = results_by_test(results);
    let left: Vec<(String, String)> = expected
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|t| {
            !matches!(
                done.get(&(t.0, t.1)).map(|r| r.split(' ').next()),
                Some(Some("ok" | "skipped"))
            )
        })
        .map(|(b, t)| (b.to_string(), t.to_string()))
        .collect();
    (!left.is_empty()).then_some(left)
}

/// tools/vm-judge.sh's results file (`BINARY TEST RESULT...` lines) by test.
fn results_by_test(results: &str) -> BTreeMap<(&str, &str), &str> {
    results
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ' ');
            Some(((f.next()?, f.next()?), f.next().unwrap_or("")))
        })
        .filter(|((_, t), _)| *t != "-")
        .collect()
}

/// Whether `log` is a hung run's and its retry's (the last judge line says
/// so: [`tally_after_retry`]'s line, as `lane_vm_run` writes it).
pub fn retried_after_hang(log: &str) -> bool {
    log.lines()
        .rev()
        .find(|l| l.starts_with("vm-tests: "))
        .is_some_and(|l| l.contains("a hung VM's"))
}

/// The verdict over a hung run and its retry: each test of the first run's
/// `expected` list by its result in the retry's `retry` results if it ran
/// there, else in the first run's `first`.
pub fn tally_after_retry(expected: &str, first: &str, retry: &str) -> Tally {
    let (a, b) = (results_by_test(first), results_by_test(retry));
    let mut t = Tally::default();
    for (bin, test) in expected.lines().filter_map(|l| l.split_once(' ')) {
        let r = b.get(&(bin, test)).or_else(|| a.get(&(bin, test)));
        match r.and_then(|r| r.split(' ').next()) {
            Some("ok") => t.passed += 1,
            Some("skipped") => t.skipped += 1,
            Some(_) => t.failed += 1,
            None => t.missing += 1,
        }
    }
    t
}

/// The results of a hung run and its retry as one results file: the retry's
/// lines, and the first run's lines of the tests the retry did not run (so
/// a retry of a retry is judged over all three).
pub fn merge_results(first: &str, retry: &str) -> String {
    let again = results_by_test(retry);
    let mut out = String::new();
    for l in first.lines() {
        let mut f = l.splitn(3, ' ');
        let key = (f.next().unwrap_or(""), f.next().unwrap_or(""));
        if !again.contains_key(&key) {
            out.push_str(l);
            out.push('\n');
        }
    }
    for l in retry.lines() {
        out.push_str(l);
        out.push('\n');
    }
    out
}

impl std::fmt::Display for Tally {
    /// As the judge prints it (without the parenthesis that follows).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "vm-tests: {} passed, {} failed, {} missing",
            self.passed, self.failed, self.missing
        )?;
        if self.skipped > 0 {
            write!(f, ", {} skipped", self.skipped)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HUNG_LOG: &str = "\
vm-test: FAILED: the VM hung: no heartbeat from the guest for 300 s (the last at uptime 235.1 s): the VM was stopped
vm-test: FAILED: the guest never reported its exit status (kernel crash, hang or timeout)
vm-test: FAILED: rig mtty_in_nested_qemu (never finished: the guest crashed, hung or timed out)
vm-test: FAILED: missing: rig mtty_opens_with_vfio_ioctls (listed on the host, never reported by the guest)
vm-tests: 1 passed, 1 failed, 1 missing (3 listed on the host)
";
    const EXPECTED: &str = "mgmt a\nrig mtty_in_nested_qemu\nrig mtty_opens_with_vfio_ioctls\n";
    const RESULTS: &str = "mgmt a ok\nrig mtty_in_nested_qemu FAILED (never finished: the guest crashed, hung or timed out)\n";

    #[test]
    fn a_hung_run_leaves_the_test_it_ran_and_those_after_it() {
        let left = unfinished_after_hang(true, HUNG_LOG, RESULTS, EXPECTED).unwrap();
        let names: Vec<&str> = left.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(
            names,
            ["mtty_in_nested_qemu", "mtty_opens_with_vfio_ioctls"]
        );
    }

    #[test]
    fn only_a_run_the_watchdog_stopped_and_that_failed_for_nothing_else_is_retried() {
        // Not stopped by the watchdog (a crash or a time-out): no retry.
        assert_eq!(
            unfinished_after_hang(false, HUNG_LOG, RESULTS, EXPECTED),
            None
        );
        // A failed test besides the hang: no retry.
        let failed = format!("vm-test: FAILED: mgmt a (exit 101)\n{HUNG_LOG}");
        assert_eq!(
            unfinished_after_hang(true, &failed, RESULTS, EXPECTED),
            None
        );
        // A kernel splat besides the hang: no retry.
        let splat = format!("{HUNG_LOG}vm-test: FAILED: kernel splat: 12: BUG: soft lockup\n");
        assert_eq!(unfinished_after_hang(true, &splat, RESULTS, EXPECTED), None);
        // A binary that cannot start: no retry.
        let broken = format!(
            "{HUNG_LOG}vm-test: FAILED: missing: rig x (binary rig cannot list its tests: it cannot start)\n"
        );
        assert_eq!(
            unfinished_after_hang(true, &broken, RESULTS, EXPECTED),
            None
        );
        // No failure at all: nothing to retry.
        assert_eq!(
            unfinished_after_hang(true, "vm-tests: 3 passed\n", RESULTS, EXPECTED),
            None
        );
    }

    #[test]
    fn the_verdict_after_a_retry_takes_each_test_from_its_last_run() {
        let retry = "rig mtty_in_nested_qemu ok\nrig mtty_opens_with_vfio_ioctls ok\n";
        let t = tally_after_retry(EXPECTED, RESULTS, retry);
        assert_eq!((t.passed, t.failed, t.missing), (3, 0, 0));
        // The retry fails one and never reports the other.
        let retry = "rig mtty_in_nested_qemu FAILED (exit 101)\n";
        let t = tally_after_retry(EXPECTED, RESULTS, retry);
        assert_eq!((t.passed, t.failed, t.missing), (1, 1, 1));
        assert_eq!(t.to_string(), "vm-tests: 1 passed, 1 failed, 1 missing");
        assert_eq!(Tally::from_log(&format!("{t} (3 listed)\n")), Some(t));
        // Such a run's time is not an estimate for the next.
        let log = format!(
            "{HUNG_LOG}{t} (3 listed on the host; a hung VM's 2 unfinished tests ran again)\n"
        );
        assert!(retried_after_hang(&log));
        assert!(!retried_after_hang(HUNG_LOG));
    }

    /// A retry that hung too and was retried: the three runs' results merge
    /// into each test's last one, and the verdict is over all three.
    #[test]
    fn a_retry_of_a_retry_is_judged_over_all_three_runs() {
        // Run 1 passed one test and hung; run 2 hung on the second before
        // running the third; run 3 ran the third.
        let second = "rig mtty_in_nested_qemu FAILED (the VM hung)\n";
        let third = "rig mtty_opens_with_vfio_ioctls ok\n";
        let merged = merge_results(second, third);
        assert_eq!(
            merged,
            "rig mtty_in_nested_qemu FAILED (the VM hung)\nrig mtty_opens_with_vfio_ioctls ok\n"
        );
        let t = tally_after_retry(EXPECTED, RESULTS, &merged);
        assert_eq!((t.passed, t.failed, t.missing), (2, 1, 0));
        // The second retry passes the test the first retry hung on.
        let merged = merge_results(
            second,
            "rig mtty_in_nested_qemu ok\nrig mtty_opens_with_vfio_ioctls ok\n",
        );
        let t = tally_after_retry(EXPECTED, RESULTS, &merged);
        assert_eq!((t.passed, t.failed, t.missing), (3, 0, 0));
        // A test the retry did not run keeps its first result.
        assert_eq!(merge_results(RESULTS, ""), RESULTS);
    }

    #[test]
    fn igt_summary_is_the_last_results_line() {
        let log = "igt: 3 results in 9 s of IGT (20 s in all): pass 2, skip 1\n\
                   igt: every result as expected (1 listed: 1 skips, 0 flakes, 0 other)\n\
                   vm-tests: 1 passed, 0 failed, 0 missing (x)\n";
        assert_eq!(
            igt_summary(log),
            Some("3 results in 9 s of IGT (20 s in all): pass 2, skip 1")
        );
        assert_eq!(
            igt_summary("vm-tests: 1 passed, 0 failed, 0 missing\n"),
            None
        );
    }

    fn bins(v: &[(&str, f64)]) -> Vec<(String, f64)> {
        v.iter().map(|(b, e)| (b.to_string(), *e)).collect()
    }

    #[test]
    fn plan_packs_longest_first_and_covers_every_binary() {
        let b = bins(&[
            ("display", 300.0),
            ("demo", 80.0),
            ("mgmt", 120.0),
            ("irq", 5.0),
        ]);
        let l = plan(2, &[280.0, 70.0, 30.0], &b, 20.0);
        let all: Vec<String> = b.iter().map(|x| x.0.clone()).collect();
        check_partition(&l, &all).unwrap();
        let runs: usize = l.iter().map(|x| x.runs.len()).sum();
        assert_eq!(runs, 3);
        // 300+20 on one lane, 280 on the other, then the rest fill the gaps.
        let max = l.iter().map(|x| x.load).fold(0.0, f64::max);
        let min = l.iter().map(|x| x.load).fold(f64::MAX, f64::min);
        assert!(max - min <= 80.0 + 20.0, "{l:?}");
        assert!(l.iter().all(|x| !x.runs.is_empty() || !x.bins.is_empty()));
    }

    #[test]
    fn one_lane_runs_everything() {
        let b = bins(&[("a", 1.0), ("b", 2.0)]);
        let l = plan(1, &[5.0], &b, 20.0);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].runs, vec![0]);
        assert_eq!(l[0].bins.len(), 2);
    }

    #[test]
    fn partition_check_catches_a_lost_or_doubled_binary() {
        let all = vec!["a".to_string(), "b".to_string()];
        let lost = vec![Lane {
            bins: vec!["a".into()],
            ..Lane::default()
        }];
        assert!(check_partition(&lost, &all).is_err());
        let doubled = vec![
            Lane {
                bins: vec!["a".into(), "b".into()],
                ..Lane::default()
            },
            Lane {
                bins: vec!["b".into()],
                ..Lane::default()
            },
        ];
        assert!(check_partition(&doubled, &all).is_err());
    }

    #[test]
    fn times_and_tallies_come_from_the_log() {
        let log = "GVT-RIG: test-begin demo demo_two\nx\ntest result: ok. 1 passed; 0 failed; finished in 76.85s\n\
                   GVT-RIG: test-end demo demo_two rc=0\nGVT-RIG: test-begin irq irq_a\nfinished in 1.5s\n\
                   GVT-RIG: test-begin irq irq_b\nfinished in 0.5s\n\
                   vm-tests: 3 passed, 1 failed, 2 missing, 1 skipped (7 listed on the host)\n";
        let t = binary_times(log);
        assert!((t["demo"] - 77.85).abs() < 1e-9);
        assert!((t["irq"] - 4.0).abs() < 1e-9);
        let y = Tally::from_log(log).unwrap();
        assert_eq!(
            y,
            Tally {
                passed: 3,
                failed: 1,
                missing: 2,
                skipped: 1
            }
        );
        assert_eq!(Tally::from_log("no verdict"), None);
        assert_eq!(Tally::from_log("vm-tests: 3 passed, 9 bogus (x)"), None);
    }
}
