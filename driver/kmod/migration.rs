// SPDX-License-Identifier: GPL-2.0
//! VFIO migration v2 of a vGPU (issue 14; `linux/vfio.h`,
//! `VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE`): the device-state FSM, its data
//! files and the save/restore of the core's migration stream
//! (`gvt_core::migration`, `gvt_core::vgpu_migrate`).
//!
//! The device offers STOP_COPY, P2P and PRE_COPY.  Multi-step requests are
//! walked one arc at a time with the VFIO core's `vfio_mig_get_next_state`;
//! the arcs this file implements are the ones it produces:
//!
//! | arc | what happens |
//! |---|---|
//! | RUNNING ↔ RUNNING_P2P, PRE_COPY ↔ PRE_COPY_P2P, STOP → RUNNING_P2P | nothing (a vGPU does no peer-to-peer DMA) |
//! | RUNNING_P2P → STOP | the vGPU's engines are drained: its admitted and held work retires (the engine worker runs it; bounded wait) |
//! | RUNNING → PRE_COPY, RUNNING_P2P → PRE_COPY_P2P | a saving data file holding the stream's initial part (config, vregs, PVINFO, the guest GGTT, EDID: the bulk), saved while the guest runs; `VFIO_MIG_GET_PRECOPY_INFO` reports its unread bytes as `initial_bytes`, and once everything was read appends a round of what changed since (GGTT delta records, changed sections) and reports it as `dirty_bytes` (0: nothing changed, the temporary end of the stream) |
//! | PRE_COPY_P2P → STOP_COPY | drain, then the final part (what changed since the last part, the volatile state, the trailer) is appended to the PRE_COPY file |
//! | STOP → STOP_COPY | drain, then the whole stream into a new saving file |
//! | STOP → RESUMING | a resuming data file of the largest stream a vGPU of this type produces; a stream whose header names another type is refused as its first bytes are written (EINVAL), so the VMM's load fails while the source still runs |
//! | RESUMING → STOP | the stream is checked and restored; a refused stream fails the arc (EINVAL, the reason logged), the vGPU is left as it was (or reset, if the replay failed part-way) and the FSM is in ERROR until `VFIO_DEVICE_RESET` |
//! | PRE_COPY → RUNNING, PRE_COPY_P2P → RUNNING_P2P, STOP_COPY → STOP | the data files are let go (they answer ENODEV) |
//!
//! Open, close and `VFIO_DEVICE_RESET` put the FSM back to RUNNING and let
//! go of the files.
//!
//! Locks: `MdevVgpu::mig` (FSM state, files) is taken first; under it the
//! drain, save and restore take `state` (then the core takes the GPU lock
//! for bounded sections).  User copies of the data happen only in the
//! files' read/write (`gvt_rs_helpers.c`), under the file's own mutex and
//! no vGPU lock.  The stream is built in (and restored from) a buffer owned
//! here, never in user memory.
//!
//! Dirty pages: everything the vGPU's engines write is guest memory it has
//! pinned through `vfio_pin_pages`, and VFIO type1 reports every pinned
//! page dirty while dirty tracking runs; the device itself keeps no state
//! outside the stream.

use kernel::bindings;
use kernel::prelude::*;

use crate::gvt_core::edid::EDID_MAX_SIZE;
use crate::gvt_core::migration;
use crate::gvt_core::vgpu_migrate::MigrationError;
use crate::kapi::{self, MigFile, MigRefill};
use crate::mdev::{env, MdevVgpu};
use crate::mig_state::*;

/// How long a drain waits for the engines (ms).
const DRAIN_MS: u32 = 2000;

fn errno_of(e: MigrationError) -> Error {
    match e {
        MigrationError::Busy => EBUSY,
        MigrationError::Stream(crate::gvt_core::migration::StreamError::NoSpace) => ENOSPC,
        _ => EINVAL,
    }
}

impl MdevVgpu {
    /// `migration_set_state`: walk to `new`; the data file the last arc
    /// opened, if any.
    pub(crate) fn mig_set_state(&self, new: u32) -> Result<Option<*mut bindings::file>> {
        let mut m = self.mig.lock();
        let mut file = None;
        while m.state != new {
            let next = self.dev.mig_next_state(m.state, new)?;
            file = self.mig_step(&mut m, next)?;
            m.state = next;
            if file.is_some() && next != new {
                // vfio_mig_get_next_state never opens a file mid-way.
                return Err(EINVAL);
            }
        }
        Ok(match file {
            Some(true) => m.saving.as_ref().map(MigFile::file_ref),
            Some(false) => m.resuming.as_ref().map(MigFile::file_ref),
            None => None,
        })
    }

    /// `migration_get_state`.
    pub(crate) fn mig_get_state(&self) -> u32 {
        self.mig.lock().state
    }

