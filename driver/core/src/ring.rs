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
use super::cmd::{self, AuditEnv, AuditError, AuditSummary, Level, Limits, Reject, RejectCounters, RingWindow, SinkFull, Space, MAX_CMD_DWORDS};
use super::engine::{self, AddressSpace, RING_CTL, RING_HEAD, RING_START, RING_TAIL};
use super::mem::{Gma, GmRange, HostMemory, HostPage, PAGE_SHIFT, PAGE_SIZE};

/// Size of the host-reserved top of the non-mappable GM.
pub const HOST_RESERVED_SIZE: u64 = 16 << 20;

/// The host-reserved GGTT range of a device with `gm_size` bytes of GM.
pub const fn host_reserved_range(gm_size: u64) -> GmRange {
    GmRange::new(gm_size.saturating_sub(HOST_RESERVED_SIZE), HOST_RESERVED_SIZE)
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
pub fn map_shadow<B: Backend>(backend: &mut B, layout: &ShadowLayout, pages: &[HostPage]) -> Result<(), MapError> {
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

/// One vGPU's ring on one engine, and its shadow.
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
}

struct Env<'x, B: Backend, H: HostMemory, P: AddressSpace, G: BatchGuard> {
    engine: EngineId,
    backend: &'x B,
    host: &'x mut H,
    ppgtt: Option<&'x P>,
    gm: &'x [GmRange],
    guard: &'x mut G,
    layout: ShadowLayout,
    guest_ring: RingWindow,
    ring_off: u32,
    l1: u64,
    l2: u64,
    last_page: Option<(Space, u64)>,
}

/// Write bytes at a GGTT address through the backend's GGTT.
fn write_gm<B: Backend, H: HostMemory>(backend: &B, host: &mut H, addr: Gma, data: &[u8]) -> Result<(), SinkFull> {
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

impl<B: Backend, H: HostMemory, P: AddressSpace, G: BatchGuard> AuditEnv for Env<'_, B, H, P, G> {
    fn engine(&self) -> EngineId {
        self.engine
    }
    fn gm_allowed(&self, addr: Gma, len: u64) -> bool {
        let r = GmRange::new(addr, len.max(1));
        !self.layout.range().overlaps(&r) && self.gm.iter().any(|g| g.contains(addr, len))
    }
    fn ppgtt_mapped(&self, addr: u64, len: u64) -> bool {
        let Some(p) = self.ppgtt else { return false };
        let len = len.max(1);
        if len > 1 << 20 {
            return false;
        }
        let Some(end) = addr.checked_add(len) else { return false };
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
        let in_ring = space == Space::Ggtt && GmRange::new(self.guest_ring.start, self.guest_ring.size as u64).contains(addr, 4);
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
        let mut b = [0u8; 4];
        self.host.read(page, off, &mut b).ok()?;
        Some(u32::from_le_bytes(b))
    }
    fn emit(&mut self, level: Level, dwords: &[u32]) -> Result<(), SinkFull> {
        let mut bytes = [0u8; 4 * MAX_CMD_DWORDS];
        let len = 4 * dwords.len();
        for (i, d) in dwords.iter().enumerate() {
            if let Some(s) = bytes.get_mut(4 * i..4 * i + 4) {
                s.copy_from_slice(&d.to_le_bytes());
            }
        }
        let bytes = bytes.get(..len).ok_or(SinkFull)?;
        match level {
            Level::Ring => {
                let size = self.guest_ring.size;
                let first = (size - self.ring_off).min(len as u32) as usize;
                write_gm(self.backend, self.host, self.layout.ring_gma() + self.ring_off as u64, &bytes[..first])?;
                if first < len {
                    write_gm(self.backend, self.host, self.layout.ring_gma(), &bytes[first..])?;
                }
                self.ring_off = ((self.ring_off as u64 + len as u64) % size as u64) as u32;
                Ok(())
            }
            Level::First | Level::Second => {
                let (cur, cap, base) = if level == Level::First {
                    (self.l1, self.layout.l1_pages as u64 * PAGE_SIZE, self.layout.l1_gma())
                } else {
                    (self.l2, self.layout.l2_pages as u64 * PAGE_SIZE, self.layout.l2_gma())
                };
                if cur + len as u64 > cap {
                    return Err(SinkFull);
                }
                write_gm(self.backend, self.host, base + cur, bytes)?;
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
        Self { engine, layout, ring: None, head: 0, tail: 0, l1: 0, l2: 0, rejects: RejectCounters::new(), stats: SubmitStats { submissions: 0, commands: 0, dwords: 0, batches: 0, busy: 0 } }
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
        self.ring = Some(RingWindow { start: (start & !0xfff) as u64, size });
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
        let r = self.try_submit(backend, host, ppgtt, gm, new_tail, limits, guard);
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

    #[allow(clippy::too_many_arguments)]
    fn try_submit<B: Backend, H: HostMemory, P: AddressSpace, G: BatchGuard>(
        &mut self,
        backend: &B,
        host: &mut H,
        ppgtt: Option<&P>,
        gm: &[GmRange],
        new_tail: u32,
        limits: &Limits,
        guard: &mut G,
    ) -> Result<AuditSummary, SubmitError> {
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
            guest_ring: ring,
            ring_off: self.tail,
            l1: self.l1,
            l2: self.l2,
            last_page: None,
        };
        match cmd::audit_ring(&mut env, ring, self.tail, new_tail, limits) {
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
