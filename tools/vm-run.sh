#!/usr/bin/env bash
# Boot the stock Debian kernel under QEMU TCG (-cpu max, no KVM on the host)
# with the rig's initramfs, stream the tests' output, and judge the run:
# non-zero exit on any failed test, any test listed on the host ($GVT_VM_EXPECT,
# lines "BINARY TEST", written by xtask before the VM boots) that the guest
# did not report (a binary that is missing or cannot start, a test left out),
# a missing exit marker (crash, hang, timeout), a kernel splat (WARNING:/BUG:/
# Oops/KASAN/panic, soft lockup, hung task, RCU stall) anywhere in the log, or
# a kernel log that lost messages.  Each test's result is judged from the
# guest's markers (tools/vm/init): ok = exit 0 and libtest's "1 passed";
# a passing test that printed "GVT-RIG: skip: REASON" counts as skipped.
# Files a test exports on the console (GVT-RIG: file-begin NAME BYTES, base64
# lines, GVT-RIG: file-end NAME; gvt_vmtests::screen::export_file) are decoded
# into $GVT_VM_FILES (default $GVT_VM_DIR/files), their size checked.
#   GVT_VM_EXPECT=LIST tools/vm-run.sh INITRD [FILTER]
source "$(dirname "$0")/common.sh"
initrd="$1"; filter="${2:-}"
expect="${GVT_VM_EXPECT:-}"
[ -n "$expect" ] && [ -f "$expect" ] || die "GVT_VM_EXPECT must name the list of tests the run must report (xtask writes it)"
kernel="$CACHE/extract-$KREL/usr/lib/modules/$KREL/vmlinuz"
[ -f "$kernel" ] || die "no kernel at $kernel: run 'cargo xtask setup'"
limit="${GVT_VM_TIMEOUT:-1200}"
mkdir -p "$VMDIR"; logf="$VMDIR/last-run.log"
# loglevel=5: warnings and worse reach the console as they happen (a run that
# hangs later still shows them); every message stays in a ring large enough
# for a whole run (16 MiB, what busybox dmesg reads at most), dumped at the
# end and checked to still hold the boot banner (nothing overwritten).
append="console=ttyS0 panic=-1 oops=panic loglevel=5 quiet log_buf_len=16M"
[ -n "$filter" ] && append="$append gvt.filter=$filter"
[ -n "${GVT_RIG_SELFTEST_WARN:-}" ] && append="$append gvt.selftest_warn=1"
[ -n "${GVT_RIG_SELFTEST_BREAK:-}" ] && append="$append gvt.selftest_break=$GVT_RIG_SELFTEST_BREAK"
[ -n "${GVT_RIG_SELFTEST_HIDE:-}" ] && append="$append gvt.selftest_hide=$GVT_RIG_SELFTEST_HIDE"
t0=$SECONDS
log "booting the VM (QEMU TCG, -cpu max, 1 vCPU, 2 GiB; timeout ${limit} s)"
set +e
timeout --foreground -k 10 "$limit" qemu-system-x86_64 -accel tcg -cpu max -smp 1 -m 2G \
  -nodefaults -display none -serial stdio -no-reboot -kernel "$kernel" -initrd "$initrd" -append "$append" </dev/null 2>&1 \
  | stdbuf -o0 tr -d '\r' | tee "$logf" \
  | awk '/GVT-RIG: (dmesg|file)-begin/ {q=1; if ($2 == "file-begin") print} !q {print; fflush()} /GVT-RIG: (dmesg|file)-end/ {q=0}'
qrc=${PIPESTATUS[0]}
set -e
elapsed=$((SECONDS - t0))
fail=()
if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then fail+=("the VM timed out after ${limit} s"); fi
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
if grep -a -q 'printk messages dropped\|messages suppressed' "$logf"; then
  fail+=("the kernel dropped log messages: $(grep -a -m1 'printk messages dropped\|messages suppressed' "$logf")")
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
  sed -n '/GVT-RIG: dmesg-begin/,/GVT-RIG: dmesg-end/p' "$logf" | grep -a -v 'rig self-check: filler line' | tail -200
  grep -a -q 'GVT-RIG: dmesg-begin' "$logf" || tail -100 "$logf"
  for f in "${fail[@]}"; do echo "vm-test: FAILED: $f"; done
fi
echo "vm-tests: $passed passed, $failed failed, $missing missing$([ "$skipped" = 0 ] || echo ", $skipped skipped") ($(wc -l < "$expect") listed on the host$([ "$retries" = 0 ] || echo "; $retries nested QEMU retries"))"
log "VM run took ${elapsed} s"
[ ${#fail[@]} -eq 0 ]
