#!/usr/bin/env bash
# IGT (igt-gpu-tools, the kernel's KMS conformance suite) for the native guest
# driver's VM test (tests/vm/tests/gvt_drm_igt.rs): built once in the trixie
# chroot from the snapshot in the shared vendor directory ($GVT_VENDOR, see its
# README: three absent files, and the patch that builds without them), into
# the cache, never the repository.  Packed as a cpio segment the rig appends
# to the L2 initramfs (tools/vm-image.sh makes /l2/initrd-igt.gz of it):
#   /igt/igt_runner, /igt/igt_results, /igt/tests/<the tests of
#   tests/vm/igt/tests.txt> with their list test-list.txt, /igt/lib/libigt.so, and
#   every library they link, at its path in the chroot.
# Output: $CACHE/igt/igt.cpio.gz; the stamp ($CACHE/igt/igt.cpio.gz.id) is
# the snapshot's and the patch's sha256, the test list, the build packages
# and the build options, so any change rebuilds and nothing else does.
# The build packages go into the chroot with a stamp of their own
# ($CHROOT/.gvt-rs-igt-ready), under setup-chroot's lock.
source "$(dirname "$0")/common.sh"
serialize build-igt
need_root
IGT_TAR="igt-gpu-tools-2.2-git-b3d809d53.tar.gz"
IGT_PATCH="igt-gpu-tools-without-acm-oa.patch"
vendor=""
for d in "${GVT_VENDOR:-}" "$REPO/../shared/vendor" "$REPO/../../shared/vendor" /work/shared/vendor; do
  [ -n "$d" ] && [ -f "$d/$IGT_TAR" ] && [ -f "$d/$IGT_PATCH" ] && { vendor="$d"; break; }
done
[ -n "$vendor" ] || die "no $IGT_TAR (+ $IGT_PATCH): set GVT_VENDOR to the directory holding the shared vendor snapshots"
# The vendor README's list, plus patch.
DEPS="meson ninja-build gcc pkg-config libdrm-dev libkmod-dev libproc2-dev libudev-dev libpciaccess-dev \
libcairo2-dev libpixman-1-dev libglib2.0-dev libdw-dev libunwind-dev flex bison python3 python3-docutils \
libssl-dev libjson-c-dev libelf-dev zlib1g-dev patch"
MESON_OPTS="-Dtests=enabled -Drunner=enabled -Ddocs=disabled -Dman=disabled -Doverlay=disabled \
-Dchamelium=disabled -Dvalgrind=disabled -Dtestplan=disabled -Dxe_driver=disabled -Dlibdrm_drivers= \
-Dlibunwind=enabled -Dbuildtype=release"
list="$REPO/tests/vm/igt/tests.txt"
TESTS=$(sed 's/#.*//' "$list" | tr -s ' \n' ' ')
[ -n "${TESTS// /}" ] || die "no test in $list"
out="$CACHE/igt/igt.cpio.gz"
id="igt-v2 $(cd "$vendor" && sha256sum "$IGT_TAR" "$IGT_PATCH" | cut -d' ' -f1 | tr '\n' ' ')tests:$TESTS| deps:$(echo $DEPS | md5sum | cut -c1-12) | $MESON_OPTS"
if [ -f "$out" ] && [ "$(cat "$out.id" 2>/dev/null)" = "$id" ]; then
  log "IGT cached at $out ($(du -h "$out" | cut -f1))"; exit 0
fi
[ -f "$CHROOT/.gvt-rs-ready" ] || die "the trixie chroot is not set up: run tools/setup-chroot.sh first"

# Build packages, in the chroot, with their own stamp (apt under
# setup-chroot's lock: one apt in the chroot at a time).
chroot_packages igt $DEPS

# Sources: unpacked and patched once per snapshot; the build tree stays
# until the segment is cached (an interrupted build resumes).
src="$CACHE/igt-src"
tree="$src/igt-gpu-tools-2.2-b3d809d53"
src_id="$(cd "$vendor" && sha256sum "$IGT_TAR" "$IGT_PATCH" | cut -d' ' -f1 | tr '\n' ' ')"
if [ "$(cat "$src/.unpacked" 2>/dev/null)" != "$src_id" ]; then
  rm -rf "$src"; mkdir -p "$src"
  tar -C "$src" -xzf "$vendor/$IGT_TAR"
  [ -d "$tree" ] || die "$IGT_TAR does not unpack to $(basename "$tree")"
  # (the chroot's patch: the vendor directory is not mounted there)
  cp "$vendor/$IGT_PATCH" "$src/"
  in_chroot "cd $src && patch -p1 -s < $IGT_PATCH" || die "$IGT_PATCH does not apply"
  echo "$src_id" > "$src/.unpacked"
fi
build="$tree/build"
if [ "$(cat "$build/.configured" 2>/dev/null)" != "$MESON_OPTS" ]; then
  rm -rf "$build"
  step "configuring IGT (meson)" in_chroot "cd $tree && meson setup build $MESON_OPTS >/dev/null"
  echo "$MESON_OPTS" > "$build/.configured"
fi
targets="runner/igt_runner runner/igt_results"
for t in $TESTS; do targets="$targets tests/$t"; done
step "building IGT: igt_runner, igt_results and $(echo $TESTS | wc -w) tests" \
  in_chroot "ninja -C $build -j$(nproc) $targets >/dev/null"

# The segment: the programs under /igt, libigt in /igt/lib (the L2 program
# sets LD_LIBRARY_PATH), every other library where the chroot has it.
stage="$CACHE/igt/root"; rm -rf "$stage"; mkdir -p "$stage/igt/tests" "$stage/igt/lib"
cp "$build/runner/igt_runner" "$build/runner/igt_results" "$stage/igt/"
# The runner's list of test binaries (it lists each one's subtests and runs
# every subtest in a process of its own).
: > "$stage/igt/tests/test-list.txt"
for t in $TESTS; do
  cp "$build/tests/$t" "$stage/igt/tests/"
  echo "$t" >> "$stage/igt/tests/test-list.txt"
done
[ -f "$build/lib/libigt.so.0" ] || die "no libigt.so.0 in $build/lib"
cp -L "$build/lib/libigt.so.0" "$stage/igt/lib/"
bins="$build/runner/igt_runner $build/runner/igt_results"
for t in $TESTS; do bins="$bins $build/tests/$t"; done
libs=$(in_chroot "LD_LIBRARY_PATH=$build/lib ldd $bins" | grep -o '=> /[^ ]*' | cut -c4- | sort -u)
for l in $libs; do
  case "$l" in "$build"/*) continue ;; esac
  mkdir -p "$stage$(dirname "$l")"; cp -L "$CHROOT$l" "$stage$l"
done
for l in /lib64/ld-linux-x86-64.so.2; do mkdir -p "$stage$(dirname "$l")"; cp -L "$CHROOT$l" "$stage$l"; done
strip_ok=$(in_chroot "command -v strip" || true)
[ -n "$strip_ok" ] && in_chroot "strip --strip-unneeded $(find "$stage" -type f -name '*.so*' | tr '\n' ' ') $stage/igt/igt_runner $stage/igt/igt_results $stage/igt/tests/*" 2>/dev/null || true
mkdir -p "$(dirname "$out")"
(cd "$stage" && find . | cpio -o -H newc --quiet | gzip -9) > "$out.tmp"
mv "$out.tmp" "$out"
echo "$id" > "$out.id"
log "IGT: $out ($(du -h "$out" | cut -f1)): igt_runner, igt_results, $(grep -c . "$stage/igt/tests/test-list.txt") tests, $(find "$stage" -name '*.so*' | wc -l) libraries"
