#!/usr/bin/env bash
# Build the project's kernel module (driver/kmod) and the kernel's C samples
# mtty and mbochs (the peer baselines) against the prepared tree, in the chroot.
# Output: $VMDIR/modules/*.ko ($GVT_VM_DIR, default $CACHE/vm)
source "$(dirname "$0")/common.sh"
need_root
if [ "$GVT_KERNEL" = distro ]; then
  # The distro kernel (tools/build-distro-kernel.sh): gvt_rs.ko is built in a
  # copy of driver/kmod (the Debian build's objects stay where they are);
  # mtty comes from the kernel's own build (SAMPLE_VFIO_MDEV_MTTY=m).
  [ -f "$DKBUILD/.built" ] || die "distro kernel not built: run 'cargo xtask setup'"
  outdir="$VMDIR/modules"; mkdir -p "$outdir"
  m=$(find "$DKMODS/lib/modules/$DKREL" -name 'mtty.ko*' -print -quit)
  [ -n "$m" ] || die "no mtty.ko in $DKMODS (SAMPLE_VFIO_MDEV_MTTY)"
  case "$m" in *.xz) xz -dc "$m" > "$outdir/mtty.ko" ;; *.zst) zstd -qdc "$m" > "$outdir/mtty.ko" ;; *) cp "$m" "$outdir/mtty.ko" ;; esac
  st="$REPO/target/distro-kmod/selftest"; mkdir -p "$st"   # the chroot sees the repository
  cp "$REPO"/tools/vm/selftest/{Kbuild,gvt_selftest_warn.c} "$st/"
  step "building the rig self-check module (distro kernel)" in_chroot "make -C $DKBUILD $(dkmake_vars) M=$st modules >/dev/null"
  cp "$st/gvt_selftest_warn.ko" "$outdir/"
  # A copy of the sources (the Debian build's objects stay in driver/kmod),
  # inside the repository (the chroot sees it at the same path), the core
  # sources next to it where gvt_rs_main.rs expects them.
  km="$REPO/target/distro-kmod/kmod"; mkdir -p "$km"
  ln -sfn "$REPO/driver/core" "$REPO/target/distro-kmod/core"
  (cd "$REPO/driver/kmod" && find . -maxdepth 1 -type f \( -name '*.rs' -o -name '*.c' -o -name '*.h' \
    -o -name Kbuild -o -name Makefile -o -name '*.toml' \) -exec cp -p --update {} "$km/" \;)
  step "building gvt_rs.ko (distro kernel $DKREL)" in_chroot "make -C $DKBUILD $(dkmake_vars) M=$km modules"
  cp "$km/gvt_rs.ko" "$outdir/"
  # With MODVERSIONS the module must carry a version for every import.
  # (readelf's whole output first: grep -q closing the pipe early fails it under pipefail)
  secs=$(readelf -S -W "$km/gvt_rs.ko")
  grep -q '__version' <<<"$secs" \
    || die "gvt_rs.ko built against the distro kernel has no symbol versions (MODVERSIONS)"
  ls -la "$outdir" >&2
  exit 0
fi
[ -f "$KSRC/.gvt-rs-prepared" ] || die "kernel tree not prepared: run 'cargo xtask setup'"
outdir="$VMDIR/modules"; mkdir -p "$outdir"
KMAKE="make -C $KSRC $(kmake_vars)"
# mtty: the C sample, built as an external module from the same tree.
mtty="$CACHE/mtty-build"
if [ ! -f "$outdir/mtty.ko" ] || [ "$KSRC/samples/vfio-mdev/mtty.c" -nt "$outdir/mtty.ko" ]; then
  mkdir -p "$mtty"; cp "$KSRC/samples/vfio-mdev/mtty.c" "$mtty/"
  echo 'obj-m := mtty.o' > "$mtty/Kbuild"
  step "building the mtty sample module" in_chroot "$KMAKE M=$mtty modules >/dev/null"
  cp "$mtty/mtty.ko" "$outdir/"
fi
# mbochs: the C sample with a display (the second peer baseline of the trap
# benchmark), built the same way.
mbochs="$CACHE/mbochs-build"
if [ ! -f "$outdir/mbochs.ko" ] || [ "$KSRC/samples/vfio-mdev/mbochs.c" -nt "$outdir/mbochs.ko" ]; then
  mkdir -p "$mbochs"; cp "$KSRC/samples/vfio-mdev/mbochs.c" "$mbochs/"
  echo 'obj-m := mbochs.o' > "$mbochs/Kbuild"
  step "building the mbochs sample module" in_chroot "$KMAKE M=$mbochs modules >/dev/null"
  cp "$mbochs/mbochs.ko" "$outdir/"
fi
# The rig's self-check module (WARNs on load; see tools/vm/selftest).
st="$CACHE/selftest-build"
if [ ! -f "$outdir/gvt_selftest_warn.ko" ] || [ "$REPO/tools/vm/selftest/gvt_selftest_warn.c" -nt "$outdir/gvt_selftest_warn.ko" ]; then
  mkdir -p "$st"; cp "$REPO"/tools/vm/selftest/{Kbuild,gvt_selftest_warn.c} "$st/"
  step "building the rig self-check module" in_chroot "$KMAKE M=$st modules >/dev/null"
  cp "$st/gvt_selftest_warn.ko" "$outdir/"
fi
# The gvt-rs driver, when present.
if [ -f "$REPO/driver/kmod/Kbuild" ]; then
  step "building gvt_rs.ko" in_chroot "$KMAKE M=$REPO/driver/kmod modules"
  cp "$REPO/driver/kmod/gvt_rs.ko" "$outdir/"
fi
ls -la "$outdir" >&2
# The native guest driver (guest-kmod/), against the L2 DRM kernel when it
# is built (tools/build-l2-drm-kernel.sh); it goes into the L2 initramfs.
l2build="$L2DRM_BUILD"
if [ -f "$REPO/guest-kmod/Kbuild" ] && [ -f "$l2build/.built" ]; then
  mkdir -p "$VMDIR/l2-modules"
  step "building gvt_drm.ko (guest driver, L2 DRM kernel)" \
    in_chroot "make -C $l2build CC=x86_64-linux-gnu-gcc-14 HOSTCC=gcc M=$REPO/guest-kmod modules"
  cp "$REPO/guest-kmod/gvt_drm.ko" "$VMDIR/l2-modules/"
fi
