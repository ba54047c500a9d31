// SPDX-License-Identifier: GPL-2.0
//! `vfio_device_ops.read`/`write` of every region and
//! `get_region_info_caps`.  A region access runs under the vGPU's own
//! `state` lock only; the core takes the GPU lock for the bounded sections it
//! needs; what is left to do (signal, zap, kick, vblank) comes back as an
//! [`Effects`] and is applied after the lock is dropped.  User memory is
//! bounced through a kernel buffer, never touched under `state`.

use core::sync::atomic::Ordering;

use kernel::prelude::*;
use kernel::uaccess::{UserPtr, UserSlice};

use crate::effects::Effects;
use crate::gvt_core::edid::{self, EdidEvent};
use crate::gvt_core::gpu::SubmitOutcome;
use crate::gvt_core::irq::Delivery;
use crate::gvt_core::mem::PAGE_SIZE;
use crate::gvt_core::services::{Clock as _, HostMemory};
use crate::gvt_core::vblank::{PIPEA_FRMCOUNT, PIPEA_FRMTMSTMP};
use crate::gvt_core::vgpu::{AccessError, BAR0_SIZE, CONFIG_SIZE};
use crate::kapi::{current_task, get_user_reg, put_user_reg, KClock, KHost};
use crate::mdev::{
    env, errno, MdevVgpu, ALL_REGIONS, BAR0, BAR2, CONFIG, DISPLAY_REGION, EDID_REGION,
    NUM_REGIONS, REGION_MASK, REGION_SHIFT,
};
use crate::vfio;
use crate::vfio_dev::InfoCaps;

/// Bytes moved per bounce through the kernel (kept off the stack).
const CHUNK: usize = 256;

