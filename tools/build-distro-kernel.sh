#!/usr/bin/env bash
# The second L1 kernel ("distro" kernel, issue 15): what distribution kernels
# turn on and Debian's 7.3 config does not, so that the driver is proven where
# vfio_main.c refuses a device without iommufd ops.  Built once from the same
# linux-source into its own output tree, kept in the cache:
#   Debian's .config (the prepared tree's) plus
#     CONFIG_IOMMUFD=y, CONFIG_VFIO_DEVICE_CDEV=y (/dev/iommu, /dev/vfio/devices/vfioN),
#     CONFIG_MODVERSIONS=y with CONFIG_GENDWARFKSYMS=y (what Rust needs for
#     symbol versions; EXTENDED_MODVERSIONS comes with it), Rust on;
#   VFIO_MDEV has no prompt: the mtty sample (SAMPLE_VFIO_MDEV_MTTY=m, the
#   rig's C baseline anyway) selects it, as i915's kvmgt does in Debian's;
#   trimmed so it builds in minutes on 2 cores: every module Debian builds is
#   off except what the rig loads (vfio, vfio_iommu_type1, mdev, kvm, kvm-amd),
#   and a few large built-in parts no rig test touches (BTF, UBSAN, Xen,
#   Hyper-V, SGX, SEV, SELinux/AppArmor, IPv6, hibernation) are off; module
#   signing is off (the rig's modules are unsigned on both kernels).
# Output: $DKBUILD (the prepared tree: gvt_rs.ko is built with
# `make -C $DKBUILD M=...`; its Module.symvers carries the CRCs),
# $DKBUILD/arch/x86/boot/bzImage, and the modules installed under $DKMODS.
source "$(dirname "$0")/common.sh"
serialize build-distro-kernel
need_root
cfg_id="distro-v1-$KVER_PKG"
if [ -f "$DKBUILD/.built" ] && [ "$(cat "$DKBUILD/.built")" = "$cfg_id" ]; then
  log "distro kernel (iommufd) cached at $DKBUILD"; exit 0
fi
[ -f "$KSRC/.gvt-rs-prepared" ] || die "kernel tree not prepared: run tools/prepare-kernel.sh first"
EXTRACT="$CACHE/extract-$KREL"
tarball=$(ls "$EXTRACT"/usr/src/linux-source-"$KSERIES".tar.* 2>/dev/null | head -1)
[ -n "$tarball" ] || die "no linux-source tarball: run tools/prepare-kernel.sh first"
# The unpacked source is the L2 kernels' (same tree, other output dir);
# unpack it under that script's lock.
src="$CACHE/l2-src"
(
  flock 8
  if [ ! -f "$src/.unpacked" ]; then
    rm -rf "$src"; mkdir -p "$src"
    step "unpacking linux-source for the L2 kernels" tar -C "$src" --strip-components=1 -xf "$tarball"
    touch "$src/.unpacked"
  fi
) 8>"$CACHE/.lock-build-l2-kernel"
# gendwarfksyms (scripts/gendwarfksyms) links libdw: the chroot gets its
# headers, under the chroot set-up's lock, with a stamp of its own.
(
  flock 8
  if [ ! -f "$CHROOT/usr/include/elfutils/libdw.h" ]; then
    in_chroot "apt-get update -qq"
    step "installing libdw-dev in the chroot (gendwarfksyms)" \
      in_chroot "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libdw-dev >/dev/null"
  fi
) 8>"$CACHE/.lock-setup-chroot"
[ -f "$CHROOT/usr/include/elfutils/libdw.h" ] || die "libdw-dev did not install in the chroot"

# The modules the rig loads stay modules (=m) as in Debian; all others go.
keep_m="VFIO VFIO_IOMMU_TYPE1 VFIO_MDEV KVM KVM_X86 KVM_AMD IRQ_BYPASS_MANAGER"
off="DEBUG_INFO_BTF UBSAN XEN HYPERV X86_SGX AMD_MEM_ENCRYPT SECURITY_SELINUX SECURITY_APPARMOR \
SECURITY_TOMOYO SECURITY_LANDLOCK IPV6 HIBERNATION MODULE_SIG KVM_INTEL KVM_XEN KVM_HYPERV \
GENKSYMS WIRELESS WLAN DRM SOUND USB_SUPPORT MEDIA_SUPPORT INFINIBAND"
on="IOMMUFD VFIO_DEVICE_CDEV MODVERSIONS GENDWARFKSYMS RUST SAMPLES"
# What must come out (a dependency that olddefconfig silently drops fails here).
must_y="DMA_SHARED_BUFFER IOMMUFD VFIO_DEVICE_CDEV MODVERSIONS GENDWARFKSYMS EXTENDED_MODVERSIONS RUST MODULES VFIO_GROUP VFIO_CONTAINER"
must_m="VFIO VFIO_IOMMU_TYPE1 VFIO_MDEV KVM KVM_AMD"
rm -rf "$DKBUILD"; mkdir -p "$DKBUILD"
keep_re=$(echo $keep_m | sed 's/ /|/g')
sed -E "/^CONFIG_($keep_re)=m\$/! s/^CONFIG_([A-Za-z0-9_]+)=m\$/# CONFIG_\1 is not set/" "$KSRC/.config" > "$DKBUILD/.config"
sc() { "$src/scripts/config" --file "$DKBUILD/.config" "$@"; }
for o in $off; do sc -d "$o"; done
for o in $on; do sc -e "$o"; done
sc -m SAMPLE_VFIO_MDEV_MTTY
sc --set-str LOCALVERSION "" --set-str MODULE_SIG_KEY "" --set-str SYSTEM_TRUSTED_KEYS "" --set-str SYSTEM_REVOCATION_KEYS ""
DKMAKE="make -C $src O=$DKBUILD $(dkmake_vars)"
in_chroot "set -e; $DKMAKE olddefconfig >/dev/null"
for o in $must_y; do
  grep -q "^CONFIG_$o=y" "$DKBUILD/.config" || die "distro kernel config: CONFIG_$o is not =y (Kconfig dependencies changed?)"
done
for o in $must_m; do
  grep -q "^CONFIG_$o=m" "$DKBUILD/.config" || die "distro kernel config: CONFIG_$o is not =m"
done
log "distro kernel config: $(grep -c '=y' "$DKBUILD/.config") =y, $(grep -c '=m' "$DKBUILD/.config") =m"
step "building the distro kernel (Debian config + IOMMUFD, VFIO cdev, MODVERSIONS/GENDWARFKSYMS, Rust; $(nproc) jobs)" \
  in_chroot "$DKMAKE -j$(nproc) bzImage modules >/dev/null"
rm -rf "$DKMODS"
in_chroot "$DKMAKE INSTALL_MOD_PATH=$DKMODS modules_install >/dev/null"
grep -q "module_layout\|vfio_register_emulated_iommu_dev" "$DKBUILD/Module.symvers" \
  || die "Module.symvers of the distro kernel has no VFIO exports"
[ "$(awk '$1 != "0x00000000"' "$DKBUILD/Module.symvers" | wc -l)" -gt 0 ] || die "Module.symvers carries no CRCs (MODVERSIONS off?)"
echo "$cfg_id" > "$DKBUILD/.built"
log "distro kernel: $DKBUILD/arch/x86/boot/bzImage ($DKREL)"
