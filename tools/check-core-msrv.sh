#!/usr/bin/env bash
# Compile the gvt-core sources with the kernel's own compiler (rustc 1.85.1,
# edition 2021, from the trixie chroot) exactly as the module sees them
# (--cfg gvt_kmod) and as the host crate does (no_std).  Usage:
#   tools/check-core-msrv.sh [CORE_SRC_DIR]   (default: driver/core/src)
source "$(dirname "$0")/common.sh"
src="$(cd "${1:-$REPO/driver/core/src}" && pwd)"
[ -x "$CHROOT/usr/bin/rustc" ] || die "no chroot yet: run tools/setup-chroot.sh (cargo xtask setup)"
tmp="$CHROOT/tmp/gvt-core-msrv.$$"
rm -rf "$tmp"; mkdir -p "$tmp/src"; cp -r "$src/." "$tmp/src/"
trap 'rm -rf "$tmp"' EXIT
t="${tmp#$CHROOT}"
chroot "$CHROOT" /usr/bin/env -i PATH=/usr/bin:/bin bash -c "
  set -e; cd $t
  rustc --edition 2021 --crate-type lib --crate-name gvt_core -D warnings --emit metadata -o libhost.rmeta src/lib.rs
  rustc --edition 2021 --crate-type lib --crate-name gvt_core -D warnings --cfg gvt_kmod -A unused_attributes --emit metadata -o libkmod.rmeta src/lib.rs
"
echo "gvt-core builds with $(chroot "$CHROOT" rustc --version)"
if grep -rn --include='*.rs' -E '(^|[^_a-z])crate::' "$src" | grep -v -E ':[0-9]+:\s*//' ; then
  die "gvt-core must refer to siblings with super::, not crate:: (the kernel module includes it as a module)"
fi
