#!/usr/bin/env bash
# The Debian trixie build chroot: the kernel's exact rustc (1.85.1), rust-src,
# bindgen, clang/lld, gcc-14, pahole.  Also trixie's QEMU 10, packed into the
# VM image for nested tests, with its OpenGL UI modules and Mesa's EGL/GBM and
# software renderer (zink on lavapipe) for egl-headless displays, and libdrm's
# modetest (libdrm-tests) for the L2 guest of the native driver.  And the
# management stack packed into the VM image for the ecosystem tests
# (tests/vm/tests/mgmt.rs): mdevctl, libvirtd (trixie has no separate modular
# daemons) with its QEMU and node-device drivers, virsh, and udev (libvirt's node-device driver
# learns of new devices from udevd's events).  Idempotent: a stamp file per
# package list records a finished setup (a new list reinstalls); the
# management set has its own stamp, so branches without it do not reinstall.
source "$(dirname "$0")/common.sh"
serialize setup-chroot
need_root
PKGS="rustc rust-src rustfmt bindgen clang libclang-dev lld llvm gcc-14 gcc make flex bison bc \
libelf-dev libssl-dev openssl dwarves python3 kmod cpio xz-utils zstd perl rsync file \
qemu-system-x86 qemu-system-data seabios ipxe-qemu \
qemu-system-modules-opengl libegl1 libegl-mesa0 libgbm1 libopengl0 libgles2 mesa-vulkan-drivers \
libdrm-tests"
MGMT_PKGS="mdevctl udev libvirt-clients libvirt-daemon libvirt-daemon-driver-qemu libvirt-daemon-driver-nodedev"
stamp="$CHROOT/.gvt-rs-ready"
want="$(echo $PKGS | md5sum | cut -c1-12)"
mgmt_stamp="$CHROOT/.gvt-rs-mgmt-ready"
mgmt_want="$(echo $MGMT_PKGS | md5sum | cut -c1-12)"
# install_mgmt: the management packages, no service started by their scripts
# (policy-rc.d says no while they install; nothing in the chroot runs).
install_mgmt() {
  printf '#!/bin/sh\nexit 101\n' > "$CHROOT/usr/sbin/policy-rc.d"; chmod +x "$CHROOT/usr/sbin/policy-rc.d"
  trap 'rm -f "$CHROOT/usr/sbin/policy-rc.d"' EXIT
  step "installing mdevctl, libvirt and udev in the chroot (for the VM image)" \
    in_chroot "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $MGMT_PKGS >/dev/null"
  rm -f "$CHROOT/usr/sbin/policy-rc.d"
  echo "$mgmt_want" > "$mgmt_stamp"
}
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  if [ -f "$mgmt_stamp" ] && [ "$(cat "$mgmt_stamp")" = "$mgmt_want" ]; then
    log "trixie chroot ready at $CHROOT"; exit 0
  fi
  in_chroot "apt-get update -qq"
  install_mgmt
  exit 0
fi
mirror="$(debian_mirror)"
mkdir -p "$CACHE"
if [ ! -x "$CHROOT/usr/bin/apt-get" ]; then
  rm -rf "$CHROOT"
  step "debootstrap trixie (minbase) into $CHROOT" \
    debootstrap --variant=minbase trixie "$CHROOT" "$mirror"
fi
echo "deb $mirror trixie main" > "$CHROOT/etc/apt/sources.list"
in_chroot "apt-get update -qq"
step "installing build packages in the chroot" \
  in_chroot "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $PKGS >/dev/null"
v=$(in_chroot "rustc --version")
case "$v" in *"$KRUSTC"*) ;; *) die "chroot rustc is '$v', the kernel needs $KRUSTC: trixie moved on; pin a snapshot or bump the kernel (tools/common.sh)";; esac
log "chroot: $v"
echo "$want" > "$stamp"
[ -f "$mgmt_stamp" ] && [ "$(cat "$mgmt_stamp")" = "$mgmt_want" ] || install_mgmt
