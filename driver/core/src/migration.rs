//! The vGPU migration stream (issue 14): a versioned, self-describing,
//! bounds-checked byte stream of one vGPU's state, written by the source's
//! `STOP_COPY` and read by the target's `RESUMING` (VFIO migration v2).
//! This file is the format only: [`Writer`] builds a stream into a
//! caller-provided buffer (the core allocates nothing), [`parse`] checks a
//! whole stream — header, every section's tag and length, the trailer's
//! checksum, every count against its payload — before anything is applied,
//! so a truncated, damaged or hostile stream is refused with a typed
//! [`StreamError`] and the target is never touched.  What goes into each
//! section and how a target vGPU takes it is `vgpu_migrate.rs`.
//!
//! # Layout (all integers little-endian)
//!
//! | bytes | field |
//! |---|---|
//! | 8 | [`MAGIC`] |
//! | 2 | format version ([`VERSION`]) |
//! | 2 | header length in bytes ([`HEADER_LEN`]; a reader skips what it does not know) |
//! | 1 | length of the vGPU type name (at most [`TYPE_NAME_MAX`]) |
//! | 32 | type name, zero padded |
//! | 5 | reserved, 0 |
//! | 8 × 4 | guest GM view: aperture base, aperture size, high base, high size |
//! | 4 | fence count |
//! | 4 | shadow page-table count (the core's `P`) |
//!
//! then sections, each `tag: u16`, `flags: u16` ([`SECTION_REQUIRED`]: a
//! reader that does not know the tag must refuse the stream; otherwise it
//! skips it), `len: u32`, `len` bytes of payload; the last section is
//! [`Tag::End`] with an 8-byte FNV-1a 64 checksum of every byte before it.
//! In a version-1 stream each known tag appears at most once.  The
//! checksum detects damage, not malice: a hostile stream with a right
//! checksum still passes through the same mediation a guest's accesses do
//! (see `vgpu_migrate.rs`).
//!
//! # Version 2: PRE_COPY
//! A version-2 stream is written in two parts that are simply concatenated
//! (the VMM moves the first while the guest runs): the **initial part**
//! (header, Config, Vregs, PvInfo, Ggtt, optional Edid), then the **final
//! part** written at STOP_COPY: [`Tag::GgttDelta`] records for the GGTT
//! chunks the guest wrote after the initial part, the Config, Vregs, PvInfo
//! or Edid section again if (and only if) it changed, the small volatile
//! sections (Mmio, Fences, Irq, Rings, Vblank, Sched) and the trailer,
//! whose checksum covers both parts ([`Writer::pause`], [`Writer::resume`]).
//! The rules a version-2 reader enforces: Config, Vregs, PvInfo and Edid
//! may appear again (the last one counts); GgttDelta may appear any number
//! of times, never before Ggtt (applied in stream order after it); every
//! other tag at most once.  A version-1 stream (what earlier cores wrote) is
//! still accepted under the version-1 rules (no repeats, no GgttDelta).

/// First bytes of every stream.
pub const MAGIC: [u8; 8] = *b"GVTRSMIG";
/// The format version this core writes and the newest it reads (1 is read too).
pub const VERSION: u16 = 2;
/// Longest vGPU type name carried.
pub const TYPE_NAME_MAX: usize = 32;
/// Length of the version-1 header.
pub const HEADER_LEN: usize = 8 + 2 + 2 + 1 + TYPE_NAME_MAX + 5 + 8 * 4 + 4 + 4;
/// Bytes before each section's payload.
pub const SECTION_HEAD: usize = 8;
/// A section a reader must understand.
pub const SECTION_REQUIRED: u16 = 1;

