#!/usr/bin/env bash
# The VM rig's verdict on one run's console log (tools/vm-run.sh runs it; it
# can judge a saved log again):
#   [GVT_VM_HUNG=REASON] tools/vm-judge.sh LOG EXPECTED QEMU_EXIT LIMIT_S ELAPSED_S
# EXPECTED lists the tests the run must report ("BINARY TEST" lines, made on
# the host by xtask before the VM booted).  Non-zero exit on any failed test,
# any listed test without a result (a binary that is missing or cannot start,
# a test left out, a guest that crashed or hung), a missing exit marker, a
# kernel splat (WARNING:/BUG:/Oops/KASAN/panic, soft lockup, hung task, RCU
# stall) anywhere in the log, or a kernel log that lost messages.  A test is
# ok when it exited 0 and libtest reported "1 passed"; one that also printed
# "GVT-RIG: skip: REASON" is skipped.  Prints "vm-tests: N passed, F failed,
# M missing (L listed on the host)".
source "$(dirname "$0")/common.sh"
logf="$1"; expect="$2"; qrc="$3"; limit="$4"; elapsed="$5"
[ -f "$logf" ] && [ -f "$expect" ] || die "usage: vm-judge.sh LOG EXPECTED QEMU_EXIT LIMIT_S ELAPSED_S"
fail=()
if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then fail+=("the VM timed out after ${limit} s"); fi
# tools/vm-run.sh's hang watchdog stopped the VM (its reason; not from the log).
[ -n "${GVT_VM_HUNG:-}" ] && fail+=("the VM hung: ${GVT_VM_HUNG}")
exit_line=$(grep -a 'GVT-RIG: exit=' "$logf" | tail -1 || true)
case "$exit_line" in
  *exit=0) ;;
  *exit=*) fail+=("tests failed inside the VM") ;;
  *) fail+=("the guest never reported its exit status (kernel crash, hang or timeout)") ;;
esac
splat='WARNING:|BUG:|Oops|KASAN|Kernel panic|general protection fault|Call Trace'
splat="$splat|soft lockup|hard LOCKUP|blocked for more than|rcu_(sched|preempt|bh) (self-)?detected stalls|rcu: INFO:"
if grep -a -n -E "$splat" "$logf" > "$VMDIR/splats"; then
  fail+=("kernel splat in the guest log ($(wc -l < "$VMDIR/splats") lines), first: $(head -1 "$VMDIR/splats")")
  while read -r l; do fail+=("kernel splat: $l"); done < <(grep -a -E 'WARNING:|BUG:|Oops|KASAN|panic|soft lockup|LOCKUP|blocked for more than|detected stalls|rcu: INFO:' "$VMDIR/splats" | head -20)
fi
dump=$(sed -n '/^GVT-RIG: dmesg-begin/,/^GVT-RIG: dmesg-end/p' "$logf")
if grep -a -q 'printk messages dropped' "$logf"; then
  fail+=("the kernel dropped log messages: $(grep -a -m1 'printk messages dropped' "$logf")")
fi
if [ -n "$dump" ] && ! grep -a -q 'Linux version' <<<"$dump"; then
  fail+=("the kernel log dump lacks the boot banner: its ring overflowed, early messages are lost (raise log_buf_len)")
elif [ -n "$dump" ]; then
  echo "vm-test: kernel log complete since boot ($(($(wc -l <<<"$dump") - 2)) lines, $(wc -c <<<"$dump") bytes)"
