#!/usr/bin/env bash
# Prepare linux-source with Debian's exact .config so that out-of-tree Rust
# modules link against the stock Debian kernel: olddefconfig + rustavailable +
# modules_prepare in the trixie chroot, then Debian's Module.symvers and
# BTF-only vmlinux.  Proves the .config is unchanged and that every Rust export
# of the `kernel` crate is in Debian's Module.symvers.  Idempotent (stamp).
source "$(dirname "$0")/common.sh"
serialize prepare-kernel
need_root
EXTRACT="$CACHE/extract-$KREL"
HDR="$EXTRACT/usr/src/linux-headers-$KREL"
stamp="$KSRC/.gvt-rs-prepared"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$KVER_PKG" ]; then
  log "kernel tree prepared at $KSRC"; exit 0
fi
if [ ! -f "$EXTRACT/.done" ]; then
  rm -rf "$EXTRACT"; mkdir -p "$EXTRACT"
  extract_debs() { for f in "$DEBS"/*_"$KVER_PKG"_*.deb; do dpkg-deb -x "$f" "$EXTRACT"; done; }
  step "unpacking the kernel packages" extract_debs
  touch "$EXTRACT/.done"
fi
tarball=$(ls "$EXTRACT"/usr/src/linux-source-"$KSERIES".tar.* 2>/dev/null | head -1)
[ -n "$tarball" ] || die "no linux-source tarball in $EXTRACT/usr/src"
rm -rf "$KSRC" "$KSRC.tmp"; mkdir -p "$KSRC.tmp"
step "unpacking $(basename "$tarball")" tar -C "$KSRC.tmp" --strip-components=1 -xf "$tarball"
mv "$KSRC.tmp" "$KSRC"
cp "$HDR/.config" "$KSRC/.config"
KMAKE="make -C $KSRC -j$(nproc) $(kmake_vars)"
step "make olddefconfig rustavailable modules_prepare (in the chroot)" \
  in_chroot "$KMAKE olddefconfig >/dev/null && $KMAKE rustavailable && $KMAKE modules_prepare >/dev/null"
if ! diff -u "$HDR/.config" "$KSRC/.config" > "$CACHE/config.diff"; then
  cat "$CACHE/config.diff" >&2
  die "the prepared .config differs from Debian's (see above): the chroot's compilers do not match the kernel's"
fi
log ".config identical to Debian's $KREL config ($(grep -c '=' "$KSRC/.config") settings)"
cp "$HDR/Module.symvers" "$KSRC/Module.symvers"
cp "$HDR/vmlinux" "$KSRC/vmlinux"
# Every symbol the Rust side of the tree exports (kernel, core, bindings,
# helpers) must be one Debian's kernel exports: same rustc, same config.
ls "$KSRC"/rust/exports_*_generated.h >/dev/null 2>&1 \
  || die "rust/exports_*_generated.h were not generated: Rust support did not come up (see make rustavailable)"
total=$(cat "$KSRC"/rust/exports_*_generated.h | grep -c EXPORT)
missing=$(cat "$KSRC"/rust/exports_*_generated.h | grep -o 'EXPORT[A-Z_]*([A-Za-z0-9_]*)' \
  | sed 's/.*(\(.*\))/\1/' | sort -u | comm -23 - <(awk '{print $2}' "$KSRC/Module.symvers" | sort -u) | wc -l)
[ "$missing" = 0 ] || die "$missing of $total Rust-side exports are not in Debian's Module.symvers: rustc differs from $KRUSTC"
log "all $total Rust-side exports (kernel, core, bindings, helpers) are in Debian's Module.symvers"
echo "$KVER_PKG" > "$stamp"
