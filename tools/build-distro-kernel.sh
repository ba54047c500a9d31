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
#   trimmed so it builds in minutes on 2 cores (see below): Debian's
#   build-wide settings on a tinyconfig base with what the rig uses.  Module
#   signing stays on as in Debian (lockdown selects it), not enforced, with no
#   key: every module of the rig is unsigned on both kernels (taint E).
# Output: $DKBUILD (the prepared tree: gvt_rs.ko is built with
# `make -C $DKBUILD M=...`; its Module.symvers carries the CRCs),
# $DKBUILD/arch/x86/boot/bzImage, and the modules installed under $DKMODS.
source "$(dirname "$0")/common.sh"
serialize build-distro-kernel
need_root
cfg_id="distro-v4-$KVER_PKG"
if [ -f "$DKBUILD/.built" ] && [ "$(cat "$DKBUILD/.built")" = "$cfg_id" ]; then
  log "distro kernel (iommufd) cached at $DKBUILD"; exit 0
fi
[ -f "$KSRC/.gvt-rs-prepared" ] || die "kernel tree not prepared: run tools/prepare-kernel.sh first"
EXTRACT="$CACHE/extract-$KREL"
tarball=$(ls "$EXTRACT"/usr/src/linux-source-"$KSERIES".tar.* 2>/dev/null | head -1)
[ -n "$tarball" ] || die "no linux-source tarball: run tools/prepare-kernel.sh first"
# The unpacked source is the L2 kernels' (same tree, other output dir);
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

# The configuration: Debian's build-wide choices (hardening, mitigations,
# IBT, stack protector, ftrace's __fentry__, preemption, HZ, module signing
# and compression, DWARF), which decide how a module is compiled and linked,
# taken over from Debian's .config; on a tinyconfig base with only what the
# rig's L1 uses (serial console, initramfs, PCI/MSI, devtmpfs, eventfd, unix
# sockets, KVM + kvm-amd for nested guests, VFIO + mdev as modules, as
# Debian has them).  Debian's full set of built-in drivers and subsystems
# (~1800 =y) takes well over an hour on 2 shared cores; this builds in
# minutes.  ACPI, HPET and the ACPI PM timer: without them L1 (QEMU TCG) has
# no clock to calibrate its TSC against ("tsc: Unable to calibrate against
# PIT") and a nested KVM guest never printed its first line in 90 s (v3);
# with them the nested tests pass (v4).
flavor='^(# )?CONFIG_(MITIGATION_[A-Z0-9_]+|CPU_MITIGATIONS|X86_KERNEL_IBT|STACKPROTECTOR[A-Z_]*|INIT_STACK_[A-Z_]+|INIT_ON_[A-Z_]+|HZ_[0-9]+|HZ|PREEMPT[A-Z_]*|NR_CPUS|RANDOMIZE_[A-Z_]+|FUNCTION_TRACER|DYNAMIC_FTRACE|FTRACE|SLUB[A-Z_]*|HARDENED_USERCOPY|FORTIFY_SOURCE|ZERO_CALL_USED_REGS|SECURITY|SECURITY_LOCKDOWN_LSM[A-Z_]*|LOCK_DOWN_[A-Z_]+|MODULE_SIG[A-Z_0-9]*|MODULE_COMPRESS[A-Z_]*|HIGH_RES_TIMERS|NO_HZ[A-Z_]*|TRANSPARENT_HUGEPAGE|SCHED_MC|STRICT_KERNEL_RWX|STRICT_MODULE_RWX|VMAP_STACK|DEBUG_INFO_DWARF[A-Z0-9_]*|CC_OPTIMIZE_FOR_[A-Z]+|KERNEL_(GZIP|XZ|ZSTD|LZ4|LZO|BZIP2|LZMA))[= ]'
on="64BIT SMP PCI PCI_MSI PCI_QUIRKS SERIAL_8250 SERIAL_8250_CONSOLE TTY PRINTK PRINTK_TIME EARLY_PRINTK BUG \
BLK_DEV_INITRD RD_GZIP BINFMT_ELF BINFMT_SCRIPT DEVTMPFS DEVTMPFS_MOUNT PROC_FS SYSCTL SYSFS TMPFS SHMEM \
MEMFD_CREATE FUTEX EPOLL SIGNALFD TIMERFD EVENTFD AIO FILE_LOCKING MULTIUSER POSIX_TIMERS NET UNIX \
HYPERVISOR_GUEST PARAVIRT KVM_GUEST X86_TSC CPU_SUP_AMD CPU_SUP_INTEL KALLSYMS DEBUG_KERNEL DETECT_HUNG_TASK \
SOFTLOCKUP_DETECTOR MODULES MODULE_UNLOAD MODVERSIONS GENDWARFKSYMS DEBUG_INFO DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT \
ACPI HPET HPET_TIMER X86_PM_TIMER RUST SYNC_FILE VIRTUALIZATION KVM_IOAPIC IOMMU_SUPPORT IOMMUFD VFIO_GROUP VFIO_CONTAINER VFIO_DEVICE_CDEV SAMPLES"
# VFIO_PCI (=m, as Debian): its core selects VFIO_VIRQFD, which gvt_rs uses.
mods="KVM KVM_AMD VFIO VFIO_IOMMU_TYPE1 VFIO_PCI SAMPLE_VFIO_MDEV_MTTY"
off="DEBUG_INFO_BTF DEBUG_INFO_REDUCED DEBUG_INFO_SPLIT GENKSYMS KVM_INTEL"
# What must come out (a dependency that olddefconfig silently drops fails here).
must_y="DMA_SHARED_BUFFER IOMMUFD VFIO_DEVICE_CDEV MODVERSIONS GENDWARFKSYMS EXTENDED_MODVERSIONS RUST MODULES \
VFIO_GROUP VFIO_CONTAINER VFIO_VIRQFD KVM_IOAPIC PCI_MSI UNIX EVENTFD DEVTMPFS SERIAL_8250_CONSOLE ACPI HPET_TIMER X86_PM_TIMER"
must_m="VFIO VFIO_IOMMU_TYPE1 VFIO_MDEV KVM KVM_AMD SAMPLE_VFIO_MDEV_MTTY"
# The output tree is kept when a build was interrupted: make picks up where
# it stopped (a changed .config rebuilds what it must).
mkdir -p "$DKBUILD"; rm -f "$DKBUILD/.built"
DKMAKE="make -C $src O=$DKBUILD $(dkmake_vars)"
# One Kconfig pass (each takes minutes on a loaded machine): allnoconfig with
# a fragment = tinyconfig's two fragments, then Debian's build-wide lines,
# then the rig's options (later lines win).
frag="$DKBUILD/gvt-rs-distro.config"
{
  cat "$src/kernel/configs/tiny.config" "$src/arch/x86/configs/tiny.config"
  grep -E "$flavor" "$KSRC/.config"
  for o in $on; do echo "CONFIG_$o=y"; done
  for o in $mods; do echo "CONFIG_$o=m"; done
  for o in $off; do echo "# CONFIG_$o is not set"; done
  printf 'CONFIG_%s=""\n' LOCALVERSION MODULE_SIG_KEY SYSTEM_TRUSTED_KEYS SYSTEM_REVOCATION_KEYS
} > "$frag"
in_chroot "set -e; $DKMAKE KCONFIG_ALLCONFIG=$frag allnoconfig >/dev/null 2>&1"
for o in $must_y; do
  grep -q "^CONFIG_$o=y" "$DKBUILD/.config" || die "distro kernel config: CONFIG_$o is not =y (Kconfig dependencies changed?)"