/// Section tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Tag {
    /// The 256-byte PCI configuration space.
    Config = 1,
    /// Plain virtual registers that differ from power-on (0): `(dword
    /// index: u32, value: u32)` pairs, ascending.
    Vregs = 2,
    /// The PVINFO page as the guest reads it (1024 dwords).
    PvInfo = 3,
    /// Guest GGTT entries that are not 0: `(GM page number: u32, PTE: u64)`.
    Ggtt = 4,
    /// Mediated registers to replay through the trap path, in order:
    /// `(offset: u32, value: u32)` pairs.
    Mmio = 5,
    /// Fence registers, `fence count` × u64.
    Fences = 6,
    /// Interrupts: GT IIR, IMR, IER; DE IIR, IMR, IER; RING_EIR per engine.
    Irq = 7,
    /// Per engine: the guest's TAIL (u32).  Written last: it configures the
    /// ring from the replayed START/CTL/HEAD.
    Rings = 8,
    /// Pipe A: frames (u64), flips (u32), period in ns (u64), running (u8).
    Vblank = 9,
    /// The VMM's EDID blob (optional section, 0..=512 bytes).
    Edid = 10,
    /// Scheduling weight (u32), hang count (u32).
    Sched = 11,
    /// Version 2: GGTT entries changed after the Ggtt section was written.
    /// Records `(first GM page: u32, pages: u32, count: u32)` then `count` ×
    /// `(GM page: u32, PTE: u64)`, ascending, inside `[first, first +
    /// pages)`, none 0: after the record the range holds exactly the listed
    /// entries (the others are 0).
    GgttDelta = 12,
    /// Checksum trailer.
    End = 0xFFFF,
}

impl Tag {
    /// Every tag but [`Tag::End`], in the order a writer emits them.
    pub const BODY: [Tag; 12] = [
        Tag::Config,
        Tag::Vregs,
        Tag::PvInfo,
        Tag::Ggtt,
        Tag::Mmio,
        Tag::Fences,
        Tag::Irq,
        Tag::Rings,
        Tag::Vblank,
        Tag::Edid,
        Tag::Sched,
        Tag::GgttDelta,
    ];

    /// Whether a version-2 stream may carry the tag more than once.
    pub const fn repeatable(self) -> bool {
        matches!(
            self,
            Tag::Config | Tag::Vregs | Tag::PvInfo | Tag::Edid | Tag::GgttDelta
        )
    }

    fn from_raw(v: u16) -> Option<Tag> {
        if v == Tag::End as u16 {
            return Some(Tag::End);
        }
        Tag::BODY.iter().copied().find(|t| *t as u16 == v)
    }

    /// Bytes per element of the section's payload (fixed-size sections: the
    /// whole payload), for the length check.
    const fn unit(self) -> usize {
        match self {
            Tag::Config | Tag::PvInfo | Tag::Edid | Tag::GgttDelta => 1,
            Tag::Vregs | Tag::Mmio => 8,
            Tag::Ggtt => 12,
            Tag::Fences => 8,
            Tag::Irq | Tag::Rings | Tag::Sched => 4,
            Tag::Vblank => 21,
            Tag::End => 8,
        }
    }
}

/// Why a stream was refused (or could not be written).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamError {
    /// Shorter than its header, a section head or a section's length says.
    Truncated,
    /// Not a gvt-rs stream.
    BadMagic,
    /// Written by a newer format version.
    NewerVersion(u16),
    /// A header length, name length or reserved field out of range.
    BadHeader,
    /// A section tag this reader does not know, marked required.
    UnknownSection(u16),
    /// A known section twice.
    DuplicateSection(u16),
    /// A section where it may not be (a GGTT delta before the GGTT).
    OutOfOrder(u16),
    /// A section whose length does not fit its contents.
    BadSectionLength(u16),
    /// A required section is missing.
    MissingSection(u16),
    /// Bytes after the trailer.
    TrailingBytes,
    /// The trailer's checksum does not match.
    Checksum,
    /// The writer's buffer is too small.
    NoSpace,
}

/// FNV-1a, 64 bit.
pub fn fnv1a64(data: &[u8]) -> u64 {
    fnv1a64_from(FNV_BASIS, data)
}

/// The FNV-1a offset basis (the state before any byte).
pub const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a continued from state `h` over `data` (a stream written in parts).
pub fn fnv1a64_from(mut h: u64, data: &[u8]) -> u64 {
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Byte offset of the type field (name length, then the zero-padded name)
/// in the header.
pub const TYPE_FIELD_AT: usize = 8 + 2 + 2;
/// Length of the type field.
pub const TYPE_FIELD_LEN: usize = 1 + TYPE_NAME_MAX;

/// The header's type field for `type_name` (what a target of that type
/// expects at [`TYPE_FIELD_AT`]: the glue refuses another type's stream as
/// its first bytes arrive); `None` for a name too long.
pub fn type_field(type_name: &[u8]) -> Option<[u8; TYPE_FIELD_LEN]> {
    let mut f = [0u8; TYPE_FIELD_LEN];
    f[0] = u8::try_from(type_name.len()).ok()?;
    f.get_mut(1..1 + type_name.len())?
        .copy_from_slice(type_name);
    (type_name.len() <= TYPE_NAME_MAX).then_some(f)
}

/// The header's identity of a vGPU: what a target must match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity<'a> {
    /// The mdev type name (e.g. `gvt_rs-2`); at most [`TYPE_NAME_MAX`] bytes.
    pub type_name: &'a [u8],
    /// The guest's GM view: aperture base and size, high base and size.
    pub gm: [u64; 4],
    pub fence_count: u32,
    pub ppgtt_tables: u32,
}

