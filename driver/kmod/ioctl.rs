// SPDX-License-Identifier: GPL-2.0
//! `vfio_device_ops.ioctl`: device info, interrupts (`GET_IRQ_INFO`,
//! `SET_IRQS`), `RESET`, and the display queries (`QUERY_GFX_PLANE`,
//! `GET_GFX_DMABUF`; the buffers are [`crate::dmabuf`]'s).

use core::sync::atomic::Ordering;

use kernel::ioctl::_IO;
use kernel::prelude::*;
use kernel::uaccess::{UserPtr, UserSlice};

use crate::dmabuf::{max_pages, DmaBufPages};
use crate::gvt_core::display::{vfio as gfx, GfxCaps};
use crate::gvt_core::mem::HostPage;
use crate::kapi::{export_dmabuf, EventFd, PageRef};
use crate::mdev::{
    MdevVgpu, ShownPlane, ALL_REGIONS, DISPLAY_REGION, INTX, NUM_IRQS, VIRQFD_MASK, VIRQFD_UNMASK,
};
use crate::vfio;
use crate::vfio_dev::{copy_in, copy_out, set_irqs_validate};

// VFIO ioctl numbers: _IO(VFIO_TYPE, VFIO_BASE + n) (linux/vfio.h).
const fn vfio_io(n: u32) -> u32 {
    _IO(vfio::VFIO_TYPE as u32, vfio::VFIO_BASE + n)
}
const VFIO_DEVICE_GET_INFO: u32 = vfio_io(7);
const VFIO_DEVICE_GET_IRQ_INFO: u32 = vfio_io(9);
const VFIO_DEVICE_SET_IRQS: u32 = vfio_io(10);
const VFIO_DEVICE_RESET: u32 = vfio_io(11);
const VFIO_DEVICE_QUERY_GFX_PLANE: u32 = vfio_io(14);
const VFIO_DEVICE_GET_GFX_DMABUF: u32 = vfio_io(15);

/// How many vectors each IRQ index offers: INTx 1, MSI 1, MSI-X 0, ERR 1
/// (the vGPU failed: [`MdevVgpu::failed`]), REQ 1.
fn irq_count(index: u32) -> u32 {
    match index {
        vfio::VFIO_PCI_INTX_IRQ_INDEX
        | vfio::VFIO_PCI_MSI_IRQ_INDEX
        | vfio::VFIO_PCI_ERR_IRQ_INDEX
        | vfio::VFIO_PCI_REQ_IRQ_INDEX => 1,
        _ => 0,
    }
}

/// `vfio_device_ops.ioctl`: the value returned to user space.
pub(crate) fn ioctl(v: &MdevVgpu, cmd: u32, arg: usize) -> Result<isize> {
    match cmd {
        VFIO_DEVICE_GET_INFO => ioctl_get_info(arg),
        VFIO_DEVICE_QUERY_GFX_PLANE => ioctl_query_gfx_plane(v, arg),
        VFIO_DEVICE_GET_GFX_DMABUF => return ioctl_get_gfx_dmabuf(v, arg).map(|fd| fd as isize),
        VFIO_DEVICE_GET_IRQ_INFO => ioctl_irq_info(arg),
        VFIO_DEVICE_SET_IRQS => ioctl_set_irqs(v, arg),
        VFIO_DEVICE_RESET => {
            // Reset turns memory decode off and drops the CPU mappings.  The
            // VMM's interrupt setup (eventfds, INTx mask) is its own state
            // and survives, as with vfio-pci.  The migration FSM goes back
            // to RUNNING (linux/vfio.h).
            v.mig_reset();
            v.reset(false);
            Ok(())
        }
        _ => Err(ENOTTY),
    }
    .map(|()| 0)
}

fn ioctl_get_info(arg: usize) -> Result {
    let minsz = core::mem::offset_of!(vfio::vfio_device_info, num_irqs) + 4;
    let mut info: vfio::vfio_device_info = copy_in(arg, minsz)?;
    if (info.argsz as usize) < minsz {
        return Err(EINVAL);
    }
    info.flags = vfio::VFIO_DEVICE_FLAGS_PCI | vfio::VFIO_DEVICE_FLAGS_RESET;
    info.num_regions = ALL_REGIONS;
    info.num_irqs = NUM_IRQS;
    // No device capabilities (no FLAGS_CAPS): as vfio-pci, write back as
    // much of the struct as the caller has room for, cap_offset 0.
    info.cap_offset = 0;
    let out = (info.argsz as usize).min(core::mem::size_of::<vfio::vfio_device_info>());
    copy_out(arg, &info, out)
}

/// What this driver implements of `VFIO_DEVICE_QUERY_GFX_PLANE` (probes
/// answer from it).
fn gfx_caps(v: &MdevVgpu) -> GfxCaps {
    GfxCaps {
        region: true,
        dmabuf: v.dmabuf(),
    }
}

