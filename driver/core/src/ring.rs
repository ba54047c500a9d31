//! Lazy ring shadowing and batch buffer protection (paper §3.5.2, "smart
//! shadowing").
//!
//! A guest TAIL write submits the range `[old tail, new tail)` of its ring
//! (which lives in the vGPU's own graphics memory, read through the physical
//! GGTT, wrap-around included).  [`RingShadow::submit`] audits that range and
//! every batch buffer it reaches ([`super::cmd::audit_ring`]) and, in the same
//! single read of each dword, copies the audited commands into the vGPU's
//! **shadow ring**, which is the only ring the engine ever executes.  A guest
//! that rewrites its ring after the TAIL write changes nothing that runs.
//!
//! # Where the shadows live
//! In graphics memory the guest cannot reach: the **top 16 MiB of the
//! non-mappable GM is host-reserved** ([`host_reserved_range`]); the partition
//! module never hands it to a vGPU (ballooned in every guest).  Each vGPU and
//! engine gets a [`ShadowLayout`] inside it: a shadow ring, then a pool for
//! first-level and a pool for second-level batch copies.  The host pages behind
//! it are allocated by the module and mapped once with [`map_shadow`].  So the
//! engine reaches the shadows exactly like any other graphics memory, and
//! `START` is simply the shadow ring's GGTT address.  As a second line of
//! defence the auditor refuses any guest address inside the layout.
//!
//! The shadow ring has the geometry of the guest ring (size and offsets), so
//! the physical HEAD *is* the guest's HEAD: [`RingShadow::head`] is what the
//! virtual HEAD register returns.  Guest rings up to
//! [`ShadowLayout::ring_pages`] pages are accepted (Linux uses 32 pages,
//! Windows 16, per the paper).
//!
//! # Batch buffers: shadow copy, not write protection
//! The paper write-protects batch pages; upstream GVT-g instead shadow-copies
//! batch buffers at audit time, and so does this module: the auditor copies
//! every audited batch into the pools and rewrites each MI_BATCH_BUFFER_START
//! to point at its copy (GGTT, same level), flattening same-level chains.
//! Why: (1) it needs no page-tracking hook from the VMM (VFIO mdev has no
//! write-protect facility for guest RAM, KVMGT's page-track is KVM-only);
//! (2) it closes the window completely and synchronously, even for pages the
//! guest shares with the CPU or other engines, without trapping every write
//! to sub-page free space (§3.5.2's "unaligned batch buffer usages");
//! (3) the copy is what was audited, read once, so there is no
//! time-of-check/time-of-use gap by construction.  The cost is a copy
//! proportional to the batch size, measured by `benches/cmd.rs`.
//! [`BatchGuard`] keeps the door open for write-protection: the auditor
//! reports every batch page it reads, and the guard is released when the
//! engine has retired everything.
//!
//! Pools are bump-allocated per submission and reset when the shadow ring
//! is idle (HEAD == TAIL: every batch retired).  A submission that does not fit
//! while older ones are still pending returns [`SubmitError::Busy`] (nothing
//! consumed; retry after the engine ran); one that does not fit an empty pool
//! is rejected ([`Reject::TooLarge`]).

use super::backend::{Backend, EngineId, Pte};
use super::cmd::{
    self, AuditEnv, AuditError, AuditSummary, Level, Limits, Reject, RejectCounters, RingWindow,
    SinkFull, Space, MAX_CMD_DWORDS,
};
use super::engine::{self, AddressSpace, RING_CTL, RING_HEAD, RING_START, RING_TAIL};
use super::gm_view::GmView;
use super::mem::{GmRange, Gma, HostPage, PAGE_SHIFT, PAGE_SIZE};
use super::services::HostMemory;

/// Size of the host-reserved top of the non-mappable GM.
pub const HOST_RESERVED_SIZE: u64 = 16 << 20;

/// The host-reserved GGTT range of a device with `gm_size` bytes of GM.
pub const fn host_reserved_range(gm_size: u64) -> GmRange {
    host_reserved_range_of(gm_size, HOST_RESERVED_SIZE)
}

/// The top `size` bytes of a GM of `gm_size` bytes, reserved for the host.
pub const fn host_reserved_range_of(gm_size: u64, size: u64) -> GmRange {
    GmRange::new(gm_size.saturating_sub(size), size)
}

/// One vGPU-engine's shadow area inside the host-reserved GM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShadowLayout {
    /// GGTT address of the area (page-aligned, inside the host-reserved range).
    pub base: Gma,
    /// Pages of the shadow ring (largest guest ring accepted).
    pub ring_pages: u32,
    /// Pages of the first-level batch pool.
    pub l1_pages: u32,
    /// Pages of the second-level batch pool.
    pub l2_pages: u32,
}

impl ShadowLayout {
    pub const fn pages(&self) -> u32 {
        self.ring_pages + self.l1_pages + self.l2_pages
    }
    pub const fn range(&self) -> GmRange {
        GmRange::new(self.base, self.pages() as u64 * PAGE_SIZE)
    }
    pub const fn ring_gma(&self) -> Gma {
        self.base
    }
    const fn l1_gma(&self) -> Gma {
        self.base + self.ring_pages as u64 * PAGE_SIZE
    }
    const fn l2_gma(&self) -> Gma {
        self.l1_gma() + self.l1_pages as u64 * PAGE_SIZE
    }
}

/// Why [`map_shadow`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// `pages` does not hold exactly `layout.pages()` pages.
    PageCount,
    /// The layout is misaligned or runs past the GGTT.
    OutOfGgtt,
}

/// Map the host pages of a shadow area into the physical GGTT.
pub fn map_shadow<B: Backend>(
    backend: &mut B,
    layout: &ShadowLayout,
    pages: &[HostPage],
) -> Result<(), MapError> {
    if pages.len() != layout.pages() as usize {
        return Err(MapError::PageCount);
    }
    let first = layout.base >> PAGE_SHIFT;
    if layout.base % PAGE_SIZE != 0 || first + pages.len() as u64 > backend.ggtt_entries() as u64 {
        return Err(MapError::OutOfGgtt);
    }
    for (i, &p) in pages.iter().enumerate() {
        backend.write_ggtt((first + i as u64) as u32, Pte::new(p));
    }
    Ok(())
}

