//! Rate limiting of log lines a guest or a VMM can trigger (a plane that
//! comes and goes, an EDID link toggled in a loop): at most [`BURST`] lines
//! per [`INTERVAL_NS`], and the next line that passes says how many were
//! suppressed.  The kernel's `printk_ratelimited` idea, with the clock
//! passed in so it is host-tested.

/// Lines let through per interval.
pub const BURST: u32 = 5;
/// The interval.
pub const INTERVAL_NS: u64 = 5_000_000_000;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimit {
    start_ns: u64,
    passed: u32,
    suppressed: u32,
    started: bool,
}

impl RateLimit {
    pub const fn new() -> Self {
        RateLimit {
            start_ns: 0,
            passed: 0,
            suppressed: 0,
            started: false,
        }
    }

    /// Whether a line may be logged at `now_ns`: `Some(n)` with the number
    /// of lines suppressed since the last one that passed, `None` to drop it.
    pub fn check(&mut self, now_ns: u64) -> Option<u32> {
        if !self.started || now_ns.saturating_sub(self.start_ns) >= INTERVAL_NS {
            self.started = true;
            self.start_ns = now_ns;
            self.passed = 0;
        }
        if self.passed < BURST {
            self.passed += 1;
            Some(core::mem::take(&mut self.suppressed))
        } else {
            self.suppressed = self.suppressed.saturating_add(1);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storm_logs_a_burst_per_interval_and_counts_the_rest() {
        let mut r = RateLimit::new();
        // 10 000 events a millisecond apart: 10 s, two intervals.
        let mut lines = 0;
        let mut reported = 0u32;
        for i in 0..10_000u64 {
            if let Some(n) = r.check(i * 1_000_000) {
                lines += 1;
                reported += n;
            }
        }
        assert_eq!(lines, 2 * BURST);
        // Every suppressed line of the first interval is reported by the
        // first line of the second.
        assert_eq!(reported, 5_000 - BURST);
    }

    #[test]
    fn quiet_sources_are_never_suppressed() {
        let mut r = RateLimit::new();
        for i in 0..100u64 {
            assert_eq!(r.check(i * INTERVAL_NS), Some(0));
        }
    }
}