    /// `migration_get_data_size`: the largest stream this vGPU produces.
    pub(crate) fn mig_data_size(&self) -> usize {
        self.stream_cap().unwrap_or(0)
    }

    /// Open, close, `VFIO_DEVICE_RESET`: RUNNING, no files.
    pub(crate) fn mig_reset(&self) {
        let mut m = self.mig.lock();
        m.close_files();
        m.state = RUNNING;
    }

    fn stream_cap(&self) -> Result<usize> {
        Ok(self.state.lock().core()?.max_stream_len())
    }

    /// One arc; `Some(saving)`: it opened the saving (or resuming) file
    /// that goes back to the VMM.
    fn mig_step(&self, m: &mut Mig, next: u32) -> Result<Option<bool>> {
        match (m.state, next) {
            (RUNNING, RUNNING_P2P)
            | (RUNNING_P2P, RUNNING)
            | (PRE_COPY, PRE_COPY_P2P)
            | (PRE_COPY_P2P, PRE_COPY)
            | (STOP, RUNNING_P2P) => Ok(None),
            (RUNNING_P2P, STOP) => {
                self.drain()?;
                Ok(None)
            }
            (PRE_COPY, RUNNING) | (PRE_COPY_P2P, RUNNING_P2P) | (STOP_COPY, STOP) => {
                m.close_files();
                Ok(None)
            }
            (RUNNING, PRE_COPY) | (RUNNING_P2P, PRE_COPY_P2P) => {
                let f = MigFile::new(true, self.stream_cap()?)?;
                let n = self.save_part_into(&f, Part::Initial, &mut m.scratch)?;
                // SAFETY: `self` owns `m.saving` (its `mig` field): the file's
                // reference is dropped before `self` goes.
                unsafe { f.set_refill(self) };
                f.set_precopy(true);
                m.precopy_bytes = n;
                m.saving = Some(f);
                Ok(Some(true))
            }
            (STOP, STOP_COPY) | (PRE_COPY_P2P, STOP_COPY) => {
                self.drain()?;
                let opened = m.saving.is_none();
                if opened {
                    m.saving = Some(MigFile::new(true, self.stream_cap()?)?);
                    m.precopy_bytes = 0;
                }
                let f = m.saving.as_ref().ok_or(EINVAL)?;
                // From here no round is written (the file's mutex orders it).
                f.set_precopy(false);
                let t0 = kapi::now_ns();
                let part = if opened { Part::Whole } else { Part::Final };
                let n = self.save_part_into(f, part, &mut m.scratch)?;
                if !opened {
                    // The rounds written since the initial part.
                    let p = self.state.lock().pre;
                    m.precopy_bytes = p.initial + p.rounds;
                }
                m.stop_copy_bytes = n;
                m.saved_bytes = m.precopy_bytes + n;
                m.save_ns = kapi::now_ns().saturating_sub(t0);
                pr_info!(
                    "vGPU {}: migration state saved: {} bytes in PRE_COPY, {} at STOP_COPY in {} us\n",
                    self.id,
                    m.precopy_bytes,
                    n,
                    m.save_ns / 1000
                );
                Ok(opened.then_some(true))
            }
            (STOP, RESUMING) => {
                let f = MigFile::new(false, self.stream_cap()?)?;
                // Another type's stream is refused as its header arrives.
                let t = migration::type_field(self.type_name()).ok_or(EINVAL)?;
                f.expect(migration::TYPE_FIELD_AT, &t)?;
                m.resuming = Some(f);
                Ok(Some(false))
            }
            (RESUMING, STOP) => {
                let r = self.restore_from(m);
                m.close_files();
                if r.is_err() {
                    // The stream was refused: ERROR until VFIO_DEVICE_RESET
                    // (linux/vfio.h), rather than a RESUMING with no data.
                    m.state = ERROR;
                }
                r.map(|()| None)
            }
            _ => Err(EINVAL),
        }
    }

    /// Wait until the engine worker retired this vGPU's work.
    fn drain(&self) -> Result {
        for _ in 0..DRAIN_MS {
            let busy = {
                let mut st = self.state.lock();
                let (core, storage) = st.split()?;
                core.engines_busy(&mut env!(self, storage))
            };
            if !busy {
                return Ok(());
            }
            self.shared.kick();
            kapi::sleep_ms(1);
        }
        pr_warn!(
            "vGPU {}: migration: the engines did not drain in {} ms\n",
            self.id,
            DRAIN_MS
        );
        Err(ETIMEDOUT)
    }

