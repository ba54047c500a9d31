//! IGT results against checked-in expectations, drm-ci style
//! (tests/vm/tests/gvt_drm_igt.rs; the files are in `tests/vm/igt/`).
//!
//! The L2 program (tools/vm/l2-igt) prints one `L2: igt-result NAME RESULT`
//! line per result of IGT's runner (`NAME` is `test`, `test@subtest` or
//! `test@subtest@dynamic`, `RESULT` IGT's own word: `pass`, `skip`, `fail`,
//! `crash`, `timeout`, `dmesg-warn`, ...).  Every result must be `pass`
//! unless an expectations file names it:
//! - `gvt_drm-skips.txt`: `NAME` lines, results that must be `skip` (the
//!   device lacks what the test needs);
//! - `gvt_drm-fails.txt`: `NAME,Result` lines (drm-ci's words: `Fail`,
//!   `Crash`, `Timeout`, `DmesgWarn`, `DmesgFail`, `Warn`, `Abort`,
//!   `Incomplete`, `NotRun`), results that must be exactly that;
//! - `gvt_drm-flakes.txt`: `NAME` lines, results that vary from run to run
//!   (timing under nested virtualization): any result, but there must be one.
//!
//! Every entry has its reason: the files are groups separated by blank
//! lines, and a group with entries starts with the comment lines (`#`) that
//! say why.  Any change fails: a result not expected, an expected one that
//! changed (a fix included: update the file), an entry that matched no
//! result, a test binary of the list with no result at all.

use std::collections::BTreeMap;

/// What an expectations file says one result must be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    /// IGT's word for it (`skip`, `fail`, `timeout`, ...).
    pub result: String,
    /// The reason (the comment lines above the entry's group).
    pub reason: String,
    /// `file:line` of the entry.
    pub at: String,
}

/// drm-ci's result words and IGT's.
const RESULTS: [(&str, &str); 10] = [
    ("Fail", "fail"),
    ("Crash", "crash"),
    ("Timeout", "timeout"),
    ("DmesgWarn", "dmesg-warn"),
    ("DmesgFail", "dmesg-fail"),
    ("Warn", "warn"),
    ("Abort", "abort"),
    ("Incomplete", "incomplete"),
    ("NotRun", "notrun"),
    ("Skip", "skip"),
];

/// IGT's word for a drm-ci result word.
pub fn igt_word(drm_ci: &str) -> Option<&'static str> {
    RESULTS.iter().find(|(d, _)| *d == drm_ci).map(|(_, i)| *i)
}

/// [`Expected::result`] of a flake: any result.
pub const FLAKE: &str = "flake";

/// Parse the expectation files (`name`s for the messages: skips, fails,
/// flakes) into one map from result name to what it must be.  Errors: an
/// entry without a reason, a malformed line, an unknown result word, a
/// name twice.
pub fn parse_expectations(
    skips: (&str, &str),
    fails: (&str, &str),
    flakes: (&str, &str),
) -> Result<BTreeMap<String, Expected>, String> {
    let mut out = BTreeMap::new();
    let mut errs = Vec::new();
    for (file, text, only_name) in [
        (skips.0, skips.1, Some("skip")),
        (fails.0, fails.1, None),
        (flakes.0, flakes.1, Some(FLAKE)),
    ] {
        let mut reason = String::new();
        let mut in_group = false;
        for (i, raw) in text.lines().enumerate() {
            let at = format!("{file}:{}", i + 1);
            let line = raw.trim();
            if line.is_empty() {
                reason.clear();
                in_group = false;
                continue;
            }
            if let Some(c) = line.strip_prefix('#') {
                if in_group {
                    // A comment after entries starts a new reason.
                    reason.clear();
                    in_group = false;
                }
                if !reason.is_empty() {
                    reason.push(' ');
                }
                reason.push_str(c.trim());
                continue;
            }
            in_group = true;
            if reason.is_empty() {
                errs.push(format!(
                    "{at}: '{line}' has no reason (a comment line right above its group)"
                ));
                continue;
            }
            let (name, result) = if let Some(word) = only_name {
                if line.contains(',') || line.contains(char::is_whitespace) {
                    errs.push(format!(
                        "{at}: '{line}': a {file} entry is a result name alone"
                    ));
                    continue;
                }
                (line, word)
            } else {
                let Some((n, r)) = line.split_once(',') else {
                    errs.push(format!("{at}: '{line}': a fails entry is NAME,Result"));
                    continue;
                };
                match igt_word(r.trim()) {
                    Some("skip") | None => {
                        errs.push(format!(
                            "{at}: '{line}': unknown result '{}' (one of Fail, Crash, Timeout, DmesgWarn, DmesgFail, Warn, Abort, Incomplete, NotRun; skips go to the skips file)",
                            r.trim()
                        ));
                        continue;
                    }
                    Some(w) => (n.trim(), w),
                }
            };
            if name.is_empty() || name.contains(char::is_whitespace) || name.starts_with("igt@") {
                errs.push(format!(
                    "{at}: '{name}': a result name is test[@subtest[@dynamic]], no 'igt@'"
                ));
                continue;
            }
            let e = Expected {
                result: result.to_string(),
                reason: reason.clone(),
                at: at.clone(),
            };
            if let Some(prev) = out.insert(name.to_string(), e) {
                errs.push(format!("{at}: '{name}' again (first at {})", prev.at));
            }
        }
    }
    if errs.is_empty() {
        Ok(out)
    } else {
        Err(errs.join("\n"))
    }
}