/// Builds a stream (or one part of it) into a borrowed buffer.
pub struct Writer<'b> {
    buf: &'b mut [u8],
    len: usize,
    /// Start of the open section's head.
    open: Option<usize>,
    /// FNV-1a state of the parts before this buffer.
    prior: u64,
}

/// Where a stream written in parts stands after [`Writer::pause`]: the
/// checksum state of every byte so far, and their count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Paused {
    pub hash: u64,
    pub bytes: usize,
}

impl<'b> Writer<'b> {
    /// Start a stream with the header for `id`.
    pub fn new(buf: &'b mut [u8], id: &Identity<'_>) -> Result<Self, StreamError> {
        if id.type_name.len() > TYPE_NAME_MAX {
            return Err(StreamError::BadHeader);
        }
        let mut w = Writer {
            buf,
            len: 0,
            open: None,
            prior: FNV_BASIS,
        };
        w.bytes(&MAGIC)?;
        w.u16(VERSION)?;
        w.u16(HEADER_LEN as u16)?;
        w.u8(id.type_name.len() as u8)?;
        let mut name = [0u8; TYPE_NAME_MAX];
        if let Some(d) = name.get_mut(..id.type_name.len()) {
            d.copy_from_slice(id.type_name);
        }
        w.bytes(&name)?;
        w.bytes(&[0; 5])?;
        for g in id.gm {
            w.u64(g)?;
        }
        w.u32(id.fence_count)?;
        w.u32(id.ppgtt_tables)?;
        Ok(w)
    }

    /// Continue a stream paused with [`Writer::pause`] in a new buffer
    /// (its bytes follow the paused part's).
    pub fn resume(buf: &'b mut [u8], at: Paused) -> Self {
        Writer {
            buf,
            len: 0,
            open: None,
            prior: at.hash,
        }
    }

    /// Close the open section and end this part: the bytes written into
    /// this buffer, and the state to [`Writer::resume`] from (`before`: the
    /// state this part started from, for its byte count).
    pub fn pause(mut self, before: Paused) -> Result<(usize, Paused), StreamError> {
        self.close()?;
        let part = self.buf.get(..self.len).ok_or(StreamError::NoSpace)?;
        Ok((
            self.len,
            Paused {
                hash: fnv1a64_from(self.prior, part),
                bytes: before.bytes + self.len,
            },
        ))
    }

    /// Where the next section would start (for [`Writer::rollback`]).
    pub fn mark(&mut self) -> Result<usize, StreamError> {
        self.close()?;
        Ok(self.len)
    }

    /// Drop everything written after `mark` (a section not worth sending).
    pub fn rollback(&mut self, mark: usize) {
        if mark <= self.len {
            self.len = mark;
            self.open = None;
        }
    }