/// `VFIO_DEVICE_QUERY_GFX_PLANE` (linux/vfio.h): `argsz` covers at least up
/// to `region_index`/`dmabuf_id`; a probe answers 0 or -EINVAL and writes
/// nothing back; a query writes the plane (or "no plane": zero format, size,
/// width, height) back.
fn ioctl_query_gfx_plane(v: &MdevVgpu, arg: usize) -> Result {
    let minsz = core::mem::offset_of!(vfio::vfio_device_gfx_plane_info, __bindgen_anon_1) + 4;
    let mut info: vfio::vfio_device_gfx_plane_info = copy_in(arg, minsz)?;
    if (info.argsz as usize) < minsz {
        return Err(EINVAL);
    }
    let caps = gfx_caps(v);
    let probe = info.flags & gfx::VFIO_GFX_PLANE_TYPE_PROBE != 0;
    let (a, diagnose) = {
        let mut st = v.state.lock();
        let (core, storage) = st.split()?;
        let a = core
            .query_gfx_plane(
                &storage,
                info.flags,
                info.drm_plane_type,
                caps,
                DISPLAY_REGION,
            )
            .map_err(|_| EINVAL)?;
        if a.observed.changed {
            // The region now shows another plane (or none): the fault
            // handler's view changes and the old pages leave every mapping,
            // under the `map` lock the fault takes.
            let shown = core.shown_plane().and_then(|p| {
                let first = p.surface() >> 12;
                // The physical entries behind the guest's surface (its GM
                // view is not the placement after a migration).
                let phys_first = core.gm_view().host_index(first)?;
                Some(ShownPlane {
                    first,
                    phys_first,
                    pages: p.pages(),
                })
            });
            v.show_plane(shown);
        }
        // Say once why the console is black (each time the reason changes).
        let mut diagnose = None;
        if !probe && info.drm_plane_type == gfx::DRM_PLANE_TYPE_PRIMARY {
            if a.no_plane.is_some() && a.no_plane != st.no_plane {
                diagnose = a.no_plane;
            }
            st.no_plane = a.no_plane;
        }
        (a, diagnose)
    };
    if probe {
        return Ok(());
    }
    if let Some(why) = diagnose {
        v.log_limited(format_args!("no display plane: {}", why));
    }
    let p = a.info;
    info.drm_format = p.drm_format;
    info.drm_format_mod = p.drm_format_mod;
    info.width = p.width;
    info.height = p.height;
    info.stride = p.stride;
    info.size = p.size;
    info.x_pos = p.x_pos;
    info.y_pos = p.y_pos;
    info.x_hot = p.x_hot;
    info.y_hot = p.y_hot;
    // (`region_index` and `dmabuf_id` share the union's storage.)
    info.__bindgen_anon_1.bindgen_union_field = p.region_index_or_dmabuf_id;
    copy_out(arg, &info, minsz)
}

fn ioctl_irq_info(arg: usize) -> Result {
    let minsz = core::mem::offset_of!(vfio::vfio_irq_info, count) + 4;
    let mut info: vfio::vfio_irq_info = copy_in(arg, minsz)?;
    if (info.argsz as usize) < minsz || info.index >= NUM_IRQS {
        return Err(EINVAL);
    }
    info.count = irq_count(info.index);
    // As vfio-pci: every index is eventfd-signalled; INTx is maskable and
    // automasked; the others cannot be resized (no dynamic MSI-X).
    info.flags = vfio::VFIO_IRQ_INFO_EVENTFD
        | if info.index == INTX {
            vfio::VFIO_IRQ_INFO_MASKABLE | vfio::VFIO_IRQ_INFO_AUTOMASKED
        } else {
            vfio::VFIO_IRQ_INFO_NORESIZE
        };
    copy_out(arg, &info, minsz)
}

