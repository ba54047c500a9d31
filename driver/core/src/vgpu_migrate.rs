//! Save and restore of a whole vGPU through the migration stream
//! ([`super::migration`]; issue 14, VFIO migration v2).
//!
//! # Save ([`Vgpu::save_state`])
//! The source is stopped (the VMM's vCPUs no longer trap) and **drained**:
//! nothing admitted or held on any engine ([`MigrationError::Busy`]
//! otherwise; the glue lets the engine worker retire the work first).  At
//! that command boundary the engine context of the vGPU is fully described
//! by the guest's ring programming (START/CTL/HEAD/TAIL: HEAD = where the
//! engine stopped) and the PPGTT root, so no submitted-but-unretired work
//! is carried.  The stream holds the guest-visible state only:
//! configuration space, the plain vregs that differ from power-on, the
//! PVINFO page, the guest's GGTT entries (what the guest wrote, not the
//! shadow), the mediated registers (ring START/CTL/HEAD, PP_DIR_BASE,
//! display plane and cursor), fences, GT and display interrupt registers and
//! `RING_EIR`, each ring's TAIL, pipe A's vblank and flip counters, the
//! VMM's EDID (optional), the weight and the hang count.  Host state
//! (shadow pages, pins, physical GGTT entries, counters) is rebuilt, never
//! carried.
//!
//! # Restore ([`Vgpu::restore_state`])
//! The whole stream is parsed and every section's contents checked against
//! the target first (type, guest GM view, fence count, shadow-table count,
//! PVINFO read-only view, register offsets and kinds, GGTT pages inside
//! the view, weight range): a refused stream leaves the target untouched.
//! Then the target is reset and the state **replayed through the same
//! mediation a guest's accesses go through**: GGTT entries as guest PTE
//! writes (audited, pinned, shadowed), mediated registers as BAR0 writes,
//! fences as fence writes (range-checked), each TAIL as a submission (which
//! configures the shadow ring from the replayed programming and, for render,
//! rebuilds the shadow PPGTT from the guest's tables).  So a hostile stream
//! with a valid checksum can do nothing a guest could not.  Interrupt
//! registers, vblank counters and the hang count are put back last, without
//! delivering anything.  If a replay step fails the error is returned and
//! the target is left for the caller to reset ([`Vgpu::reset`]).
//!
//! # Placement
//! The guest's graphics addresses are host GM addresses (the paper's
//! address-space ballooning: no translation on the command path).  A target
//! must therefore hold the same aperture and high GM slices and fence count
//! ([`MigrationError::OtherPlacement`] otherwise); see docs/migration.md
//! for the cost of the alternative (a translated guest GM view) and what it
//! would take.

use super::backend::EngineId;
use super::cfgspace::CFG_SIZE;
use super::ggtt::VgpuGm;
use super::gm_view::GmView;
use super::gpu::Gpu;
use super::irq::GtIrq;
use super::mem::{GmRange, PAGE_SHIFT};
use super::migration::{
    self, Cursor, Identity, Paused, StreamError, Tag, Writer, SECTION_REQUIRED,
};
use super::mmio::{set_vreg, vreg, GGTT_VIEW_BASE};
use super::partition::Partition;
use super::pvinfo::{PvInfo, PVINFO_BASE, PVINFO_DWORDS, PVINFO_SIZE};
use super::regs::{self, ring, DisplayReg, RegKind};
use super::services::{Clock, GpuLock, Services};
use super::vblank::Vblank;
use super::vgpu::{AccessError, Env, Routed, Vgpu, VREG_DWORDS};

/// Why a save or restore did not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MigrationError {
    /// The stream itself is malformed, truncated, damaged or too new.
    Stream(StreamError),
    /// The stream is of another vGPU type.
    OtherType,
    /// Same type, but another guest GM view or fence count: the guest's
    /// graphics addresses would not be valid on this vGPU.
    OtherPlacement,
    /// Written by a core with another shadow page-table count.
    OtherBuild,
    /// The PVINFO page's read-only view (ballooning) differs from this vGPU's.
    PvInfoMismatch,
    /// The configuration space's identity (vendor/device) differs.
    ConfigMismatch,
    /// A section's contents are out of range (section tag).
    BadContents(u16),
    /// Save only: work is still admitted or held on an engine.
    Busy,
    /// Restore only: a replayed access was refused outright.
    Replay(AccessError),
    /// Save only: a final part without an initial part.
    NotStarted,
}