    /// The payload written since `mark` (`mark` + a section head).
    pub fn since(&self, mark: usize) -> &[u8] {
        self.buf.get(mark + SECTION_HEAD..self.len).unwrap_or(&[])
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was written (never, after [`Writer::new`]).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn bytes(&mut self, b: &[u8]) -> Result<(), StreamError> {
        let end = self.len.checked_add(b.len()).ok_or(StreamError::NoSpace)?;
        let d = self
            .buf
            .get_mut(self.len..end)
            .ok_or(StreamError::NoSpace)?;
        d.copy_from_slice(b);
        self.len = end;
        Ok(())
    }
    pub fn u8(&mut self, v: u8) -> Result<(), StreamError> {
        self.bytes(&[v])
    }
    pub fn u16(&mut self, v: u16) -> Result<(), StreamError> {
        self.bytes(&v.to_le_bytes())
    }
    pub fn u32(&mut self, v: u32) -> Result<(), StreamError> {
        self.bytes(&v.to_le_bytes())
    }
    pub fn u64(&mut self, v: u64) -> Result<(), StreamError> {
        self.bytes(&v.to_le_bytes())
    }

    /// Open section `tag` (closing the previous one).
    pub fn section(&mut self, tag: Tag, flags: u16) -> Result<(), StreamError> {
        self.close()?;
        self.open = Some(self.len);
        self.u16(tag as u16)?;
        self.u16(flags)?;
        self.u32(0)
    }

    fn close(&mut self) -> Result<(), StreamError> {
        if let Some(at) = self.open.take() {
            let len = self
                .len
                .checked_sub(at + SECTION_HEAD)
                .ok_or(StreamError::NoSpace)?;
            let len = u32::try_from(len).map_err(|_| StreamError::NoSpace)?;
            let d = self
                .buf
                .get_mut(at + 4..at + 8)
                .ok_or(StreamError::NoSpace)?;
            d.copy_from_slice(&len.to_le_bytes());
        }
        Ok(())
    }

    /// Close the last section, append the trailer (its checksum covers the
    /// parts before this one too); the length written into this buffer.
    pub fn finish(mut self) -> Result<usize, StreamError> {
        self.close()?;
        let sum = fnv1a64_from(
            self.prior,
            self.buf.get(..self.len).ok_or(StreamError::NoSpace)?,
        );
        self.u16(Tag::End as u16)?;
        self.u16(SECTION_REQUIRED)?;
        self.u32(8)?;
        self.u64(sum)?;
        Ok(self.len)
    }
}

/// A parsed stream: the header and each known section's payload.
#[derive(Clone, Copy, Debug)]
pub struct Stream<'s> {
    pub version: u16,
    pub type_name: &'s [u8],
    pub gm: [u64; 4],
    pub fence_count: u32,
    pub ppgtt_tables: u32,
    sections: [Option<&'s [u8]>; Tag::BODY.len()],
    /// The sections and trailer (checked), for [`Stream::all`].
    body: &'s [u8],
}

impl<'s> Stream<'s> {
    /// The payload of `tag` (None: absent).
    pub fn section(&self, tag: Tag) -> Option<&'s [u8]> {
        let i = Tag::BODY.iter().position(|t| *t == tag)?;
        self.sections.get(i).copied().flatten()
    }

    /// Every payload of `tag`, in stream order (a repeatable tag of a
    /// version-2 stream; [`Stream::section`] gives the last one).
    pub fn all(&self, tag: Tag) -> impl Iterator<Item = &'s [u8]> + 's {
        let mut c = Cursor::new(self.body);
        core::iter::from_fn(move || loop {
            let raw = c.u16().ok()?;
            c.u16().ok()?;
            let len = c.u32().ok()? as usize;
            let p = c.take(len).ok()?;
            if raw == Tag::End as u16 {
                return None;
            }
            if raw == tag as u16 {
                return Some(p);
            }
        })
    }

    /// The identity in the header.
    pub fn identity(&self) -> Identity<'s> {
        Identity {
            type_name: self.type_name,
            gm: self.gm,
            fence_count: self.fence_count,
            ppgtt_tables: self.ppgtt_tables,
        }
    }
}

/// A bounds-checked little-endian reader.
#[derive(Clone, Copy, Debug)]
pub struct Cursor<'s> {
    data: &'s [u8],
    at: usize,
}

impl<'s> Cursor<'s> {
    pub fn new(data: &'s [u8]) -> Self {
        Cursor { data, at: 0 }
    }
    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.at)
    }
    pub fn take(&mut self, n: usize) -> Result<&'s [u8], StreamError> {
        let end = self.at.checked_add(n).ok_or(StreamError::Truncated)?;
        let s = self.data.get(self.at..end).ok_or(StreamError::Truncated)?;
        self.at = end;
        Ok(s)
    }
    fn array<const K: usize>(&mut self) -> Result<[u8; K], StreamError> {
        let mut a = [0u8; K];
        a.copy_from_slice(self.take(K)?);
        Ok(a)
    }
    pub fn u8(&mut self) -> Result<u8, StreamError> {
        Ok(self.array::<1>()?[0])
    }
    pub fn u16(&mut self) -> Result<u16, StreamError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, StreamError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, StreamError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}

/// Expected payload length of the fixed-size sections for this header
/// (`None`: a multiple of the tag's unit).
fn fixed_len(tag: Tag, fence_count: u32, engines: usize) -> Option<usize> {
    match tag {
        Tag::Config => Some(super::cfgspace::CFG_SIZE),
        Tag::PvInfo => Some(super::pvinfo::PVINFO_DWORDS * 4),
        Tag::Fences => Some(fence_count as usize * 8),
        Tag::Irq => Some(4 * (6 + engines)),
        Tag::Rings => Some(4 * engines),
        Tag::Vblank => Some(21),
        Tag::Sched => Some(8),
        _ => None,
    }
}