fn ioctl_set_irqs(v: &MdevVgpu, arg: usize) -> Result {
    let minsz = core::mem::offset_of!(vfio::vfio_irq_set, count) + 4;
    let mut hdr: vfio::vfio_irq_set = copy_in(arg, minsz)?;
    let max = if hdr.index < NUM_IRQS {
        irq_count(hdr.index)
    } else {
        0
    };
    let data_size = set_irqs_validate(&mut hdr, max, NUM_IRQS)?;
    let mut data = [0u8; 4];
    if data_size > data.len() {
        return Err(EINVAL);
    }
    if data_size > 0 {
        UserSlice::new(UserPtr::from_addr(arg + minsz), data_size)
            .reader()
            .read_slice(&mut data[..data_size])?;
    }
    let action = hdr.flags & vfio::VFIO_IRQ_SET_ACTION_TYPE_MASK;
    let kind = hdr.flags & vfio::VFIO_IRQ_SET_DATA_TYPE_MASK;
    match action {
        vfio::VFIO_IRQ_SET_ACTION_MASK | vfio::VFIO_IRQ_SET_ACTION_UNMASK => {
            // Only INTx is maskable (GET_IRQ_INFO says so); one vector.
            if hdr.index != INTX || hdr.count != 1 {
                return Err(EINVAL);
            }
            let mask = action == vfio::VFIO_IRQ_SET_ACTION_MASK;
            match kind {
                vfio::VFIO_IRQ_SET_DATA_NONE => v.set_intx_mask(mask),
                vfio::VFIO_IRQ_SET_DATA_BOOL => {
                    if data[0] != 0 {
                        v.set_intx_mask(mask);
                    }
                }
                vfio::VFIO_IRQ_SET_DATA_EVENTFD => {
                    let fd = i32::from_ne_bytes(data);
                    v.set_virqfd(if mask { VIRQFD_MASK } else { VIRQFD_UNMASK }, fd)?;
                }
                _ => return Err(EINVAL),
            }
            Ok(())
        }
        vfio::VFIO_IRQ_SET_ACTION_TRIGGER => match kind {
            vfio::VFIO_IRQ_SET_DATA_EVENTFD => {
                if hdr.count == 0 {
                    v.set_eventfd(hdr.index, None);
                    return Ok(());
                }
                let fd = i32::from_ne_bytes(data);
                if fd < 0 {
                    v.set_eventfd(hdr.index, None);
                    return Ok(());
                }
                // EBADF for a closed fd, EINVAL for a non-eventfd.
                v.set_eventfd(hdr.index, Some(EventFd::from_fd(fd)?));
                Ok(())
            }
            vfio::VFIO_IRQ_SET_DATA_NONE => {
                if hdr.count == 0 {
                    v.set_eventfd(hdr.index, None);
                } else {
                    v.signal(hdr.index);
                }
                Ok(())
            }
            vfio::VFIO_IRQ_SET_DATA_BOOL => {
                if hdr.count > 0 && data[0] != 0 {
                    v.signal(hdr.index);
                }
                Ok(())
            }
            _ => Err(EINVAL),
        },
        _ => Err(EINVAL),
    }
}

/// `VFIO_DEVICE_GET_GFX_DMABUF`: a new dma-buf fd over the framebuffer of the
/// plane whose id QUERY_GFX_PLANE (`VFIO_GFX_PLANE_TYPE_DMABUF`) returned.
/// The pages are those the shadow GGTT maps now: the guest's, or this vGPU's
/// scratch page; never another vGPU's (the plane was validated against this
/// vGPU's slices, and the page list is built through its own shadow GGTT).
fn ioctl_get_gfx_dmabuf(v: &MdevVgpu, arg: usize) -> Result<i32> {
    if !v.dmabuf() {
        return Err(ENOTTY);
    }
    let mut id = [0u8; 4];
    UserSlice::new(UserPtr::from_addr(arg), 4)
        .reader()
        .read_slice(&mut id)?;
    let id = u32::from_ne_bytes(id);
    let obj = {
        let mut st = v.state.lock();
        let (core, mut storage) = st.split()?;
        let plane = core.dmabuf_plane(id).ok_or(ENOENT)?;
        let n = usize::try_from(plane.pages()).map_err(|_| EINVAL)?;
        let refuse = |e: Error, why: &str| {
            v.dmabuf_account.refused.fetch_add(1, Ordering::Relaxed);
            v.log_limited(format_args!("dma-buf export refused: {why}"));
            e
        };
        // Both arrays are charged to the caller's memcg.
        let mut hp = KVVec::with_capacity(n, GFP_KERNEL_ACCOUNT)?;
        hp.resize(n, HostPage(0), GFP_KERNEL_ACCOUNT)?;
        if core
            .framebuffer_pages(&mut storage, &plane, &mut hp)
            .map_err(|_| EINVAL)?
            != n
        {
            return Err(EINVAL);
        }
        if hp.iter().any(|p| p.0 == v.scratch_pfn) {
            return Err(refuse(
                EAGAIN,
                "the plane maps pages the guest has not backed",
            ));
        }
        // From here the buffer's drop gives the reservation back.
        let mut obj = DmaBufPages::reserve(
            v.dmabuf_account.clone(),
            n,
            plane.mapped_size() as usize,
            max_pages(v.display_size),
        )
        .map_err(|e| refuse(e, "too many live dma-bufs for this vGPU"))?;
        obj.alloc(n)?;
        for page in hp.iter() {
            // SAFETY: the page is pinned while the GGTT maps it, and we hold
            // the lock that keeps it so; the reference taken here (refused
            // for a page being freed) keeps it alive for the buffer.
            let pg = unsafe { PageRef::get(page.0) }.ok_or(EFAULT)?;
            obj.push(pg)?;
        }
        obj
    };
    let fd = export_dmabuf(obj)?;
    v.dmabufs_exported.fetch_add(1, Ordering::Relaxed);
    Ok(fd)
}