impl From<StreamError> for MigrationError {
    fn from(e: StreamError) -> Self {
        MigrationError::Stream(e)
    }
}

/// What a successful restore reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Restored<'s> {
    /// Guest GGTT entries replayed, and those the audit refused (they map
    /// scratch, as they did on the source).
    pub ptes: u32,
    pub ptes_rejected: u32,
    /// Mediated registers replayed.
    pub registers: u32,
    /// The VMM's EDID blob, for the glue's EDID region.
    pub edid: Option<&'s [u8]>,
}

/// Whether a vreg at `off` is plain state: restored by value.
fn plain(off: u32) -> bool {
    if (PVINFO_BASE..PVINFO_BASE + PVINFO_SIZE).contains(&off) {
        return false;
    }
    match regs::lookup(off).map(|h| h.kind()) {
        None => true,
        Some(k) => matches!(
            k,
            RegKind::Scratch | RegKind::HwsPga(_) | RegKind::ForcewakeReq | RegKind::ForcewakeAck
        ),
    }
}

/// Whether a register at `off` is replayed through the trap path.
fn replayed(off: u32) -> bool {
    if off % 4 != 0 {
        return false;
    }
    matches!(
        regs::lookup(off).map(|h| (h.kind(), h.dword)),
        Some((
            RegKind::RingStart(_)
                | RegKind::RingCtl(_)
                | RegKind::RingHead(_)
                | RegKind::PpDirBase(_)
                | RegKind::Display(
                    DisplayReg::PlaneCtl
                        | DisplayReg::PlaneStride
                        | DisplayReg::PlaneSurf
                        | DisplayReg::PipeSrc
                        | DisplayReg::CursorCtl
                        | DisplayReg::CursorBase
                        | DisplayReg::CursorPos
                ),
            0
        ))
    )
}

/// The mediated registers a save replays, in replay order.
fn replay_offsets() -> impl Iterator<Item = u32> {
    let rings = EngineId::ALL
        .into_iter()
        .flat_map(|e| [e.reg(ring::START), e.reg(ring::CTL), e.reg(ring::HEAD)]);
    let pd = EngineId::ALL.into_iter().map(|e| e.reg(ring::PP_DIR_BASE));
    let display = regs::REGISTERS
        .iter()
        .filter(|r| r.count == 1 && replayed(r.offset))
        .filter(|r| !matches!(r.kind, RegKind::RingStart(_) | RegKind::RingCtl(_)))
        .filter(|r| !matches!(r.kind, RegKind::RingHead(_) | RegKind::PpDirBase(_)))
        .map(|r| r.offset);
    rings.chain(pd).chain(display)
}

const VBLANK_LEN: usize = 21;

/// Byte offset of `vgt_id` in the PVINFO section.
const VGT_ID_AT: usize = super::pvinfo::vgtif::VGT_ID as usize;

/// The sections an initial part carries that the final part sends again
/// if they changed (compared by their FNV-1a fingerprint).
const RESENT: [Tag; 4] = [Tag::Config, Tag::Vregs, Tag::PvInfo, Tag::Edid];
/// The fingerprint of a section the initial part did not carry.
const ABSENT: u64 = 0;

/// A stream being saved in two parts (VFIO PRE_COPY then STOP_COPY),
/// kept by the glue between [`Vgpu::save_initial`] and [`Vgpu::save_final`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Precopy {
    /// Where the initial part ended (`None`: no initial part yet).
    at: Option<Paused>,
    /// Fingerprints of the [`RESENT`] sections as the initial part sent them.
    fp: [u64; 4],
    /// Bytes of the initial part.
    pub initial: usize,
    /// Bytes of the rounds after it ([`Vgpu::save_round`]).
    pub rounds: usize,
}

/// The guest GM page number of storage entry `i` in view `gm` whose
/// aperture holds `ap_entries` entries.
fn view_page(gm: &VgpuGm, ap_entries: usize, i: usize) -> u32 {
    let gma = if i < ap_entries {
        gm.aperture.base + ((i as u64) << PAGE_SHIFT)
    } else {
        gm.high.base + (((i - ap_entries) as u64) << PAGE_SHIFT)
    };
    (gma >> PAGE_SHIFT) as u32
}

/// A stream checked against a target, with what the target takes from it.
struct Checked<'s> {
    stream: migration::Stream<'s>,
    view: GmView,
    vgt_id: u32,
}

