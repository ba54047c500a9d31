#!/usr/bin/env bash
# Download (once) the five Debian packages of the pinned kernel into $CACHE/debs,
# with a private apt configuration for trixie + trixie-backports that leaves the
# host's own apt sources alone.
source "$(dirname "$0")/common.sh"
serialize fetch-kernel
PKGS=(linux-source-$KSERIES linux-headers-$KREL linux-headers-${KREL%-amd64}-common
      linux-binary-$KREL linux-modules-$KREL)
mkdir -p "$DEBS"
have_all() {
  local p
  for p in "${PKGS[@]}"; do
    ls "$DEBS/${p}_"*"_"*.deb >/dev/null 2>&1 || return 1
  done
}
if have_all; then log "kernel packages cached in $DEBS"; exit 0; fi
mirror="$(debian_mirror)"
apt_dir="$CACHE/apt-trixie"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$apt_dir/state"
touch "$apt_dir/state/status"
echo "deb $mirror trixie main
deb $mirror trixie-backports main" > "$apt_dir/sources.list"
APT=(-o Dir::Etc::SourceList="$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o Dir::State::Lists="$apt_dir/lists" -o Dir::State::Status="$apt_dir/state/status"
     -o Dir::Cache="$apt_dir" -o APT::Architecture=amd64 -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
step "apt-get update (trixie, trixie-backports; private lists)" apt-get "${APT[@]}" update -qq
missing=()
for p in "${PKGS[@]}"; do
  v=$(apt-cache "${APT[@]}" madison "$p" 2>/dev/null | awk -v v="$KVER_PKG" '$3==v {print $3; exit}')
  [ -n "$v" ] || missing+=("$p=$KVER_PKG")
done
if [ ${#missing[@]} -gt 0 ]; then
  die "the pinned kernel packages are no longer downloadable and not cached in $DEBS: ${missing[*]}.
  Bump KVER_PKG and KREL in tools/common.sh to a version that 'apt-cache madison linux-source-X.Y' offers in trixie-backports
  (or put the five .deb files of version $KVER_PKG into $DEBS)."
fi
cd "$DEBS"
step "downloading ${#PKGS[@]} kernel packages ($KVER_PKG, ~290 MB)" \
  apt-get "${APT[@]}" download -q "${PKGS[@]/%/=$KVER_PKG}"
have_all || die "download finished but packages are missing in $DEBS"
