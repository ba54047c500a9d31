#!/usr/bin/env bash
# Build the VM rig's initramfs: static busybox, Debian's vfio/vfio_iommu_type1/
# mdev (+ kvm/kvm-amd for nested guests), the project's modules, the static
# test binaries given as arguments (a binary named gvtctl becomes /usr/bin/gvtctl,
# with the udev rules in /etc/udev/rules.d), the nested-guest kit (trixie's QEMU 10
# with its libraries and firmware, the L2 kernel and the L2 initramfs), the static
# cloud-hypervisor, and the management stack (trixie's mdevctl, libvirtd + virsh,
# udevd; tests/vm/tests/mgmt.rs).
#   tools/vm-image.sh OUT.cpio.gz TEST_BINARY...
source "$(dirname "$0")/common.sh"
out="$1"; shift
MODDIR="$CACHE/extract-$KREL/usr/lib/modules/$KREL"
[ "$GVT_KERNEL" = distro ] && MODDIR="$DKMODS/lib/modules/$DKREL"   # tools/build-distro-kernel.sh
[ -d "$MODDIR" ] || die "kernel packages not unpacked: run 'cargo xtask setup'"
root="$VMDIR/root"
rm -rf "$root"; mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,lib/modules,etc/rig,proc,sys,dev,tmp,run,root,tests,l2/fw}
cp /bin/busybox "$root/bin/busybox"

