# Shared settings for the gvt-rs toolchain and VM rig scripts.  Sourced, not run.
# The kernel version lives here and only here: bump KVER_PKG and KREL together
# (the five Debian packages below share that version).
set -euo pipefail

KVER_PKG="${GVT_KVER_PKG:-7.3.4-1~bpo13+1}"   # Debian package version
KREL="${GVT_KREL:-7.3.4+deb13-amd64}"         # uname -r of that kernel
KSERIES="${KREL%%.[0-9]*+*}"                 # e.g. 7.3 (for linux-source-7.3)
KSERIES="$(echo "$KREL" | cut -d. -f1-2)"
KRUSTC="1.85.1"                               # rustc the kernel was built with

CACHE="${GVT_CACHE:-$HOME/.cache/gvt-rs}"
CHROOT="$CACHE/chroot-trixie"
DEBS="$CACHE/debs"
KSRC="$CACHE/linux-$KREL"                     # prepared kernel tree
VMDIR="${GVT_VM_DIR:-$CACHE/vm}"              # VM images and logs (one rig user at a time per dir)
# The second L1 kernel (tools/build-distro-kernel.sh): Debian's config plus
# IOMMUFD, the VFIO cdev and MODVERSIONS/GENDWARFKSYMS, its own release string.
DKREL="${KREL%%+*}-gvt-iommufd"
DKBUILD="$CACHE/distro-build"                  # its output tree (prepared for M= builds)
DKMODS="$CACHE/distro-modules"                 # its modules, installed (lib/modules/$DKREL)
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The L2 DRM kernel (tools/build-l2-drm-kernel.sh, the native guest driver's
# L2): its config version names its files, so a branch with another config
# keeps its own build next to this one in a shared cache.
L2DRM_CFG="l2-drm-v4"
L2DRM_IMAGE="$CACHE/$L2DRM_CFG-bzImage"       # the kernel image
L2DRM_BUILD="$CACHE/$L2DRM_CFG-build"         # its output tree (gvt_drm.ko builds against it)

log()  { printf '[gvt-rs %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die()  { printf '[gvt-rs] error: %s\n' "$*" >&2; exit 1; }

# step NAME CMD...: run a long step, say what it is and how long it took.
step() {
  local name="$1"; shift
  local t0=$SECONDS
  log "$name ..."
  "$@"
  log "$name done in $((SECONDS - t0)) s"
}

# The Debian mirror the host's apt already uses (never hard-coded here).
debian_mirror() {
  local m=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    m=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
    m=$(awk '$1=="deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list)
  fi
  [ -n "$m" ] || die "cannot find the Debian mirror in /etc/apt (sources.list or sources.list.d/debian.sources)"
  echo "$m"
}

need_root() { [ "$(id -u)" = 0 ] || die "this step needs root (apt-get, debootstrap, chroot)"; }

# in_chroot CMD: run a shell command inside the trixie chroot, with the cache
# and the repository bind-mounted at the same paths.
in_chroot() {
  mount_chroot
  chroot "$CHROOT" /usr/bin/env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    bash -c "$1"
}

# chroot_packages NAME PKGS...: install PKGS in the trixie chroot once (the
# stamp $CHROOT/.gvt-rs-NAME-ready holds the list's hash, so a changed list
# installs again), under setup-chroot's lock (one apt in the chroot at a time).
chroot_packages() {
  local name="$1"; shift
  local stamp="$CHROOT/.gvt-rs-$name-ready" want
  want="$(echo "$@" | md5sum | cut -c1-12)"
  (
    flock 8
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
      in_chroot "apt-get update -qq"
      step "installing $name's packages in the chroot" \
        in_chroot "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $* >/dev/null"
      echo "$want" > "$stamp"
    fi
  ) 8>"$CACHE/.lock-setup-chroot"
}

mount_chroot() {
  local d
  for d in proc dev sys; do
    mountpoint -q "$CHROOT/$d" || mount --bind "/$d" "$CHROOT/$d"
  done
  for d in "$CACHE" "$REPO"; do
    mkdir -p "$CHROOT$d"
    # A bind mount left by an earlier run may show a directory that has since
    # been deleted and re-created (a fresh clone at the same path): remount.
    if mountpoint -q "$CHROOT$d" && [ "$(stat -c %d:%i "$d/.")" != "$(stat -c %d:%i "$CHROOT$d/." 2>/dev/null)" ]; then
      umount -l "$CHROOT$d"
    fi
    mountpoint -q "$CHROOT$d" || mount --bind "$d" "$CHROOT$d"
  done
}

# Make variables that keep the kernel config identical to Debian's.
kmake_vars() {
  echo "CC=x86_64-linux-gnu-gcc-14 HOSTCC=gcc RUSTC=rustc BINDGEN=bindgen KERNELRELEASE=$KREL"
}

# GVT_KERNEL=distro: the rig's L1 is the distro kernel (modules built against
# $DKBUILD, modules from $DKMODS, images and modules in $VMDIR/distro).
GVT_KERNEL="${GVT_KERNEL:-debian}"
case "$GVT_KERNEL" in
  debian) ;;
  distro) VMDIR="$VMDIR/distro" ;;
  *) die "GVT_KERNEL must be debian or distro, not '$GVT_KERNEL'" ;;
esac

dkmake_vars() {
  echo "CC=x86_64-linux-gnu-gcc-14 HOSTCC=gcc RUSTC=rustc BINDGEN=bindgen KERNELRELEASE=$DKREL"
}

# serialize NAME: hold an exclusive lock for the rest of the calling script,
# so concurrent runs of the same setup step wait and then find it done.
serialize() {
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.lock-$1"
  flock 9
}
