#!/usr/bin/env bash
# Host packages the rig needs (Debian 12).  Idempotent: installs only what is missing.
source "$(dirname "$0")/common.sh"
serialize setup-host
need_root
pkgs=(debootstrap qemu-system-x86 busybox-static cpio xz-utils zstd kmod file udev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then log "host packages present"; exit 0; fi
step "apt-get update" apt-get update -qq
step "installing host packages: ${missing[*]}" \
  env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
