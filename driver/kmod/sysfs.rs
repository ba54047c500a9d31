// SPDX-License-Identifier: GPL-2.0
//! sysfs: `/sys/bus/mdev/devices/UUID/gvt/*` (the attribute macros live in
//! the C helpers; these are their show/store bodies).

use core::sync::atomic::Ordering;

use kernel::prelude::*;

use crate::gvt_core::stats::VgpuState;
use crate::gvt_core::vgpu_types::SliceWriter;
use crate::invalidate;
use crate::mdev::MdevVgpu;
use crate::parent::Parent;
use crate::vfio;
use crate::vfio_dev::{device_attr_trampolines, DeviceAttrs};

device_attr_trampolines!(Parent);

/// A DRM fourcc as its four characters.
struct FourCc(u32);

impl core::fmt::Display for FourCc {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        use core::fmt::Write as _;
        for b in self.0.to_le_bytes() {
            f.write_char(if b.is_ascii_graphic() { b as char } else { '?' })?;
        }
        Ok(())
    }
}

impl DeviceAttrs for MdevVgpu {
    fn show(&self, attr: u32, out: &mut [u8]) -> Result<usize> {
        let v = self;
        let mut w = SliceWriter::new(out);
        use core::fmt::Write;
        let p = &v.part;
        let _ = match attr {
            vfio::gvt_rs_attr_GVT_RS_ATTR_VGPU_ID => writeln!(w, "{}", v.id),
            vfio::gvt_rs_attr_GVT_RS_ATTR_APERTURE_BASE => writeln!(w, "{}", p.aperture.base),
            vfio::gvt_rs_attr_GVT_RS_ATTR_APERTURE_SIZE => writeln!(w, "{}", p.aperture.size),
            vfio::gvt_rs_attr_GVT_RS_ATTR_HIGH_GM_BASE => writeln!(w, "{}", p.high.base),
            vfio::gvt_rs_attr_GVT_RS_ATTR_HIGH_GM_SIZE => writeln!(w, "{}", p.high.size),
            vfio::gvt_rs_attr_GVT_RS_ATTR_FENCE_BASE => writeln!(w, "{}", p.fence_base),
            vfio::gvt_rs_attr_GVT_RS_ATTR_FENCE_COUNT => writeln!(w, "{}", p.fence_count),
            vfio::gvt_rs_attr_GVT_RS_ATTR_WEIGHT => {
                let g = v.shared.gpu.lock();
                writeln!(w, "{}", g.gpu.scheduler().weight(v.slot).unwrap_or(0))
            }
            vfio::gvt_rs_attr_GVT_RS_ATTR_STATE => {
                let g = v.shared.gpu.lock();
                let s = g.gpu.scheduler().state(v.slot);
                writeln!(
                    w,
                    "{}",
                    if s == VgpuState::Failed {
                        "failed"
                    } else {
                        "running"
                    }
                )
            }
            vfio::gvt_rs_attr_GVT_RS_ATTR_BALLOONED => {
                writeln!(w, "{}", v.ballooned.load(Ordering::Relaxed))
            }
            vfio::gvt_rs_attr_GVT_RS_ATTR_DMABUF => writeln!(w, "{}", u8::from(v.dmabuf())),
            vfio::gvt_rs_attr_GVT_RS_ATTR_DISPLAY => {
                let mut st = v.state.lock();
                let Ok((core, storage)) = st.split() else {
                    return Err(ENODEV);
                };
                let now = core.display_plane(&storage);
                let ids = core.plane_ids();
                let (shown, changes) = (ids.current(), ids.changes());
                let _ = match now {
                    Ok(p) => writeln!(
                        w,
                        "plane: {}x{} {} stride {} surface {:#x} size {:#x}",
                        p.width(),
                        p.height(),
                        FourCc(p.format().drm_fourcc()),
                        p.stride(),
                        p.surface(),
                        p.mapped_size()
                    ),
                    Err(why) => writeln!(w, "plane: none: {why}"),
                };
                let _ = writeln!(w, "shown_plane_id: {shown}\nplane_changes: {changes}");
                let _ = writeln!(
                    w,
                    "dmabufs_exported: {}",
                    v.dmabufs_exported.load(Ordering::Relaxed)
                );
                let a = &v.dmabuf_account;
                let _ = writeln!(
                    w,
                    "dmabuf_page_faults: {}",
                    a.faults.load(Ordering::Relaxed)
                );
                let _ = writeln!(w, "dmabufs_live: {}", a.live.load(Ordering::Relaxed));
                let _ = writeln!(w, "dmabuf_pages: {}", a.pages.load(Ordering::Relaxed));
                let _ = writeln!(w, "dmabufs_refused: {}", a.refused.load(Ordering::Relaxed));
                match st.edid.mode() {
                    Some(m) => writeln!(
                        w,
                        "monitor: {}x{} {}.{:03} Hz, hotplugs {}",
                        m.width,
                        m.height,
                        m.refresh_millihz() / 1000,
                        m.refresh_millihz() % 1000,
                        st.edid.hotplug_count()
                    ),
                    None => writeln!(
                        w,
                        "monitor: disconnected, hotplugs {}",
                        st.edid.hotplug_count()
                    ),
                }
            }
            vfio::gvt_rs_attr_GVT_RS_ATTR_MIGRATION => {
                // VFIO migration v2 (issue 14): what the device offers, its
                // FSM state, the last save/restore.
                let max = v.mig_data_size();
                let m = v.mig.lock();
                writeln!(w, "capabilities stop_copy p2p pre_copy")
                    .and_then(|()| writeln!(w, "state {}", crate::mig_state::state_name(m.state())))
                    .and_then(|()| writeln!(w, "max_stream_bytes {max}"))
                    .and_then(|()| writeln!(w, "saved_bytes {}", m.saved_bytes))
                    .and_then(|()| writeln!(w, "precopy_bytes {}", m.precopy_bytes))
                    .and_then(|()| writeln!(w, "stop_copy_bytes {}", m.stop_copy_bytes))
                    .and_then(|()| writeln!(w, "save_us {}", m.save_ns / 1000))
                    .and_then(|()| writeln!(w, "restored_bytes {}", m.restored_bytes))
                    .and_then(|()| writeln!(w, "restore_us {}", m.restore_ns / 1000))
                    .and_then(|()| writeln!(w, "refused {}", m.refused))
            }
            vfio::gvt_rs_attr_GVT_RS_ATTR_STATS => {
                let st = v.state.lock();
                let Ok(core) = st.core() else {
                    return Err(ENODEV);
                };
                let g = v.shared.gpu.lock();
                core.write_stats(&g.gpu, &mut w)
                    .and_then(|()| {
                        writeln!(
                            w,
                            "self_map_faults {}",
                            v.self_faults.load(Ordering::Relaxed)
                        )
                    })
                    .and_then(|()| {
                        writeln!(
                            w,
                            "pins_refused_unmapping {}",
                            invalidate::REFUSED.load(Ordering::Relaxed)
                        )
                    })
                    .and_then(|()| {
                        writeln!(
                            w,
                            "unmap_retries {}",
                            invalidate::RETRIES.load(Ordering::Relaxed)
                        )
                    })
                    .and_then(|()| {
                        let m = st.host_memory();
                        writeln!(w, "host_memory_bytes {}", m.total())?;
                        writeln!(w, "host_memory_vregs {}", m.vregs)?;
                        writeln!(w, "host_memory_ggtt {}", m.ggtt)?;
                        writeln!(w, "host_memory_ppgtt {}", m.ppgtt_snapshot + m.ppgtt_tables)?;
                        writeln!(w, "host_memory_shadow {}", m.shadow)?;
                        writeln!(w, "host_memory_state {}", m.state)
                    })
            }
            _ => return Err(EINVAL),
        };
        Ok(w.len())
    }

    fn store(&self, attr: u32, input: &[u8]) -> Result<usize> {
        let v = self;
        let count = input.len();
        let text = core::str::from_utf8(input).map(|s| s.trim()).unwrap_or("");
        match attr {
            vfio::gvt_rs_attr_GVT_RS_ATTR_DMABUF => match text {
                "0" | "1" => {
                    v.dmabuf.store(text == "1", Ordering::Relaxed);
                    Ok(count)
                }
                _ => Err(EINVAL),
            },
            vfio::gvt_rs_attr_GVT_RS_ATTR_WEIGHT => match text.parse::<u32>() {
                Ok(w) => match v
                    .shared
                    .gpu
                    .lock()
                    .gpu
                    .scheduler_mut()
                    .set_weight(v.slot, w)
                {
                    Ok(()) => Ok(count),
                    Err(_) => Err(EINVAL),
                },
                _ => Err(EINVAL),
            },
            _ => Err(EINVAL),
        }
    }
}