/// The results in an L2 console log (`L2: igt-result NAME RESULT` lines).
pub fn parse_results(log: &str) -> BTreeMap<String, String> {
    log.lines()
        .filter_map(|l| l.split("L2: igt-result ").nth(1))
        .filter_map(|r| {
            let mut w = r.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.to_string()))
        })
        .collect()
}

/// Every difference between `results` and `expected`, one line each (empty:
/// the run is exactly as expected); `binaries` are the test binaries that
/// must each have at least one result.
pub fn compare(
    results: &BTreeMap<String, String>,
    expected: &BTreeMap<String, Expected>,
    binaries: &[&str],
) -> Vec<String> {
    let mut d = Vec::new();
    for b in binaries {
        let has = results
            .keys()
            .any(|n| n == b || n.strip_prefix(b).is_some_and(|r| r.starts_with('@')));
        if !has {
            d.push(format!("{b}: no result at all (the runner never ran it?)"));
        }
    }
    for (name, got) in results {
        match expected.get(name) {
            None if got == "pass" => {}
            None => d.push(format!(
                "{name}: {got}, expected pass (not in the expectations)"
            )),
            Some(e) if e.result == *got || e.result == FLAKE => {}
            Some(e) => d.push(format!(
                "{name}: {got}, expected {} ({}: {})",
                e.result, e.at, e.reason
            )),
        }
    }
    for (name, e) in expected {
        if !results.contains_key(name) {
            d.push(format!(
                "{name}: no such result, expected {} ({}): a stale entry",
                e.result, e.at
            ));
        }
    }
    d
}