/// How submitted batch buffers are protected between audit and execution.
/// The implemented scheme is shadow copying ([`ShadowCopy`], a no-op guard);
/// a write-protecting implementation would protect each reported page and
/// treat guest writes to it as the paper describes, until `release`.
pub trait BatchGuard {
    /// The auditor read commands from this batch page (page-aligned address).
    fn protect(&mut self, space: Space, page: u64);
    /// Every protected page has been retired by the engine.
    fn release(&mut self);
}

/// Batch buffers are shadow-copied: nothing to protect in guest memory.
pub struct ShadowCopy;

impl BatchGuard for ShadowCopy {
    fn protect(&mut self, _space: Space, _page: u64) {}
    fn release(&mut self) {}
}

/// Why a submission did not go through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// The commands were rejected; nothing is executed.
    Rejected(Reject),
    /// The shadow pools are still in use by pending work: retry after the
    /// engine retired it (nothing was consumed).
    Busy,
}

/// Counters of accepted work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubmitStats {
    pub submissions: u64,
    pub commands: u64,
    pub dwords: u64,
    pub batches: u64,
    pub busy: u64,
}

/// One vGPU's ring on one engine, and its shadow.  `Copy`, so a caller can
/// snapshot it before a submission and roll back if admission fails.
#[derive(Clone, Copy, Debug)]
pub struct RingShadow {
    engine: EngineId,
    layout: ShadowLayout,
    ring: Option<RingWindow>,
    head: u32,
    tail: u32,
    l1: u64,
    l2: u64,
    rejects: RejectCounters,
    stats: SubmitStats,
    /// The guest's GM view when it is not the placement (a migrated vGPU):
    /// START and every GGTT address in the commands are translated.
    view: Option<GmView>,
}

struct Env<'x, B: Backend, H: HostMemory, P: AddressSpace, G: BatchGuard> {
    engine: EngineId,
    backend: &'x B,
    host: &'x mut H,
    ppgtt: Option<&'x P>,
    gm: &'x [GmRange],
    guard: &'x mut G,
    layout: ShadowLayout,
    /// `layout.range()`, computed once (every range check asks).
    shadow: GmRange,
    guest_ring: RingWindow,
    ring_off: u32,
    l1: u64,
    l2: u64,
    last_page: Option<(Space, u64)>,
    /// Emitted bytes not yet written: `pend[..pend_len]` lands at GGTT
    /// address `pend_at` (consecutive commands gather into one write).
    pend: [u8; PEND_BYTES],
    pend_len: usize,
    pend_at: Gma,
}

/// Bytes of emitted commands gathered before one shadow write (at least the
/// longest command).
const PEND_BYTES: usize = 512;
const _: () = assert!(PEND_BYTES >= 4 * MAX_CMD_DWORDS);

/// Write bytes at a GGTT address through the backend's GGTT.
fn write_gm<B: Backend, H: HostMemory>(
    backend: &B,
    host: &mut H,
    addr: Gma,
    data: &[u8],
) -> Result<(), SinkFull> {
    let mut done = 0usize;
    while done < data.len() {
        let a = addr + done as u64;
        let idx = u32::try_from(a >> PAGE_SHIFT).map_err(|_| SinkFull)?;
        if idx >= backend.ggtt_entries() {
            return Err(SinkFull);
        }
        let pte = backend.read_ggtt(idx);
        if !pte.present() {
            return Err(SinkFull);
        }
        let off = (a & (PAGE_SIZE - 1)) as usize;
        let n = (PAGE_SIZE as usize - off).min(data.len() - done);
        let chunk = data.get(done..done + n).ok_or(SinkFull)?;
        host.write(pte.page(), off, chunk).map_err(|_| SinkFull)?;
        done += n;
    }
    Ok(())
}

impl<B: Backend, H: HostMemory, P: AddressSpace, G: BatchGuard> Env<'_, B, H, P, G> {
    /// Gather `dwords`, to land at `at`, after what is pending if they
    /// follow it; otherwise write out what is pending first.  A run longer
    /// than the gather buffer goes through it in pieces.
    fn push(&mut self, at: Gma, dwords: &[u32]) -> Result<(), SinkFull> {
        let mut at = at;
        for piece in dwords.chunks(PEND_BYTES / 4) {
            self.push_piece(at, piece)?;
            at += 4 * piece.len() as u64;
        }
        Ok(())
    }

    /// [`Env::push`] of at most [`PEND_BYTES`].
    fn push_piece(&mut self, at: Gma, dwords: &[u32]) -> Result<(), SinkFull> {
        let len = 4 * dwords.len();
        if self.pend_len > 0
            && (self.pend_at + self.pend_len as u64 != at || self.pend_len + len > PEND_BYTES)
        {
            self.flush()?;
        }
        if self.pend_len == 0 {
            self.pend_at = at;
        }
        let dst = self
            .pend
            .get_mut(self.pend_len..self.pend_len + len)
            .ok_or(SinkFull)?;
        for (c, d) in dst.chunks_exact_mut(4).zip(dwords) {
            c.copy_from_slice(&d.to_le_bytes());
        }
        self.pend_len += len;
        Ok(())
    }
}