    /// Save a part of the stream into `f` (appended), through `scratch`
    /// (allocated here if it is missing or too small, then kept); its
    /// length.
    fn save_part_into(
        &self,
        f: &MigFile,
        part: Part,
        scratch: &mut Option<KVVec<u8>>,
    ) -> Result<usize> {
        let cap = self.stream_cap()?;
        if scratch.as_ref().is_none_or(|b| b.len() < cap) {
            *scratch = None;
            let mut b = KVVec::<u8>::with_capacity(cap, GFP_KERNEL)?;
            b.resize(cap, 0, GFP_KERNEL)?;
            *scratch = Some(b);
        }
        let buf = scratch.as_mut().ok_or(ENOMEM)?.as_mut_slice();
        let n = {
            let mut st = self.state.lock();
            let mut edid = [0u8; EDID_MAX_SIZE];
            let elen = active_edid(&st, &mut edid);
            let mut pre = st.pre;
            let (core, storage) = st.split()?;
            let name = self.type_name();
            let edid = (elen > 0).then_some(&edid[..elen]);
            let env = &mut env!(self, storage);
            let r = match part {
                Part::Whole => core.save_state(env, name, edid, buf),
                Part::Initial => core.save_initial(env, name, edid, buf, &mut pre),
                Part::Final => core.save_final(env, edid, buf, &mut pre),
            };
            st.pre = pre;
            r
        };
        let n = n.map_err(|e| {
            pr_warn!("vGPU {}: migration save failed: {:?}\n", self.id, e);
            errno_of(e)
        })?;
        f.fill(buf.get(..n).ok_or(EINVAL)?)?;
        Ok(n)
    }

    /// Take what the VMM wrote into the resuming file and restore it.
    fn restore_from(&self, m: &mut Mig) -> Result {
        let f = m.resuming.as_ref().ok_or(EINVAL)?;
        let data = f.take();
        let t0 = kapi::now_ns();
        let r = {
            let mut st = self.state.lock();
            let (core, storage) = st.split()?;
            let r = core
                .restore_state(&mut env!(self, storage), self.type_name(), data.bytes())
                .map(|_| ());
            if r.is_ok() {
                self.decode.store(
                    core.cfg().memory_enabled(),
                    core::sync::atomic::Ordering::Release,
                );
                // The guest keeps the source's GM view: BAR2 follows it.
                self.sync_view(core);
                let now = kapi::now_ns();
                if let Some(d) = core.vblank_deadline(now) {
                    self.shared.arm_vblank(d, now);
                }
            }
            r
        };
        match r {
            Ok(()) => {
                m.restored_bytes = data.bytes().len();
                m.restore_ns = kapi::now_ns().saturating_sub(t0);
                pr_info!(
                    "vGPU {}: migration state restored: {} bytes in {} us\n",
                    self.id,
                    m.restored_bytes,
                    m.restore_ns / 1000
                );
                Ok(())
            }
            Err(e) => {
                m.refused += 1;
                pr_warn!("vGPU {}: migration stream refused: {:?}\n", self.id, e);
                if matches!(e, MigrationError::Replay(_)) {
                    // Refused part-way through the replay: start clean.
                    self.reset(false);
                }
                Err(errno_of(e))
            }
        }
    }
}

/// Which part of the stream [`MdevVgpu::save_part_into`] writes.
#[derive(Clone, Copy)]
enum Part {
    /// STOP → STOP_COPY: the whole stream.
    Whole,
    /// RUNNING → PRE_COPY: the initial part.
    Initial,
    /// PRE_COPY_P2P → STOP_COPY: the final part.
    Final,
}

/// The VMM's EDID blob into `out`; its length (0: none).
fn active_edid(st: &crate::mdev::State, out: &mut [u8; EDID_MAX_SIZE]) -> usize {
    match st.edid.active_edid() {
        Some(e) if e.len() <= EDID_MAX_SIZE => {
            out[..e.len()].copy_from_slice(e);
            e.len()
        }
        _ => 0,
    }
}

impl MigRefill for MdevVgpu {
    /// A PRE_COPY round (`VFIO_MIG_GET_PRECOPY_INFO` after everything was
    /// read), written while the guest runs, leaving room for the largest
    /// final part; 0 when nothing changed or it would not fit (then it
    /// goes in the final part).
    fn refill(&self, dst: &mut [u8]) -> usize {
        let mut st = self.state.lock();
        let mut edid = [0u8; EDID_MAX_SIZE];
        let elen = active_edid(&st, &mut edid);
        let mut pre = st.pre;
        let Ok((core, storage)) = st.split() else {
            return 0;
        };
        let reserve = core.max_stream_len() / 2;
        let room = dst.len().saturating_sub(reserve);
        let Some(out) = dst.get_mut(..room) else {
            return 0;
        };
        let edid = (elen > 0).then_some(&edid[..elen]);
        let n = core
            .save_round(&mut env!(self, storage), edid, out, &mut pre)
            .unwrap_or(0);
        st.pre = pre;
        n
    }
}