done
for o in $must_m; do
  grep -q "^CONFIG_$o=m" "$DKBUILD/.config" || die "distro kernel config: CONFIG_$o is not =m"
done
# Debian's build-wide choices came through (those Kconfig kept: some depend
# on what the tiny base leaves out).
kept=0; lost=""
while read -r l; do
  if grep -qxF "$l" "$DKBUILD/.config"; then kept=$((kept + 1)); else lost="$lost ${l%%=*}"; fi
done < <(grep -E "$flavor" "$KSRC/.config" | grep -v '^#')
log "distro kernel config: $kept of Debian's build-wide settings kept; not applicable here:${lost:- none}"
log "distro kernel config: $(grep -c '=y' "$DKBUILD/.config") =y, $(grep -c '=m' "$DKBUILD/.config") =m"
step "building the distro kernel (Debian build-wide settings, tiny base + IOMMUFD, VFIO cdev, MODVERSIONS/GENDWARFKSYMS, Rust; $(nproc) jobs)" \
  in_chroot "$DKMAKE -j$(nproc) bzImage modules >/dev/null"
rm -rf "$DKMODS"
# Unsigned (no key; CONFIG_MODULE_SIG_ALL would sign them here).
in_chroot "$DKMAKE INSTALL_MOD_PATH=$DKMODS CONFIG_MODULE_SIG_ALL= modules_install >/dev/null"
grep -q "module_layout\|vfio_register_emulated_iommu_dev" "$DKBUILD/Module.symvers" \
  || die "Module.symvers of the distro kernel has no VFIO exports"
[ "$(awk '$1 != "0x00000000"' "$DKBUILD/Module.symvers" | wc -l)" -gt 0 ] || die "Module.symvers carries no CRCs (MODVERSIONS off?)"
echo "$cfg_id" > "$DKBUILD/.built"
log "distro kernel: $DKBUILD/arch/x86/boot/bzImage ($DKREL)"