impl<B: Backend, H: HostMemory, P: AddressSpace, G: BatchGuard> AuditEnv for Env<'_, B, H, P, G> {
    fn engine(&self) -> EngineId {
        self.engine
    }
    fn gm_allowed(&self, addr: Gma, len: u64) -> bool {
        let r = GmRange::new(addr, len.max(1));
        self.gm.iter().any(|g| g.contains(addr, len)) && !self.shadow.overlaps(&r)
    }
    fn ppgtt_mapped(&self, addr: u64, len: u64) -> bool {
        let Some(p) = self.ppgtt else { return false };
        let len = len.max(1);
        if len > 1 << 20 {
            return false;
        }
        let Some(end) = addr.checked_add(len) else {
            return false;
        };
        let mut a = addr & !(PAGE_SIZE - 1);
        while a < end {
            if p.translate(&*self.host, a).is_none() {
                return false;
            }
            a += PAGE_SIZE;
        }
        true
    }
    fn read_dword(&mut self, space: Space, addr: u64) -> Option<u32> {
        let mut b = [0u8; 4];
        self.read_span(space, addr, &mut b)?;
        Some(u32::from_le_bytes(b))
    }
    fn read_span(&mut self, space: Space, addr: u64, out: &mut [u8]) -> Option<()> {
        // The ring is whole pages: a span (within one page) is in it or not.
        let in_ring = space == Space::Ggtt
            && GmRange::new(self.guest_ring.start, self.guest_ring.size as u64).contains(addr, 4);
        if !in_ring {
            let page = (space, addr & !(PAGE_SIZE - 1));
            if self.last_page != Some(page) {
                self.guard.protect(page.0, page.1);
                self.last_page = Some(page);
            }
        }
        let (page, off) = match space {
            Space::Ggtt => engine::BackendGgtt(self.backend).translate(&*self.host, addr)?,
            Space::Ppgtt => self.ppgtt?.translate(&*self.host, addr)?,
        };
        self.host.read(page, off, out).ok()
    }
    fn flush(&mut self) -> Result<(), SinkFull> {
        let len = core::mem::take(&mut self.pend_len);
        let bytes = self.pend.get(..len).ok_or(SinkFull)?;
        write_gm(self.backend, self.host, self.pend_at, bytes)
    }
    fn emit(&mut self, level: Level, dwords: &[u32]) -> Result<(), SinkFull> {
        let len = 4 * dwords.len();
        match level {
            Level::Ring => {
                let size = self.guest_ring.size;
                let first = ((size - self.ring_off) / 4).min(dwords.len() as u32) as usize;
                let (a, b) = dwords.split_at(first);
                self.push(self.layout.ring_gma() + self.ring_off as u64, a)?;
                if !b.is_empty() {
                    self.push(self.layout.ring_gma(), b)?;
                }
                self.ring_off = ((self.ring_off as u64 + len as u64) % size as u64) as u32;
                Ok(())
            }
            Level::First | Level::Second => {
                let (cur, cap, base) = if level == Level::First {
                    (
                        self.l1,
                        self.layout.l1_pages as u64 * PAGE_SIZE,
                        self.layout.l1_gma(),
                    )
                } else {
                    (
                        self.l2,
                        self.layout.l2_pages as u64 * PAGE_SIZE,
                        self.layout.l2_gma(),
                    )
                };
                if cur + len as u64 > cap {
                    return Err(SinkFull);
                }
                self.push(base + cur, dwords)?;
                if level == Level::First {
                    self.l1 += len as u64;
                } else {
                    self.l2 += len as u64;
                }
                Ok(())
            }
        }
    }
    fn next_addr(&self, level: Level) -> Gma {
        match level {
            Level::Ring => self.layout.ring_gma() + self.ring_off as u64,
            Level::First => self.layout.l1_gma() + self.l1,
            Level::Second => self.layout.l2_gma() + self.l2,
        }
    }
}

impl RingShadow {
    pub const fn new(engine: EngineId, layout: ShadowLayout) -> Self {
        Self {
            engine,
            layout,
            ring: None,
            head: 0,
            tail: 0,
            l1: 0,
            l2: 0,
            rejects: RejectCounters::new(),
            stats: SubmitStats {
                submissions: 0,
                commands: 0,
                dwords: 0,
                batches: 0,
                busy: 0,
            },
            view: None,
        }
    }

    /// The guest sees `view` of its graphics memory from now on (`None`,
    /// or an identity view: its placement).  Applies from the next
    /// [`RingShadow::configure`] and submission.
    pub fn set_view(&mut self, view: Option<GmView>) {
        self.view = view.filter(|v| !v.is_identity());
    }

    /// The guest's GM view, when it is not the placement.
    pub const fn view(&self) -> Option<GmView> {
        self.view
    }

    pub const fn engine(&self) -> EngineId {
        self.engine
    }
    pub const fn layout(&self) -> &ShadowLayout {
        &self.layout
    }
    /// The guest-visible HEAD (= the shadow ring's HEAD).
    pub const fn head(&self) -> u32 {
        self.head
    }
    /// The last accepted TAIL.
    pub const fn tail(&self) -> u32 {
        self.tail
    }
    /// Whether every accepted command has retired.
    pub const fn idle(&self) -> bool {
        self.head == self.tail
    }
    pub const fn rejects(&self) -> &RejectCounters {
        &self.rejects
    }
    pub const fn stats(&self) -> &SubmitStats {
        &self.stats
    }
    pub const fn ring(&self) -> Option<RingWindow> {
        self.ring
    }

    /// The guest (re)programmed its ring: START, CTL, HEAD as written.  Call
    /// while this vGPU's work on the engine is idle.  A disabled CTL leaves the
    /// ring unconfigured (every submission is then rejected as `BadRing`).
    pub fn configure(&mut self, start: u32, ctl: u32, head: u32) -> Result<(), Reject> {
        self.ring = None;
        self.head = 0;
        self.tail = 0;
        self.l1 = 0;
        self.l2 = 0;
        if ctl & engine::RING_VALID == 0 {
            return Ok(());
        }
        let size = engine::ring_size(ctl);
        let head = head & engine::HEAD_ADDR;
        if size > self.layout.ring_pages.saturating_mul(PAGE_SIZE as u32) || head >= size {
            self.rejects.record(Reject::BadRing);
            return Err(Reject::BadRing);
        }
        // START is a guest graphics address: in the view's terms.
        let start = (start & !0xfff) as u64;
        let start = match &self.view {
            None => start,
            Some(v) => match v.to_host(start, u64::from(size)) {
                Some(s) => s,
                None => {
                    self.rejects.record(Reject::BadRing);
                    return Err(Reject::BadRing);
                }
            },
        };
        self.ring = Some(RingWindow { start, size });
        self.head = head;
        self.tail = head;
        Ok(())
    }