/// The sections every version-1 stream has.
pub const REQUIRED: [Tag; 10] = [
    Tag::Config,
    Tag::Vregs,
    Tag::PvInfo,
    Tag::Ggtt,
    Tag::Mmio,
    Tag::Fences,
    Tag::Irq,
    Tag::Rings,
    Tag::Vblank,
    Tag::Sched,
];

/// Largest EDID blob carried.
pub const EDID_MAX: usize = super::edid::EDID_MAX_SIZE;

/// Check a whole stream and split it into sections; nothing is applied.
/// `engines`: the engine count of this core (the Irq and Rings sections'
/// sizes depend on it).
pub fn parse(data: &[u8], engines: usize) -> Result<Stream<'_>, StreamError> {
    let mut c = Cursor::new(data);
    if c.take(8).map_err(|_| StreamError::Truncated)? != MAGIC {
        return Err(StreamError::BadMagic);
    }
    let version = c.u16()?;
    if version > VERSION {
        return Err(StreamError::NewerVersion(version));
    }
    if version == 0 {
        return Err(StreamError::BadHeader);
    }
    let header_len = usize::from(c.u16()?);
    if header_len < HEADER_LEN {
        return Err(StreamError::BadHeader);
    }
    let name_len = usize::from(c.u8()?);
    let name = c.take(TYPE_NAME_MAX)?;
    let type_name = name.get(..name_len).ok_or(StreamError::BadHeader)?;
    if name
        .get(name_len..)
        .is_some_and(|r| r.iter().any(|b| *b != 0))
    {
        return Err(StreamError::BadHeader);
    }
    if c.take(5)?.iter().any(|b| *b != 0) {
        return Err(StreamError::BadHeader);
    }
    let mut gm = [0u64; 4];
    for g in gm.iter_mut() {
        *g = c.u64()?;
    }
    let fence_count = c.u32()?;
    let ppgtt_tables = c.u32()?;
    if fence_count > super::regs::FENCE_COUNT {
        return Err(StreamError::BadHeader);
    }
    // A newer minor header: skip what this reader does not know.
    c.take(header_len - HEADER_LEN)?;
    let body = data.get(data.len() - c.remaining()..).unwrap_or(&[]);
    let mut sections = [None; Tag::BODY.len()];
    loop {
        let at = data.len() - c.remaining();
        let raw = c.u16()?;
        let flags = c.u16()?;
        let len = c.u32()? as usize;
        let payload = c.take(len)?;
        let Some(tag) = Tag::from_raw(raw) else {
            if flags & SECTION_REQUIRED != 0 {
                return Err(StreamError::UnknownSection(raw));
            }
            continue;
        };
        if tag == Tag::End {
            if len != 8 {
                return Err(StreamError::BadSectionLength(raw));
            }
            let mut p = Cursor::new(payload);
            let sum = p.u64()?;
            let covered = data.get(..at).ok_or(StreamError::Truncated)?;
            if fnv1a64(covered) != sum {
                return Err(StreamError::Checksum);
            }
            if c.remaining() != 0 {
                return Err(StreamError::TrailingBytes);
            }
            break;
        }
        let ok = match fixed_len(tag, fence_count, engines) {
            Some(n) => len == n,
            None => len % tag.unit() == 0 && (tag != Tag::Edid || len <= EDID_MAX),
        };
        if !ok {
            return Err(StreamError::BadSectionLength(raw));
        }
        if tag == Tag::GgttDelta {
            if version < 2 {
                return Err(StreamError::UnknownSection(raw));
            }
            check_delta(payload)?;
            let ggtt = Tag::BODY.iter().position(|t| *t == Tag::Ggtt);
            if ggtt
                .and_then(|g| sections.get(g).copied().flatten())
                .is_none()
            {
                return Err(StreamError::OutOfOrder(raw));
            }
        }
        let i = Tag::BODY
            .iter()
            .position(|t| *t == tag)
            .ok_or(StreamError::UnknownSection(raw))?;
        let s = sections
            .get_mut(i)
            .ok_or(StreamError::UnknownSection(raw))?;
        if s.is_some() && (version < 2 || !tag.repeatable()) {
            return Err(StreamError::DuplicateSection(raw));
        }
        *s = Some(payload);
    }
    let st = Stream {
        version,
        type_name,
        gm,
        fence_count,
        ppgtt_tables,
        sections,
        body,
    };
    for t in REQUIRED {
        if st.section(t).is_none() {
            return Err(StreamError::MissingSection(t as u16));
        }
    }
    Ok(st)
}

