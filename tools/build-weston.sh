#!/usr/bin/env bash
# Debian's weston (DRM backend, pixman renderer) for the native guest driver's
# weston check (tests/vm/tests/gvt_drm.rs, gvt_drm_weston_desktop): installed
# in the trixie chroot (with its own stamp, under setup-chroot's lock) and
# packed as a cpio segment the rig appends to the L2 initramfs
# (tools/vm-image.sh makes /l2/initrd-weston.gz of it), so other L2 boots do
# not carry it:
#   /usr/bin/weston, its front end and plugins (drm-backend, desktop-shell),
#   /usr/libexec/weston-desktop-shell (the panel and background client),
#   every library they link, at its path in the chroot, weston's icons,
#   fontconfig's configuration and one font (the panel's clock), xkb data.
# Output: $CACHE/weston/weston.cpio.gz; the stamp ($CACHE/weston/weston.cpio.gz.id)
# is the installed packages' versions, so a package update repacks.
source "$(dirname "$0")/common.sh"
serialize build-weston
need_root
PKGS="weston fonts-dejavu-core"
[ -f "$CHROOT/.gvt-rs-ready" ] || die "the trixie chroot is not set up: run tools/setup-chroot.sh first"
chroot_packages weston $PKGS
out="$CACHE/weston/weston.cpio.gz"
id="weston-v1 $(chroot "$CHROOT" dpkg-query -W -f '${Package}=${Version} ' weston libweston-14-0 fonts-dejavu-core)"
if [ -f "$out" ] && [ "$(cat "$out.id" 2>/dev/null)" = "$id" ]; then
  log "weston cached at $out ($(du -h "$out" | cut -f1))"; exit 0
fi
A=/usr/lib/x86_64-linux-gnu
progs="/usr/bin/weston /usr/libexec/weston-desktop-shell $A/weston/libexec_weston.so.0 \
$A/libweston-14/drm-backend.so $A/weston/desktop-shell.so"
for p in $progs; do [ -e "$CHROOT$p" ] || die "no $p in the chroot's weston"; done
stage="$CACHE/weston/root"; rm -rf "$stage"; mkdir -p "$stage"
libs=$(in_chroot "ldd $progs" | grep -o '=> /[^ ]*' | cut -c4- | sort -u)
for f in $progs $libs /lib64/ld-linux-x86-64.so.2; do
  mkdir -p "$stage$(dirname "$f")"; cp -L "$CHROOT$f" "$stage$f"
done
# weston's icons, fontconfig's configuration, one font, the keyboard data.
for d in /usr/share/weston /etc/fonts /usr/share/fonts/truetype/dejavu /usr/share/X11/xkb; do
  [ -d "$CHROOT$d" ] || die "no $d in the chroot"
  mkdir -p "$stage$(dirname "$d")"; cp -a "$CHROOT$d" "$stage$d"
done
in_chroot "strip --strip-unneeded $(find "$stage" -type f -name '*.so*' | tr '\n' ' ') $stage/usr/bin/weston $stage/usr/libexec/weston-desktop-shell" 2>/dev/null || true
mkdir -p "$(dirname "$out")"
(cd "$stage" && find . | cpio -o -H newc --quiet | gzip -9) > "$out.tmp"
mv "$out.tmp" "$out"
echo "$id" > "$out.id"
log "weston: $out ($(du -h "$out" | cut -f1)): $(echo $libs | wc -w) libraries"