    /// A guest TAIL write: audit and shadow `[tail, new_tail)` with batch
    /// buffers shadow-copied.  `gm` is the vGPU's graphics memory (aperture
    /// and high slices); `ppgtt` its shadow PPGTT, if any.
    pub fn submit<B: Backend, H: HostMemory, P: AddressSpace>(
        &mut self,
        backend: &B,
        host: &mut H,
        ppgtt: Option<&P>,
        gm: &[GmRange],
        new_tail: u32,
        limits: &Limits,
    ) -> Result<AuditSummary, SubmitError> {
        self.submit_guarded(backend, host, ppgtt, gm, new_tail, limits, &mut ShadowCopy)
    }

    /// [`RingShadow::submit`] with a batch protection scheme.
    #[allow(clippy::too_many_arguments)]
    pub fn submit_guarded<B: Backend, H: HostMemory, P: AddressSpace, G: BatchGuard>(
        &mut self,
        backend: &B,
        host: &mut H,
        ppgtt: Option<&P>,
        gm: &[GmRange],
        new_tail: u32,
        limits: &Limits,
        guard: &mut G,
    ) -> Result<AuditSummary, SubmitError> {
        // The audit proper; every outcome is counted below.
        let r = (|| {
            let ring = self.ring.ok_or(SubmitError::Rejected(Reject::BadRing))?;
            let size = ring.size;
            let new_tail = new_tail & engine::TAIL_ADDR;
            if new_tail >= size {
                return Err(SubmitError::Rejected(Reject::BadTail));
            }
            let idle = self.idle();
            if idle {
                self.l1 = 0;
                self.l2 = 0;
            }
            let dist = |a: u32, b: u32| (b as u64 + size as u64 - a as u64) % size as u64;
            let pending = dist(self.head, self.tail);
            let added = dist(self.tail, new_tail);
            if added == 0 {
                return Ok(AuditSummary::default());
            }
            // Never let the new range run into commands still pending (and keep
            // one qword free: HEAD == TAIL means empty).
            if pending + added > size as u64 - 8 {
                return Err(SubmitError::Rejected(Reject::BadTail));
            }
            let mut env = Env {
                engine: self.engine,
                backend,
                host,
                ppgtt,
                gm,
                guard,
                layout: self.layout,
                shadow: self.layout.range(),
                guest_ring: ring,
                ring_off: self.tail,
                l1: self.l1,
                l2: self.l2,
                last_page: None,
                pend: [0; PEND_BYTES],
                pend_len: 0,
                pend_at: 0,
            };
            // A guest whose GM view is not its placement has every address
            // translated; the identity walker is the paper's.
            let audited = match self.view {
                None => cmd::audit_ring(&mut env, ring, self.tail, new_tail, limits),
                Some(v) => cmd::audit_ring_in_view(&mut env, v, ring, self.tail, new_tail, limits),
            };
            match audited {
                Ok(sum) => {
                    self.tail = new_tail;
                    self.l1 = env.l1;
                    self.l2 = env.l2;
                    Ok(sum)
                }
                Err(AuditError::Rejected(r)) => Err(SubmitError::Rejected(r)),
                Err(AuditError::ShadowFull) if idle => Err(SubmitError::Rejected(Reject::TooLarge)),
                Err(AuditError::ShadowFull) => Err(SubmitError::Busy),
            }
        })();
        match r {
            Ok(s) => {
                self.stats.submissions += 1;
                self.stats.commands += s.commands as u64;
                self.stats.dwords += s.dwords;
                self.stats.batches += s.batches as u64;
            }
            Err(SubmitError::Rejected(x)) => self.rejects.record(x),
            Err(SubmitError::Busy) => self.stats.busy += 1,
        }
        r
    }

    /// Program the physical engine with this shadow ring (first load, or a
    /// switch to this vGPU while its ring is idle at ring level).
    pub fn load<B: Backend>(&self, backend: &mut B) {
        let base = self.engine.mmio_base();
        backend.write_reg(base + RING_CTL, 0);
        let Some(ring) = self.ring else { return };
        backend.write_reg(base + RING_START, self.layout.ring_gma() as u32);
        backend.write_reg(base + RING_HEAD, self.head);
        backend.write_reg(base + RING_TAIL, self.tail);
        backend.write_reg(base + RING_CTL, engine::ring_ctl(ring.size >> PAGE_SHIFT));
    }

    /// Drop every accepted command that has not retired (the engine was
    /// reset, or the vGPU's work discarded): HEAD := TAIL, pools free.
    pub fn discard(&mut self) {
        self.head = self.tail;
        self.l1 = 0;
        self.l2 = 0;
    }

    /// Tell the loaded physical engine about newly accepted work.
    pub fn kick<B: Backend>(&self, backend: &mut B) {
        backend.write_reg(self.engine.mmio_base() + RING_TAIL, self.tail);
    }

    /// The physical HEAD after the engine ran this vGPU's shadow ring.
    pub fn retire(&mut self, head: u32) {
        self.retire_guarded(head, &mut ShadowCopy)
    }