/// Longest range one GGTT delta record may cover (pages).
pub const DELTA_PAGES_MAX: u32 = 1 << 20;
/// Bytes of a GGTT delta record's head.
pub const DELTA_HEAD: usize = 12;

/// One GGTT delta record: its range and its listed `(page, PTE)` entries.
#[derive(Clone, Copy, Debug)]
pub struct DeltaRecord<'s> {
    pub first: u32,
    pub pages: u32,
    entries: &'s [u8],
}

impl<'s> DeltaRecord<'s> {
    /// The listed entries, in stream order.
    pub fn entries(&self) -> impl Iterator<Item = (u32, u64)> + 's {
        self.entries.chunks_exact(12).map(|e| {
            let mut c = Cursor::new(e);
            (c.u32().unwrap_or(0), c.u64().unwrap_or(0))
        })
    }
}

/// The records of a GgttDelta payload (checked by [`parse`]: its
/// structure; the ranges against a view by the restore).
pub fn delta_records(payload: &[u8]) -> impl Iterator<Item = DeltaRecord<'_>> {
    let mut c = Cursor::new(payload);
    core::iter::from_fn(move || {
        let first = c.u32().ok()?;
        let pages = c.u32().ok()?;
        let count = c.u32().ok()? as usize;
        let entries = c.take(count.checked_mul(12)?).ok()?;
        Some(DeltaRecord {
            first,
            pages,
            entries,
        })
    })
}

