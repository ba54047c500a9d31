#!/usr/bin/env bash
# The L2 kernel that hosts the native guest driver (guest-kmod/, gvt_drm.ko):
# the tiny L2 kernel's options (tools/build-l2-kernel.sh) plus loadable
# modules, Rust (the chroot's rustc 1.85.1 + bindgen, as for the host module),
# DRM with the KMS helpers, the GEM shmem helper, the fbdev emulation and the
# framebuffer console (on a VT).  Built once from the same linux-source into
# its own output tree, kept in the cache: the guest module is built against
# it ($L2DRM_BUILD), the kernel image is $L2DRM_IMAGE (tools/common.sh: both
# named after the config version).  v3 adds what IGT's runner and tests need
# (tests/vm/tests/gvt_drm_igt.rs): UNIX sockets (the runner's comms with
# each test), debugfs (DRM's CRC interface), tmpfs and memfd, sysctl (the
# taint file), file locks and high-resolution timers (vblank waits).  v4
# turns on fbcon's use of a driver's accelerated copy
# (FRAMEBUFFER_CONSOLE_LEGACY_ACCELERATION, default off on x86): fbcon then
# scrolls by moving the screen with fb_copyarea, which gvt_drm does on the
# mediated blitter, instead of redrawing every glyph with the CPU.
#
# DRM_GEM_SHMEM_HELPER and DRM_CLIENT_SELECTION have no prompt: only a driver
# can select them, so the smallest in-tree one that does (cirrus-qemu, one
# file; it binds only 1013:00b8, which no rig QEMU has) is built in.
source "$(dirname "$0")/common.sh"
serialize build-l2-drm-kernel
need_root
out="$L2DRM_IMAGE"
build="$L2DRM_BUILD"
cfg_id="$L2DRM_CFG-$KVER_PKG"
if [ -f "$out" ] && [ -f "$build/.built" ] && [ "$(cat "$out.id" 2>/dev/null)" = "$cfg_id" ]; then
  log "L2 DRM kernel cached at $out"; exit 0
fi
EXTRACT="$CACHE/extract-$KREL"
tarball=$(ls "$EXTRACT"/usr/src/linux-source-"$KSERIES".tar.* 2>/dev/null | head -1)
[ -n "$tarball" ] || die "no linux-source tarball: run tools/prepare-kernel.sh first"
# The unpacked source is the tiny L2 kernel's (same tree, other output dir);
# unpack it under the lock all three take for that (the builds themselves
# run side by side: xtask starts them together).
src="$CACHE/l2-src"
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
PRINTK_TIME EARLY_PRINTK \
MODULES MODULE_UNLOAD RUST VT VT_CONSOLE DRM DRM_CIRRUS_QEMU DRM_FBDEV_EMULATION \
FRAMEBUFFER_CONSOLE FRAMEBUFFER_CONSOLE_LEGACY_ACCELERATION \
NET UNIX DEBUG_FS DEBUG_FS_ALLOW_ALL TMPFS MEMFD_CREATE SYSCTL FILE_LOCKING HIGH_RES_TIMERS"
# What must come out =y (a dependency that olddefconfig silently drops fails here).
must="KERNEL_GZIP MODULES RUST DRM DRM_KMS_HELPER DRM_GEM_SHMEM_HELPER DRM_CLIENT_SETUP DRM_FBDEV_EMULATION \
FB_CORE FRAMEBUFFER_CONSOLE FRAMEBUFFER_CONSOLE_LEGACY_ACCELERATION VT PCI_MSI UNIX DEBUG_FS TMPFS MEMFD_CREATE SYSCTL"
rm -rf "$build"; mkdir -p "$build"
in_chroot "set -e; cd $src; make O=$build tinyconfig >/dev/null
  for o in $opts; do scripts/config --file $build/.config -e \$o; done
  # gzip, not tinyconfig's XZ: the nested guest decompresses it under TCG
  # (the chroot has no lz4).
  scripts/config --file $build/.config -d KERNEL_XZ -e KERNEL_GZIP
  make O=$build CC=x86_64-linux-gnu-gcc-14 HOSTCC=gcc olddefconfig >/dev/null"
for o in $must; do
  grep -q "^CONFIG_$o=y" "$build/.config" || die "L2 DRM kernel config: CONFIG_$o is not =y (Kconfig dependencies changed?)"
done
step "building the L2 DRM kernel (tiny + modules + Rust + DRM/KMS + fbcon)" \
  in_chroot "make -C $src O=$build -j$(nproc) CC=x86_64-linux-gnu-gcc-14 HOSTCC=gcc bzImage modules >/dev/null"
cp "$build/arch/x86/boot/bzImage" "$out"
touch "$build/.built"
echo "$cfg_id" > "$out.id"
log "L2 DRM kernel: $out ($(stat -c %s "$out") bytes)"