    /// [`RingShadow::retire`], releasing `guard` once everything retired.
    pub fn retire_guarded<G: BatchGuard>(&mut self, head: u32, guard: &mut G) {
        if let Some(ring) = self.ring {
            let head = head & engine::HEAD_ADDR;
            if head < ring.size {
                self.head = head;
            }
            if self.idle() {
                guard.release();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec;
    use std::vec::Vec;

    use proptest::prelude::*;

    use super::super::backend::Backend;
    use super::super::cmd::encode::*;
    use super::super::cmd::{MI_BATCH_BUFFER_END, MI_NOOP, MI_USER_INTERRUPT};
    use super::super::engine::{NoPpgtt, StepStatus};
    use super::super::sim::kit::*;
    use super::super::sim::GvtSim;
    use super::*;

    const RCS: EngineId = EngineId::Rcs;
    const BCS: EngineId = EngineId::Bcs;
    const DATA: u64 = 0x20000; // offset inside a vGPU's aperture
    const BB: u64 = 0x10000;

    fn base(v: usize) -> u64 {
        VGPU_GM[v][0].base
    }
    fn cat(parts: &[&[u32]]) -> Vec<u32> {
        let mut v: Vec<u32> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        if v.len() % 2 == 1 {
            v.push(MI_NOOP);
        }
        v
    }

    #[test]
    fn guest_rewriting_its_ring_after_submission_changes_nothing() {
        let (mut host, mut ggtt) = (new_host(), new_ggtt());
        let mut sim = GvtSim::new(&mut ggtt);
        map_shadows(&mut sim);
        let mut g = Guest::new(0);
        g.push(&mut host, RCS, &sdi(Space::Ggtt, DATA, 1));
        g.submit(&sim, &mut host, RCS).expect("accepted");
        // TOCTOU: the guest rewrites the submitted command to hit vGPU 1.
        write_dwords(
            &mut host,
            g.ring_gma(RCS),
            &sdi(Space::Ggtt, base(1) + DATA, 0x666),
        );
        let r = g.execute(&mut sim, &mut host, RCS, 100);
        assert_eq!(r.status, StepStatus::Idle);
        assert_eq!(read_dword(&host, DATA), 1);
        assert_eq!(read_dword(&host, base(1) + DATA), 0);
        assert_eq!(g.shadows[0].head(), 16, "virtual HEAD = guest offset");
    }

    #[test]
    fn guest_rewriting_an_audited_batch_changes_nothing() {
        let (mut host, mut ggtt) = (new_host(), new_ggtt());
        let mut sim = GvtSim::new(&mut ggtt);
        map_shadows(&mut sim);
        let mut g = Guest::new(0);
        write_dwords(
            &mut host,
            BB,
            &cat(&[&sdi(Space::Ggtt, DATA, 1), &[MI_BATCH_BUFFER_END]]),
        );
        write_dwords(
            &mut host,
            BB + 0x100,
            &cat(&[&sdi(Space::Ggtt, DATA + 4, 2), &[MI_BATCH_BUFFER_END]]),
        );
        write_dwords(
            &mut host,
            BB + 0x40,
            &cat(&[
                &bb_start(Space::Ggtt, BB + 0x100, true),
                &[MI_BATCH_BUFFER_END],
            ]),
        );
        g.push(
            &mut host,
            BCS,
            &cat(&[
                &bb_start(Space::Ggtt, BB, false),
                &bb_start(Space::Ggtt, BB + 0x40, false),
            ]),
        );
        let sum = g.submit(&sim, &mut host, BCS).expect("accepted");
        assert_eq!(sum.batches, 3);
        // After the audit the guest turns both batches into attacks on vGPU 1.
        write_dwords(&mut host, BB, &sdi(Space::Ggtt, base(1) + DATA, 0x666));
        write_dwords(
            &mut host,
            BB + 0x100,
            &color_blt(base(1), 4096, (0, 0, 1024, 256), 0x666),
        );
        let r = g.execute(&mut sim, &mut host, BCS, 1000);
        assert_eq!(r.status, StepStatus::Idle);
        assert_eq!(
            (read_dword(&host, DATA), read_dword(&host, DATA + 4)),
            (1, 2)
        );
        assert_eq!(read_dword(&host, base(1) + DATA), 0);
        assert_eq!(read_dword(&host, base(1)), 0);
        assert!(g.shadows[1].idle());
    }

    #[test]
    fn rejected_submission_is_never_executed_and_is_counted() {
        let (mut host, mut ggtt) = (new_host(), new_ggtt());
        let mut sim = GvtSim::new(&mut ggtt);
        map_shadows(&mut sim);
        let mut g = Guest::new(0);
        g.push(
            &mut host,
            RCS,
            &cat(&[
                &sdi(Space::Ggtt, DATA, 1),
                &sdi(Space::Ggtt, base(1) + DATA, 2),
            ]),
        );
        assert_eq!(
            g.submit(&sim, &mut host, RCS),
            Err(SubmitError::Rejected(Reject::AddressNotAllowed))
        );
        assert_eq!(g.shadows[0].tail(), 0);
        let r = g.execute(&mut sim, &mut host, RCS, 100);
        assert_eq!(r.executed, 0);
        assert_eq!(
            read_dword(&host, DATA),
            0,
            "the good half did not run either"
        );
        assert_eq!(g.shadows[0].rejects().get(Reject::AddressNotAllowed), 1);
        // The guest resets its ring and submits something valid.
        g.shadows[0]
            .configure(
                g.ring_gma(RCS) as u32,
                engine::ring_ctl(GUEST_RING_PAGES),
                0,
            )
            .unwrap();
        g.tail[0] = 0;
        g.push(&mut host, RCS, &sdi(Space::Ggtt, DATA, 3));
        g.submit(&sim, &mut host, RCS).unwrap();
        g.execute(&mut sim, &mut host, RCS, 100);
        assert_eq!(read_dword(&host, DATA), 3);
        assert_eq!(g.shadows[0].stats().submissions, 1);
    }

    #[test]
    fn two_vgpus_submissions_are_isolated() {
        let (mut host, mut ggtt) = (new_host(), new_ggtt());
        let mut sim = GvtSim::new(&mut ggtt);
        map_shadows(&mut sim);
        let mut gs = [Guest::new(0), Guest::new(1)];
        for (v, g) in gs.iter_mut().enumerate() {
            let b = base(v);
            g.push(
                &mut host,
                BCS,
                &cat(&[
                    &color_blt(b + DATA, 256, (0, 0, 16, 4), 0x100 + v as u32),
                    &flush_dw_store(Space::Ggtt, b + DATA + 0x1000, 0x200 + v as u32, false),
                    &[MI_USER_INTERRUPT],
                ]),
            );
            g.push(
                &mut host,
                RCS,
                &sdi(Space::Ggtt, VGPU_GM[v][1].base, 0x300 + v as u32),
            );
        }
        // Both submit before either runs (lazy shadowing per vGPU).
        for g in gs.iter_mut() {
            g.submit(&sim, &mut host, BCS).unwrap();
            g.submit(&sim, &mut host, RCS).unwrap();
        }
        // vGPU 0 tries to reach vGPU 1 in every way it can: rejected.
        let attacks: [&[u32]; 4] = [
            &sdi(Space::Ggtt, base(1) + DATA, 0x666),
            &color_blt(base(0) + 0xff000, 4096, (0, 0, 1024, 2), 0x666),
            &src_copy_blt(base(0) + DATA, 64, (0, 0, 4, 4), base(1) + DATA, 64, (0, 0)),
            &bb_start(Space::Ggtt, base(1) + BB, false),
        ];
        for a in attacks {
            let g = &mut gs[0];
            let t = g.tail[BCS.index()];
            g.push(&mut host, BCS, &cat(&[a]));
            assert_eq!(
                g.submit(&sim, &mut host, BCS),
                Err(SubmitError::Rejected(Reject::AddressNotAllowed))
            );
            g.tail[BCS.index()] = t; // the guest gives up on it
        }
        assert_eq!(
            gs[0].shadows[BCS.index()]
                .rejects()
                .get(Reject::AddressNotAllowed),
            4
        );
        sim.write_reg(super::super::irq::GTIMR, 0);
        for g in gs.iter_mut() {
            assert_eq!(
                g.execute(&mut sim, &mut host, BCS, 100).status,
                StepStatus::Idle
            );
            assert_eq!(
                g.execute(&mut sim, &mut host, RCS, 100).status,
                StepStatus::Idle
            );
        }
        for (v, gm) in VGPU_GM.iter().enumerate() {
            let b = base(v);
            assert_eq!(read_dword(&host, b + DATA + 3 * 256 + 60), 0x100 + v as u32);
            assert_eq!(read_dword(&host, b + DATA + 64), 0);
            assert_eq!(read_dword(&host, b + DATA + 0x1000), 0x200 + v as u32);
            assert_eq!(read_dword(&host, gm[1].base), 0x300 + v as u32);
        }
        assert_eq!(
            sim.read_reg(super::super::irq::GTIIR),
            super::super::irq::BCS_USER_INTERRUPT
        );
    }

    #[test]
    fn submissions_wrap_around_the_ring() {
        let (mut host, mut ggtt) = (new_host(), new_ggtt());
        let mut sim = GvtSim::new(&mut ggtt);
        map_shadows(&mut sim);
        let mut g = Guest::new(0);
        let size = GUEST_RING_PAGES * PAGE_SIZE as u32;
        g.push(&mut host, RCS, &vec![MI_NOOP; (size as usize - 8) / 4]);
        g.submit(&sim, &mut host, RCS).unwrap();
        g.execute(&mut sim, &mut host, RCS, 10_000);
        g.push(
            &mut host,
            RCS,
            &cat(&[&sdi(Space::Ggtt, DATA, 0x99), &[MI_NOOP, MI_NOOP]]),
        );
        assert_eq!(g.tail[0], 16);
        g.submit(&sim, &mut host, RCS).unwrap();
        let r = g.execute(&mut sim, &mut host, RCS, 100);
        assert_eq!(es(r), (3, StepStatus::Idle));
        assert_eq!(read_dword(&host, DATA), 0x99);
        assert_eq!(g.shadows[0].head(), 16);
    }

    #[test]
    fn overrunning_pending_commands_is_rejected() {
        let (mut host, mut ggtt) = (new_host(), new_ggtt());
        let mut sim = GvtSim::new(&mut ggtt);
        map_shadows(&mut sim);
        let mut g = Guest::new(0);
        let size = GUEST_RING_PAGES * PAGE_SIZE as u32;
        g.push(&mut host, RCS, &vec![MI_NOOP; (size as usize - 8) / 4]);
        g.submit(&sim, &mut host, RCS).unwrap();
        g.push(&mut host, RCS, &[MI_NOOP, MI_NOOP]);
        assert_eq!(
            g.submit(&sim, &mut host, RCS),
            Err(SubmitError::Rejected(Reject::BadTail))
        );
        assert_eq!(
            g.shadows[0].submit(
                &sim,
                &mut host,
                None::<&NoPpgtt>,
                g.gm(),
                size,
                &Limits::DEFAULT
            ),
            Err(SubmitError::Rejected(Reject::BadTail))
        );
        assert_eq!(
            g.shadows[0].submit(
                &sim,
                &mut host,
                None::<&NoPpgtt>,
                g.gm(),
                size - 8,
                &Limits::DEFAULT
            ),
            Ok(AuditSummary::default()),
            "same tail again: nothing new"
        );
    }

    #[test]
    fn bad_rings_are_rejected() {
        let mut s = RingShadow::new(RCS, layout(0, RCS));
        assert_eq!(
            s.configure(0, engine::ring_ctl(9), 0),
            Err(Reject::BadRing),
            "larger than the shadow"
        );
        assert_eq!(
            s.configure(0, engine::ring_ctl(1), 0x1000),
            Err(Reject::BadRing),
            "head past the end"
        );
        let (mut host, mut ggtt) = (new_host(), new_ggtt());
        let sim = GvtSim::new(&mut ggtt);
        assert_eq!(s.configure(0, 0, 0), Ok(()));
        assert_eq!(
            s.submit(
                &sim,
                &mut host,
                None::<&NoPpgtt>,
                &VGPU_GM[0],
                8,
                &Limits::DEFAULT
            ),
            Err(SubmitError::Rejected(Reject::BadRing)),
            "disabled"
        );
        s.configure(base(1) as u32, engine::ring_ctl(1), 0).unwrap();
        assert_eq!(
            s.submit(
                &sim,
                &mut host,
                None::<&NoPpgtt>,
                &VGPU_GM[0],
                8,
                &Limits::DEFAULT
            ),
            Err(SubmitError::Rejected(Reject::BadRing)),
            "ring in vGPU 1's memory"
        );
        assert_eq!(s.rejects().get(Reject::BadRing), 4);
    }

    #[test]
    fn shadow_area_is_off_limits_even_if_misconfigured() {
        let (mut host, mut ggtt) = (new_host(), new_ggtt());
        let mut sim = GvtSim::new(&mut ggtt);
        map_shadows(&mut sim);
        let mut g = Guest::new(0);
        let lay = layout(0, RCS);
        let bad_gm = [VGPU_GM[0][0], VGPU_GM[0][1], host_reserved_range(GM_SIZE)];
        g.push(&mut host, RCS, &sdi(Space::Ggtt, lay.base + 0x100, 0x666));
        let r = g.shadows[0].submit(
            &sim,
            &mut host,
            None::<&NoPpgtt>,
            &bad_gm,
            g.tail[0],
            &Limits::DEFAULT,
        );
        assert_eq!(r, Err(SubmitError::Rejected(Reject::AddressNotAllowed)));
    }

    #[test]
    fn pools_busy_while_pending_and_too_large_when_empty() {
        let (mut host, mut ggtt) = (new_host(), new_ggtt());
        let mut sim = GvtSim::new(&mut ggtt);
        map_shadows(&mut sim);
        let mut g = Guest::new(0);
        // A 40 KiB batch: fits the 64 KiB first-level pool once, not twice.
        let n = 10 * 1024 - 2;
        let mut big = vec![MI_NOOP; n];
        big.push(MI_BATCH_BUFFER_END);
        write_dwords(&mut host, BB, &big);
        g.push(&mut host, RCS, &cat(&[&bb_start(Space::Ggtt, BB, false)]));
        g.submit(&sim, &mut host, RCS).unwrap();
        g.push(&mut host, RCS, &cat(&[&bb_start(Space::Ggtt, BB, false)]));
        assert_eq!(g.submit(&sim, &mut host, RCS), Err(SubmitError::Busy));
        assert_eq!(g.shadows[0].stats().busy, 1);
        assert_eq!(
            g.execute(&mut sim, &mut host, RCS, 100_000).status,
            StepStatus::Idle
        );
        g.submit(&sim, &mut host, RCS)
            .expect("pool reset once idle");
        assert_eq!(
            g.execute(&mut sim, &mut host, RCS, 100_000).status,
            StepStatus::Idle
        );
        // 70 KiB never fits.
        let mut huge = vec![MI_NOOP; 70 * 256];
        huge.push(MI_BATCH_BUFFER_END);
        write_dwords(&mut host, VGPU_GM[0][1].base, &huge);
        g.push(
            &mut host,
            RCS,
            &cat(&[&bb_start(Space::Ggtt, VGPU_GM[0][1].base, false)]),
        );
        assert_eq!(
            g.submit(&sim, &mut host, RCS),
            Err(SubmitError::Rejected(Reject::TooLarge))
        );
    }

    struct PageLog {
        pages: Vec<(Space, u64)>,
        released: u32,
    }
    impl BatchGuard for PageLog {
        fn protect(&mut self, space: Space, page: u64) {
            self.pages.push((space, page));
        }
        fn release(&mut self) {
            self.released += 1;
        }
    }

    #[test]
    fn batch_guard_sees_batch_pages_and_is_released_on_retire() {
        let (mut host, mut ggtt) = (new_host(), new_ggtt());
        let mut sim = GvtSim::new(&mut ggtt);
        map_shadows(&mut sim);
        let mut g = Guest::new(0);
        // A batch straddling a page boundary.
        write_dwords(
            &mut host,
            BB + 0xff8,
            &cat(&[&sdi(Space::Ggtt, DATA, 1), &[MI_BATCH_BUFFER_END]]),
        );
        g.push(
            &mut host,
            RCS,
            &cat(&[&bb_start(Space::Ggtt, BB + 0xff8, false)]),
        );
        let mut log = PageLog {
            pages: vec![],
            released: 0,
        };
        let t = g.tail[0];
        g.shadows[0]
            .submit_guarded(
                &sim,
                &mut host,
                None::<&NoPpgtt>,
                &VGPU_GM[0],
                t,
                &Limits::DEFAULT,
                &mut log,
            )
            .unwrap();
        assert_eq!(
            log.pages,
            vec![(Space::Ggtt, BB), (Space::Ggtt, BB + 0x1000)]
        );
        g.shadows[0].load(&mut sim);
        sim.run(RCS, &mut host, None::<&NoPpgtt>, 2);
        g.shadows[0].retire_guarded(sim.read_reg(RCS.mmio_base() + engine::RING_HEAD), &mut log);
        assert_eq!(log.released, 0, "batch still running");
        sim.run(RCS, &mut host, None::<&NoPpgtt>, 100);
        g.shadows[0].retire_guarded(sim.read_reg(RCS.mmio_base() + engine::RING_HEAD), &mut log);
        assert_eq!(log.released, 1);
        assert_eq!(read_dword(&host, DATA), 1);
    }

    #[test]
    fn map_shadow_checks_its_arguments() {
        let mut ggtt = new_ggtt();
        let mut sim = GvtSim::new(&mut ggtt);
        let l = layout(0, RCS);
        assert_eq!(
            map_shadow(&mut sim, &l, &[HostPage(1)]),
            Err(MapError::PageCount)
        );
        let far = ShadowLayout {
            base: GM_SIZE - PAGE_SIZE,
            ..l
        };
        let pages = vec![HostPage(1); far.pages() as usize];
        assert_eq!(map_shadow(&mut sim, &far, &pages), Err(MapError::OutOfGgtt));
        assert_eq!(
            host_reserved_range(GM_SIZE),
            GmRange::new(16 << 20, 16 << 20)
        );
    }

    #[test]
    fn the_page_oracle_catches_an_unaudited_escape() {
        // Sanity check of the property test's oracle: without the auditor, a
        // stream does reach vGPU 1's pages.
        let (host, mut ggtt) = (new_host(), new_ggtt());
        let mut host = Recording::new(host);
        let mut sim = GvtSim::new(&mut ggtt);
        let c = cat(&[&sdi(Space::Ggtt, base(1) + DATA, 1)]);
        write_dwords(&mut host, 0, &c);
        sim.write_reg(RCS.mmio_base() + engine::RING_START, 0);
        sim.write_reg(RCS.mmio_base() + engine::RING_TAIL, 4 * c.len() as u32);
        sim.write_reg(RCS.mmio_base() + engine::RING_CTL, engine::ring_ctl(1));
        host.clear();
        sim.run(RCS, &mut host, None::<&NoPpgtt>, 10);
        assert!(host.writes.iter().any(|p| vgpu_pages(1).contains(p)));
    }

    // ---- property test: accepted streams never leave the submitter's pages ----

    const BATCH: [u64; 3] = [0x40000, 0x41000, 0x80_0000 + 0x2000];

    #[derive(Clone, Debug)]
    enum Op {
        Noop,
        Irq,
        Sdi(u64, bool),
        Flush(u64, bool),
        Lri(u32),
        Fill(u64, u32, (u32, u32, u32, u32)),
        Copy(u64, u64, u32, (u32, u32, u32, u32), (u32, u32)),
        Pipe(u64),
        Call(usize, bool),
        Jump(u64),
        End,
        Raw(u32),
    }

    fn addr() -> impl Strategy<Value = u64> {
        prop_oneof![
            6 => (0u64..(1 << 20)).prop_map(|a| a & !3),
            6 => (0u64..(1 << 20)).prop_map(|a| (8 << 20) + (a & !3)),
            1 => (0u64..(1 << 20)).prop_map(|a| (1 << 20) + (a & !3)),
            1 => (0u64..(16 << 20)).prop_map(|a| (16 << 20) + (a & !3)),
            2 => (0u64..128).prop_map(|a| (1 << 20) - 64 + a),
            2 => (0u64..128).prop_map(|a| (9 << 20) - 64 + a),
            1 => any::<u64>().prop_map(|a| a & 0xffff_ffff_fffc),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        let rect = (0u32..64, 0u32..64, 0u32..80, 0u32..80);
        prop_oneof![
            2 => Just(Op::Noop),
            2 => Just(Op::Irq),
            6 => (addr(), any::<bool>()).prop_map(|(a, q)| Op::Sdi(a, q)),
            3 => (addr(), any::<bool>()).prop_map(|(a, n)| Op::Flush(a, n)),
            2 => prop_oneof![Just(0x2600u32), Just(0x22600), Just(0x2034), Just(0x941C), Just(0x44018), any::<u32>()].prop_map(Op::Lri),
            4 => (addr(), 0u32..0x400, rect.clone()).prop_map(|(a, p, r)| Op::Fill(a, p, r)),
            4 => (addr(), addr(), 0u32..0x400, rect, (0u32..64, 0u32..64)).prop_map(|(d, s, p, r, o)| Op::Copy(d, s, p, r, o)),
            3 => addr().prop_map(Op::Pipe),
            4 => (0usize..3, any::<bool>()).prop_map(|(k, s)| Op::Call(k, s)),
            1 => addr().prop_map(Op::Jump),
            1 => Just(Op::End),
            1 => any::<u32>().prop_map(Op::Raw),
        ]
    }

    fn encode_ops(ops: &[Op]) -> Vec<u32> {
        let mut v = Vec::new();
        for o in ops {
            match *o {
                Op::Noop => v.push(MI_NOOP),
                Op::Irq => v.push(MI_USER_INTERRUPT),
                Op::Sdi(a, false) => v.extend(sdi(Space::Ggtt, a, 0x5d1)),
                Op::Sdi(a, true) => v.extend(sdi_qw(Space::Ggtt, a, [1, 2])),
                Op::Flush(a, n) => v.extend(flush_dw_store(Space::Ggtt, a, 0xf1, n)),
                Op::Lri(r) => v.extend(lri(r, 7)),
                Op::Fill(a, p, r) => v.extend(color_blt(a, p, r, 0xc0c0)),
                Op::Copy(d, s, p, r, o) => v.extend(src_copy_blt(d, p, r, s, p, o)),
                Op::Pipe(a) => v.extend(pipe_control_qw(Space::Ggtt, a, [3, 4])),
                Op::Call(k, s) => v.extend(bb_start(Space::Ggtt, BATCH[k], s)),
                Op::Jump(a) => v.extend(bb_start(Space::Ggtt, a, false)),
                Op::End => v.push(MI_BATCH_BUFFER_END),
                Op::Raw(x) => v.push(x),
            }
        }
        v
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
        #[test]
        fn accepted_streams_stay_inside_the_submitter(
            bcs in any::<bool>(),
            call_first in prop::option::of(0usize..3),
            ring in prop::collection::vec(op(), 1..6),
            batches in prop::collection::vec((prop::collection::vec(op(), 0..4), prop::bool::weighted(0.9)), 3),
        ) {
            let e = if bcs { BCS } else { RCS };
            let (host, mut ggtt) = (new_host(), new_ggtt());
            let mut host = Recording::new(host);
            let mut sim = GvtSim::new(&mut ggtt);
            map_shadows(&mut sim);
            for (k, (ops, end)) in batches.iter().enumerate() {
                let mut d = encode_ops(ops);
                if *end {
                    d.push(MI_BATCH_BUFFER_END);
                }
                write_dwords(&mut host, BATCH[k], &d);
            }
            let mut g = Guest::new(0);
            let mut ring = ring;
            if let Some(k) = call_first {
                ring.insert(0, Op::Call(k, false));
            }
            g.push(&mut host, e, &cat(&[&encode_ops(&ring)]));
            match g.submit(&sim, &mut host, e) {
                Ok(_) => {
                    host.clear();
                    let r = g.execute(&mut sim, &mut host, e, 1_000_000);
                    prop_assert_eq!(r.status, StepStatus::Idle, "accepted streams execute cleanly");
                    prop_assert!(g.shadows[e.index()].idle());
                    for p in host.writes.iter() {
                        prop_assert!(vgpu_pages(0).contains(p), "wrote host page {} outside vGPU 0", p);
                    }
                    for p in host.reads.borrow().iter() {
                        prop_assert!(vgpu_pages(0).contains(p) || shadow_pages(0).contains(p), "read host page {}", p);
                    }
                }
                Err(SubmitError::Busy) => prop_assert!(false, "an idle ring is never busy"),
                Err(SubmitError::Rejected(_)) => {
                    host.clear();
                    let r = g.execute(&mut sim, &mut host, e, 1000);
                    prop_assert_eq!(r.executed, 0);
                    prop_assert!(host.writes.is_empty());
                }
            }
        }
    }
}