fn access_err(e: AccessError) -> Error {
    match e {
        AccessError::Fault => EFAULT,
        _ => EINVAL,
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Dir {
    Read,
    Write,
}

/// One region access of at most `CHUNK` bytes, on a kernel buffer; returns
/// what is left to do once the locks are dropped.  Inlined into [`rw`],
/// itself inlined into `read` and `write` with its direction known: a
/// trapped access makes no call of ours between the VFIO core and the
/// vGPU's lock (every call and return is a translation-block change under
/// TCG, where the rig's L1 runs; `cargo xtask bench`'s trap profile).
#[inline(always)]
fn access(v: &MdevVgpu, index: u32, off: u64, buf: &mut [u8], dir: Dir) -> Result<Effects> {
    let none = || Effects::default();
    let len = buf.len() as u64;
    match index {
        CONFIG => {
            let end = off.checked_add(len).ok_or(EINVAL)?;
            if end > CONFIG_SIZE {
                return Err(EINVAL);
            }
            let mut st = v.state.lock();
            let core = st.core.as_mut().ok_or(ENODEV)?;
            match dir {
                Dir::Read => core
                    .cfg_read_span(off as u32, buf)
                    .map(|()| none())
                    .map_err(access_err),
                Dir::Write => {
                    let was_on = core.cfg().memory_enabled();
                    core.cfg_write(off as u32, buf).map_err(access_err)?;
                    let on = core.cfg().memory_enabled();
                    // The fault handlers read decode here (they never take
                    // `state`); turning it off zaps after this store.
                    v.decode.store(on, Ordering::Release);
                    Ok(Effects {
                        zap_aperture: was_on && !on,
                        ..none()
                    })
                }
            }
        }
        BAR0 => {
            let mut st = v.state.lock();
            let (core, storage) = st.split()?;
            // A BAR with memory decode off does not respond (vfio-pci: EIO).
            if !core.cfg().memory_enabled() {
                return Err(EIO);
            }
            // The guest's EDID page is read-only: what the monitor says.
            if dir == Dir::Write && edid_page(off, len) {
                return Ok(none());
            }
            // The frame counters are brought up to date when read (no timer
            // runs for a guest that only polls them).
            let lazy = (u64::from(PIPEA_FRMCOUNT)..u64::from(PIPEA_FRMTMSTMP) + 4).contains(&off);
            // A plain register (most of BAR0: no table row, no mediated
            // value) is this vGPU's vreg and nothing else: no GPU lock, no
            // event, nothing left to do.
            if !lazy {
                let plain = match dir {
                    Dir::Read => core.bar0_read_plain(storage.vregs, off, buf),
                    Dir::Write => core.bar0_write_plain(storage.vregs, off, buf),
                };
                if plain {
                    return Ok(none());
                }
            }
            // The GPU lock, for the core's bounded sections.  A GGTT write
            // pins and unpins with it free; the display region and the
            // aperture are zapped (KCpu) between the new entry and the unpin.
            let mut env = env!(v, storage);
            match dir {
                Dir::Read => {
                    let d = if lazy {
                        core.vblank_tick(&mut env, KClock.now_ns())
                    } else {
                        Delivery::default()
                    };
                    core.bar0_read_full(&mut env, off, buf)
                        .map_err(access_err)?;
                    let sig = if d != Delivery::default() {
                        core.signal(d)
                    } else {
                        Default::default()
                    };
                    Ok(Effects { sig, ..none() })
                }
                Dir::Write => {
                    v.pinning.store(current_task(), Ordering::Relaxed);
                    let out = core.bar0_write_full(&mut env, off, buf);
                    v.pinning.store(0, Ordering::Relaxed);
                    let out = out.map_err(access_err)?;
                    // Most writes deliver nothing (`signal` of nothing
                    // changes nothing): no call for them.
                    let sig = if out.delivery != Delivery::default() {
                        core.signal(out.delivery)
                    } else {
                        Default::default()
                    };
                    // A register write may have enabled the vblank interrupt
                    // or the plane: the vblank timer runs while one is wanted
                    // (the clock is read only then).
                    let vblank = if off < GGTT_BAR0 && core.vblank_wanted() {
                        let now = KClock.now_ns();
                        core.vblank_deadline(now).map(|d| (d, now))
                    } else {
                        None
                    };
                    let kick = matches!(
                        out.submit(),
                        Some(SubmitOutcome::Accepted { .. } | SubmitOutcome::Held)
                    );
                    Ok(Effects {
                        sig,
                        vblank,
                        kick,
                        ..none()
                    })
                }
            }
        }
        BAR2 => {
            if !v.decode.load(Ordering::Acquire) {
                return Err(EIO);
            }
            aperture_access(v, off, buf, dir).map(|()| none())
        }
        EDID_REGION => {
            let mut st = v.state.lock();
            let r = match dir {
                Dir::Read => st.edid.read(off, buf).map(|()| None),
                Dir::Write => st.edid.write(off, buf),
            };
            match r {
                Ok(Some(EdidEvent::Hotplug { connected })) => {
                    // Hotplug: the guest sees the new monitor (and a new
                    // hotplug count) in its EDID page; the refresh follows the mode.
                    st.mirror_edid();
                    MdevVgpu::apply_refresh(&mut st);
                    let mode = st.edid.mode();
                    drop(st);
                    match mode {
                        Some(m) if connected => v.log_limited(format_args!(
                            "monitor plugged in, {}x{}",
                            m.width, m.height
                        )),
                        _ => v.log_limited(format_args!("monitor unplugged")),
                    }
                    Ok(none())
                }
                Ok(None) => Ok(none()),
                Err(e) => Err(Error::from_errno(-e.errno())),
            }
        }
        DISPLAY_REGION => {
            if dir == Dir::Write {
                return Err(EINVAL);
            }
            let mut st = v.state.lock();
            let (core, mut storage) = st.split()?;
            core.display_read(&mut storage, &KHost, off, buf)
                .map(|()| none())
                .map_err(|_| EINVAL)
        }
        _ => Err(EINVAL),
    }
}

/// Whether a BAR0 access of `len` bytes at `off` touches the guest's EDID page.
fn edid_page(off: u64, len: u64) -> bool {
    let base = u64::from(edid::guest::BASE);
    off < base + u64::from(edid::guest::SIZE) && off.saturating_add(len) > base
}

/// Start of the GGTT view in BAR0.
const GGTT_BAR0: u64 = crate::gvt_core::mmio::GGTT_VIEW_BASE;

/// Aperture (BAR2) access through the region instead of the mapping: the same
/// pages; outside the vGPU's slice reads return 0 and writes are dropped.
fn aperture_access(v: &MdevVgpu, off: u64, buf: &mut [u8], dir: Dir) -> Result {
    let len = buf.len() as u64;
    let end = off.checked_add(len).ok_or(EINVAL)?;
    if end > v.shared.layout.aperture_size {
        return Err(EINVAL);
    }
    let mut done = 0usize;
    while done < buf.len() {
        let a = off + done as u64;
        let in_page = (PAGE_SIZE - a % PAGE_SIZE).min((buf.len() - done) as u64) as usize;
        let piece = &mut buf[done..done + in_page];
        if v.aperture_view().contains(a, in_page as u64) {
            let po = (a % PAGE_SIZE) as usize;
            let mut st = v.state.lock();
            let (core, mut storage) = st.split()?;
            // The page the GGTT maps there: the guest's, or its scratch.
            let page = core.aperture_fault(&mut storage, a).map_err(|_| EINVAL)?;
            match dir {
                Dir::Read => KHost.read(page, po, piece).map_err(|_| EFAULT)?,
                Dir::Write => KHost.write(page, po, piece).map_err(|_| EFAULT)?,
            }
        } else {
            v.ballooned.fetch_add(1, Ordering::Relaxed);
            if dir == Dir::Read {
                piece.fill(0);
            }
        }
        done += in_page;
    }
    Ok(())
}

/// Split a VFIO read/write into region accesses, bouncing through a kernel
/// buffer so no user memory is touched under the state lock.
#[inline(always)]
fn rw(v: &MdevVgpu, ubuf: usize, count: usize, ppos: &mut i64, dir: Dir) -> isize {
    let pos = *ppos as u64;
    let index = (pos >> REGION_SHIFT) as u32;
    let off = pos & REGION_MASK;
    // A zero-length transfer moves nothing (read(2)/write(2), vfio-pci).
    if count == 0 {
        return 0;
    }
    if pos >> REGION_SHIFT >= u64::from(ALL_REGIONS) {
        return errno(EINVAL);
    }
    // Register-like regions take single, naturally aligned accesses; memory
    // and the config space's read path take spans.
    if index == BAR0 && !matches!(count, 1 | 2 | 4 | 8) {
        return errno(EINVAL);
    }
    if index == CONFIG && dir == Dir::Write && !matches!(count, 1 | 2 | 4) {
        return errno(EINVAL);
    }
    // A register access (at most 8 bytes) is one access through 8 bytes
    // on the stack: no loop, no chunk to zero.
    if count <= 8 {
        let mut small = [0u8; 8];
        let piece = &mut small[..count];
        if let Err(e) = one(v, index, off, ubuf, piece, dir) {
            return errno(e);
        }
        *ppos += count as i64;
        return count as isize;
    }
    rw_chunks(v, index, off, ubuf, count, ppos, dir)
}

/// One access of `piece.len()` bytes at `off` of region `index`, its user
/// memory at `user`: copied in before a write, out after a read, never
/// under a lock.
#[inline(always)]
fn one(v: &MdevVgpu, index: u32, off: u64, user: usize, piece: &mut [u8], dir: Dir) -> Result {
    match dir {
        Dir::Read => access(v, index, off, piece, dir).and_then(|fx| {
            v.apply(fx);
            copy_out(user, piece)
        }),
        Dir::Write => copy_in(user, piece)
            .and_then(|()| access(v, index, off, piece, dir))
            .map(|fx| v.apply(fx)),
    }
}

/// [`rw`] of more than 8 bytes (the config space's read spans, the
/// aperture and the display regions): `CHUNK` bytes at a time.
#[inline(never)]
fn rw_chunks(
    v: &MdevVgpu,
    index: u32,
    off: u64,
    ubuf: usize,
    count: usize,
    ppos: &mut i64,
    dir: Dir,
) -> isize {
    let mut chunk = [0u8; CHUNK];
    let mut done = 0usize;
    while done < count {
        let n = (count - done).min(CHUNK);
        if let Err(e) = one(
            v,
            index,
            off + done as u64,
            ubuf + done,
            &mut chunk[..n],
            dir,
        ) {
            return if done > 0 { done as isize } else { errno(e) };
        }
        done += n;
    }
    *ppos += done as i64;
    done as isize
}

/// User bytes at `user` into `piece`.  A register-sized access (1, 2, 4 or
/// 8 bytes) is one load of its width (`kapi::get_user_reg`): no
/// generic copy loop, no hardened-usercopy object check; other lengths go
/// by slice.
#[inline(always)]
fn copy_in(user: usize, piece: &mut [u8]) -> Result {
    match piece.len() {
        1 | 2 | 4 | 8 => get_user_reg(user, piece),
        n => UserSlice::new(UserPtr::from_addr(user), n)
            .reader()
            .read_slice(piece),
    }
}

/// `piece` out to user memory at `user`, the way [`copy_in`] reads it.
#[inline(always)]
fn copy_out(user: usize, piece: &[u8]) -> Result {
    match piece.len() {
        1 | 2 | 4 | 8 => put_user_reg(user, piece),
        n => UserSlice::new(UserPtr::from_addr(user), n)
            .writer()
            .write_slice(piece),
    }
}

/// `vfio_device_ops.read`.
#[inline(always)]
pub(crate) fn read(v: &MdevVgpu, ubuf: usize, count: usize, pos: &mut i64) -> isize {
    rw(v, ubuf, count, pos, Dir::Read)
}

/// `vfio_device_ops.write`.
#[inline(always)]
pub(crate) fn write(v: &MdevVgpu, ubuf: usize, count: usize, pos: &mut i64) -> isize {
    rw(v, ubuf, count, pos, Dir::Write)
}

// ---- region info -------------------------------------------------------------

/// `vfio_device_ops.get_region_info_caps`: the VFIO core validated argsz and
/// copies `info` and the capability chain back.
pub(crate) fn region_info(
    v: &MdevVgpu,
    info: &mut vfio::vfio_region_info,
    caps: &mut InfoCaps,
) -> Result {
    let rw = vfio::VFIO_REGION_INFO_FLAG_READ | vfio::VFIO_REGION_INFO_FLAG_WRITE;
    let (size, flags) = match info.index {
        CONFIG => (CONFIG_SIZE, rw),
        BAR0 => (BAR0_SIZE, rw),
        BAR2 => (
            v.shared.layout.aperture_size,
            rw | vfio::VFIO_REGION_INFO_FLAG_MMAP | vfio::VFIO_REGION_INFO_FLAG_CAPS,
        ),
        i if i < NUM_REGIONS => (0, 0),
        EDID_REGION => (
            edid::EDID_REGION_SIZE,
            rw | vfio::VFIO_REGION_INFO_FLAG_CAPS,
        ),
        // Read-only: the VMM shows the guest's screen, it does not draw.
        DISPLAY_REGION => (
            v.display_size,
            vfio::VFIO_REGION_INFO_FLAG_READ | vfio::VFIO_REGION_INFO_FLAG_MMAP,
        ),
        _ => return Err(EINVAL),
    };
    info.offset = u64::from(info.index) << REGION_SHIFT;
    info.size = size;
    info.flags = flags;
    if info.index == BAR2 {
        // Only this vGPU's slice may be mapped: everything else is ballooned.
        let ap = v.aperture_view();
        caps.add_sparse_mmap(ap.base, ap.size)?;
    }
    if info.index == EDID_REGION {
        return caps.add_type(
            vfio::VFIO_REGION_TYPE_GFX,
            vfio::VFIO_REGION_SUBTYPE_GFX_EDID,
        );
    }
    Ok(())
}
