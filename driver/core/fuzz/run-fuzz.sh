#!/usr/bin/env bash
# Coverage-guided fuzzing of command submission and of the migration resume
# parser (issue 14) for a bounded time.
#   driver/core/fuzz/run-fuzz.sh [SECONDS]   (default 60; a third of it for
#   the resume target, the rest for submission)
# Builds the libFuzzer target with SanitizerCoverage instrumentation on the
# stable toolchain (the flags cargo-fuzz passes; no ASan: gvt-core forbids
# unsafe code, so coverage and the target's own oracle do the work), seeds
# the corpus with valid streams, and runs.  Needs cargo and a C++ compiler
# (libfuzzer-sys builds libFuzzer from source).  Crashes land in artifacts/.
set -euo pipefail
secs="${1:-60}"
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
command -v c++ >/dev/null || { echo "run-fuzz: needs a C++ compiler (apt-get install g++)" >&2; exit 1; }
python3 gen-seeds.py seeds >/dev/null
mkdir -p corpus/submit artifacts
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps RUSTFLAGS away from build scripts (as cargo-fuzz does).
triple="$(rustc -vV | sed -n 's/^host: //p')"
# Its own target dir (a separate workspace with other RUSTFLAGS).
tdir="${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/fuzz}"
tdir="${tdir:-target}"
CARGO_TARGET_DIR="$tdir" cargo build --release --bin submit --bin resume --target "$triple"
resume_secs=$((secs / 3))
[ "$resume_secs" -ge 1 ] || resume_secs=1
submit_secs=$((secs - resume_secs))
[ "$submit_secs" -ge 1 ] || submit_secs=1
# libFuzzer logs every new input; keep that in a file and print the
# summary (or, on a crash, the end of the log).
run() { # TARGET SECONDS CORPUS...
  local t="$1" s="$2"; shift 2
  local log="artifacts/fuzz-$t.log"
  if ! "$tdir/$triple/release/$t" "$@" \
    -max_total_time="$s" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix=artifacts/ -print_final_stats=1 > "$log" 2>&1; then
    tail -n 60 "$log"
    echo "run-fuzz: the fuzz target $t failed (crash or timeout); inputs are in $here/artifacts/" >&2
    exit 1
  fi
  echo "== $t ($s s)"
  grep -E '^(Done|stat::)' "$log"
}
mkdir -p corpus/resume
run submit "$submit_secs" corpus/submit seeds
run resume "$resume_secs" corpus/resume
