#!/usr/bin/env bash
# Boot the stock Debian kernel under QEMU TCG (-cpu max, no KVM on the host)
# with the rig's initramfs, stream the tests' output, and judge the run:
# non-zero exit on any failed test, missing exit marker (crash, hang,
# timeout), or a kernel splat (WARNING:/BUG:/Oops/KASAN/panic) in the log.
# Files a test exports on the console (GVT-RIG: file-begin NAME BYTES, base64
# lines, GVT-RIG: file-end NAME; gvt_vmtests::screen::export_file) are decoded
# into $GVT_VM_FILES (default $GVT_VM_DIR/files), their size checked.
#   tools/vm-run.sh INITRD [FILTER]
source "$(dirname "$0")/common.sh"
initrd="$1"; filter="${2:-}"
kernel="$CACHE/extract-$KREL/usr/lib/modules/$KREL/vmlinuz"
[ -f "$kernel" ] || die "no kernel at $kernel: run 'cargo xtask setup'"
limit="${GVT_VM_TIMEOUT:-1200}"
mkdir -p "$VMDIR"; logf="$VMDIR/last-run.log"
append="console=ttyS0 panic=-1 oops=panic loglevel=4 quiet"
[ -n "$filter" ] && append="$append gvt.filter=$filter"
[ -n "${GVT_RIG_SELFTEST_WARN:-}" ] && append="$append gvt.selftest_warn=1"
# vCPUs: 1, or $GVT_VM_SMP; 2 when the filter names the tests that need two
# (their names contain smp2; with 1 vCPU /init skips them).
smp="${GVT_VM_SMP:-1}"
case "$filter" in *smp2*) smp="${GVT_VM_SMP:-2}";; esac
t0=$SECONDS
log "booting the VM (QEMU TCG, -cpu max, $smp vCPU, 2 GiB; timeout ${limit} s)"
set +e
timeout --foreground -k 10 "$limit" qemu-system-x86_64 -accel tcg -cpu max -smp "$smp" -m 2G \
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
if grep -a -n -E 'WARNING:|BUG:|Oops|KASAN|Kernel panic|general protection fault|Call Trace' "$logf" > "$VMDIR/splats"; then
  fail+=("kernel splat in the guest log: $(head -1 "$VMDIR/splats")")
fi
files="${GVT_VM_FILES:-$VMDIR/files}"
while read -r name size; do
  mkdir -p "$files"
  awk -v n="$name" '$0 == "GVT-RIG: file-end " n {q=0} q {print} $0 ~ "^GVT-RIG: file-begin " n " " {q=1}' "$logf" \
    | base64 -d > "$files/$name" || fail+=("exported file $name does not decode")
  got=$(stat -c %s "$files/$name")
  if [ "$got" = "$size" ]; then log "saved $files/$name ($size bytes from the guest)"
  else fail+=("exported file $name: $got bytes arrived, $size sent"); fi
done < <(grep -a -o -E '^GVT-RIG: file-begin [A-Za-z0-9._-]+ [0-9]+$' "$logf" | cut -d' ' -f3,4)
passed=$( (grep -a -o -E '^test result: [a-zA-Z]+\. [0-9]+ passed' "$logf" || true) | awk '{s+=$4} END {print s+0}')
failed=$( (grep -a -o -E '^test result: [a-zA-Z]+\. [0-9]+ passed; [0-9]+ failed' "$logf" || true) | awk '{s+=$6} END {print s+0}')
if [ ${#fail[@]} -gt 0 ]; then
  echo "---- guest kernel log ($logf) ----"
  sed -n '/GVT-RIG: dmesg-begin/,/GVT-RIG: dmesg-end/p' "$logf" | tail -200
  grep -a -q 'GVT-RIG: dmesg-begin' "$logf" || tail -100 "$logf"
  for f in "${fail[@]}"; do echo "vm-test: FAILED: $f"; done
  [ "$failed" -gt 0 ] || failed=1
fi
echo "vm-tests: $passed passed, $failed failed"
log "VM run took ${elapsed} s"
[ ${#fail[@]} -eq 0 ]
