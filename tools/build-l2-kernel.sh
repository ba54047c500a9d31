#!/usr/bin/env bash
# A small kernel for the nested (L2) guests that the VM tests start with an
# unmodified QEMU: tinyconfig + 64-bit + PCI/MSI + serial console + initramfs.
# Built once from the same linux-source and cached ($CACHE/l2-bzImage).
source "$(dirname "$0")/common.sh"
serialize build-l2-kernel
need_root
out="$CACHE/l2-bzImage"
cfg_id="l2-v2-$KVER_PKG"
if [ -f "$out" ] && [ "$(cat "$out.id" 2>/dev/null)" = "$cfg_id" ]; then
  log "L2 kernel cached at $out"; exit 0
fi
EXTRACT="$CACHE/extract-$KREL"
tarball=$(ls "$EXTRACT"/usr/src/linux-source-"$KSERIES".tar.* 2>/dev/null | head -1)
[ -n "$tarball" ] || die "no linux-source tarball: run tools/prepare-kernel.sh first"
src="$CACHE/l2-src"
# The unpacked source is shared with the L2 DRM and distro kernels (other
# output dirs); it is unpacked under a lock of its own, so the three builds
# can run side by side (xtask starts them together).
(
  flock 8
  if [ ! -f "$src/.unpacked" ]; then
    rm -rf "$src"; mkdir -p "$src"
    step "unpacking linux-source for the L2 kernels" tar -C "$src" --strip-components=1 -xf "$tarball"
    touch "$src/.unpacked"
  fi
) 8>"$CACHE/.lock-l2-src"
opts="64BIT PCI PCI_MSI SERIAL_8250 SERIAL_8250_CONSOLE TTY PRINTK BLK_DEV_INITRD RD_GZIP \
BINFMT_ELF BINFMT_SCRIPT DEVTMPFS DEVTMPFS_MOUNT PROC_FS SYSFS FUTEX EPOLL SIGNALFD TIMERFD \
EVENTFD SHMEM MULTIUSER POSIX_TIMERS HYPERVISOR_GUEST PARAVIRT KVM_GUEST X86_TSC PCI_QUIRKS \
PRINTK_TIME EARLY_PRINTK"
in_chroot "set -e; cd $src; make O=$src/out tinyconfig >/dev/null
  for o in $opts; do scripts/config --file out/.config -e \$o; done
  make O=$src/out olddefconfig >/dev/null"
step "building the L2 kernel (tinyconfig + PCI + serial)" \
  in_chroot "make -C $src O=$src/out -j$(nproc) CC=x86_64-linux-gnu-gcc-14 HOSTCC=gcc bzImage >/dev/null"
cp "$src/out/arch/x86/boot/bzImage" "$out"
echo "$cfg_id" > "$out.id"
log "L2 kernel: $out ($(stat -c %s "$out") bytes)"
