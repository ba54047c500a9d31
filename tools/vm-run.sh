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
#   GVT_VM_EXPECT=LIST [GVT_VM_BINS=a,b] tools/vm-run.sh INITRD [FILTER]
source "$(dirname "$0")/common.sh"
initrd="$1"; filter="${2:-}"
expect="${GVT_VM_EXPECT:-}"
[ -n "$expect" ] && [ -f "$expect" ] || die "GVT_VM_EXPECT must name the list of tests the run must report (xtask writes it)"
kernel="$CACHE/extract-$KREL/usr/lib/modules/$KREL/vmlinuz"
[ "$GVT_KERNEL" = distro ] && kernel="$DKBUILD/arch/x86/boot/bzImage"   # tools/build-distro-kernel.sh
[ -f "$kernel" ] || die "no kernel at $kernel: run 'cargo xtask setup'"
limit="${GVT_VM_TIMEOUT:-1800}"   # the whole run; the libvirt domain test alone takes 2-5 min (TCG in TCG)
mkdir -p "$VMDIR"; logf="$VMDIR/last-run.log"
# loglevel=5: warnings and worse reach the console as they happen (a run that
# hangs later still shows them); every message stays in a ring large enough
# for a whole run (16 MiB, what busybox dmesg reads at most), dumped at the
# end and checked to still hold the boot banner (nothing overwritten).
# (quiet before loglevel: quiet sets the console level too, the later one wins)
append="console=ttyS0 panic=-1 oops=panic quiet loglevel=5 log_buf_len=16M"
[ -n "$filter" ] && append="$append gvt.filter=$filter"
# GVT_VM_BINS=a,b,c: only these test binaries run (xtask's parallel VM runs;
# $GVT_VM_EXPECT then lists only their tests).
[ -n "${GVT_VM_BINS:-}" ] && append="$append gvt.bins=$GVT_VM_BINS"
append="$append gvt.kernel=$GVT_KERNEL"
[ -n "${GVT_RIG_SELFTEST_WARN:-}" ] && append="$append gvt.selftest_warn=1"
# vCPUs: 1, or $GVT_VM_SMP; 2 when the filter names the tests that need two
# (their names contain smp2; with 1 vCPU /init skips them).
smp="${GVT_VM_SMP:-1}"
case "$filter" in *smp2*) smp="${GVT_VM_SMP:-2}";; esac
[ -n "${GVT_RIG_SELFTEST_BREAK:-}" ] && append="$append gvt.selftest_break=$GVT_RIG_SELFTEST_BREAK"
[ -n "${GVT_RIG_SELFTEST_HIDE:-}" ] && append="$append gvt.selftest_hide=$GVT_RIG_SELFTEST_HIDE"
[ -n "${GVT_RIG_SELFTEST_HANG:-}" ] && append="$append gvt.selftest_hang=$GVT_RIG_SELFTEST_HANG"
# Two spare PCI functions for the PCI-parent tests (tests/vm/tests/pci_parent.rs):
# QEMU's pci-testdev (1b36:0005, class 00ff00), which no driver of the stock
# Debian kernel claims (none has its ID or class in modules.alias), so it sits
# unbound at 0000:00:04.0 and 0000:00:05.0 until a test binds gvt_rs to it by
# driver_override.
spare="-device pci-testdev,addr=04.0 -device pci-testdev,addr=05.0"
# The hang watchdog: /init beats every 20 s on the guest's second serial port
# (ttyS1, into $beat); when no beat arrives for $GVT_VM_SILENCE seconds (from
# the start, then from the last one) the VM is hung — L1 under TCG can wedge
# for good in its emulated SVM while a nested guest runs, silent, until the
# run's whole limit — and is stopped, with the reason in $hung for the judge
# (a file of the host's: nothing the guest prints can fake it).
silence="${GVT_VM_SILENCE:-300}"
beat="$VMDIR/heartbeat"; hung="$VMDIR/hung"; pidf="$VMDIR/qemu.pid"
rm -f "$beat" "$hung" "$pidf"; : > "$beat"
watchdog() {
  local size=0 now last
  last=$(date +%s)
  while sleep 5; do
    now=$(date +%s)
    if [ "$(stat -c %s "$beat")" != "$size" ]; then size=$(stat -c %s "$beat"); last=$now; continue; fi
    [ $((now - last)) -ge "$silence" ] || continue
    local when="none since the VM started"
    [ "$size" = 0 ] || when="the last at uptime $(tail -n1 "$beat" | tr -d '\r') s"
    echo "no heartbeat from the guest for $((now - last)) s ($when): the VM was stopped" > "$hung"
    [ -s "$pidf" ] && kill "$(cat "$pidf")"
    return
  done
}
watchdog & wdog=$!
t0=$SECONDS
# 3 GiB: the guest's root is the initramfs, unpacked into a tmpfs that may
# take half the RAM the kernel has once the initramfs itself is loaded; at
# 2 GiB the image (~770 MB unpacked, ~455 MB packed) no longer fit and the
# kernel stopped unpacking it ("Initramfs unpacking failed: write error").
log "booting the VM (QEMU TCG, -cpu max, $smp vCPU, 3 GiB; timeout ${limit} s)"
set +e
timeout --foreground -k 10 "$limit" qemu-system-x86_64 -accel tcg -cpu max -smp "$smp" -m 3G \
  -nodefaults $spare -display none -serial stdio -serial "file:$beat" -pidfile "$pidf" -no-reboot -kernel "$kernel" -initrd "$initrd" -append "$append" </dev/null 2>&1 \
  | stdbuf -o0 tr -d '\r' | tee "$logf" \
  | awk '/GVT-RIG: (dmesg|file)-begin/ {q=1; if ($2 == "file-begin") print} !q {print; fflush()} /GVT-RIG: (dmesg|file)-end/ {q=0}'
qrc=${PIPESTATUS[0]}
kill "$wdog" 2>/dev/null; wait "$wdog" 2>/dev/null
set -e
elapsed=$((SECONDS - t0))
# The verdict: tools/vm-judge.sh (it can also judge a saved log again; the
# watchdog's finding, if any, in GVT_VM_HUNG).
GVT_VM_HUNG="$(cat "$hung" 2>/dev/null || true)" \
  exec bash "$(dirname "$0")/vm-judge.sh" "$logf" "$expect" "$qrc" "$limit" "$elapsed"