fi
# Every test listed on the host must have a result.
results="$VMDIR/results"
awk '
  function close_open(why) { if (cur != "") { print cur, "FAILED", why; cur = "" } }
  match($0, /GVT-RIG: test-begin [^ ]+ [^ ]+$/) {
    close_open("(no end marker: the next test began)")
    split(substr($0, RSTART), f, " "); cur = f[3] " " f[4]; ok = 0; skip = ""; next
  }
  match($0, /GVT-RIG: test-end [^ ]+ [^ ]+ rc=-?[0-9]+$/) {
    split(substr($0, RSTART), f, " "); t = f[3] " " f[4]; rc = substr(f[5], 4)
    if (t != cur) { close_open("(no end marker)"); print t, "FAILED", "(end marker without a begin)"; next }
    if (rc != 0) print t, "FAILED", "(exit " rc ")"
    else if (!ok) print t, "FAILED", "(exit 0 without libtest reporting 1 passed: exited early?)"
    else if (skip != "") print t, "skipped", skip
    else print t, "ok"
    cur = ""; next
  }
  cur != "" && /test result: ok\. 1 passed; 0 failed/ { ok = 1 }
  cur != "" && match($0, /GVT-RIG: skip: .*/) { skip = substr($0, RSTART + 15) }
  match($0, /GVT-RIG: binary [^ ]+ cannot list/) { split(substr($0, RSTART), f, " "); print f[3], "-", "cannot-list" }
  END { close_open("(never finished: the guest crashed, hung or timed out)") }
' "$logf" > "$results"
passed=0; failed=0; missing=0; skipped=0
while read -r b t; do
  r=$(awk -v b="$b" -v t="$t" '$1 == b && $2 == t { $1 = ""; $2 = ""; sub(/^  /, ""); print; exit }' "$results")
  case "$r" in
    ok) passed=$((passed + 1)) ;;
    skipped*) skipped=$((skipped + 1)); echo "vm-test: skipped $b $t: ${r#skipped }" ;;
    FAILED*) failed=$((failed + 1)); fail+=("$b $t ${r#FAILED }") ;;
    *) missing=$((missing + 1))
       if grep -q "^$b - cannot-list" "$results"; then fail+=("missing: $b $t (binary $b cannot list its tests: it cannot start)")
       else fail+=("missing: $b $t (listed on the host, never reported by the guest)"); fi ;;
  esac
done < "$expect"
while read -r b t r; do
  [ "$t" = - ] && continue
  grep -q -x "$b $t" "$expect" || fail+=("unexpected: $b $t ran in the guest but was not listed on the host ($r)")
done < "$results"
grep -q ' - cannot-list' "$results" && fail+=("$(awk '$3 == "cannot-list" { printf "%s ", $1 }' "$results")cannot list its tests")
files="${GVT_VM_FILES:-$VMDIR/files}"
while read -r name size; do
  mkdir -p "$files"
  awk -v n="$name" '$0 == "GVT-RIG: file-end " n {q=0} q {print} $0 ~ "^GVT-RIG: file-begin " n " " {q=1}' "$logf" \
    | base64 -d > "$files/$name" || fail+=("exported file $name does not decode")
  got=$(stat -c %s "$files/$name")
  if [ "$got" = "$size" ]; then log "saved $files/$name ($size bytes from the guest)"
  else fail+=("exported file $name: $got bytes arrived, $size sent"); fi
done < <(grep -a -o -E '^GVT-RIG: file-begin [A-Za-z0-9._-]+ [0-9]+$' "$logf" | cut -d' ' -f3,4)
# Nested QEMUs whose L2 kernel never started were retried once (a hang after
# L2 started is a failure, never retried): count and show them.
retries=$(grep -a -c 'GVT-RIG: nested-retry:' "$logf" || true)
if [ "$retries" -gt 0 ]; then
  echo "vm-test: $retries nested QEMU run(s) retried because the L2 kernel never started:"
  grep -a -o 'GVT-RIG: nested-retry:.*' "$logf" | sed 's/^/vm-test:   /'
fi
if [ ${#fail[@]} -gt 0 ]; then
  echo "---- guest kernel log ($logf) ----"
  sed -n '/GVT-RIG: dmesg-begin/,/GVT-RIG: dmesg-end/p' "$logf" | { grep -a -v 'rig self-check: filler line' || true; } | tail -200
  grep -a -q 'GVT-RIG: dmesg-begin' "$logf" || tail -100 "$logf"
  for f in "${fail[@]}"; do echo "vm-test: FAILED: $f"; done
fi
echo "vm-tests: $passed passed, $failed failed, $missing missing$([ "$skipped" = 0 ] || echo ", $skipped skipped") ($(wc -l < "$expect") listed on the host$([ "$retries" = 0 ] || echo "; $retries nested QEMU retries"))"
log "VM run took ${elapsed} s"
[ ${#fail[@]} -eq 0 ]