# Kernel modules, dependencies first (modinfo -F depends, depth first).
declare -A seen=()
order=()
modpath() { find "$MODDIR/kernel" -name "$1.ko*" -print -quit; }
add_mod() {
  local m="$1" f d
  [ -n "${seen[$m]:-}" ] && return 0
  seen[$m]=1
  f=$(modpath "$m"); [ -n "$f" ] || die "module $m not found in $MODDIR"
  for d in $(modinfo -F depends "$f" | tr ',' ' '); do add_mod "$d"; done
  case "$f" in
    *.xz) xz -dc "$f" > "$root/lib/modules/$m.ko" ;;
    *.zst) zstd -qdc "$f" > "$root/lib/modules/$m.ko" ;;
    *) cp "$f" "$root/lib/modules/$m.ko" ;;
  esac
  order+=("$m")
}
for m in vfio vfio_iommu_type1 mdev; do add_mod "$m"; done
printf '%s\n' "${order[@]}" > "$root/etc/rig/modules"
order=()
for m in kvm-amd; do add_mod "$m"; done      # nested VMMs: KVM on TCG's emulated SVM
printf '%s\n' "${order[@]}" > "$root/etc/rig/kvm-modules"
order=()
[ "$GVT_KERNEL" = distro ] || for m in vgem; do add_mod "$m"; done         # a DRM render node for nested QEMU's OpenGL display
printf '%s\n' "${order[@]}" > "$root/etc/rig/gl-modules"
# The project's modules (built by tools/build-modules.sh); loaded by the tests.
cp "$VMDIR"/modules/*.ko "$root/lib/modules/" 2>/dev/null || true

# Test binaries go to /tests (the guest's /init runs them); the gvtctl CLI is
# installed where its udev rules expect it, with those rules (the guest has no
# udevd: the tests run the rules' commands themselves).
for t in "$@"; do
  case "$(basename "$t")" in
    gvtctl) cp "$t" "$root/usr/bin/gvtctl" ;;
    *) cp "$t" "$root/tests/$(basename "$t" | sed 's/-[0-9a-f]\{16\}$//')" ;;
  esac
done
if [ -x "$root/usr/bin/gvtctl" ]; then
  mkdir -p "$root/etc/udev/rules.d" "$root/etc/mdevctl.d"
  cp "$REPO"/udev/*.rules "$root/etc/udev/rules.d/"
fi

# Nested-guest kit: QEMU 10 from the trixie chroot with every library it links.
qemu="$CHROOT/usr/bin/qemu-system-x86_64"
[ -x "$qemu" ] || die "no QEMU in the chroot: run tools/setup-chroot.sh"
# copy_elf DEST FILE: FILE and every library it links, unless $root or an
# earlier segment ($gl, $mg) has it.
gl="$VMDIR/glroot"; mg="$VMDIR/mgmtroot"; rm -rf "$gl" "$mg"; mkdir -p "$gl" "$mg"
copy_elf() {
  local l
  [ -e "$CHROOT$2" ] || die "$2 not in the chroot: run tools/setup-chroot.sh"
  for l in "$2" $(chroot "$CHROOT" ldd "$2" | grep -o '/[^ ]*'); do
    [ -e "$root$l" ] || [ -e "$gl$l" ] || [ -e "$mg$l" ] || [ -e "$1$l" ] && continue
    mkdir -p "$1$(dirname "$l")"; cp -L "$CHROOT$l" "$1$l"
  done
}
copy_elf "$root" /usr/bin/qemu-system-x86_64
# Its OpenGL display (-display egl-headless: QEMU's vfio display takes dma-buf
# planes, and writes EDID, only with one) loads at run time: QEMU's UI
# modules; libepoxy's EGL/GL (glvnd); glvnd's Mesa vendor (the JSON names
# libEGL_mesa); GBM's Mesa backend; Mesa's gallium with LLVM; the Vulkan
# loader and lavapipe with its ICD JSON (the renderer is zink on lavapipe:
# see display_nested_qemu_gl_dmabuf_edid).  ~210 MB, mostly LLVM: they go in
# an uncompressed cpio segment ahead of the gzip one (the kernel unpacks
# concatenated archives): not compressed at every image build, not inflated
# at every boot.
mkdir -p "$gl/usr/share/glvnd"
lib="/usr/lib/x86_64-linux-gnu"
for f in "$lib"/qemu/ui-egl-headless.so "$lib"/qemu/ui-opengl.so "$lib"/libEGL.so.1 "$lib"/libOpenGL.so.0 \
  "$lib"/libGLESv2.so.2 "$lib"/libEGL_mesa.so.0 "$lib"/gbm/dri_gbm.so "$lib"/libvulkan.so.1 "$lib"/libvulkan_lvp.so; do
  copy_elf "$gl" "$f"
done
cp -r "$CHROOT/usr/share/glvnd/egl_vendor.d" "$gl/usr/share/glvnd/"
mkdir -p "$gl/usr/share/vulkan/icd.d"; cp "$CHROOT/usr/share/vulkan/icd.d/lvp_icd.json" "$gl/usr/share/vulkan/icd.d/"
# The management stack (tests/vm/tests/mgmt.rs): trixie's mdevctl, udevd +
# udevadm, libvirtd with its QEMU and node-device drivers, virsh; the rig's
# own configuration (tools/vm/mgmt: libvirtd/QEMU settings for a root-only
# guest without cgroups, namespaces, security drivers or virtlogd; passwd and
# group for the users libvirt looks up).  No udev rules of Debian's: udevd
# runs (started by the tests) to re-broadcast the kernel's events to
# libvirt's node-device driver, with the project's rules only.  ~40 MB, in an
# uncompressed segment of its own like the GL one.
for f in /usr/bin/mdevctl /usr/bin/virsh /usr/sbin/libvirtd /usr/lib/systemd/systemd-udevd /usr/bin/udevadm \
  "$lib"/libvirt/connection-driver/libvirt_driver_qemu.so "$lib"/libvirt/connection-driver/libvirt_driver_nodedev.so; do
  copy_elf "$mg" "$f"
done
mkdir -p "$mg/usr/share/libvirt" "$mg/usr/lib/mdevctl/scripts.d"/{callouts,notifiers} \
  "$mg/etc/mdevctl.d/scripts.d"/{callouts,notifiers} "$mg/var/lib/libvirt/qemu" "$mg/var/cache/libvirt/qemu" \
  "$mg/var/log/libvirt/qemu" "$mg/etc/libvirt/qemu"; ln -s /run "$mg/var/run"
cp -r "$CHROOT/usr/share/libvirt/cpu_map" "$mg/usr/share/libvirt/"
cp -r "$REPO/tools/vm/mgmt/etc/." "$mg/etc/"
# QEMU started by libvirt has no -L: its firmware where QEMU looks by default.
mkdir -p "$mg/usr/share"; ln -s /l2/fw "$mg/usr/share/qemu"
mkdir -p "$root/lib64"; [ -e "$root/lib64/ld-linux-x86-64.so.2" ] || cp -L "$CHROOT/lib64/ld-linux-x86-64.so.2" "$root/lib64/"
for fw in bios-256k.bin linuxboot_dma.bin kvmvapic.bin multiboot_dma.bin; do
  f=$(find -L "$CHROOT/usr/share/qemu" "$CHROOT/usr/share/seabios" -name "$fw" -print -quit 2>/dev/null)
  [ -n "$f" ] && cp -L "$f" "$root/l2/fw/$fw"
done
[ -f "$root/l2/fw/bios-256k.bin" ] || die "bios-256k.bin not found in the chroot (seabios)"
if [ -f "$CACHE/l2-bzImage" ]; then
  cp "$CACHE/l2-bzImage" "$root/l2/bzImage"
  # The L2 initramfs: busybox, an /init that reports what L2 sees, and the
  # L2 programs the tests ship (static binaries named l2-*).
  l2="$VMDIR/l2root"; rm -rf "$l2"; mkdir -p "$l2"/{bin,proc,sys,dev}
  cp /bin/busybox "$l2/bin/"
  for t in "$@"; do case "$(basename "$t")" in l2-*) cp "$t" "$l2/bin/";; esac; done
  cp "$REPO/tools/vm/l2-init" "$l2/init"; chmod +x "$l2/init"
  # The native guest driver and its L2 program (tests/vm/tests/gvt_drm.rs),
  # when the L2 DRM kernel and the module are built.
  if [ -f "$L2DRM_IMAGE" ] && [ -f "$VMDIR/l2-modules/gvt_drm.ko" ]; then
    mkdir -p "$l2/lib/modules"
    cp "$VMDIR/l2-modules/gvt_drm.ko" "$l2/lib/modules/"
    cp "$REPO/tools/vm/l2-drm" "$l2/bin/l2-drm"; chmod +x "$l2/bin/l2-drm"
    cp "$REPO/tools/vm/l2-igt" "$l2/bin/l2-igt"; chmod +x "$l2/bin/l2-igt"
    cp "$L2DRM_IMAGE" "$root/l2/bzImage-drm"
    # libdrm's modetest with the libraries it links (into L2's own tree).
    for l in /usr/bin/modetest $(chroot "$CHROOT" ldd /usr/bin/modetest | grep -o '/[^ ]*'); do
      mkdir -p "$l2$(dirname "$l")"; cp -L "$CHROOT$l" "$l2$l"
    done
  fi
  (cd "$l2" && find . | cpio -o -H newc --quiet | gzip -1) > "$root/l2/initrd.gz"
  # IGT (tools/build-igt.sh) for the native guest driver's IGT run
  # (tests/vm/tests/gvt_drm_igt.rs): the L2 initramfs with IGT's segment
  # appended (the kernel unpacks concatenated archives), a file of its own
  # so the other L2 boots do not unpack 23 MB they never use.
  if [ -f "$L2DRM_IMAGE" ] && [ -f "$VMDIR/l2-modules/gvt_drm.ko" ] && [ -f "$CACHE/igt/igt.cpio.gz" ]; then
    cat "$root/l2/initrd.gz" "$CACHE/igt/igt.cpio.gz" > "$root/l2/initrd-igt.gz"
  fi
  # weston (tools/build-weston.sh) for the weston check
  # (tests/vm/tests/gvt_drm.rs): only its segment (12 MB), which the test
  # appends to a copy of initrd.gz in the guest's /tmp when it runs.
  if [ -f "$L2DRM_IMAGE" ] && [ -f "$VMDIR/l2-modules/gvt_drm.ko" ] && [ -f "$CACHE/weston/weston.cpio.gz" ]; then
    cp "$CACHE/weston/weston.cpio.gz" "$root/l2/weston.cpio.gz"
  fi
fi
# cloud-hypervisor (static; tools/build-cloud-hypervisor.sh), the second VMM.
[ -x "$CACHE/cloud-hypervisor" ] || die "no $CACHE/cloud-hypervisor: run 'cargo xtask setup'"
cp "$CACHE/cloud-hypervisor" "$root/usr/bin/cloud-hypervisor"
cp "$REPO/tools/vm/init" "$root/init"; chmod +x "$root/init"
mkdir -p "$(dirname "$out")"
{ (cd "$gl" && find . | cpio -o -H newc --quiet); (cd "$mg" && find . | cpio -o -H newc --quiet); (cd "$root" && find . | cpio -o -H newc --quiet | gzip -1); } > "$out"
log "initramfs $out: $(du -h "$out" | cut -f1), $(ls "$root/tests" | wc -l) test binaries$([ -x "$root/usr/bin/gvtctl" ] && echo ", /usr/bin/gvtctl")"