impl<const P: usize> Vgpu<P> {
    /// The header identity of this vGPU, of type `type_name`.
    pub fn migration_identity<'n>(&self, type_name: &'n [u8]) -> Identity<'n> {
        let gm = self.gm();
        Identity {
            type_name,
            gm: [
                gm.aperture.base,
                gm.aperture.size,
                gm.high.base,
                gm.high.size,
            ],
            fence_count: self.part.fence_count,
            ppgtt_tables: P as u32,
        }
    }

    /// Whether work is admitted or held on any engine (a save needs none:
    /// the glue lets the engine worker retire it first).
    pub fn engines_busy<const N: usize, S: Services<Gpu = Gpu<N>>>(
        &self,
        env: &mut Env<'_, S>,
    ) -> bool {
        let slot = self.slot;
        env.gpu
            .with(|gpu, _| EngineId::ALL.iter().any(|e| gpu.busy(slot, *e)))
    }

    /// Largest stream a vGPU of this geometry can produce (the glue's
    /// buffer size).
    /// (Both parts of a PRE_COPY stream: the resent sections and the GGTT
    /// may each appear twice, the GGTT's second time as delta records.)
    pub fn max_stream_len(&self) -> usize {
        let chunks = self.gm().entries() / self.ggtt.dirty_chunk_len() + 2;
        migration::HEADER_LEN
            + (Tag::BODY.len() + 1 + RESENT.len()) * migration::SECTION_HEAD
            + 2 * (CFG_SIZE + VREG_DWORDS * 8 + PVINFO_DWORDS * 4 + migration::EDID_MAX)
            + 2 * self.gm().entries() * 12
            + chunks * migration::DELTA_HEAD
            + 64 * 8
            + regs::FENCE_COUNT as usize * 8
            + 4 * (6 + 2 * EngineId::COUNT)
            + VBLANK_LEN
            + 8
            + 8
    }

    /// `STOP_COPY` from `STOP`: write this (stopped, drained) vGPU's whole
    /// state, as type `type_name`, into `out`; `edid`: the VMM's EDID blob.
    /// Returns the stream's length.  (The initial and the final part of
    /// [`Vgpu::save_initial`] and [`Vgpu::save_final`] back to back: nothing
    /// changed in between, so the final part carries no delta.)
    pub fn save_state<const N: usize, S: Services<Gpu = Gpu<N>>>(
        &mut self,
        env: &mut Env<'_, S>,
        type_name: &[u8],
        edid: Option<&[u8]>,
        out: &mut [u8],
    ) -> Result<usize, MigrationError> {
        if self.engines_busy(env) {
            return Err(MigrationError::Busy);
        }
        let mut pre = Precopy::default();
        let n = self.save_initial(env, type_name, edid, out, &mut pre)?;
        let rest = out.get_mut(n..).ok_or(StreamError::NoSpace)?;
        Ok(n + self.save_final(env, edid, rest, &mut pre)?)
    }

    /// Before a part is written while the guest runs: the EDID's size
    /// checked, the vregs brought up to date with the GPU and the display.
    fn fresh_vregs<const N: usize, S: Services<Gpu = Gpu<N>>>(
        &self,
        env: &mut Env<'_, S>,
        edid: Option<&[u8]>,
    ) -> Result<(), MigrationError> {
        if edid.is_some_and(|e| e.len() > migration::EDID_MAX) {
            return Err(MigrationError::BadContents(Tag::Edid as u16));
        }
        let vregs = &mut *env.st.vregs;
        env.gpu.with(|gpu, _| self.refresh(gpu, vregs));
        self.refresh_de(env.st.vregs);
        Ok(())
    }

    /// `RUNNING` → `PRE_COPY`: the initial part of a version-2 stream while
    /// the guest runs: the header, Config, Vregs, PvInfo, the guest's whole
    /// GGTT and the EDID, the bulk of the state.  From here the GGTT's
    /// dirty chunks and the sections' fingerprints in `pre` say what the
    /// final part must send again.  Returns the part's length.
    pub fn save_initial<const N: usize, S: Services<Gpu = Gpu<N>>>(
        &mut self,
        env: &mut Env<'_, S>,
        type_name: &[u8],
        edid: Option<&[u8]>,
        out: &mut [u8],
        pre: &mut Precopy,
    ) -> Result<usize, MigrationError> {
        self.fresh_vregs(env, edid)?;
        let mut w = Writer::new(out, &self.migration_identity(type_name))?;
        let mut fp = [0u64; 4];
        for (i, tag) in RESENT.into_iter().enumerate() {
            let m = w.mark()?;
            if self.write_resent(env, tag, edid, &mut w)? {
                fp[i] = migration::fnv1a64(w.since(m));
            } else {
                w.rollback(m);
                fp[i] = ABSENT;
            }
        }
        w.section(Tag::Ggtt, SECTION_REQUIRED)?;
        let gm = self.gm();
        let ap_entries = (gm.aperture.size >> PAGE_SHIFT) as usize;
        for (i, v) in env.st.ggtt_guest.iter().enumerate() {
            if *v == 0 {
                continue;
            }
            w.u32(view_page(&gm, ap_entries, i))?;
            w.u64(*v)?;
        }
        self.ggtt.clear_dirty();
        let (n, at) = w.pause(Paused {
            hash: migration::FNV_BASIS,
            bytes: 0,
        })?;
        *pre = Precopy {
            at: Some(at),
            fp,
            initial: n,
            rounds: 0,
        };
        Ok(n)
    }

    /// Entries per GGTT dirty chunk (what one delta record covers at most).
    pub fn ggtt_dirty_chunk_len(&self) -> usize {
        self.ggtt.dirty_chunk_len()
    }

    /// What the final part would carry of the GGTT now (bytes of its
    /// delta records), for `VFIO_MIG_GET_PRECOPY_INFO`-style estimates.
    pub fn precopy_dirty_bytes(&self) -> usize {
        let gm = self.gm();
        let ap_entries = (gm.aperture.size >> PAGE_SHIFT) as usize;
        self.ggtt
            .dirty_ranges()
            .map(|(a, b)| {
                let split = usize::from(a < ap_entries && b > ap_entries);
                migration::DELTA_HEAD * (1 + split) + 12 * (b - a)
            })
            .sum()
    }

    /// `STOP_COPY` after `PRE_COPY`: the final part of the stream begun by
    /// [`Vgpu::save_initial`] with `pre`, from the stopped, drained vGPU:
    /// GGTT delta records for the chunks written since, Config, Vregs,
    /// PvInfo and EDID again only if they changed, then the small volatile
    /// state and the trailer.  Returns the part's length.
    pub fn save_final<const N: usize, S: Services<Gpu = Gpu<N>>>(
        &mut self,
        env: &mut Env<'_, S>,
        edid: Option<&[u8]>,
        out: &mut [u8],
        pre: &mut Precopy,
    ) -> Result<usize, MigrationError> {
        let at = pre.at.take().ok_or(MigrationError::NotStarted)?;
        let slot = self.slot;
        let this = &*self;
        let vregs = &mut *env.st.vregs;
        let (busy, irq, eir, weight, hangs) = env.gpu.with(|gpu, _| {
            let busy = EngineId::ALL.iter().any(|e| gpu.busy(slot, *e));
            this.refresh(gpu, vregs);
            let mut eir = [0u32; EngineId::COUNT];
            for e in EngineId::ALL {
                if let Some(x) = eir.get_mut(e.index()) {
                    *x = gpu.eir(slot, e);
                }
            }
            let s = gpu.scheduler();
            (
                busy,
                gpu.irq(slot).unwrap_or(GtIrq::new()),
                eir,
                s.weight(slot).unwrap_or(1),
                s.hang_count(slot).unwrap_or(0),
            )
        });
        if busy {
            pre.at = Some(at);
            return Err(MigrationError::Busy);
        }
        if edid.is_some_and(|e| e.len() > migration::EDID_MAX) {
            return Err(MigrationError::BadContents(Tag::Edid as u16));
        }
        self.refresh_de(env.st.vregs);
        let now = env.clock.now_ns();
        let mut w = Writer::resume(out, at);
        self.write_changes(env, edid, &mut w, &pre.fp)?;
        let vregs = &*env.st.vregs;
        w.section(Tag::Mmio, SECTION_REQUIRED)?;
        for off in replay_offsets() {
            w.u32(off)?;
            w.u32(vreg(vregs, off))?;
        }
        w.section(Tag::Fences, SECTION_REQUIRED)?;
        for i in 0..self.part.fence_count {
            let off = regs::FENCE + i * 8;
            w.u64(u64::from(vreg(vregs, off)) | (u64::from(vreg(vregs, off + 4)) << 32))?;
        }
        w.section(Tag::Irq, SECTION_REQUIRED)?;
        for v in [
            irq.iir(),
            irq.imr(),
            irq.ier(),
            self.de.iir(),
            self.de.imr(),
            self.de.ier(),
        ] {
            w.u32(v)?;
        }
        for v in eir {
            w.u32(v)?;
        }
        w.section(Tag::Rings, SECTION_REQUIRED)?;
        for e in EngineId::ALL {
            w.u32(vreg(vregs, e.reg(ring::TAIL)))?;
        }
        w.section(Tag::Vblank, SECTION_REQUIRED)?;
        w.u64(self.vblank.frames_at(now))?;
        w.u32(self.vblank.flips())?;
        w.u64(self.vblank.period_ns())?;
        w.u8(u8::from(self.vblank.running()))?;
        w.section(Tag::Sched, SECTION_REQUIRED)?;
        w.u32(weight)?;
        w.u32(hangs)?;
        let n = w.finish()?;
        self.ggtt.clear_dirty();
        Ok(n)
    }

    /// Write what changed since the parts before (`fp`: their fingerprints
    /// of the [`RESENT`] sections): those sections again if they changed,
    /// a GGTT delta record per slice of each dirty chunk.  The new
    /// fingerprints.
    fn write_changes<S: Services>(
        &self,
        env: &mut Env<'_, S>,
        edid: Option<&[u8]>,
        w: &mut Writer<'_>,
        fp: &[u64; 4],
    ) -> Result<[u64; 4], MigrationError> {
        let mut now = *fp;
        // What changed since the parts before, and only that.
        for (i, tag) in RESENT.into_iter().enumerate() {
            let m = w.mark()?;
            let present = self.write_resent(env, tag, edid, w)?;
            if !present && fp[i] != ABSENT {
                // The EDID went away: an empty section says so.
                w.section(tag, 0)?;
            }
            if let Some(x) = now.get_mut(i) {
                *x = if present {
                    migration::fnv1a64(w.since(m))
                } else {
                    ABSENT
                };
            }
            if now.get(i) == fp.get(i) {
                w.rollback(m);
            }
        }
        let gm = self.gm();
        let ap_entries = (gm.aperture.size >> PAGE_SHIFT) as usize;
        let mut opened = false;
        for (a, b) in self.ggtt.dirty_ranges() {
            // One record per slice the chunk touches.
            let split = if a < ap_entries && b > ap_entries {
                ap_entries
            } else {
                b
            };
            for (lo, hi) in [(a, split), (split, b)] {
                if lo >= hi {
                    continue;
                }
                if !opened {
                    w.section(Tag::GgttDelta, SECTION_REQUIRED)?;
                    opened = true;
                }
                let range = env.st.ggtt_guest.get(lo..hi).unwrap_or(&[]);
                let count = range.iter().filter(|v| **v != 0).count();
                w.u32(view_page(&gm, ap_entries, lo))?;
                w.u32((hi - lo) as u32)?;
                w.u32(count as u32)?;
                for (k, v) in range.iter().enumerate() {
                    if *v != 0 {
                        w.u32(view_page(&gm, ap_entries, lo + k))?;
                        w.u64(*v)?;
                    }
                }
            }
        }
        Ok(now)
    }

    /// `PRE_COPY`, after the initial part: one more round of what changed
    /// since the parts before (the VMM asked how much precopy data is left
    /// and read everything so far), written while the guest runs into
    /// `out`; 0: nothing changed (or `out` is too small: it stays for the
    /// final part).  Nothing is marked sent unless the round was written.
    pub fn save_round<const N: usize, S: Services<Gpu = Gpu<N>>>(
        &mut self,
        env: &mut Env<'_, S>,
        edid: Option<&[u8]>,
        out: &mut [u8],
        pre: &mut Precopy,
    ) -> Result<usize, MigrationError> {
        let at = pre.at.ok_or(MigrationError::NotStarted)?;
        self.fresh_vregs(env, edid)?;
        let mut w = Writer::resume(out, at);
        let fp = self.write_changes(env, edid, &mut w, &pre.fp)?;
        let (n, next) = w.pause(at)?;
        if n > 0 {
            pre.at = Some(next);
            pre.fp = fp;
            pre.rounds += n;
            self.ggtt.clear_dirty();
        }
        Ok(n)
    }

    /// Write section `tag` (one of [`RESENT`]) as it is now; `false`: it
    /// has nothing to say (no EDID) and nothing was written.
    fn write_resent<S: Services>(
        &self,
        env: &mut Env<'_, S>,
        tag: Tag,
        edid: Option<&[u8]>,
        w: &mut Writer<'_>,
    ) -> Result<bool, MigrationError> {
        let vregs = &*env.st.vregs;
        match tag {
            Tag::Config => {
                w.section(Tag::Config, SECTION_REQUIRED)?;
                w.bytes(self.cfg.as_bytes())?;
            }
            Tag::Vregs => {
                w.section(Tag::Vregs, SECTION_REQUIRED)?;
                // By guest offset (dword index), whatever the vreg file's
                // layout: only pages that have a place in it can hold a
                // non-zero value.
                for page in 0..regs::REG_PAGES as u32 {
                    let base = page * regs::VREG_PAGE_SIZE;
                    if regs::vreg_index(vregs, base).is_none() {
                        continue;
                    }
                    for k in 0..regs::VREG_PAGE_DWORDS as u32 {
                        let off = base + k * 4;
                        let v = vreg(vregs, off);
                        if v != 0 && plain(off) {
                            w.u32(off / 4)?;
                            w.u32(v)?;
                        }
                    }
                }
            }
            Tag::PvInfo => {
                w.section(Tag::PvInfo, SECTION_REQUIRED)?;
                let lo = regs::fixed_index(PVINFO_BASE);
                let page = vregs.get(lo..lo + PVINFO_DWORDS).unwrap_or(&[]);
                for i in 0..PVINFO_DWORDS as u32 {
                    w.u32(self.mmio.pvinfo().read(page, i * 4))?;
                }
            }
            _ => match edid {
                Some(e) => {
                    w.section(Tag::Edid, 0)?;
                    w.bytes(e)?;
                }
                None => return Ok(false),
            },
        }
        Ok(true)
    }

    /// Check `stream` against this vGPU (of type `type_name`) without
    /// touching anything: the parsed stream, or why it is refused.
    pub fn check_stream<'s>(
        &self,
        type_name: &[u8],
        stream: &'s [u8],
    ) -> Result<migration::Stream<'s>, MigrationError> {
        self.check(type_name, stream).map(|c| c.stream)
    }

    /// [`Vgpu::check_stream`], with what the target takes besides the
    /// sections: the guest's GM view and its PVINFO id.
    fn check<'s>(&self, type_name: &[u8], stream: &'s [u8]) -> Result<Checked<'s>, MigrationError> {
        let s = migration::parse(stream, EngineId::COUNT)?;
        let mine = self.migration_identity(type_name);
        let theirs = s.identity();
        if theirs.type_name != mine.type_name {
            return Err(MigrationError::OtherType);
        }
        if theirs.ppgtt_tables != mine.ppgtt_tables {
            return Err(MigrationError::OtherBuild);
        }
        if theirs.fence_count != mine.fence_count {
            return Err(MigrationError::OtherPlacement);
        }
        // The guest keeps the source's view of its graphics memory: this
        // vGPU's placement must be able to stand behind it (same slice
        // sizes, a view that is page aligned, disjoint, inside BAR2 and the
        // GGTT window).
        let [ab, asz, hb, hsz] = theirs.gm;
        let view = VgpuGm {
            aperture: GmRange::new(ab, asz),
            high: GmRange::new(hb, hsz),
        };
        let view = GmView::new(view, self.placement(), self.cfg.aperture_size())
            .map_err(|_| MigrationError::OtherPlacement)?;
        let sec = |t: Tag| s.section(t).ok_or(StreamError::MissingSection(t as u16));
        let bad = |t: Tag| MigrationError::BadContents(t as u16);
        let cfg = sec(Tag::Config)?;
        if cfg.get(..4) != self.cfg.as_bytes().get(..4) {
            return Err(MigrationError::ConfigMismatch);
        }
        let mut c = Cursor::new(sec(Tag::Vregs)?);
        // Pages of plain registers the vreg file has no fixed place for: each
        // takes one of its spare pages, of which a guest can fill no more.
        let mut spare = [u32::MAX; regs::SPARE_PAGES];
        while c.remaining() > 0 {
            let i = c.u32()?;
            c.u32()?;
            let off = i.wrapping_mul(4);
            if i >= regs::REG_RANGE / 4 || !plain(off) {
                return Err(bad(Tag::Vregs));
            }
            let page = off / regs::VREG_PAGE_SIZE;
            if regs::fixed_vreg_index(off).is_none() && !spare.contains(&page) {
                let free = spare.iter_mut().find(|p| **p == u32::MAX);
                *free.ok_or(bad(Tag::Vregs))? = page;
            }
        }
        // PVINFO: what this vGPU will advertise, the view and the source's
        // id, must be what the guest read on the source.
        let pvinfo = sec(Tag::PvInfo)?;
        let vgt_id = Cursor::new(pvinfo.get(VGT_ID_AT..).unwrap_or(&[])).u32()?;
        if vgt_id == 0 {
            return Err(MigrationError::PvInfoMismatch);
        }
        let shown = Partition {
            aperture: view.view().aperture,
            high: view.view().high,
            ..self.part
        };
        let pv = PvInfo::new(vgt_id, self.mmio.pvinfo().caps, &shown)
            .map_err(|_| MigrationError::PvInfoMismatch)?;
        let mut c = Cursor::new(pvinfo);
        let empty = [0u32; PVINFO_DWORDS];
        for i in 0..PVINFO_DWORDS as u32 {
            let v = c.u32()?;
            if !PvInfo::guest_writable(i * 4) && v != pv.read(&empty, i * 4) {
                return Err(MigrationError::PvInfoMismatch);
            }
        }
        let gm = view.view();
        let mut c = Cursor::new(sec(Tag::Ggtt)?);
        while c.remaining() > 0 {
            let page = u64::from(c.u32()?);
            c.u64()?;
            if !gm.contains(page << PAGE_SHIFT) {
                return Err(bad(Tag::Ggtt));
            }
        }
        // GGTT deltas: each record's range inside one slice of the view
        // (its entries are inside the range: the parser checked).
        for p in s.all(Tag::GgttDelta) {
            for r in migration::delta_records(p) {
                let first = u64::from(r.first) << PAGE_SHIFT;
                let len = u64::from(r.pages) << PAGE_SHIFT;
                if !gm.aperture.contains(first, len) && !gm.high.contains(first, len) {
                    return Err(bad(Tag::GgttDelta));
                }
            }
        }
        let mut c = Cursor::new(sec(Tag::Mmio)?);
        while c.remaining() > 0 {
            let off = c.u32()?;
            c.u32()?;
            if !replayed(off) {
                return Err(bad(Tag::Mmio));
            }
        }
        let mut c = Cursor::new(sec(Tag::Vblank)?);
        c.take(VBLANK_LEN - 1)?;
        if c.u8()? > 1 {
            return Err(bad(Tag::Vblank));
        }
        let mut c = Cursor::new(sec(Tag::Sched)?);
        if !(1..=100).contains(&c.u32()?) {
            return Err(bad(Tag::Sched));
        }
        Ok(Checked {
            stream: s,
            view,
            vgt_id,
        })
    }

    /// `RESUMING` → `STOP`: take the state in `stream` (checked first, see
    /// [`Vgpu::check_stream`]; refused: nothing changed).  The vGPU is reset,
    /// then the state replayed through the mediation.  On a replay error the
    /// vGPU is left for the caller to reset.
    pub fn restore_state<'s, const N: usize, S: Services<Gpu = Gpu<N>>>(
        &mut self,
        env: &mut Env<'_, S>,
        type_name: &[u8],
        stream: &'s [u8],
    ) -> Result<Restored<'s>, MigrationError> {
        let Checked {
            stream: s,
            view,
            vgt_id,
        } = self.check(type_name, stream)?;
        let sec = |t: Tag| s.section(t).ok_or(StreamError::MissingSection(t as u16));
        let mut rep = Restored {
            // An empty EDID section: the EDID went away after PRE_COPY.
            edid: s.section(Tag::Edid).filter(|e| !e.is_empty()),
            ..Restored::default()
        };
        self.reset(env);
        // The guest's addresses from here on are the source's view's: the
        // GGTT window, BAR2, registers and commands are translated to this
        // vGPU's placement (the identity when the placements agree).
        if !self.set_view(env, view, vgt_id) {
            return Err(MigrationError::OtherPlacement);
        }
        // Configuration space: what the guest may write.
        for (i, d) in sec(Tag::Config)?.chunks_exact(4).enumerate() {
            let v = u32::from_le_bytes([d[0], d[1], d[2], d[3]]);
            let _ = self.cfg.write((i * 4) as u32, 4, v);
        }
        let mut c = Cursor::new(sec(Tag::Vregs)?);
        while c.remaining() > 0 {
            let i = c.u32()?;
            let v = c.u32()?;
            set_vreg(env.st.vregs, i * 4, v);
        }
        let mut c = Cursor::new(sec(Tag::PvInfo)?);
        for i in 0..PVINFO_DWORDS as u32 {
            let v = c.u32()?;
            if PvInfo::guest_writable(i * 4) {
                set_vreg(env.st.vregs, PVINFO_BASE + i * 4, v);
            }
        }
        let mut c = Cursor::new(sec(Tag::Ggtt)?);
        while c.remaining() > 0 {
            let page = u64::from(c.u32()?);
            let v = c.u64()?;
            let w = self
                .bar0_write(env, GGTT_VIEW_BASE + page * 8, &v.to_le_bytes())
                .map_err(MigrationError::Replay)?;
            rep.ptes += 1;
            if let Some(super::ggtt::PteWrite::Rejected(_)) = w.pte() {
                rep.ptes_rejected += 1;
            }
        }
        // Then what changed during PRE_COPY, in stream order: each record's
        // range holds exactly its entries afterwards.
        for p in s.all(Tag::GgttDelta) {
            for r in migration::delta_records(p) {
                let mut listed = r.entries().peekable();
                for page in r.first..r.first.saturating_add(r.pages) {
                    let v = match listed.peek() {
                        Some((p, v)) if *p == page => {
                            let v = *v;
                            listed.next();
                            v
                        }
                        _ => 0,
                    };
                    let at = GGTT_VIEW_BASE + u64::from(page) * 8;
                    let mut cur = [0u8; 8];
                    self.bar0_read(env, at, &mut cur)
                        .map_err(MigrationError::Replay)?;
                    if u64::from_le_bytes(cur) == v {
                        continue;
                    }
                    let w = self
                        .bar0_write(env, at, &v.to_le_bytes())
                        .map_err(MigrationError::Replay)?;
                    rep.ptes += 1;
                    if let Some(super::ggtt::PteWrite::Rejected(_)) = w.pte() {
                        rep.ptes_rejected += 1;
                    }
                }
            }
        }
        let mut c = Cursor::new(sec(Tag::Mmio)?);
        while c.remaining() > 0 {
            let off = c.u32()?;
            let v = c.u32()?;
            self.bar0_write(env, u64::from(off), &v.to_le_bytes())
                .map_err(MigrationError::Replay)?;
            rep.registers += 1;
        }
        let mut c = Cursor::new(sec(Tag::Fences)?);
        let mut i = 0u32;
        while c.remaining() > 0 {
            let v = c.u64()?;
            let off = u64::from(regs::FENCE + i * 8);
            let w = self
                .bar0_write(env, off, &v.to_le_bytes())
                .map_err(MigrationError::Replay)?;
            if !w
                .routed
                .iter()
                .flatten()
                .any(|r| matches!(r, Routed::Fence { .. }))
            {
                return Err(MigrationError::BadContents(Tag::Fences as u16));
            }
            i += 1;
        }
        // Each TAIL last: the submission configures the shadow ring from
        // the replayed START/CTL/HEAD and syncs the PPGTT.  A drained source
        // had HEAD = TAIL: nothing runs.
        let mut c = Cursor::new(sec(Tag::Rings)?);
        for e in EngineId::ALL {
            let tail = c.u32()?;
            self.bar0_write(env, u64::from(e.reg(ring::TAIL)), &tail.to_le_bytes())
                .map_err(MigrationError::Replay)?;
        }
        let mut c = Cursor::new(sec(Tag::Irq)?);
        let gt = GtIrq::from_parts(c.u32()?, c.u32()?, c.u32()?);
        self.de = GtIrq::from_parts(c.u32()?, c.u32()?, c.u32()?);
        let mut eir = [0u32; EngineId::COUNT];
        for x in eir.iter_mut() {
            *x = c.u32()?;
        }
        let mut c = Cursor::new(sec(Tag::Vblank)?);
        let frames = c.u64()?;
        let flips = c.u32()?;
        let period = c.u64()?;
        let running = c.u8()? == 1;
        self.vblank = Vblank::resumed(env.clock.now_ns(), period, frames, flips, running);
        self.vblank.restore(env.st.vregs);
        let mut c = Cursor::new(sec(Tag::Sched)?);
        let weight = c.u32()?;
        let hangs = c.u32()?;
        let slot = self.slot;
        let this = &*self;
        let vregs = &mut *env.st.vregs;
        env.gpu.with(|gpu, _| {
            gpu.restore_irq(slot, gt, eir);
            let s = gpu.scheduler_mut();
            let _ = s.set_weight(slot, weight);
            let _ = s.restore_hang_count(slot, hangs);
            this.refresh(gpu, vregs);
        });
        self.refresh_de(env.st.vregs);
        Ok(rep)
    }
}