/// The structure of a GgttDelta payload: whole records; each range non
/// empty, at most [`DELTA_PAGES_MAX`] pages, not past the 32-bit page
/// space; at most that many entries, strictly ascending, inside the range,
/// none 0.
fn check_delta(payload: &[u8]) -> Result<(), StreamError> {
    let bad = StreamError::BadSectionLength(Tag::GgttDelta as u16);
    let mut c = Cursor::new(payload);
    while c.remaining() > 0 {
        let first = c.u32().map_err(|_| bad)?;
        let pages = c.u32().map_err(|_| bad)?;
        let count = c.u32().map_err(|_| bad)?;
        let end = first.checked_add(pages).ok_or(bad)?;
        if pages == 0 || pages > DELTA_PAGES_MAX || count > pages {
            return Err(bad);
        }
        let mut next = first;
        for _ in 0..count {
            let page = c.u32().map_err(|_| bad)?;
            let pte = c.u64().map_err(|_| bad)?;
            if page < next || page >= end || pte == 0 {
                return Err(bad);
            }
            next = page + 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    const ENG: usize = 2;

    fn id() -> Identity<'static> {
        Identity {
            type_name: b"gvt_rs-4",
            gm: [1 << 20, 1 << 20, 8 << 20, 1 << 20],
            fence_count: 4,
            ppgtt_tables: 8,
        }
    }

    fn minimal(buf: &mut [u8]) -> usize {
        let mut w = Writer::new(buf, &id()).unwrap();
        for t in REQUIRED {
            w.section(t, SECTION_REQUIRED).unwrap();
            if let Some(n) = fixed_len(t, 4, ENG) {
                for _ in 0..n {
                    w.u8(0).unwrap();
                }
            }
        }
        w.finish().unwrap()
    }

    #[test]
    fn minimal_stream_parses_and_keeps_the_identity() {
        let mut buf = [0u8; 8192];
        let n = minimal(&mut buf);
        let s = parse(&buf[..n], ENG).unwrap();
        assert_eq!(s.identity(), id());
        assert_eq!(s.section(Tag::Config).unwrap().len(), 256);
        assert_eq!(s.section(Tag::Edid), None);
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_refused() {
        let mut buf = [0u8; 8192];
        let n = minimal(&mut buf);
        for k in 0..n {
            assert!(parse(&buf[..k], ENG).is_err(), "truncated at {k}");
        }
        for k in (0..n).step_by(7) {
            let mut b = buf;
            b[k] ^= 0x40;
            assert!(parse(&b[..n], ENG).is_err(), "flipped byte {k}");
        }
    }

    #[test]
    fn newer_version_and_unknown_required_sections_are_named() {
        let mut buf = [0u8; 8192];
        let n = minimal(&mut buf);
        let mut b = buf;
        b[8] = 3;
        assert_eq!(
            parse(&b[..n], ENG).unwrap_err(),
            StreamError::NewerVersion(3)
        );
        // An unknown optional section is skipped, a required one refused.
        for (flags, want) in [(0u16, None), (1, Some(StreamError::UnknownSection(77)))] {
            let mut buf = [0u8; 8192];
            let mut w = Writer::new(&mut buf, &id()).unwrap();
            for t in REQUIRED {
                w.section(t, SECTION_REQUIRED).unwrap();
                for _ in 0..fixed_len(t, 4, ENG).unwrap_or(0) {
                    w.u8(0).unwrap();
                }
            }
            w.close().unwrap();
            w.u16(77).unwrap();
            w.u16(flags).unwrap();
            w.u32(3).unwrap();
            w.bytes(&[1, 2, 3]).unwrap();
            let n = w.finish().unwrap();
            assert_eq!(parse(&buf[..n], ENG).err(), want);
        }
    }

    /// Rewrite the version field and reseal (a stream as another core wrote it).
    fn as_version(b: &mut [u8], n: usize, v: u16) {
        b[8..10].copy_from_slice(&v.to_le_bytes());
        let sum = fnv1a64(&b[..n - 16]);
        b[n - 8..n].copy_from_slice(&sum.to_le_bytes());
    }

    /// A stream with the required sections, then `extra` sections
    /// `(tag, payload)` before the trailer.
    fn with_extra(buf: &mut [u8], extra: &[(u16, &[u8])]) -> usize {
        let mut w = Writer::new(buf, &id()).unwrap();
        for t in REQUIRED {
            w.section(t, SECTION_REQUIRED).unwrap();
            for _ in 0..fixed_len(t, 4, ENG).unwrap_or(0) {
                w.u8(0).unwrap();
            }
        }
        w.close().unwrap();
        for (tag, p) in extra {
            w.u16(*tag).unwrap();
            w.u16(SECTION_REQUIRED).unwrap();
            w.u32(p.len() as u32).unwrap();
            w.bytes(p).unwrap();
        }
        w.finish().unwrap()
    }

    fn record(first: u32, pages: u32, entries: &[(u32, u64)]) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend_from_slice(&first.to_le_bytes());
        r.extend_from_slice(&pages.to_le_bytes());
        r.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        for (p, v) in entries {
            r.extend_from_slice(&p.to_le_bytes());
            r.extend_from_slice(&v.to_le_bytes());
        }
        r
    }

    #[test]
    fn version_1_streams_are_still_read_under_version_1_rules() {
        let mut buf = [0u8; 8192];
        let n = minimal(&mut buf);
        as_version(&mut buf, n, 1);
        assert_eq!(parse(&buf[..n], ENG).unwrap().version, 1);
        // A repeated Vregs or a GGTT delta is version 2 only.
        let d = record(256, 1, &[(256, 0x1001)]);
        for extra in [
            (Tag::Vregs as u16, &[][..]),
            (Tag::GgttDelta as u16, &d[..]),
        ] {
            let mut buf = [0u8; 8192];
            let n = with_extra(&mut buf, &[extra]);
            assert!(parse(&buf[..n], ENG).is_ok(), "version 2: {extra:?}");
            as_version(&mut buf, n, 1);
            assert!(parse(&buf[..n], ENG).is_err(), "version 1: {extra:?}");
        }
    }

    #[test]
    fn precopy_sections_repeat_by_the_rules_and_deltas_are_checked() {
        let d = record(256, 4, &[(256, 1), (259, 2)]);
        let d2 = record(300, 2, &[]);
        let mut buf = [0u8; 8192];
        // Resent sections: the last one counts; deltas in stream order.
        let n = with_extra(
            &mut buf,
            &[
                (Tag::GgttDelta as u16, &d),
                (Tag::Vregs as u16, &[7, 0, 0, 0, 9, 0, 0, 0]),
                (Tag::GgttDelta as u16, &d2),
            ],
        );
        let st = parse(&buf[..n], ENG).unwrap();
        assert_eq!(st.section(Tag::Vregs).unwrap().len(), 8);
        let all: Vec<_> = st.all(Tag::GgttDelta).collect();
        assert_eq!(all, [&d[..], &d2[..]]);
        let recs: Vec<_> = delta_records(all[0]).collect();
        assert_eq!((recs[0].first, recs[0].pages), (256, 4));
        assert_eq!(recs[0].entries().collect::<Vec<_>>(), [(256, 1), (259, 2)]);
        // Volatile sections never repeat.
        let mut irq = [0u8; 4 * (6 + ENG)];
        irq[0] = 1;
        let n = with_extra(&mut buf, &[(Tag::Irq as u16, &irq)]);
        assert_eq!(
            parse(&buf[..n], ENG).unwrap_err(),
            StreamError::DuplicateSection(Tag::Irq as u16)
        );
        // Hostile records: empty or huge range, unordered, outside the
        // range, a zero entry, more entries than pages, torn.
        let bad = StreamError::BadSectionLength(Tag::GgttDelta as u16);
        for r in [
            record(1, 0, &[]),
            record(1, DELTA_PAGES_MAX + 1, &[]),
            record(u32::MAX, 2, &[]),
            record(10, 4, &[(12, 1), (11, 1)]),
            record(10, 4, &[(12, 1), (12, 1)]),
            record(10, 4, &[(14, 1)]),
            record(10, 4, &[(9, 1)]),
            record(10, 4, &[(11, 0)]),
            record(10, 1, &[(10, 1), (11, 1)]),
            record(10, 4, &[(11, 1)])[..20].to_vec(),
        ] {
            let n = with_extra(&mut buf, &[(Tag::GgttDelta as u16, &r)]);
            assert_eq!(parse(&buf[..n], ENG).unwrap_err(), bad, "{r:?}");
        }
    }

    #[test]
    fn a_delta_before_the_ggtt_is_out_of_order() {
        let d = record(256, 1, &[]);
        let mut buf = [0u8; 8192];
        let mut w = Writer::new(&mut buf, &id()).unwrap();
        w.section(Tag::GgttDelta, SECTION_REQUIRED).unwrap();
        w.bytes(&d).unwrap();
        for t in REQUIRED {
            w.section(t, SECTION_REQUIRED).unwrap();
            for _ in 0..fixed_len(t, 4, ENG).unwrap_or(0) {
                w.u8(0).unwrap();
            }
        }
        let n = w.finish().unwrap();
        assert_eq!(
            parse(&buf[..n], ENG).unwrap_err(),
            StreamError::OutOfOrder(Tag::GgttDelta as u16)
        );
    }

    #[test]
    fn a_stream_written_in_two_parts_is_one_stream() {
        let mut whole = [0u8; 8192];
        let n = minimal(&mut whole);
        // The same sections, paused after Ggtt and resumed in another buffer.
        let mut a = [0u8; 8192];
        let mut b = [0u8; 8192];
        let mut w = Writer::new(&mut a, &id()).unwrap();
        let (first, rest) = REQUIRED.split_at(4);
        for t in first {
            w.section(*t, SECTION_REQUIRED).unwrap();
            for _ in 0..fixed_len(*t, 4, ENG).unwrap_or(0) {
                w.u8(0).unwrap();
            }
        }
        let (na, at) = w
            .pause(Paused {
                hash: FNV_BASIS,
                bytes: 0,
            })
            .unwrap();
        assert_eq!(at.bytes, na);
        let mut w = Writer::resume(&mut b, at);
        for t in rest {
            w.section(*t, SECTION_REQUIRED).unwrap();
            for _ in 0..fixed_len(*t, 4, ENG).unwrap_or(0) {
                w.u8(0).unwrap();
            }
        }
        let nb = w.finish().unwrap();
        let joined = [&a[..na], &b[..nb]].concat();
        assert_eq!(joined, whole[..n]);
        assert!(parse(&joined, ENG).is_ok());
    }

    #[test]
    fn the_type_field_is_the_headers() {
        let mut buf = [0u8; 8192];
        let n = minimal(&mut buf);
        let f = type_field(id().type_name).unwrap();
        assert_eq!(&buf[TYPE_FIELD_AT..TYPE_FIELD_AT + TYPE_FIELD_LEN], &f[..]);
        assert_ne!(type_field(b"gvt_rs-2").unwrap(), f);
        assert!(type_field(&[b'x'; TYPE_NAME_MAX + 1]).is_none());
        assert!(n > TYPE_FIELD_AT + TYPE_FIELD_LEN);
    }

    #[test]
    fn writer_reports_a_short_buffer() {
        let mut buf = [0u8; 40];
        assert_eq!(
            Writer::new(&mut buf, &id()).err(),
            Some(StreamError::NoSpace)
        );
    }
}