/// Counts per result word, `pass 65, skip 6, fail 63` style, most first.
pub fn tally(results: &BTreeMap<String, String>) -> String {
    let mut n: BTreeMap<&str, usize> = BTreeMap::new();
    for r in results.values() {
        *n.entry(r.as_str()).or_default() += 1;
    }
    let mut v: Vec<(&str, usize)> = n.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    v.iter()
        .map(|(r, c)| format!("{r} {c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SKIPS: &str = "# header: what this file is\n\n# no cursor plane\nkms_cursor_legacy@basic\nkms_cursor_legacy@flip\n\n# one pipe only\nkms_flip@2x-plain-flip\n";
    const FAILS: &str = "# header\n\n# the counter is soft\nkms_vblank@query,Fail\n# the timer is slow\nkms_flip@plain-flip@A-Virtual-1,Timeout\n";

    fn results(v: &[(&str, &str)]) -> BTreeMap<String, String> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    const FLAKES: &str = "# header\n\n# timing\nkms_flip@flip-vs-panning\n";

    fn exp() -> BTreeMap<String, Expected> {
        parse_expectations(("skips", SKIPS), ("fails", FAILS), ("flakes", FLAKES))
            .expect("valid files")
    }

    #[test]
    fn expectations_parse_with_their_reasons() {
        let e = exp();
        assert_eq!(e.len(), 6);
        assert_eq!(e["kms_flip@flip-vs-panning"].result, FLAKE);
        assert_eq!(e["kms_cursor_legacy@flip"].result, "skip");
        assert_eq!(e["kms_cursor_legacy@flip"].reason, "no cursor plane");
        assert_eq!(e["kms_flip@2x-plain-flip"].reason, "one pipe only");
        assert_eq!(e["kms_vblank@query"].result, "fail");
        assert_eq!(e["kms_flip@plain-flip@A-Virtual-1"].result, "timeout");
        assert_eq!(
            e["kms_flip@plain-flip@A-Virtual-1"].reason,
            "the timer is slow"
        );
        assert_eq!(e["kms_flip@plain-flip@A-Virtual-1"].at, "fails:6");
    }

    #[test]
    fn expectations_refuse_entries_without_reason_and_bad_lines() {
        let bad = |s: &str, f: &str| parse_expectations(("s", s), ("f", f), ("k", "")).unwrap_err();
        let flakes = parse_expectations(("s", ""), ("f", ""), ("k", "kms_a@b\n"));
        assert!(flakes.unwrap_err().contains("no reason"));
        assert!(bad("kms_a@b\n", "").contains("no reason"));
        assert!(bad("# r\nkms_a@b\n\nkms_c@d\n", "").contains("s:4"));
        assert!(bad("", "# r\nkms_a@b\n").contains("NAME,Result"));
        assert!(bad("", "# r\nkms_a@b,Bad\n").contains("unknown result"));
        assert!(bad("", "# r\nkms_a@b,Skip\n").contains("unknown result"));
        assert!(bad("# r\nkms_a@b,Fail\n", "").contains("result name alone"));
        assert!(bad("# r\nigt@kms_a@b\n", "").contains("no 'igt@'"));
        assert!(bad("# r\nkms_a@b\n", "# q\nkms_a@b,Fail\n").contains("again"));
    }

    #[test]
    fn a_run_as_expected_has_no_difference() {
        let r = results(&[
            ("core_getversion", "pass"),
            ("kms_cursor_legacy@basic", "skip"),
            ("kms_cursor_legacy@flip", "skip"),
            ("kms_flip@2x-plain-flip", "skip"),
            ("kms_flip@plain-flip", "timeout"),
            ("kms_flip@plain-flip@A-Virtual-1", "timeout"),
            ("kms_vblank@query", "fail"),
            ("kms_flip@flip-vs-panning", "fail"),
        ]);
        let mut e = exp();
        // The parent of a dynamic subtest is a result of its own.
        e.insert(
            "kms_flip@plain-flip".into(),
            Expected {
                result: "timeout".into(),
                reason: "r".into(),
                at: "x".into(),
            },
        );
        let bins = [
            "core_getversion",
            "kms_cursor_legacy",
            "kms_flip",
            "kms_vblank",
        ];
        assert_eq!(compare(&r, &e, &bins), Vec::<String>::new());
        assert_eq!(tally(&r), "skip 3, fail 2, timeout 2, pass 1");
        // A flake may also pass.
        let mut r2 = r.clone();
        r2.insert("kms_flip@flip-vs-panning".into(), "pass".into());
        assert_eq!(compare(&r2, &e, &bins), Vec::<String>::new());
    }

    #[test]
    fn every_kind_of_change_is_a_difference() {
        let e = exp();
        let base = [
            ("kms_cursor_legacy@basic", "skip"),
            ("kms_cursor_legacy@flip", "skip"),
            ("kms_flip@2x-plain-flip", "skip"),
            ("kms_flip@plain-flip@A-Virtual-1", "timeout"),
            ("kms_vblank@query", "fail"),
            ("kms_flip@flip-vs-panning", "timeout"),
        ];
        let bins = ["kms_cursor_legacy", "kms_flip", "kms_vblank"];
        assert!(compare(&results(&base), &e, &bins).is_empty());
        let changed = |name: &str, to: Option<&str>| {
            let mut r = results(&base);
            match to {
                Some(t) => {
                    r.insert(name.to_string(), t.to_string());
                }
                None => {
                    r.remove(name);
                }
            }
            compare(&r, &e, &bins)
        };
        // A new failure, a fix, a different failure, a skip that passes, a
        // result that vanished, a binary with no result.
        let d = changed("kms_atomic@plane-overlay", Some("fail"));
        assert!(d[0].contains("expected pass"), "{d:?}");
        let d = changed("kms_vblank@query", Some("pass"));
        assert!(d[0].contains("pass, expected fail"), "{d:?}");
        let d = changed("kms_vblank@query", Some("crash"));
        assert!(d[0].contains("crash, expected fail"), "{d:?}");
        let d = changed("kms_cursor_legacy@flip", Some("pass"));
        assert!(d[0].contains("pass, expected skip"), "{d:?}");
        let d = changed("kms_flip@2x-plain-flip", None);
        assert!(d[0].contains("stale entry"), "{d:?}");
        let d = changed("kms_flip@flip-vs-panning", None);
        assert!(d[0].contains("stale entry"), "{d:?}");
        let d = compare(&results(&base), &e, &["kms_plane"]);
        assert!(d[0].contains("kms_plane: no result"), "{d:?}");
    }

    #[test]
    fn results_come_from_the_l2_lines() {
        let log = "L2: igt-runner [001/002] kms_flip (plain-flip)\nL2: igt-result kms_flip@plain-flip pass\nnoise\nL2: igt-result core_getversion fail\nL2: igt-results 2\n";
        assert_eq!(
            parse_results(log),
            results(&[("kms_flip@plain-flip", "pass"), ("core_getversion", "fail")])
        );
    }
}
