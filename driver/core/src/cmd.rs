//! Command parser and auditor (paper §3.5: "all the GPU registers and commands,
//! programmed by a VM, must be validated to only contain authorized graphics
//! memory addresses"; §3.5.2 command protection).
//!
//! This module owns the command encodings of gvt-sim (the engine in
//! [`super::engine`] decodes through the same [`decode`] / [`parse`]) and the
//! auditor that walks a submitted ring range, follows batch buffers and
//! rejects anything that could reach outside the submitting vGPU.
//!
//! Every command is one row of the command table [`COMMANDS`] (GVT-g's
//! `cmd_info[]`): its header constant, its [`Opcode`], its length rule, the
//! engines it exists on and its [`AuditClass`].  The decoder ([`decode`],
//! through an index the compiler builds from the table), the auditor
//! ([`audit_command`]) and gvt-sim's engine all read that one row.
//!
//! # Dword layouts (Intel gen8 encodings, `intel_gpu_commands.h`)
//! Header bits 31–29 are the client: 0 MI, 2 2D (blitter), 3 3D.  "len" is the
//! header's DWord Length field = total dwords − 2.
//!
//! | command | header | dwords |
//! |---|---|---|
//! | MI_NOOP | `0x00 << 23` (bits 22–0 ignored) | 1 |
//! | MI_USER_INTERRUPT | `0x02 << 23` | 1 |
//! | MI_BATCH_BUFFER_END | `0x0A << 23` | 1 |
//! | MI_STORE_DATA_IMM | `0x20 << 23`, bit 22 GGTT, len bits 5–0 = 2 or 3 | DW1 address 31:2, DW2 address 47:32, DW3 data, \[DW4 data (qword)\] |
//! | MI_LOAD_REGISTER_IMM | `0x22 << 23`, len bits 7–0 = 2n−1, n ≤ 32 | n × (register offset 22:2, value) |
//! | MI_FLUSH_DW | `0x26 << 23`, bits 15–14 post-sync op (0 none, 1 store data, 3 timestamp), bit 21 store-index (unsupported), bit 8 notify, len 2 or 3 | DW1 address 31:3 and bit 2 = GGTT, DW2 address 47:32, DW3 data, \[DW4 data\] |
//! | MI_BATCH_BUFFER_START | `0x31 << 23`, bit 22 second level, bit 8 PPGTT, len 1 | DW1 address 31:2, DW2 address 47:32 |
//! | XY_COLOR_BLT | `2<<29 \| 0x50<<22`, bits 21–20 write A/RGB, bit 11 dst tiled (unsupported), len bits 7–0 = 4 or 5 | DW1 depth 25:24, ROP 23:16 (0xF0 only), pitch 15:0 (signed, ≥ 0); DW2 y1:x1; DW3 y2:x2 (exclusive); DW4 address \[DW5 address 47:32\]; last: colour |
//! | XY_SRC_COPY_BLT | `2<<29 \| 0x53<<22`, bit 15 src tiled, bit 11 dst tiled (unsupported), len 6 or 8 | DW1 depth, ROP (0xCC only), dst pitch; DW2 dst y1:x1; DW3 dst y2:x2; dst address (1 or 2 dw); src y1:x1; src pitch 15:0; src address (1 or 2 dw) |
//! | PIPE_CONTROL | `3<<29 \| 3<<27 \| 2<<24`, len 4 | DW1 flags: 15–14 post-sync op (0 none, 1 write immediate qword, 3 timestamp), 24 GGTT, 23 MMIO write and 21 store-index (unsupported), 8 notify; DW2 address 31:3; DW3 address 47:32; DW4–5 data |
//!
//! Depth codes 0 (8 bpp), 1 (565), 2 (1555), 3 (32 bpp); 32-bpp blits must
//! write all channels (bits 21–20 both set: i915's `BLT_WRITE_RGBA`).  Blit
//! coordinates are unsigned 16-bit; a rectangle with `x2 <= x1` or `y2 <= y1`
//! is empty and touches nothing.
//!
//! # Engines and address spaces
//! MI commands run on both engines; blits only on the blitter (BCS), PIPE_CONTROL
//! only on render (RCS).  Addresses are GGTT addresses when the command's GGTT
//! bit is set, otherwise PPGTT (local graphics memory, §3.4), which only the
//! render engine has.  Blits address the GGTT.
//!
//! # Batch buffer levels (Intel semantics, as upstream GVT-g's parser)
//! - ring (level 0): MI_BATCH_BUFFER_START calls a first-level batch; the
//!   second-level bit must be clear; MI_BATCH_BUFFER_END is invalid.
//! - first level: BB_START with the second-level bit calls a second-level batch
//!   (MI_BATCH_BUFFER_END there returns after the BB_START); without it, it
//!   chains (jumps) within the first level; BB_END returns to the ring.
//! - second level: BB_START without the bit chains within the second level;
//!   with it, it is rejected (deeper than the hardware allows).
//!
//! # What the auditor rejects ([`Reject`])
//! Unknown opcodes, bad lengths, commands on the wrong engine, unsupported
//! modes, GGTT ranges outside the vGPU's graphics memory, PPGTT ranges not
//! mapped in its shadow PPGTT, LRI to a register outside [`LRI_WHITELIST`],
//! batch nesting too deep, chains that loop, commands cut by the tail,
//! submissions longer than [`Limits::max_commands`] commands (runaway), and
//! blits with degenerate geometry ([`Reject::BadGeometry`]: rows that
//! overlap — more than one row with a pitch below the row's bytes, pitch 0
//! included — or more than [`MAX_BLIT_BYTES`] per surface).  The rule that
//! makes the span check bound the work: an accepted blit touches exactly
//! `w × cpp × h` distinct bytes per surface, all inside the span the auditor
//! checked.  (Negative pitches are [`Reject::UnsupportedMode`]; a rectangle
//! with `x2 <= x1` or `y2 <= y1` is empty.)  The engine charges a blit by the
//! bytes it touches ([`super::engine`]'s cost model), so an honest blit of a
//! whole slice is accepted and costs its real time.
//!
//! Loop detection is exact: the command set has no conditionals, so the
//! control flow is a function of the (shadowed) content; re-entering the same
//! batch address at the same level under the same call frames is an infinite
//! loop.  Each level keeps the chain targets entered since the frame began.
//!
//! # One pass, at memory speed
//! The walker ([`audit_ring`]) reads the commands in windows of up to
//! [`FETCH_DWORDS`] dwords within a page ([`AuditEnv::read_span`]) and never
//! reads a dword twice for the same use: what it emits is what it audited.
//! A batch window is checked against the vGPU's memory once, so a command
//! wholly inside it needs no range check of its own ([`AuditEnv`]'s checks
//! are monotonic).  Straight runs of commands that need nothing of the
//! walker but their checks go through a tight loop: the header's row of
//! the decode table gives the command and its length, `accepts` the
//! verdict; the commands join a run that is emitted with one
//! [`AuditEnv::emit`] when the walker leaves the window, changes level,
//! emits a rewritten batch start, or ends.  Everything else (batch starts
//! and ends, a command across a window, any refusal) takes the one-command
//! path, which is the walker of `cmd::reference` with the same window.  The
//! two walkers are held to the same verdicts and emission by a differential
//! property test, and the fuzz target checks the result on the engine.

use super::backend::EngineId;
use super::gm_view::GmView;
use super::mem::{Gma, PAGE_SIZE};

/// Longest command gvt-sim accepts (LRI with 32 registers).
pub const MAX_CMD_DWORDS: usize = 1 + 2 * MAX_LRI_REGS;
/// Most registers one MI_LOAD_REGISTER_IMM may write.
pub const MAX_LRI_REGS: usize = 32;
/// Most bytes one blit may touch per surface (a 16384 × 16384 32-bpp
/// rectangle, 1 GiB: more than any vGPU slice holds).
pub const MAX_BLIT_BYTES: u64 = 1 << 30;
/// Chain targets remembered per batch level (loop detection).
pub const MAX_CHAIN_TARGETS: usize = 16;

/// MI_STORE_DATA_IMM: address is GGTT.
pub const MI_USE_GGTT: u32 = 1 << 22;
/// MI_BATCH_BUFFER_START: second-level batch.
pub const MI_BATCH_SECOND_LEVEL: u32 = 1 << 22;
/// MI_BATCH_BUFFER_START: the batch is in PPGTT space.
pub const MI_BATCH_PPGTT: u32 = 1 << 8;
/// MI_FLUSH_DW: post-sync store of the immediate data.
pub const MI_FLUSH_DW_OP_STOREDW: u32 = 1 << 14;
/// MI_FLUSH_DW: post-sync timestamp write.
pub const MI_FLUSH_DW_OP_TIMESTAMP: u32 = 3 << 14;
pub const MI_FLUSH_DW_STORE_INDEX: u32 = 1 << 21;
pub const MI_FLUSH_DW_NOTIFY: u32 = 1 << 8;
/// MI_FLUSH_DW DW1: the address is GGTT.
pub const MI_FLUSH_DW_USE_GTT: u32 = 1 << 2;
pub const BLT_WRITE_RGBA: u32 = 3 << 20;
pub const BLT_DEPTH_32: u32 = 3 << 24;
pub const BLT_ROP_SRC_COPY: u32 = 0xCC << 16;
pub const BLT_ROP_COLOR_COPY: u32 = 0xF0 << 16;
pub const BLT_SRC_TILED: u32 = 1 << 15;
pub const BLT_DST_TILED: u32 = 1 << 11;
pub const PIPE_CONTROL_GLOBAL_GTT: u32 = 1 << 24;
pub const PIPE_CONTROL_MMIO_WRITE: u32 = 1 << 23;
pub const PIPE_CONTROL_STORE_DATA_INDEX: u32 = 1 << 21;
pub const PIPE_CONTROL_QW_WRITE: u32 = 1 << 14;
pub const PIPE_CONTROL_WRITE_TIMESTAMP: u32 = 3 << 14;
pub const PIPE_CONTROL_NOTIFY: u32 = 1 << 8;

/// Registers a guest may write with MI_LOAD_REGISTER_IMM: `(engine, first
/// offset, last offset)`, inclusive, dword-aligned offsets only.  They are
/// per-context state of the submitting engine with no reach into memory or
/// other vGPUs:
/// - the command streamer general-purpose registers `CS_GPR(0..15)` (base +
///   0x600 ..= base + 0x67C) of both engines;
/// - on RCS, `MI_PREDICATE_SRC0/1` (0x2400 ..= 0x240C) and the indirect-draw
///   `3DPRIM_*` registers (0x2430 ..= 0x2440), which i915's own command
///   parser lets unprivileged userspace load on gen7.
pub const LRI_WHITELIST: &[(EngineId, u32, u32)] = &[
    (EngineId::Rcs, 0x2600, 0x267C),
    (EngineId::Bcs, 0x22600, 0x2267C),
    (EngineId::Rcs, 0x2400, 0x240C),
    (EngineId::Rcs, 0x2430, 0x2440),
];

/// Whether `reg` is on the LRI whitelist for `engine`.
#[inline]
pub fn lri_allowed(engine: EngineId, reg: u32) -> bool {
    reg & 3 == 0
        && LRI_WHITELIST
            .iter()
            .any(|&(e, lo, hi)| e == engine && reg >= lo && reg <= hi)
}

/// Why a submission was rejected.  Every class is counted ([`RejectCounters`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reject {
    /// Client/opcode not in gvt-sim's command set.
    UnknownOpcode,
    /// Length field not allowed for the command.
    BadLength,
    /// The command does not exist on the submitting engine.
    WrongEngine,
    /// A mode gvt-sim does not implement (tiling, store-index, MMIO write,
    /// depth-count post-sync, ROP other than copy/fill, negative pitch,
    /// partial 32-bpp write mask).
    UnsupportedMode,
    /// A GGTT range outside the vGPU's graphics memory (aperture + high slices).
    AddressNotAllowed,
    /// A PPGTT range not mapped in the vGPU's shadow PPGTT (or PPGTT on an
    /// engine that has none).
    PpgttNotMapped,
    /// MI_LOAD_REGISTER_IMM to a register outside [`LRI_WHITELIST`].
    RegisterNotAllowed,
    /// Batch buffers nested deeper than ring → first → second level.
    ChainTooDeep,
    /// A batch chain that loops forever.
    ChainLoop,
    /// More chain targets in one frame than [`MAX_CHAIN_TARGETS`].
    TooManyChains,
    /// MI_BATCH_BUFFER_END in the ring.
    BatchEndInRing,
    /// A ring command runs past the submitted tail.
    Truncated,
    /// More commands than the per-submission budget.
    Runaway,
    /// The ring is disabled, misplaced (outside the vGPU's GM) or larger than
    /// its shadow.
    BadRing,
    /// Tail not qword-aligned, beyond the ring, or overrunning the commands
    /// still pending in it.
    BadTail,
    /// The submission's batch buffers do not fit the shadow even when it is
    /// empty.
    TooLarge,
    /// A blit whose geometry makes its byte span lie about its work: rows
    /// that overlap (more than one row and a pitch smaller than a row's
    /// bytes, pitch 0 included), or a rectangle beyond [`MAX_BLIT_BYTES`].
    BadGeometry,
}

impl Reject {
    pub const COUNT: usize = 17;
    pub const ALL: [Reject; Reject::COUNT] = [
        Reject::UnknownOpcode,
        Reject::BadLength,
        Reject::WrongEngine,
        Reject::UnsupportedMode,
        Reject::AddressNotAllowed,
        Reject::PpgttNotMapped,
        Reject::RegisterNotAllowed,
        Reject::ChainTooDeep,
        Reject::ChainLoop,
        Reject::TooManyChains,
        Reject::BatchEndInRing,
        Reject::Truncated,
        Reject::Runaway,
        Reject::BadRing,
        Reject::BadTail,
        Reject::TooLarge,
        Reject::BadGeometry,
    ];
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// Rejections counted per class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RejectCounters([u64; Reject::COUNT]);

impl RejectCounters {
    pub const fn new() -> Self {
        Self([0; Reject::COUNT])
    }
    pub fn record(&mut self, r: Reject) {
        if let Some(c) = self.0.get_mut(r.index()) {
            *c = c.saturating_add(1);
        }
    }
    pub fn get(&self, r: Reject) -> u64 {
        self.0.get(r.index()).copied().unwrap_or(0)
    }
    pub fn total(&self) -> u64 {
        self.0.iter().fold(0u64, |a, &b| a.saturating_add(b))
    }
}

/// Header of an MI (client 0) command: opcode in bits 28–23.
const fn mi(opcode: u32) -> u32 {
    opcode << 23
}
/// Header of a 2D (client 2, blitter) command: opcode in bits 28–22.
const fn blt(opcode: u32) -> u32 {
    (2 << 29) | (opcode << 22)
}
/// Header of a 3D (client 3) command: pipeline type 28–27, opcode 26–24,
/// sub-opcode 23–16.
const fn gfx3d(pipeline: u32, opcode: u32, sub: u32) -> u32 {
    (3 << 29) | (pipeline << 27) | (opcode << 24) | (sub << 16)
}
/// The header bits that identify a command of `header`'s client.
const fn id_mask(header: u32) -> u32 {
    match header >> 29 {
        0 => 0xFF80_0000,
        2 => 0xFFC0_0000,
        _ => 0xFFFF_0000,
    }
}

/// The engines a command exists on (a bit per [`EngineId`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Engines(u8);

impl Engines {
    /// Render and blitter.
    pub const ANY: Engines = Engines((1 << EngineId::Rcs as u8) | (1 << EngineId::Bcs as u8));
    /// Render only.
    pub const RCS: Engines = Engines(1 << EngineId::Rcs as u8);
    /// Blitter only.
    pub const BCS: Engines = Engines(1 << EngineId::Bcs as u8);
    pub const fn has(self, e: EngineId) -> bool {
        self.0 & (1 << e as u8) != 0
    }
}

/// How a command's total length in dwords is found in its header, and which
/// lengths are legal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LenRule {
    /// Header bits of the DWord Length field (0: a fixed length).
    pub field: u32,
    /// Length = `header & field` + `bias` (Intel: DWord Length = total − 2).
    pub bias: u8,
    /// Legal lengths: `min..=max` in steps of `step` (a power of two).
    pub min: u8,
    pub max: u8,
    pub step: u8,
}

impl LenRule {
    /// Always `n` dwords; the header's low bits are ignored.
    pub const fn fixed(n: u8) -> Self {
        LenRule {
            field: 0,
            bias: n,
            min: n,
            max: n,
            step: 1,
        }
    }
    /// DWord Length in header bits `field`; total lengths `min..=max` by `step`.
    pub const fn field(field: u32, min: u8, max: u8, step: u8) -> Self {
        LenRule {
            field,
            bias: 2,
            min,
            max,
            step,
        }
    }
    /// The total length `header` declares.
    pub const fn of(&self, header: u32) -> usize {
        (header & self.field) as usize + self.bias as usize
    }
    /// Whether `len` is legal.
    pub const fn allows(&self, len: usize) -> bool {
        len >= self.min as usize
            && len <= self.max as usize
            && (len - self.min as usize) & (self.step as usize - 1) == 0
    }
}

/// What the auditor checks on a command (besides its engine and control flow).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditClass {
    /// Touches no memory and no register (control flow is the walker's).
    Control,
    /// Writes memory at an address it carries (store, post-sync write): the
    /// range must be the vGPU's ([`Reject::AddressNotAllowed`],
    /// [`Reject::PpgttNotMapped`]).
    Write,
    /// Loads registers: each must be on [`LRI_WHITELIST`].
    Registers,
    /// Reads and writes GGTT rectangles: each must be honest
    /// ([`Reject::BadGeometry`]) and the vGPU's.
    Blit,
}

/// One row of the command table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CmdSpec {
    pub op: Opcode,
    /// The command's name (Intel's).
    pub name: &'static str,
    /// The header bits that identify the command (under `mask`).
    pub header: u32,
    pub mask: u32,
    pub len: LenRule,
    pub engines: Engines,
    pub audit: AuditClass,
}

/// Declares the command table once (GVT-g's `cmd_info[]`): for every row a
/// `pub const NAME: u32` with its header, an [`Opcode`] variant and a row of
/// [`COMMANDS`] that the decoder, the auditor and gvt-sim's engine read.
///
/// ```text
/// /// doc
/// Variant = NAME(header), length rule, engines, audit class;
/// ```
macro_rules! commands {
    ($(
        $(#[doc = $doc:literal])+
        $op:ident = $name:ident($header:expr), $len:expr, $engines:ident, $audit:ident;
    )*) => {
        $(
            $(#[doc = $doc])+
            pub const $name: u32 = $header;
        )*
        /// The commands of gvt-sim's command set (in [`COMMANDS`] order).
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Opcode {
            $($op),*
        }
        /// The command table, one row per [`Opcode`], in its order.
        pub const COMMANDS: &[CmdSpec] = &[$(
            CmdSpec {
                op: Opcode::$op,
                name: stringify!($name),
                header: $name,
                mask: id_mask($name),
                len: $len,
                engines: Engines::$engines,
                audit: AuditClass::$audit,
            },
        )*];
    };
}

commands! {
    /// MI_NOOP (bits 22–0 ignored).
    Noop = MI_NOOP(mi(0x00)), LenRule::fixed(1), ANY, Control;
    /// MI_USER_INTERRUPT.
    UserInterrupt = MI_USER_INTERRUPT(mi(0x02)), LenRule::fixed(1), ANY, Control;
    /// MI_BATCH_BUFFER_END.
    BatchBufferEnd = MI_BATCH_BUFFER_END(mi(0x0A)), LenRule::fixed(1), ANY, Control;
    /// MI_STORE_DATA_IMM: a dword or a qword.
    StoreDataImm = MI_STORE_DATA_IMM(mi(0x20)), LenRule::field(0x3f, 4, 5, 1), ANY, Write;
    /// MI_LOAD_REGISTER_IMM: 1 to [`MAX_LRI_REGS`] (register, value) pairs.
    LoadRegisterImm = MI_LOAD_REGISTER_IMM(mi(0x22)), LenRule::field(0xff, 3, MAX_CMD_DWORDS as u8, 2), ANY, Registers;
    /// MI_FLUSH_DW, with an optional post-sync write.
    FlushDw = MI_FLUSH_DW(mi(0x26)), LenRule::field(0x3f, 4, 5, 1), ANY, Write;
    /// MI_BATCH_BUFFER_START (48-bit address).
    BatchBufferStart = MI_BATCH_BUFFER_START(mi(0x31)), LenRule::field(0xff, 3, 3, 1), ANY, Control;
    /// XY_COLOR_BLT: 32- or 48-bit address.
    XyColorBlt = XY_COLOR_BLT(blt(0x50)), LenRule::field(0xff, 6, 7, 1), BCS, Blit;
    /// XY_SRC_COPY_BLT: 32- or 48-bit addresses.
    XySrcCopyBlt = XY_SRC_COPY_BLT(blt(0x53)), LenRule::field(0xff, 8, 10, 2), BCS, Blit;
    /// PIPE_CONTROL, with an optional post-sync write.
    PipeControl = PIPE_CONTROL(gfx3d(3, 2, 0)), LenRule::field(0xff, 6, 6, 1), RCS, Write;
}

impl Opcode {
    /// The command's row of [`COMMANDS`].
    pub fn spec(self) -> &'static CmdSpec {
        &COMMANDS[self as usize]
    }
    /// Whether the command exists on engine `e` (its row's engines, as a
    /// bit set per engine the compiler derives from [`COMMANDS`]).
    #[inline]
    pub fn runs_on(self, e: EngineId) -> bool {
        (ON_ENGINE[e.index()] >> (self as u32)) & 1 != 0
    }
}

/// Per engine, the opcodes that exist on it (bit `op as u32`).
static ON_ENGINE: [u32; EngineId::COUNT] = {
    let mut t = [0u32; EngineId::COUNT];
    let mut i = 0;
    while i < COMMANDS.len() {
        let mut k = 0;
        while k < EngineId::COUNT {
            if COMMANDS[i].engines.has(EngineId::ALL[k]) {
                t[k] |= 1 << i;
            }
            k += 1;
        }
        i += 1;
    }
    t
};

/// What the decoder needs of a row, for one value of header bits 31–22:
/// [`COMMANDS`] compiled by the compiler into [`DECODE`].
#[derive(Clone, Copy)]
struct Slot {
    /// The command whose identifying bits 31–22 these are.
    op: Opcode,
    /// Identifying bits 21–16 (3D sub-opcodes): `(header >> 16) & id_mask`
    /// must be `id` (an empty slot's `id` matches nothing).
    id_mask: u8,
    id: u8,
    /// [`LenRule`]: length = `header & field` + `bias`, legal when
    /// `length - min` is at most `span` and a multiple of `step_mask + 1`.
    field: u8,
    bias: u8,
    min: u8,
    span: u8,
    step_mask: u8,
}

const EMPTY_SLOT: Slot = Slot {
    op: Opcode::Noop,
    id_mask: 0,
    id: 0xFF,
    field: 0,
    bias: 0,
    min: 0,
    span: 0,
    step_mask: 0,
};

/// Header bits 31–22 → the command they identify and its length rule.
static DECODE: [Slot; 1024] = decode_slots();

const fn decode_slots() -> [Slot; 1024] {
    let mut t = [EMPTY_SLOT; 1024];
    let mut k = 0;
    while k < 1024 {
        let key = (k as u32) << 22;
        let mut i = 0;
        while i < COMMANDS.len() {
            let c = &COMMANDS[i];
            let m = c.mask & 0xFFC0_0000;
            if key & m == c.header & m {
                // Two rows sharing header bits 31–22 would need a second
                // level; the table has none.
                assert!(t[k].id == EMPTY_SLOT.id, "two commands share a decode slot");
                let l = c.len;
                t[k] = Slot {
                    op: c.op,
                    id_mask: ((c.mask >> 16) & 0x3f) as u8,
                    id: ((c.header >> 16) & 0x3f) as u8,
                    field: l.field as u8,
                    bias: l.bias,
                    min: l.min,
                    span: l.max - l.min,
                    step_mask: l.step - 1,
                };
            }
            i += 1;
        }
        k += 1;
    }
    t
}

// Every row is where its opcode says, identified by header bits 31–16, with
// a length field in bits 7–0 and a sane length rule.
const _: () = {
    let mut i = 0;
    while i < COMMANDS.len() {
        let c = &COMMANDS[i];
        let l = c.len;
        assert!(c.op as usize == i && i < 32 && c.header & !c.mask == 0 && c.mask & 0xFFFF == 0);
        assert!(
            l.field <= 0xff
                && l.min <= l.max
                && l.step.is_power_of_two()
                && l.max as usize <= MAX_CMD_DWORDS
        );
        i += 1;
    }
};

#[inline(always)]
fn slot_of(header: u32) -> Option<&'static Slot> {
    let s = &DECODE[(header >> 22) as usize];
    if (header >> 16) as u8 & s.id_mask == s.id {
        Some(s)
    } else {
        None
    }
}

/// The table row of the command `header` starts, if any.
pub fn spec_of(header: u32) -> Option<&'static CmdSpec> {
    slot_of(header).map(|s| s.op.spec())
}

/// Decode a header dword: the command and its total length in dwords.
#[inline(always)]
pub fn decode(header: u32) -> Result<(Opcode, usize), Reject> {
    let s = slot_of(header).ok_or(Reject::UnknownOpcode)?;
    let len = (header as u8 & s.field) as usize + s.bias as usize;
    let rel = len.wrapping_sub(s.min as usize);
    if rel <= s.span as usize && rel & s.step_mask as usize == 0 {
        Ok((s.op, len))
    } else {
        Err(Reject::BadLength)
    }
}

/// Graphics address space of an address in a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Space {
    /// The global GTT (global graphics memory).
    Ggtt,
    /// The render engine's per-process GTT (local graphics memory).
    Ppgtt,
}

/// A post-sync write of MI_FLUSH_DW / PIPE_CONTROL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PostSync {
    None,
    /// Write `n` (1 or 2) dwords of `data`.
    Imm {
        space: Space,
        addr: u64,
        data: [u32; 2],
        n: u8,
    },
    /// Write the engine's 64-bit timestamp.
    Timestamp {
        space: Space,
        addr: u64,
    },
}

impl PostSync {
    /// The range written, if any.
    #[inline]
    pub fn target(&self) -> Option<(Space, u64, u64)> {
        match *self {
            PostSync::None => None,
            PostSync::Imm { space, addr, n, .. } => Some((space, addr, 4 * n as u64)),
            PostSync::Timestamp { space, addr } => Some((space, addr, 8)),
        }
    }
}

/// A linear surface position of a blit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Surface {
    /// Base GGTT address.
    pub base: u64,
    /// Bytes per row (≥ 0).
    pub pitch: u32,
    pub x: u32,
    pub y: u32,
}

impl Surface {
    /// Address of byte column `x*cpp` of row `y + row` (overflow-checked).
    #[inline]
    pub fn row_addr(&self, row: u32, cpp: u32) -> Option<u64> {
        let y = (self.y as u64).checked_add(row as u64)?;
        self.base
            .checked_add(y.checked_mul(self.pitch as u64)?)?
            .checked_add((self.x as u64).checked_mul(cpp as u64)?)
    }
    /// Whether a `w × h` rectangle of `cpp`-byte pixels is honest: its rows
    /// do not overlap (one row, or a pitch of at least a row's bytes), so it
    /// touches `w * cpp * h` distinct bytes, all inside [`Surface::span`],
    /// and that is at most [`MAX_BLIT_BYTES`].  The engine's work is then
    /// bounded by the span the auditor checks.
    #[inline]
    pub fn geometry_ok(&self, w: u32, h: u32, cpp: u32) -> bool {
        let row = u64::from(w) * u64::from(cpp);
        let rows_apart = h <= 1 || u64::from(self.pitch) >= row;
        rows_apart && row.saturating_mul(u64::from(h)) <= MAX_BLIT_BYTES
    }
    /// The byte range `[first, first + len)` that holds every byte of a
    /// `w × h` rectangle of `cpp`-byte pixels (None when empty or overflowing).
    #[inline]
    pub fn span(&self, w: u32, h: u32, cpp: u32) -> Option<(u64, u64)> {
        if w == 0 || h == 0 {
            return None;
        }
        let first = self.row_addr(0, cpp)?;
        let last_row = self.row_addr(h - 1, cpp)?;
        let end = last_row.checked_add((w as u64).checked_mul(cpp as u64)?)?;
        Some((first, end - first))
    }
}

/// A decoded command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Noop,
    UserInterrupt,
    BatchEnd,
    StoreData {
        space: Space,
        addr: u64,
        data: [u32; 2],
        n: u8,
    },
    /// `count` (register, value) pairs follow the header.
    LoadRegs {
        count: usize,
    },
    FlushDw {
        post: PostSync,
        notify: bool,
    },
    BatchStart {
        space: Space,
        addr: u64,
        second_level: bool,
    },
    ColorBlt {
        dst: Surface,
        w: u32,
        h: u32,
        cpp: u32,
        color: u32,
    },
    SrcCopyBlt {
        dst: Surface,
        src: Surface,
        w: u32,
        h: u32,
        cpp: u32,
    },
    PipeControl {
        post: PostSync,
        notify: bool,
    },
}

#[inline(always)]
fn addr48(lo: u32, hi: u32, mask: u32) -> u64 {
    (lo & !mask) as u64 | (((hi & 0xffff) as u64) << 32)
}

#[inline(always)]
fn cpp_of(br13: u32) -> u32 {
    match (br13 >> 24) & 3 {
        0 => 1,
        3 => 4,
        _ => 2,
    }
}

#[inline(always)]
fn blt_pitch(v: u32) -> Result<u32, Reject> {
    let p = v & 0xffff;
    if p & 0x8000 != 0 {
        Err(Reject::UnsupportedMode)
    } else {
        Ok(p)
    }
}

#[inline(always)]
fn blt_common(h: u32, br13: u32, rop: u32) -> Result<u32, Reject> {
    if br13 & (0xff << 16) != rop {
        return Err(Reject::UnsupportedMode);
    }
    let cpp = cpp_of(br13);
    if cpp == 4 && h & BLT_WRITE_RGBA != BLT_WRITE_RGBA {
        return Err(Reject::UnsupportedMode);
    }
    Ok(cpp)
}

#[inline(always)]
fn rect(tl: u32, br: u32) -> (u32, u32, u32, u32) {
    let (x1, y1, x2, y2) = (tl & 0xffff, tl >> 16, br & 0xffff, br >> 16);
    (x1, y1, x2.saturating_sub(x1), y2.saturating_sub(y1))
}

#[inline(always)]
fn post_sync(op: u32, space: Space, addr: u64, data: [u32; 2], n: u8) -> Result<PostSync, Reject> {
    match op & 3 {
        0 => Ok(PostSync::None),
        1 => Ok(PostSync::Imm {
            space,
            addr,
            data,
            n,
        }),
        3 => Ok(PostSync::Timestamp { space, addr }),
        _ => Err(Reject::UnsupportedMode),
    }
}

#[inline(always)]
fn dw(d: &[u32], i: usize) -> u32 {
    d.get(i).copied().unwrap_or(0)
}

/// Parse a whole command (`d` holds exactly the dwords [`decode`] asked for).
#[inline(always)]
pub fn parse(op: Opcode, d: &[u32]) -> Result<Command, Reject> {
    let h = dw(d, 0);
    let n = d.len();
    Ok(match op {
        Opcode::Noop => Command::Noop,
        Opcode::UserInterrupt => Command::UserInterrupt,
        Opcode::BatchBufferEnd => Command::BatchEnd,
        Opcode::StoreDataImm => Command::StoreData {
            space: if h & MI_USE_GGTT != 0 {
                Space::Ggtt
            } else {
                Space::Ppgtt
            },
            addr: addr48(dw(d, 1), dw(d, 2), 3),
            data: [dw(d, 3), dw(d, 4)],
            n: (n - 3) as u8,
        },
        Opcode::LoadRegisterImm => Command::LoadRegs { count: (n - 1) / 2 },
        Opcode::FlushDw => {
            if h & MI_FLUSH_DW_STORE_INDEX != 0 {
                return Err(Reject::UnsupportedMode);
            }
            let space = if dw(d, 1) & MI_FLUSH_DW_USE_GTT != 0 {
                Space::Ggtt
            } else {
                Space::Ppgtt
            };
            let addr = addr48(dw(d, 1), dw(d, 2), 7);
            Command::FlushDw {
                post: post_sync(h >> 14, space, addr, [dw(d, 3), dw(d, 4)], (n - 3) as u8)?,
                notify: h & MI_FLUSH_DW_NOTIFY != 0,
            }
        }
        Opcode::BatchBufferStart => Command::BatchStart {
            space: if h & MI_BATCH_PPGTT != 0 {
                Space::Ppgtt
            } else {
                Space::Ggtt
            },
            addr: addr48(dw(d, 1), dw(d, 2), 3),
            second_level: h & MI_BATCH_SECOND_LEVEL != 0,
        },
        Opcode::XyColorBlt => {
            if h & BLT_DST_TILED != 0 {
                return Err(Reject::UnsupportedMode);
            }
            let br13 = dw(d, 1);
            let cpp = blt_common(h, br13, BLT_ROP_COLOR_COPY)?;
            let (x, y, w, hh) = rect(dw(d, 2), dw(d, 3));
            let base = if n == 7 {
                addr48(dw(d, 4), dw(d, 5), 0)
            } else {
                dw(d, 4) as u64
            };
            Command::ColorBlt {
                dst: Surface {
                    base,
                    pitch: blt_pitch(br13)?,
                    x,
                    y,
                },
                w,
                h: hh,
                cpp,
                color: dw(d, n - 1),
            }
        }
        Opcode::XySrcCopyBlt => {
            if h & (BLT_DST_TILED | BLT_SRC_TILED) != 0 {
                return Err(Reject::UnsupportedMode);
            }
            let br13 = dw(d, 1);
            let cpp = blt_common(h, br13, BLT_ROP_SRC_COPY)?;
            let (x, y, w, hh) = rect(dw(d, 2), dw(d, 3));
            let wide = n == 10;
            let (dst_base, s) = if wide {
                (addr48(dw(d, 4), dw(d, 5), 0), 6)
            } else {
                (dw(d, 4) as u64, 5)
            };
            let src_xy = dw(d, s);
            let src_pitch = blt_pitch(dw(d, s + 1))?;
            let src_base = if wide {
                addr48(dw(d, s + 2), dw(d, s + 3), 0)
            } else {
                dw(d, s + 2) as u64
            };
            Command::SrcCopyBlt {
                dst: Surface {
                    base: dst_base,
                    pitch: blt_pitch(br13)?,
                    x,
                    y,
                },
                src: Surface {
                    base: src_base,
                    pitch: src_pitch,
                    x: src_xy & 0xffff,
                    y: src_xy >> 16,
                },
                w,
                h: hh,
                cpp,
            }
        }
        Opcode::PipeControl => {
            let f = dw(d, 1);
            if f & (PIPE_CONTROL_MMIO_WRITE | PIPE_CONTROL_STORE_DATA_INDEX) != 0 {
                return Err(Reject::UnsupportedMode);
            }
            let space = if f & PIPE_CONTROL_GLOBAL_GTT != 0 {
                Space::Ggtt
            } else {
                Space::Ppgtt
            };
            Command::PipeControl {
                post: post_sync(
                    f >> 14,
                    space,
                    addr48(dw(d, 2), dw(d, 3), 7),
                    [dw(d, 4), dw(d, 5)],
                    2,
                )?,
                notify: f & PIPE_CONTROL_NOTIFY != 0,
            }
        }
    })
}

/// Store address `v` into the 48-bit address field `d[lo]` (bits 31:0, the
/// bits under `keep` left as they are: flags) and `d[hi]` (bits 15:0 = address
/// 47:32).
fn set_addr48(d: &mut [u32], lo: usize, hi: usize, keep: u32, v: u64) -> Option<()> {
    let l = d.get_mut(lo)?;
    *l = (*l & keep) | (v as u32 & !keep);
    let h = d.get_mut(hi)?;
    *h = (*h & !0xffff) | ((v >> 32) as u32 & 0xffff);
    Some(())
}

/// Store a blit surface base `v` into `d[at]` (and `d[at + 1]` for the
/// 48-bit forms): a 32-bit field must hold it.
fn set_blit_base(d: &mut [u32], at: usize, wide: bool, v: u64) -> Option<()> {
    if wide {
        set_addr48(d, at, at + 1, 0, v)
    } else {
        *d.get_mut(at)? = u32::try_from(v).ok()?;
        Some(())
    }
}

/// A blit surface's base moved to the host: by the offset of the view slice
/// that holds the whole rectangle (checked like [`audit_command`] checks it:
/// the geometry first, then the span).  An empty rectangle touches nothing
/// and keeps its base.
fn blit_base_to_host(
    view: &GmView,
    s: &Surface,
    w: u32,
    h: u32,
    cpp: u32,
) -> Result<Option<u64>, Reject> {
    if w == 0 || h == 0 {
        return Ok(None);
    }
    if !s.geometry_ok(w, h, cpp) {
        return Err(Reject::BadGeometry);
    }
    let (first, len) = s.span(w, h, cpp).ok_or(Reject::AddressNotAllowed)?;
    view.to_host_base(s.base, first, len)
        .map(Some)
        .ok_or(Reject::AddressNotAllowed)
}

/// Move every GGTT address command `cmd` (parsed from `d`, opcode `op`)
/// carries from the guest's GM view to the host, in `d` itself: store and
/// post-sync targets, batch buffer starts, blit surfaces (PPGTT addresses
/// are the guest's own address space and stay).  An address (with the range
/// the command touches from it) outside one slice of the view has no
/// translation: [`Reject::AddressNotAllowed`].  The caller parses `d` again
/// and audits the result against the host slices as for any command, so a
/// missed field cannot reach beyond the vGPU's own memory: at worst a
/// command is refused or lands in its own slice.
///
/// Which dwords hold an address follows from the command's row of
/// [`COMMANDS`] and its parse: [`AuditClass::Write`] rows carry one target
/// (MI_STORE_DATA_IMM at DW1–2; MI_FLUSH_DW at DW1–2, bits 2:0 flags;
/// PIPE_CONTROL at DW2–3, bits 2:0 reserved), [`AuditClass::Blit`] rows a
/// destination (DW4, 48-bit forms DW4–5) and XY_SRC_COPY_BLT a source (DW7,
/// or DW8–9), and the one control command with an address is
/// MI_BATCH_BUFFER_START (DW1–2).  The table test below checks every row is
/// covered.
pub fn translate_command(
    view: &GmView,
    op: Opcode,
    cmd: &Command,
    d: &mut [u32],
) -> Result<(), Reject> {
    let denied = Reject::AddressNotAllowed;
    let to_host = |a: u64, len: u64| view.to_host(a, len).ok_or(denied);
    match *cmd {
        Command::StoreData {
            space: Space::Ggtt,
            addr,
            n,
            ..
        } => set_addr48(d, 1, 2, 3, to_host(addr, 4 * u64::from(n))?).ok_or(denied),
        Command::FlushDw { post, .. } | Command::PipeControl { post, .. } => {
            let Some((Space::Ggtt, a, len)) = post.target() else {
                return Ok(());
            };
            let lo = if op == Opcode::PipeControl { 2 } else { 1 };
            set_addr48(d, lo, lo + 1, 7, to_host(a, len)?).ok_or(denied)
        }
        Command::BatchStart {
            space: Space::Ggtt,
            addr,
            ..
        } => set_addr48(d, 1, 2, 3, to_host(addr, 4)?).ok_or(denied),
        Command::ColorBlt { dst, w, h, cpp, .. } => {
            if let Some(b) = blit_base_to_host(view, &dst, w, h, cpp)? {
                set_blit_base(d, 4, d.len() == 7, b).ok_or(denied)?;
            }
            Ok(())
        }
        Command::SrcCopyBlt {
            dst,
            src,
            w,
            h,
            cpp,
        } => {
            let wide = d.len() == 10;
            let db = blit_base_to_host(view, &dst, w, h, cpp)?;
            let sb = blit_base_to_host(view, &src, w, h, cpp)?;
            if let Some(b) = db {
                set_blit_base(d, 4, wide, b).ok_or(denied)?;
            }
            if let Some(b) = sb {
                set_blit_base(d, if wide { 8 } else { 7 }, wide, b).ok_or(denied)?;
            }
            Ok(())
        }
        Command::StoreData { .. }
        | Command::BatchStart { .. }
        | Command::Noop
        | Command::UserInterrupt
        | Command::BatchEnd
        | Command::LoadRegs { .. } => Ok(()),
    }
}

/// What the walkers audit of a command under a GM view that is not the
/// placement: `d` rewritten by [`translate_command`] and parsed again (so
/// the audit sees exactly what is emitted).  Out of line: for the identity
/// view the walkers' loop is what it was.
#[inline(never)]
fn translated(view: &GmView, op: Opcode, cmd: &Command, d: &mut [u32]) -> Result<Command, Reject> {
    translate_command(view, op, cmd, d)?;
    parse(op, d)
}

/// Per-submission limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most commands (ring and batches together) one submission may hold.
    pub max_commands: u32,
    /// Check every command's side effects ([`audit_command`]: engine,
    /// register whitelist, addresses).  `false` only for the benchmark
    /// switch that measures what the checks cost (the paper's gVirt_base
    /// against gVirt_sec; the kmod's `bench_no_audit`, off by default):
    /// commands are still decoded, batches followed and everything copied
    /// into the shadows, but nothing a guest asks for is refused on policy.
    pub checks: bool,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        max_commands: 1 << 16,
        checks: true,
    };
}

/// Batch nesting level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Level {
    Ring = 0,
    First = 1,
    Second = 2,
}

/// The shadow copy cannot take more commands right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SinkFull;

/// Everything the auditor needs from its surroundings: what the vGPU may
/// touch, how to read the commands, and where the audited copy goes.
///
/// [`gm_allowed`] and [`ppgtt_mapped`] must be monotonic: a range they
/// allow allows every range inside it.  The auditor relies on it to check a
/// read-ahead window of a batch once for all the commands inside it.
///
/// [`gm_allowed`]: AuditEnv::gm_allowed
/// [`ppgtt_mapped`]: AuditEnv::ppgtt_mapped
pub trait AuditEnv {
    /// The engine the commands were submitted to.
    fn engine(&self) -> EngineId;
    /// Whether `[addr, addr + len)` lies in the vGPU's graphics memory.
    fn gm_allowed(&self, addr: Gma, len: u64) -> bool;
    /// Whether every page of `[addr, addr + len)` is mapped in the vGPU's
    /// shadow PPGTT.
    fn ppgtt_mapped(&self, addr: u64, len: u64) -> bool;
    /// Read one command dword (called only for ranges already allowed).
    fn read_dword(&mut self, space: Space, addr: u64) -> Option<u32>;
    /// Read the command bytes `[addr, addr + out.len())` in one go: a whole
    /// number of dwords, dword-aligned, never across a 4 KiB page.  The
    /// auditor reads ahead of the command it decodes (at most
    /// [`FETCH_DWORDS`], within the page of a command it was allowed to
    /// fetch) and uses a dword only once the command holding it passed the
    /// same checks as before; on `None` it falls back to [`read_dword`]
    /// per dword.  The default reads dword by dword.
    ///
    /// [`read_dword`]: AuditEnv::read_dword
    fn read_span(&mut self, space: Space, addr: u64, out: &mut [u8]) -> Option<()> {
        for (i, c) in out.chunks_exact_mut(4).enumerate() {
            let v = self.read_dword(space, addr.checked_add(4 * i as u64)?)?;
            c.copy_from_slice(&v.to_le_bytes());
        }
        Some(())
    }
    /// Append audited commands to the shadow of `level` (for the ring: at
    /// the ring offset they came from).  `dwords` is one command or several
    /// consecutive ones (the auditor emits a run of commands it read
    /// together in one call), of any length.  After a [`SinkFull`] the
    /// audit ends with [`AuditError::ShadowFull`] and what was emitted is
    /// discarded by the caller.
    fn emit(&mut self, level: Level, dwords: &[u32]) -> Result<(), SinkFull>;
    /// GGTT address where the next command emitted at `level` will land.
    fn next_addr(&self, level: Level) -> Gma;
    /// The guest's GM view when it is not the vGPU's placement (a migrated
    /// vGPU, [`GmView`]): every GGTT address a command carries is then
    /// moved to the host ([`translate_command`]) before the command is
    /// audited, so the audit, the emitted copy and the engine see host
    /// addresses only.  `None` (the default): the guest's addresses are the
    /// host's (the paper's ballooning), nothing is translated.
    fn gm_view(&self) -> Option<GmView> {
        None
    }
    /// Called once the whole submission was audited and emitted, before
    /// [`audit_ring`] returns it accepted: an environment that gathers its
    /// emission into larger writes finishes them here.  The default has
    /// nothing to do.
    fn flush(&mut self) -> Result<(), SinkFull> {
        Ok(())
    }
}

/// A guest ring buffer as the auditor reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingWindow {
    /// GGTT address of the ring (page-aligned).
    pub start: Gma,
    /// Size in bytes (whole pages).
    pub size: u32,
}

/// What an accepted submission held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuditSummary {
    /// Commands audited (ring and batches).
    pub commands: u32,
    /// Dwords audited.
    pub dwords: u64,
    /// Batch buffers entered (calls and chains).
    pub batches: u32,
}

/// Why an audit did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditError {
    Rejected(Reject),
    /// The shadow ran out of space; nothing is wrong with the commands.
    ShadowFull,
}

impl From<Reject> for AuditError {
    fn from(r: Reject) -> Self {
        AuditError::Rejected(r)
    }
}

/// Check one range a command touches.
#[inline(always)]
fn check_touch<E: AuditEnv + ?Sized>(
    env: &E,
    space: Space,
    addr: u64,
    len: u64,
) -> Result<(), Reject> {
    match space {
        Space::Ggtt if env.gm_allowed(addr, len) => Ok(()),
        Space::Ggtt => Err(Reject::AddressNotAllowed),
        Space::Ppgtt if env.engine() == EngineId::Rcs && env.ppgtt_mapped(addr, len) => Ok(()),
        Space::Ppgtt => Err(Reject::PpgttNotMapped),
    }
}

/// Audit one parsed command's side effects (everything but control flow):
/// its engine and its audit class, both from its row of [`COMMANDS`].
#[inline(always)]
pub fn audit_command<E: AuditEnv + ?Sized>(
    env: &E,
    op: Opcode,
    cmd: &Command,
    d: &[u32],
) -> Result<(), Reject> {
    let engine = env.engine();
    if !op.runs_on(engine) {
        return Err(Reject::WrongEngine);
    }
    match (op.spec().audit, *cmd) {
        (AuditClass::Control, _) => Ok(()),
        (AuditClass::Write, Command::StoreData { space, addr, n, .. }) => {
            check_touch(env, space, addr, 4 * n as u64)
        }
        (AuditClass::Write, Command::FlushDw { post, .. } | Command::PipeControl { post, .. }) => {
            match post.target() {
                Some((s, a, l)) => check_touch(env, s, a, l),
                None => Ok(()),
            }
        }
        (AuditClass::Registers, Command::LoadRegs { count }) => {
            for i in 0..count {
                if !lri_allowed(engine, dw(d, 1 + 2 * i)) {
                    return Err(Reject::RegisterNotAllowed);
                }
            }
            Ok(())
        }
        (AuditClass::Blit, Command::ColorBlt { dst, w, h, cpp, .. }) => {
            check_rect(env, &dst, w, h, cpp)
        }
        (
            AuditClass::Blit,
            Command::SrcCopyBlt {
                dst,
                src,
                w,
                h,
                cpp,
            },
        ) => {
            check_rect(env, &dst, w, h, cpp)?;
            check_rect(env, &src, w, h, cpp)
        }
        // A row whose class does not fit what its command parses to (the
        // table test rules this out): refuse rather than let it through.
        _ => Err(Reject::UnknownOpcode),
    }
}

#[inline(always)]
fn check_rect<E: AuditEnv + ?Sized>(
    env: &E,
    s: &Surface,
    w: u32,
    h: u32,
    cpp: u32,
) -> Result<(), Reject> {
    if w == 0 || h == 0 {
        return Ok(());
    }
    if !s.geometry_ok(w, h, cpp) {
        return Err(Reject::BadGeometry);
    }
    match s.span(w, h, cpp) {
        Some((first, len)) => check_touch(env, Space::Ggtt, first, len),
        None => Err(Reject::AddressNotAllowed),
    }
}

/// Whether [`parse`] and [`audit_command`] accept the command `d` (its
/// [`decode`]d `op` and length): the walker's question about a command it
/// does not need to look into further.  For the commands whose checks are
/// a table lookup and at most one range or a register list (MI_NOOP,
/// MI_USER_INTERRUPT, MI_STORE_DATA_IMM, MI_LOAD_REGISTER_IMM, MI_FLUSH_DW)
/// it reads the fields straight from the dwords instead of building a
/// [`Command`]; a test holds it to the same verdict as the two on every
/// input.  A refusal is found again, with its reason, by the walker's
/// one-command path.
#[inline(always)]
fn accepts<E: AuditEnv + ?Sized>(env: &E, op: Opcode, d: &[u32]) -> bool {
    let engine = env.engine();
    let touch = |space: Space, addr: u64, len: u64| check_touch(env, space, addr, len).is_ok();
    match (op, d) {
        (Opcode::Noop | Opcode::UserInterrupt, _) => op.runs_on(engine),
        (Opcode::StoreDataImm, &[h, lo, hi, ..]) => {
            let space = if h & MI_USE_GGTT != 0 {
                Space::Ggtt
            } else {
                Space::Ppgtt
            };
            let len = 4 * (d.len() as u64 - 3);
            op.runs_on(engine) && touch(space, addr48(lo, hi, 3), len)
        }
        (Opcode::LoadRegisterImm, &[_, ref pairs @ ..]) => {
            op.runs_on(engine)
                && pairs
                    .chunks_exact(2)
                    .all(|p| p.first().is_some_and(|&r| lri_allowed(engine, r)))
        }
        (Opcode::FlushDw, &[h, lo, hi, ..]) => {
            let space = if lo & MI_FLUSH_DW_USE_GTT != 0 {
                Space::Ggtt
            } else {
                Space::Ppgtt
            };
            let addr = addr48(lo, hi, 7);
            h & MI_FLUSH_DW_STORE_INDEX == 0
                && op.runs_on(engine)
                && match (h >> 14) & 3 {
                    0 => true,
                    1 => touch(space, addr, 4 * (d.len() as u64 - 3)),
                    3 => touch(space, addr, 8),
                    _ => false,
                }
        }
        _ => parse(op, d).is_ok_and(|cmd| audit_command(env, op, &cmd, d).is_ok()),
    }
}

/// Where the walker fetches from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cursor {
    space: Space,
    addr: u64,
}

/// Chain targets entered at one level since its frame began.
struct Visited {
    n: usize,
    set: [(Space, u64); MAX_CHAIN_TARGETS],
}

impl Visited {
    const fn new() -> Self {
        Self {
            n: 0,
            set: [(Space::Ggtt, 0); MAX_CHAIN_TARGETS],
        }
    }
    fn reset(&mut self) {
        self.n = 0;
    }
    fn enter(&mut self, c: Cursor) -> Result<(), Reject> {
        let seen = self.set.get(..self.n).unwrap_or(&[]);
        if seen.iter().any(|&(s, a)| s == c.space && a == c.addr) {
            return Err(Reject::ChainLoop);
        }
        let slot = self.set.get_mut(self.n).ok_or(Reject::TooManyChains)?;
        *slot = (c.space, c.addr);
        self.n += 1;
        Ok(())
    }
}

/// Dwords the auditor reads in one go (one [`AuditEnv::read_span`]).
pub const FETCH_DWORDS: usize = 64;

/// Whether the walker may fetch `[addr, addr + len)` of a batch in `space`
/// (the check of every batch command's header and then its whole length).
#[inline]
fn fetch_ok<E: AuditEnv + ?Sized>(env: &E, space: Space, addr: u64, len: u64) -> bool {
    match space {
        Space::Ggtt => env.gm_allowed(addr, len),
        Space::Ppgtt => env.engine() == EngineId::Rcs && env.ppgtt_mapped(addr, len),
    }
}

/// What the auditor read ahead: `len` dwords of `space` from `addr`, all in
/// one page.  Each dword is used at most once per fetch of the command that
/// holds it, after that command's checks: what is emitted is what was read
/// and audited.
struct Window {
    space: Space,
    addr: u64,
    len: usize,
    /// The whole window passed the batch fetch check ([`fetch_ok`] over
    /// `4 * len` bytes), so every command inside it passes both of its own
    /// (the environment's checks are monotonic: see [`AuditEnv`]).
    allowed: bool,
    /// `len` is set to 0 when commands in `d` were translated in place (a
    /// straight run under a GM view): `d` is then no longer what memory
    /// holds, so the window holds nothing for a fetch until it is filled
    /// again (the run emitted from it still reads `d`).
    d: [u32; FETCH_DWORDS],
}

impl Window {
    const fn new() -> Self {
        Self {
            space: Space::Ggtt,
            addr: 0,
            len: 0,
            allowed: false,
            d: [0; FETCH_DWORDS],
        }
    }

    /// The index of the dword at `addr` if the window holds the `n` dwords
    /// from there.
    #[inline]
    fn holds(&self, space: Space, addr: u64, n: usize) -> Option<usize> {
        let rel = addr.wrapping_sub(self.addr);
        if space != self.space || rel % 4 != 0 || rel / 4 + n as u64 > self.len as u64 {
            return None;
        }
        Some((rel / 4) as usize)
    }

    /// The dword at index `i` (0 beyond the window: callers index only
    /// what [`Window::holds`] returned).
    #[inline]
    fn at(&self, i: usize) -> u32 {
        self.d.get(i).copied().unwrap_or(0)
    }

    /// Read from `addr` to the end of its page (at most [`FETCH_DWORDS`]);
    /// `false` (and an empty window) if the environment could not.
    fn fill<E: AuditEnv + ?Sized>(&mut self, env: &mut E, space: Space, addr: u64) -> bool {
        self.len = 0;
        self.allowed = false;
        if addr % 4 != 0 {
            return false;
        }
        let to_page_end = ((PAGE_SIZE - addr % PAGE_SIZE) / 4) as usize;
        let n = to_page_end.min(FETCH_DWORDS);
        let mut bytes = [0u8; 4 * FETCH_DWORDS];
        let Some(b) = bytes.get_mut(..4 * n) else {
            return false;
        };
        if env.read_span(space, addr, b).is_none() {
            return false;
        }
        for (d, c) in self.d.iter_mut().zip(b.chunks_exact(4)) {
            *d = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        (self.space, self.addr, self.len) = (space, addr, n);
        self.allowed = fetch_ok(env, space, addr, 4 * n as u64);
        true
    }
}

/// Where a fetched command's dwords are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Src {
    /// In the window, from this index.
    Win(usize),
    /// In the walker's buffer (read dword by dword: a command across a page
    /// or the ring's end, or a window the environment could not read).
    Buf,
}

/// The walker's state besides its control flow: the read-ahead window, the
/// buffer for commands read dword by dword, and the audited commands not yet
/// emitted.  Consecutive commands emitted at one level from consecutive
/// dwords of the window go out as one [`AuditEnv::emit`] (a run), so the
/// copy costs one call per run, not one per command.
struct Walker {
    win: Window,
    buf: [u32; MAX_CMD_DWORDS],
    /// `win.d[run_start..run_end]`, audited, to emit at `run_level`.
    run_level: Level,
    run_start: usize,
    run_end: usize,
}

impl Walker {
    const fn new() -> Self {
        Self {
            win: Window::new(),
            buf: [0; MAX_CMD_DWORDS],
            run_level: Level::Ring,
            run_start: 0,
            run_end: 0,
        }
    }

    /// The `n` dwords of a fetched command.
    #[inline]
    fn dwords(&self, src: Src, n: usize) -> &[u32] {
        match src {
            Src::Win(i) => self.win.d.get(i..i + n),
            Src::Buf => self.buf.get(..n),
        }
        .unwrap_or(&[])
    }

    /// Emit the run.  Everything in it was audited and would have been
    /// emitted, one command at a time, before anything the walker did since.
    fn flush_run<E: AuditEnv + ?Sized>(&mut self, env: &mut E) -> Result<(), AuditError> {
        let (s, e) = (self.run_start, self.run_end);
        self.run_start = 0;
        self.run_end = 0;
        if e > s {
            let d = self.win.d.get(s..e).unwrap_or(&[]);
            env.emit(self.run_level, d)
                .map_err(|_| AuditError::ShadowFull)?;
        }
        Ok(())
    }

    /// Emit an audited command at `level`: appended to the run when it
    /// follows it in the window, else after the run.
    #[inline]
    fn emit<E: AuditEnv + ?Sized>(
        &mut self,
        env: &mut E,
        level: Level,
        src: Src,
        n: usize,
    ) -> Result<(), AuditError> {
        match src {
            Src::Win(i)
                if self.run_end == i
                    && self.run_end > self.run_start
                    && self.run_level == level =>
            {
                self.run_end = i + n;
                Ok(())
            }
            Src::Win(i) => {
                self.flush_run(env)?;
                (self.run_level, self.run_start, self.run_end) = (level, i, i + n);
                Ok(())
            }
            Src::Buf => {
                self.flush_run(env)?;
                let d = self.buf.get(..n).unwrap_or(&[]);
                env.emit(level, d).map_err(|_| AuditError::ShadowFull)
            }
        }
    }

    /// Refill the window at `addr` (after emitting the run, which lives in it).
    fn refill<E: AuditEnv + ?Sized>(
        &mut self,
        env: &mut E,
        space: Space,
        addr: u64,
    ) -> Result<bool, AuditError> {
        self.flush_run(env)?;
        Ok(self.win.fill(env, space, addr))
    }

    /// The header at `addr`: its window index (the window refilled at
    /// `addr` when it does not hold it), or `None` when the window cannot
    /// be read there (the caller reads the dword alone).
    #[inline]
    fn locate<E: AuditEnv + ?Sized>(
        &mut self,
        env: &mut E,
        space: Space,
        addr: u64,
    ) -> Result<Option<usize>, AuditError> {
        if let Some(i) = self.win.holds(space, addr, 1) {
            return Ok(Some(i));
        }
        Ok(self.refill(env, space, addr)?.then_some(0))
    }

    /// The header `h` at `addr` (window index `at`) and the command's
    /// other `n - 1` dwords: from the window (refilled at `addr` if it
    /// does not hold them), else one [`AuditEnv::read_dword`] each at
    /// `addr_of(i)`, into the buffer; `denied` when one cannot be read.
    #[allow(clippy::too_many_arguments)]
    fn body<E: AuditEnv + ?Sized>(
        &mut self,
        env: &mut E,
        space: Space,
        addr: u64,
        h: u32,
        at: Option<usize>,
        n: usize,
        denied: Reject,
        addr_of: impl Fn(usize) -> Option<u64>,
    ) -> Result<Src, AuditError> {
        if let Some(i) = at.filter(|&i| i + n <= self.win.len) {
            return Ok(Src::Win(i));
        }
        if n > 1 && (self.win.space, self.win.addr) != (space, addr) {
            self.refill(env, space, addr)?;
            if self.win.holds(space, addr, n) == Some(0) {
                // The header decoded is the one audited and emitted, even
                // if the guest changed it between the two reads.
                if let Some(d0) = self.win.d.first_mut() {
                    *d0 = h;
                }
                return Ok(Src::Win(0));
            }
        }
        *self.buf.get_mut(0).ok_or(denied)? = h;
        for i in 1..n {
            let v = addr_of(i)
                .and_then(|a| env.read_dword(space, a))
                .ok_or(denied)?;
            *self.buf.get_mut(i).ok_or(denied)? = v;
        }
        Ok(Src::Buf)
    }

    /// Audit commands straight from the window at `cur`, for as long as
    /// each lies wholly in it (and, in the ring, in the `max_bytes`
    /// submitted) and needs nothing of the walker but its checks: no batch
    /// start or end, no rejection (the one-command path handles those and
    /// finds the same), at most `max_cmds` of them.  They join the run at
    /// `level`.  Returns how many commands and dwords it took.  `checks`
    /// false ([`Limits::checks`], the benchmark switch): a command needs
    /// only to parse, as on the one-command path.
    ///
    /// Under a GM `view` each command runs on the engine and is translated
    /// first, as on the one-command path: copied, its GGTT addresses moved
    /// to the host ([`translated`]), audited as translated, and only then
    /// written back over its dwords in the window, from where the run is
    /// emitted.  A command that does not translate or pass stops the run
    /// untouched (the one-command path refuses it for the same reason).
    /// Once anything was rewritten the window is stale (its `len` 0): it is read again
    /// before another command is fetched from it, so nothing is translated
    /// twice and every fetch sees what memory holds.
    /// `VIEW` false: the identity walker's loop, with no view to look at
    /// (`view` is then ignored): an unmoved vGPU pays nothing for views.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn straight<const VIEW: bool, E: AuditEnv + ?Sized>(
        &mut self,
        env: &mut E,
        level: Level,
        cur: Cursor,
        max_cmds: u32,
        max_bytes: u64,
        checks: bool,
        view: Option<&GmView>,
    ) -> Result<(u32, usize), AuditError> {
        let Some(start) = self.win.holds(cur.space, cur.addr, 1) else {
            return Ok((0, 0));
        };
        // The ring was checked as a whole; a batch window must have been.
        if level != Level::Ring && !self.win.allowed {
            return Ok((0, 0));
        }
        let max_end = usize::try_from(max_bytes / 4)
            .map_or(usize::MAX, |m| start.saturating_add(m))
            .min(self.win.len);
        let (mut i, mut cmds) = (start, 0u32);
        while cmds < max_cmds {
            let Some(&h) = self.win.d.get(i) else { break };
            let Ok((op, n)) = decode(h) else { break };
            if matches!(op, Opcode::BatchBufferStart | Opcode::BatchBufferEnd) {
                break;
            }
            let end = i + n;
            if end > max_end {
                break;
            }
            let Some(d) = self.win.d.get(i..end) else {
                break;
            };
            if VIEW {
                let Some(v) = view else { break };
                if !op.runs_on(env.engine()) || !self.straight_in_view(env, v, op, i, end, checks) {
                    break;
                }
            } else {
                let ok = if checks {
                    accepts(env, op, d)
                } else {
                    parse(op, d).is_ok()
                };
                if !ok {
                    break;
                }
            }
            i = end;
            cmds += 1;
        }
        if cmds > 0 {
            self.emit(env, level, Src::Win(start), i - start)?;
        }
        Ok((cmds, i - start))
    }

    /// One command of a straight run under `view`: `win.d[i..end]`
    /// translated in the walker's buffer, checked there, and written back
    /// only if it passes (the window is then stale when anything changed).
    #[inline(never)]
    fn straight_in_view<E: AuditEnv + ?Sized>(
        &mut self,
        env: &E,
        view: &GmView,
        op: Opcode,
        i: usize,
        end: usize,
        checks: bool,
    ) -> bool {
        let Walker { win, buf, .. } = self;
        let (Some(from), Some(t)) = (win.d.get(i..end), buf.get_mut(..end - i)) else {
            return false;
        };
        t.copy_from_slice(from);
        let Ok(raw) = parse(op, t) else {
            return false;
        };
        // What the one-command path audits is the translated dwords parsed
        // again; `accepts` is that parse and the audit in one.
        if translate_command(view, op, &raw, t).is_err() {
            return false;
        }
        let ok = if checks {
            accepts(env, op, t)
        } else {
            parse(op, t).is_ok()
        };
        if !ok {
            return false;
        }
        if let Some(to) = win.d.get_mut(i..end) {
            if to != t {
                to.copy_from_slice(t);
                // Stale: no fetch from this window any more.
                win.len = 0;
            }
        }
        true
    }

    /// Fetch the ring command at offset `off` (`remaining` bytes submitted
    /// from there).
    #[inline]
    fn fetch_ring<E: AuditEnv + ?Sized>(
        &mut self,
        env: &mut E,
        ring: RingWindow,
        off: u32,
        remaining: u32,
    ) -> Result<(Opcode, usize, Src), AuditError> {
        // The ring is whole pages from a page boundary: a window never runs
        // past its end; a command that wraps is read dword by dword.
        let at = ring.start + off as u64;
        let (h, i) = match self.locate(env, Space::Ggtt, at)? {
            Some(i) => (self.win.at(i), Some(i)),
            None => (
                env.read_dword(Space::Ggtt, at).ok_or(Reject::BadRing)?,
                None,
            ),
        };
        let (op, n) = decode(h)?;
        if 4 * n as u32 > remaining {
            return Err(Reject::Truncated.into());
        }
        let size = ring.size as u64;
        let src = self.body(env, Space::Ggtt, at, h, i, n, Reject::BadRing, |k| {
            let o = (off as u64 + 4 * k as u64).checked_rem(size)?;
            ring.start.checked_add(o)
        })?;
        Ok((op, n, src))
    }

    /// Fetch the batch command at `c`.
    #[inline]
    fn fetch_batch<E: AuditEnv + ?Sized>(
        &mut self,
        env: &mut E,
        c: Cursor,
    ) -> Result<(Opcode, usize, Src), AuditError> {
        // A window that passed the fetch check as a whole proves both of the
        // checks below for every command inside it.
        if let Some(i) = self.win.holds(c.space, c.addr, 1) {
            if self.win.allowed {
                let (op, n) = decode(self.win.at(i))?;
                if i + n <= self.win.len {
                    return Ok((op, n, Src::Win(i)));
                }
            }
        }
        let denied = match c.space {
            Space::Ggtt => Reject::AddressNotAllowed,
            Space::Ppgtt => Reject::PpgttNotMapped,
        };
        if !fetch_ok(env, c.space, c.addr, 4) {
            return Err(denied.into());
        }
        let (h, i) = match self.locate(env, c.space, c.addr)? {
            Some(i) => (self.win.at(i), Some(i)),
            None => (env.read_dword(c.space, c.addr).ok_or(denied)?, None),
        };
        let (op, n) = decode(h)?;
        if !fetch_ok(env, c.space, c.addr, 4 * n as u64) {
            return Err(denied.into());
        }
        let src = self.body(env, c.space, c.addr, h, i, n, denied, |k| {
            c.addr.checked_add(4 * k as u64)
        })?;
        Ok((op, n, src))
    }
}

/// Audit the ring range `[head, tail)` (byte offsets, wrapping at the ring
/// size) and every batch buffer it reaches, emitting the audited commands
/// into `env`'s shadow.  Commands are read exactly once: what is emitted is
/// what was audited.  Batch buffer starts are emitted rewritten to the shadow
/// copy (GGTT, level preserved); chains within a level are flattened (the
/// target is copied in place of the chaining BB_START, which executes the
/// same).
pub fn audit_ring<E: AuditEnv + ?Sized>(
    env: &mut E,
    ring: RingWindow,
    head: u32,
    tail: u32,
    limits: &Limits,
) -> Result<AuditSummary, AuditError> {
    let size = ring.size;
    if size == 0
        || size as u64 % PAGE_SIZE != 0
        || ring.start % PAGE_SIZE != 0
        || !env.gm_allowed(ring.start, size as u64)
    {
        return Err(Reject::BadRing.into());
    }
    if head % 4 != 0 || tail % 8 != 0 || head >= size || tail >= size {
        return Err(Reject::BadTail.into());
    }
    let mut w = Walker::new();
    // The walk; its result is finished below, with the run it leaves.
    let walked = (|| -> Result<AuditSummary, AuditError> {
        let w = &mut w;
        let env = &mut *env;
        let size = ring.size;
        let mut sum = AuditSummary::default();
        let mut remaining = if tail >= head {
            tail - head
        } else {
            size - head + tail
        };
        let mut off = head;
        let mut level = Level::Ring;
        let mut b1 = Cursor {
            space: Space::Ggtt,
            addr: 0,
        };
        let mut b2 = b1;
        let mut v1 = Visited::new();
        let mut v2 = Visited::new();
        // `None` for every vGPU that never moved (an environment without a
        // view: the translation is compiled out of that instance).
        let view = env.gm_view();
        loop {
            if level == Level::Ring && remaining == 0 {
                return Ok(sum);
            }
            // Straight runs of plain commands first (under a view each one
            // translated as the one-command path below does).
            let (cur, max_bytes) = match level {
                Level::Ring => (
                    Cursor {
                        space: Space::Ggtt,
                        addr: ring.start + off as u64,
                    },
                    remaining as u64,
                ),
                Level::First => (b1, u64::MAX),
                Level::Second => (b2, u64::MAX),
            };
            let budget = limits.max_commands.saturating_sub(sum.commands);
            let (cmds, dwords) = match view.as_ref() {
                None => {
                    w.straight::<false, E>(env, level, cur, budget, max_bytes, limits.checks, None)?
                }
                v => w.straight::<true, E>(env, level, cur, budget, max_bytes, limits.checks, v)?,
            };
            if cmds > 0 {
                sum.commands += cmds;
                sum.dwords += dwords as u64;
                let step = 4 * dwords as u64;
                match level {
                    Level::Ring => {
                        off = ((off as u64 + step) % size as u64) as u32;
                        remaining -= step as u32;
                    }
                    Level::First => b1.addr = b1.addr.wrapping_add(step),
                    Level::Second => b2.addr = b2.addr.wrapping_add(step),
                }
                continue;
            }
            // Then one command at a time: control flow, commands across a
            // window, and rejections.
            if sum.commands >= limits.max_commands {
                return Err(Reject::Runaway.into());
            }
            let (op, n, mut src) = match level {
                Level::Ring => w.fetch_ring(env, ring, off, remaining)?,
                Level::First => w.fetch_batch(env, b1)?,
                Level::Second => w.fetch_batch(env, b2)?,
            };
            // Under a GM view the command is copied into the walker's buffer
            // and its GGTT addresses moved to the host there, then parsed
            // again and audited: nothing is emitted from the untranslated
            // window.  (A command on the wrong engine is refused as such by
            // the audit.)
            let cmd = match view.as_ref().filter(|_| op.runs_on(env.engine())) {
                Some(v) => {
                    if let Src::Win(i) = src {
                        let Walker { win, buf, .. } = &mut *w;
                        if let (Some(to), Some(from)) = (buf.get_mut(..n), win.d.get(i..i + n)) {
                            to.copy_from_slice(from);
                        }
                        src = Src::Buf;
                    }
                    let raw = parse(op, w.buf.get(..n).unwrap_or(&[]))?;
                    translated(v, op, &raw, w.buf.get_mut(..n).unwrap_or(&mut []))?
                }
                None => parse(op, w.dwords(src, n))?,
            };
            let d = w.dwords(src, n);
            if limits.checks {
                audit_command(env, op, &cmd, d)?;
            }
            let header = d.first().copied().unwrap_or(0);
            sum.commands += 1;
            sum.dwords += n as u64;
            let step = 4 * n as u64;
            // Control flow and emission.
            match (cmd, level) {
                (Command::BatchEnd, Level::Ring) => return Err(Reject::BatchEndInRing.into()),
                (Command::BatchEnd, Level::First) => {
                    w.emit(env, level, src, n)?;
                    level = Level::Ring;
                }
                (Command::BatchEnd, Level::Second) => {
                    w.emit(env, level, src, n)?;
                    level = Level::First;
                }
                (
                    Command::BatchStart {
                        space,
                        addr,
                        second_level,
                    },
                    _,
                ) => {
                    let target = Cursor { space, addr };
                    sum.batches += 1;
                    let call_into = match (level, second_level) {
                        (Level::Ring, false) => Some(Level::First),
                        (Level::Ring, true) => return Err(Reject::ChainTooDeep.into()),
                        (Level::First, true) => Some(Level::Second),
                        (Level::Second, true) => return Err(Reject::ChainTooDeep.into()),
                        (_, false) => None,
                    };
                    match call_into {
                        Some(child) => {
                            w.flush_run(env)?;
                            let shadow = env.next_addr(child);
                            let hdr = header & !MI_BATCH_PPGTT;
                            let patched = [hdr, shadow as u32, ((shadow >> 32) & 0xffff) as u32];
                            env.emit(level, &patched)
                                .map_err(|_| AuditError::ShadowFull)?;
                            if level == Level::First {
                                b1.addr = b1.addr.wrapping_add(step);
                            }
                            if child == Level::First {
                                v1.reset();
                                v1.enter(target)?;
                                b1 = target;
                            } else {
                                v2.reset();
                                v2.enter(target)?;
                                b2 = target;
                            }
                        }
                        None if level == Level::First => {
                            v1.enter(target)?;
                            b1 = target;
                        }
                        None => {
                            v2.enter(target)?;
                            b2 = target;
                        }
                    }
                    if level == Level::Ring {
                        off = ((off as u64 + step) % size as u64) as u32;
                        remaining -= step as u32;
                    }
                    level = call_into.unwrap_or(level);
                    continue;
                }
                _ => w.emit(env, level, src, n)?,
            }
            // Advance the cursor of the level the command came from.
            match (cmd, level) {
                (Command::BatchEnd, _) => {}
                (_, Level::Ring) => {
                    off = ((off as u64 + step) % size as u64) as u32;
                    remaining -= step as u32;
                }
                (_, Level::First) => b1.addr = b1.addr.wrapping_add(step),
                (_, Level::Second) => b2.addr = b2.addr.wrapping_add(step),
            }
        }
    })();
    match walked {
        Ok(sum) => {
            w.flush_run(env)?;
            env.flush().map_err(|_| AuditError::ShadowFull)?;
            Ok(sum)
        }
        // What was audited before the rejection is emitted first: if that
        // overflows the shadow, the per-command walker stopped there.
        Err(AuditError::Rejected(r)) => {
            w.flush_run(env)?;
            Err(AuditError::Rejected(r))
        }
        Err(AuditError::ShadowFull) => Err(AuditError::ShadowFull),
    }
}

/// An [`AuditEnv`] seen through a GM view: everything as `env` has it,
/// and [`AuditEnv::gm_view`] is `view`.
struct InView<'e, E: ?Sized> {
    env: &'e mut E,
    view: GmView,
}

impl<E: AuditEnv + ?Sized> AuditEnv for InView<'_, E> {
    fn engine(&self) -> EngineId {
        self.env.engine()
    }
    fn gm_allowed(&self, addr: Gma, len: u64) -> bool {
        self.env.gm_allowed(addr, len)
    }
    fn ppgtt_mapped(&self, addr: u64, len: u64) -> bool {
        self.env.ppgtt_mapped(addr, len)
    }
    fn read_dword(&mut self, space: Space, addr: u64) -> Option<u32> {
        self.env.read_dword(space, addr)
    }
    fn read_span(&mut self, space: Space, addr: u64, out: &mut [u8]) -> Option<()> {
        self.env.read_span(space, addr, out)
    }
    fn emit(&mut self, level: Level, dwords: &[u32]) -> Result<(), SinkFull> {
        self.env.emit(level, dwords)
    }
    fn next_addr(&self, level: Level) -> Gma {
        self.env.next_addr(level)
    }
    fn gm_view(&self) -> Option<GmView> {
        Some(self.view)
    }
    fn flush(&mut self) -> Result<(), SinkFull> {
        self.env.flush()
    }
}

/// [`audit_ring`] for a guest whose GM view is `view` (not its placement):
/// every GGTT address of the commands is translated first
/// ([`translate_command`]).  Its own instance of the walker, out of line:
/// the identity walker (an environment without a view) stays the one the
/// paper's no-translation argument describes.
#[inline(never)]
pub fn audit_ring_in_view<E: AuditEnv + ?Sized>(
    env: &mut E,
    view: GmView,
    ring: RingWindow,
    head: u32,
    tail: u32,
    limits: &Limits,
) -> Result<AuditSummary, AuditError> {
    audit_ring(&mut InView { env, view }, ring, head, tail, limits)
}

/// The walker as it was before the read-ahead window ([`FETCH_DWORDS`]):
/// every dword read alone through [`AuditEnv::read_dword`].  Kept as the
/// oracle of the differential tests and of the fuzz target: both walkers
/// must accept, reject (with the same reason) and emit exactly alike.
#[cfg(any(test, feature = "fakes"))]
pub mod reference {
    use super::*;

    fn fetch_batch<E: AuditEnv + ?Sized>(
        env: &mut E,
        c: Cursor,
        buf: &mut [u32; MAX_CMD_DWORDS],
    ) -> Result<(Opcode, usize), Reject> {
        let fetch_ok = |env: &E, len: u64| match c.space {
            Space::Ggtt => env.gm_allowed(c.addr, len),
            Space::Ppgtt => env.engine() == EngineId::Rcs && env.ppgtt_mapped(c.addr, len),
        };
        let denied = match c.space {
            Space::Ggtt => Reject::AddressNotAllowed,
            Space::Ppgtt => Reject::PpgttNotMapped,
        };
        if !fetch_ok(env, 4) {
            return Err(denied);
        }
        let h = env.read_dword(c.space, c.addr).ok_or(denied)?;
        let (op, n) = decode(h)?;
        if !fetch_ok(env, 4 * n as u64) {
            return Err(denied);
        }
        buf[0] = h;
        for i in 1..n {
            let a = c.addr.checked_add(4 * i as u64).ok_or(denied)?;
            let v = env.read_dword(c.space, a).ok_or(denied)?;
            if let Some(s) = buf.get_mut(i) {
                *s = v;
            }
        }
        Ok((op, n))
    }

    /// Audit the ring range `[head, tail)` (byte offsets, wrapping at the ring
    /// size) and every batch buffer it reaches, emitting the audited commands
    /// into `env`'s shadow.  Commands are read exactly once: what is emitted is
    /// what was audited.  Batch buffer starts are emitted rewritten to the shadow
    /// copy (GGTT, level preserved); chains within a level are flattened (the
    /// target is copied in place of the chaining BB_START, which executes the
    /// same).
    pub fn audit_ring<E: AuditEnv + ?Sized>(
        env: &mut E,
        ring: RingWindow,
        head: u32,
        tail: u32,
        limits: &Limits,
    ) -> Result<AuditSummary, AuditError> {
        let size = ring.size;
        if size == 0
            || size as u64 % PAGE_SIZE != 0
            || ring.start % PAGE_SIZE != 0
            || !env.gm_allowed(ring.start, size as u64)
        {
            return Err(Reject::BadRing.into());
        }
        if head % 4 != 0 || tail % 8 != 0 || head >= size || tail >= size {
            return Err(Reject::BadTail.into());
        }
        let mut sum = AuditSummary::default();
        let mut remaining = if tail >= head {
            tail - head
        } else {
            size - head + tail
        };
        let mut off = head;
        let mut buf = [0u32; MAX_CMD_DWORDS];
        let mut level = Level::Ring;
        let mut b1 = Cursor {
            space: Space::Ggtt,
            addr: 0,
        };
        let mut b2 = b1;
        let mut v1 = Visited::new();
        let mut v2 = Visited::new();
        let view = env.gm_view();
        loop {
            if level == Level::Ring && remaining == 0 {
                return Ok(sum);
            }
            if sum.commands >= limits.max_commands {
                return Err(Reject::Runaway.into());
            }
            let (op, n) = match level {
                Level::Ring => {
                    let rd = |env: &mut E, i: u32| {
                        let o = (off as u64 + 4 * i as u64) % size as u64;
                        env.read_dword(Space::Ggtt, ring.start + o)
                            .ok_or(Reject::BadRing)
                    };
                    let h = rd(env, 0)?;
                    let (op, n) = decode(h)?;
                    if 4 * n as u32 > remaining {
                        return Err(Reject::Truncated.into());
                    }
                    buf[0] = h;
                    for i in 1..n {
                        let v = rd(env, i as u32)?;
                        if let Some(s) = buf.get_mut(i) {
                            *s = v;
                        }
                    }
                    (op, n)
                }
                Level::First => fetch_batch(env, b1, &mut buf)?,
                Level::Second => fetch_batch(env, b2, &mut buf)?,
            };
            let mut cmd = parse(op, buf.get(..n).unwrap_or(&[]))?;
            // (A command on the wrong engine is refused as such by the audit.)
            if let Some(v) = view.as_ref().filter(|_| op.runs_on(env.engine())) {
                cmd = translated(v, op, &cmd, buf.get_mut(..n).unwrap_or(&mut []))?;
            }
            let d = buf.get(..n).unwrap_or(&[]);
            audit_command(env, op, &cmd, d)?;
            sum.commands += 1;
            sum.dwords += n as u64;
            let step = 4 * n as u64;
            // Control flow and emission.
            match (cmd, level) {
                (Command::BatchEnd, Level::Ring) => return Err(Reject::BatchEndInRing.into()),
                (Command::BatchEnd, Level::First) => {
                    env.emit(level, d).map_err(|_| AuditError::ShadowFull)?;
                    level = Level::Ring;
                }
                (Command::BatchEnd, Level::Second) => {
                    env.emit(level, d).map_err(|_| AuditError::ShadowFull)?;
                    level = Level::First;
                }
                (
                    Command::BatchStart {
                        space,
                        addr,
                        second_level,
                    },
                    _,
                ) => {
                    let target = Cursor { space, addr };
                    sum.batches += 1;
                    let call_into = match (level, second_level) {
                        (Level::Ring, false) => Some(Level::First),
                        (Level::Ring, true) => return Err(Reject::ChainTooDeep.into()),
                        (Level::First, true) => Some(Level::Second),
                        (Level::Second, true) => return Err(Reject::ChainTooDeep.into()),
                        (_, false) => None,
                    };
                    match call_into {
                        Some(child) => {
                            let shadow = env.next_addr(child);
                            let hdr = d[0] & !MI_BATCH_PPGTT;
                            let patched = [hdr, shadow as u32, ((shadow >> 32) & 0xffff) as u32];
                            env.emit(level, &patched)
                                .map_err(|_| AuditError::ShadowFull)?;
                            if level == Level::First {
                                b1.addr = b1.addr.wrapping_add(step);
                            }
                            if child == Level::First {
                                v1.reset();
                                v1.enter(target)?;
                                b1 = target;
                            } else {
                                v2.reset();
                                v2.enter(target)?;
                                b2 = target;
                            }
                        }
                        None if level == Level::First => {
                            v1.enter(target)?;
                            b1 = target;
                        }
                        None => {
                            v2.enter(target)?;
                            b2 = target;
                        }
                    }
                    if level == Level::Ring {
                        off = ((off as u64 + step) % size as u64) as u32;
                        remaining -= step as u32;
                    }
                    level = call_into.unwrap_or(level);
                    continue;
                }
                _ => env.emit(level, d).map_err(|_| AuditError::ShadowFull)?,
            }
            // Advance the cursor of the level the command came from.
            match (cmd, level) {
                (Command::BatchEnd, _) => {}
                (_, Level::Ring) => {
                    off = ((off as u64 + step) % size as u64) as u32;
                    remaining -= step as u32;
                }
                (_, Level::First) => b1.addr = b1.addr.wrapping_add(step),
                (_, Level::Second) => b2.addr = b2.addr.wrapping_add(step),
            }
        }
    }
}

/// Encoders for the command set (guest-side helpers, test streams, fuzz seeds).
pub mod encode {
    use super::*;

    fn lo(a: u64) -> u32 {
        a as u32
    }
    fn hi(a: u64) -> u32 {
        ((a >> 32) & 0xffff) as u32
    }
    /// MI_STORE_DATA_IMM of one dword.
    pub fn sdi(space: Space, addr: u64, data: u32) -> [u32; 4] {
        let g = if space == Space::Ggtt { MI_USE_GGTT } else { 0 };
        [MI_STORE_DATA_IMM | g | 2, lo(addr), hi(addr), data]
    }
    /// MI_STORE_DATA_IMM of a qword.
    pub fn sdi_qw(space: Space, addr: u64, data: [u32; 2]) -> [u32; 5] {
        let g = if space == Space::Ggtt { MI_USE_GGTT } else { 0 };
        [
            MI_STORE_DATA_IMM | g | 3,
            lo(addr),
            hi(addr),
            data[0],
            data[1],
        ]
    }
    /// MI_LOAD_REGISTER_IMM of one register.
    pub fn lri(reg: u32, value: u32) -> [u32; 3] {
        [MI_LOAD_REGISTER_IMM | 1, reg, value]
    }
    /// MI_FLUSH_DW with a post-sync dword store.
    pub fn flush_dw_store(space: Space, addr: u64, data: u32, notify: bool) -> [u32; 4] {
        let g = if space == Space::Ggtt {
            MI_FLUSH_DW_USE_GTT
        } else {
            0
        };
        let n = if notify { MI_FLUSH_DW_NOTIFY } else { 0 };
        [
            MI_FLUSH_DW | MI_FLUSH_DW_OP_STOREDW | n | 2,
            lo(addr) | g,
            hi(addr),
            data,
        ]
    }
    /// MI_BATCH_BUFFER_START.
    pub fn bb_start(space: Space, addr: u64, second_level: bool) -> [u32; 3] {
        let p = if space == Space::Ppgtt {
            MI_BATCH_PPGTT
        } else {
            0
        };
        let s = if second_level {
            MI_BATCH_SECOND_LEVEL
        } else {
            0
        };
        [MI_BATCH_BUFFER_START | p | s | 1, lo(addr), hi(addr)]
    }
    /// XY_COLOR_BLT, 32 bpp, rectangle `[x1, x2) × [y1, y2)`.
    pub fn color_blt(
        dst: u64,
        pitch: u32,
        (x1, y1, x2, y2): (u32, u32, u32, u32),
        color: u32,
    ) -> [u32; 7] {
        [
            XY_COLOR_BLT | BLT_WRITE_RGBA | 5,
            BLT_DEPTH_32 | BLT_ROP_COLOR_COPY | (pitch & 0xffff),
            (y1 << 16) | x1,
            (y2 << 16) | x2,
            lo(dst),
            hi(dst),
            color,
        ]
    }
    /// XY_SRC_COPY_BLT, 32 bpp.
    pub fn src_copy_blt(
        dst: u64,
        dst_pitch: u32,
        (x1, y1, x2, y2): (u32, u32, u32, u32),
        src: u64,
        src_pitch: u32,
        (sx, sy): (u32, u32),
    ) -> [u32; 10] {
        [
            XY_SRC_COPY_BLT | BLT_WRITE_RGBA | 8,
            BLT_DEPTH_32 | BLT_ROP_SRC_COPY | (dst_pitch & 0xffff),
            (y1 << 16) | x1,
            (y2 << 16) | x2,
            lo(dst),
            hi(dst),
            (sy << 16) | sx,
            src_pitch & 0xffff,
            lo(src),
            hi(src),
        ]
    }
    /// PIPE_CONTROL with a post-sync qword write.
    pub fn pipe_control_qw(space: Space, addr: u64, data: [u32; 2]) -> [u32; 6] {
        let g = if space == Space::Ggtt {
            PIPE_CONTROL_GLOBAL_GTT
        } else {
            0
        };
        [
            PIPE_CONTROL | 4,
            PIPE_CONTROL_QW_WRITE | g,
            lo(addr),
            hi(addr),
            data[0],
            data[1],
        ]
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::collections::BTreeMap;
    use std::vec;
    use std::vec::Vec;

    use super::encode::*;
    use super::*;
    use crate_mem::GmRange;

    use super::super::mem as crate_mem;

    const RING: u64 = 0;
    const RING_SIZE: u32 = 4 * 4096;
    const BB: u64 = 0x10000;
    const DATA: u64 = 0x20000;
    const GM: GmRange = GmRange::new(0, 0x40000);
    const HIGH: GmRange = GmRange::new(0x100000, 0x10000);
    const SHADOW: [u64; 3] = [0x8000_0000, 0x9000_0000, 0xa000_0000];

    #[derive(Clone)]
    struct Env {
        engine: EngineId,
        ggtt: BTreeMap<u64, u32>,
        ppgtt: BTreeMap<u64, u32>,
        pp_mapped: Vec<(u64, u64)>,
        ranges: Vec<GmRange>,
        out: [Vec<u32>; 3],
        cap: usize,
        /// GGTT pages whose reads fail (an unmapped page).
        holes: Vec<u64>,
        /// The guest rewrites the GGTT dword at `.0` with `.1` right after
        /// the auditor first read it.
        flip: Option<(u64, u32)>,
        /// The guest's GM view, when it is not the placement.
        view: Option<GmView>,
        /// How often the walker asked `gm_allowed` (a policy check).
        asked: core::cell::Cell<u32>,
    }

    impl Env {
        fn new(engine: EngineId) -> Self {
            Self {
                engine,
                ggtt: BTreeMap::new(),
                ppgtt: BTreeMap::new(),
                pp_mapped: vec![],
                ranges: vec![GM, HIGH],
                out: [vec![], vec![], vec![]],
                cap: usize::MAX,
                holes: vec![],
                flip: None,
                view: None,
                asked: core::cell::Cell::new(0),
            }
        }
        fn put(&mut self, addr: u64, d: &[u32]) {
            for (i, w) in d.iter().enumerate() {
                self.ggtt.insert(addr + 4 * i as u64, *w);
            }
        }
        /// Submit `cmds` as the ring range [0, len).
        fn run(&mut self, cmds: &[u32]) -> Result<AuditSummary, AuditError> {
            self.run_limits(cmds, &Limits::DEFAULT)
        }
        fn run_limits(&mut self, cmds: &[u32], l: &Limits) -> Result<AuditSummary, AuditError> {
            let mut c = cmds.to_vec();
            if c.len() % 2 == 1 {
                c.push(MI_NOOP);
            }
            self.put(RING, &c);
            audit_ring(
                self,
                RingWindow {
                    start: RING,
                    size: RING_SIZE,
                },
                0,
                4 * c.len() as u32,
                l,
            )
        }
    }

    impl AuditEnv for Env {
        fn engine(&self) -> EngineId {
            self.engine
        }
        fn gm_allowed(&self, addr: Gma, len: u64) -> bool {
            self.asked.set(self.asked.get() + 1);
            self.ranges.iter().any(|r| r.contains(addr, len))
        }
        fn ppgtt_mapped(&self, addr: u64, len: u64) -> bool {
            self.pp_mapped
                .iter()
                .any(|&(b, l)| GmRange::new(b, l).contains(addr, len))
        }
        fn read_dword(&mut self, space: Space, addr: u64) -> Option<u32> {
            let m = if space == Space::Ggtt {
                if self.holes.contains(&(addr & !(PAGE_SIZE - 1))) {
                    return None;
                }
                &self.ggtt
            } else {
                &self.ppgtt
            };
            let v = m.get(&addr).copied().unwrap_or(0);
            if space == Space::Ggtt && self.flip.is_some_and(|(a, _)| a == addr) {
                if let Some((a, w)) = self.flip.take() {
                    self.ggtt.insert(a, w);
                }
            }
            Some(v)
        }
        fn emit(&mut self, level: Level, dwords: &[u32]) -> Result<(), SinkFull> {
            if self.out.iter().map(|o| o.len()).sum::<usize>() + dwords.len() > self.cap {
                return Err(SinkFull);
            }
            self.out[level as usize].extend_from_slice(dwords);
            Ok(())
        }
        fn next_addr(&self, level: Level) -> Gma {
            SHADOW[level as usize] + 4 * self.out[level as usize].len() as u64
        }
        fn gm_view(&self) -> Option<GmView> {
            self.view
        }
    }

    fn rej(r: Reject) -> Result<AuditSummary, AuditError> {
        Err(AuditError::Rejected(r))
    }
    fn cat(parts: &[&[u32]]) -> Vec<u32> {
        parts.iter().flat_map(|p| p.iter().copied()).collect()
    }
    fn ok(r: Result<AuditSummary, AuditError>) -> AuditSummary {
        r.expect("accepted")
    }

    #[test]
    fn decode_lengths() {
        assert_eq!(decode(MI_NOOP | 0x1234), Ok((Opcode::Noop, 1)));
        assert_eq!(decode(MI_STORE_DATA_IMM | 2), Ok((Opcode::StoreDataImm, 4)));
        assert_eq!(decode(MI_STORE_DATA_IMM | 3), Ok((Opcode::StoreDataImm, 5)));
        assert_eq!(decode(MI_STORE_DATA_IMM | 4), Err(Reject::BadLength));
        assert_eq!(
            decode(MI_LOAD_REGISTER_IMM | 1),
            Ok((Opcode::LoadRegisterImm, 3))
        );
        assert_eq!(decode(MI_LOAD_REGISTER_IMM | 2), Err(Reject::BadLength));
        assert_eq!(
            decode(MI_LOAD_REGISTER_IMM | 63),
            Ok((Opcode::LoadRegisterImm, 65))
        );
        assert_eq!(decode(MI_LOAD_REGISTER_IMM | 65), Err(Reject::BadLength));
        assert_eq!(decode(MI_BATCH_BUFFER_START | 2), Err(Reject::BadLength));
        assert_eq!(decode(XY_COLOR_BLT | 4), Ok((Opcode::XyColorBlt, 6)));
        assert_eq!(decode(XY_COLOR_BLT | 6), Err(Reject::BadLength));
        assert_eq!(decode(XY_SRC_COPY_BLT | 6), Ok((Opcode::XySrcCopyBlt, 8)));
        assert_eq!(decode(XY_SRC_COPY_BLT | 7), Err(Reject::BadLength));
        assert_eq!(decode(PIPE_CONTROL | 4), Ok((Opcode::PipeControl, 6)));
        assert_eq!(decode(PIPE_CONTROL | 3), Err(Reject::BadLength));
        assert_eq!(decode(0x1f << 23), Err(Reject::UnknownOpcode));
        assert_eq!(decode(1 << 29), Err(Reject::UnknownOpcode));
        assert_eq!(decode((2 << 29) | (0x51 << 22)), Err(Reject::UnknownOpcode));
        assert_eq!(
            decode((3 << 29) | (3 << 27) | (1 << 24)),
            Err(Reject::UnknownOpcode)
        );
        assert_eq!(decode(7 << 29), Err(Reject::UnknownOpcode));
    }

    /// One well-formed instance of every command of the table.
    fn one_of_each() -> Vec<Vec<u32>> {
        vec![
            vec![MI_NOOP],
            vec![MI_USER_INTERRUPT],
            vec![MI_BATCH_BUFFER_END],
            sdi(Space::Ggtt, DATA, 1).to_vec(),
            lri(0x2600, 1).to_vec(),
            flush_dw_store(Space::Ggtt, DATA, 1, false).to_vec(),
            bb_start(Space::Ggtt, BB, false).to_vec(),
            color_blt(DATA, 64, (0, 0, 4, 4), 1).to_vec(),
            src_copy_blt(DATA, 64, (0, 0, 4, 4), HIGH.base, 64, (0, 0)).to_vec(),
            pipe_control_qw(Space::Ggtt, DATA, [1, 2]).to_vec(),
        ]
    }

    #[test]
    fn command_table_is_consistent() {
        let all = one_of_each();
        assert_eq!(all.len(), COMMANDS.len());
        for (i, (c, spec)) in all.iter().zip(COMMANDS).enumerate() {
            assert_eq!(spec.op as usize, i);
            assert_eq!(spec_of(c[0]), Some(spec), "{}", spec.name);
            assert_eq!(spec_of(spec.header), Some(spec), "{}", spec.name);
            let (op, n) = decode(c[0]).unwrap();
            assert_eq!((op, n), (spec.op, c.len()), "{}", spec.name);
            // The row's audit class is the one its command parses to.
            let class = match parse(op, c).unwrap() {
                Command::Noop
                | Command::UserInterrupt
                | Command::BatchEnd
                | Command::BatchStart { .. } => AuditClass::Control,
                Command::StoreData { .. }
                | Command::FlushDw { .. }
                | Command::PipeControl { .. } => AuditClass::Write,
                Command::LoadRegs { .. } => AuditClass::Registers,
                Command::ColorBlt { .. } | Command::SrcCopyBlt { .. } => AuditClass::Blit,
            };
            assert_eq!(class, spec.audit, "{}", spec.name);
            // The auditor refuses it exactly on the engines the row leaves out.
            for e in EngineId::ALL {
                let env = Env::new(e);
                let got = audit_command(&env, op, &parse(op, c).unwrap(), c);
                assert_eq!(
                    got == Err(Reject::WrongEngine),
                    !spec.engines.has(e),
                    "{} on {e:?}",
                    spec.name
                );
                if op == Opcode::LoadRegisterImm && e == EngineId::Bcs {
                    continue; // its register is render's
                }
                assert_eq!(got.is_ok(), spec.engines.has(e), "{} on {e:?}", spec.name);
            }
            // Every length the rule allows decodes, every other one is refused.
            for low in 0..=0xffu32 {
                let h = (spec.header & !spec.len.field) | (low & spec.len.field);
                let len = spec.len.of(h);
                let want = if spec.len.allows(len) {
                    Ok((op, len))
                } else {
                    Err(Reject::BadLength)
                };
                assert_eq!(decode(h), want, "{} {h:#x}", spec.name);
            }
        }
        assert_eq!(Opcode::PipeControl.spec().engines, Engines::RCS);
        assert_eq!(Opcode::XyColorBlt.spec().engines, Engines::BCS);
        assert_eq!(
            COMMANDS
                .iter()
                .filter(|c| c.engines == Engines::ANY)
                .count(),
            7
        );
    }

    #[test]
    fn accepts_and_emits_ring_commands_in_place() {
        let mut e = Env::new(EngineId::Rcs);
        let s = cat(&[
            &sdi(Space::Ggtt, DATA, 1),
            &[MI_USER_INTERRUPT],
            &lri(0x2600, 5),
            &pipe_control_qw(Space::Ggtt, HIGH.base, [1, 2]),
        ]);
        assert_eq!(s.len() % 2, 0);
        let sum = ok(e.run(&s));
        assert_eq!(sum.commands, 4);
        assert_eq!(e.out[0], s);
        assert_eq!(sum.dwords, s.len() as u64);
    }

    #[test]
    fn rejects_unknown_opcode_and_bad_length() {
        let mut e = Env::new(EngineId::Rcs);
        assert_eq!(e.run(&[0x1f << 23]), rej(Reject::UnknownOpcode));
        assert_eq!(
            e.run(&[
                MI_STORE_DATA_IMM | MI_USE_GGTT | 5,
                DATA as u32,
                0,
                0,
                0,
                0,
                0
            ]),
            rej(Reject::BadLength)
        );
    }

    #[test]
    fn rejects_wrong_engine() {
        assert_eq!(
            Env::new(EngineId::Rcs).run(&color_blt(DATA, 64, (0, 0, 1, 1), 0)),
            rej(Reject::WrongEngine)
        );
        assert_eq!(
            Env::new(EngineId::Rcs).run(&src_copy_blt(DATA, 64, (0, 0, 1, 1), DATA, 64, (0, 0))),
            rej(Reject::WrongEngine)
        );
        assert_eq!(
            Env::new(EngineId::Bcs).run(&pipe_control_qw(Space::Ggtt, DATA, [0, 0])),
            rej(Reject::WrongEngine)
        );
    }

    #[test]
    fn rejects_unsupported_modes() {
        let b = |f: &dyn Fn(&mut [u32])| {
            let mut c = color_blt(DATA, 64, (0, 0, 1, 1), 0);
            f(&mut c);
            Env::new(EngineId::Bcs).run(&c)
        };
        assert_eq!(b(&|c| c[0] |= BLT_DST_TILED), rej(Reject::UnsupportedMode));
        assert_eq!(
            b(&|c| c[1] = (c[1] & !(0xff << 16)) | BLT_ROP_SRC_COPY),
            rej(Reject::UnsupportedMode)
        );
        assert_eq!(
            b(&|c| c[1] |= 0x8000),
            rej(Reject::UnsupportedMode),
            "negative pitch"
        );
        assert_eq!(
            b(&|c| c[0] &= !(1 << 21)),
            rej(Reject::UnsupportedMode),
            "32 bpp without alpha"
        );
        let mut c = src_copy_blt(DATA, 64, (0, 0, 1, 1), DATA + 64, 64, (0, 0));
        c[0] |= BLT_SRC_TILED;
        assert_eq!(
            Env::new(EngineId::Bcs).run(&c),
            rej(Reject::UnsupportedMode)
        );
        let mut c = flush_dw_store(Space::Ggtt, DATA, 0, false);
        c[0] |= MI_FLUSH_DW_STORE_INDEX;
        assert_eq!(
            Env::new(EngineId::Bcs).run(&c),
            rej(Reject::UnsupportedMode)
        );
        let mut c = flush_dw_store(Space::Ggtt, DATA, 0, false);
        c[0] = (c[0] & !(3 << 14)) | (2 << 14);
        assert_eq!(
            Env::new(EngineId::Bcs).run(&c),
            rej(Reject::UnsupportedMode),
            "depth-count post-sync"
        );
        let mut c = pipe_control_qw(Space::Ggtt, DATA, [0, 0]);
        c[1] |= PIPE_CONTROL_MMIO_WRITE;
        assert_eq!(
            Env::new(EngineId::Rcs).run(&c),
            rej(Reject::UnsupportedMode)
        );
        let mut c = pipe_control_qw(Space::Ggtt, DATA, [0, 0]);
        c[1] |= PIPE_CONTROL_STORE_DATA_INDEX;
        assert_eq!(
            Env::new(EngineId::Rcs).run(&c),
            rej(Reject::UnsupportedMode)
        );
    }

    /// The benchmark switch (`Limits::checks` false) skips the policy
    /// checks only: a store outside the vGPU passes, a malformed command is
    /// still refused and the shadow still gets the audited copy.
    #[test]
    fn checks_off_skips_only_the_policy() {
        let off = Limits {
            checks: false,
            ..Limits::DEFAULT
        };
        let outside = sdi(Space::Ggtt, GM.end(), 0);
        let mut e = Env::new(EngineId::Bcs);
        assert_eq!(e.run(&outside), rej(Reject::AddressNotAllowed));
        let mut e = Env::new(EngineId::Bcs);
        assert!(e.run_limits(&outside, &off).is_ok());
        assert!(e.out[0].starts_with(&outside), "shadowed: {:x?}", e.out[0]);
        let mut e = Env::new(EngineId::Bcs);
        assert!(e.run_limits(&[0xE000_0000], &off).is_err(), "undecodable");
        // Allowed commands: the straight runs ask the policy with the
        // checks on and never with them off (else the switch would measure
        // nothing: the fast path would still audit).
        let inside: Vec<u32> = (0..8)
            .flat_map(|i| sdi(Space::Ggtt, GM.base + 64 * i, i as u32))
            .collect();
        let mut on = Env::new(EngineId::Bcs);
        ok(on.run(&inside));
        assert!(on.asked.get() >= 8, "audited: {} asks", on.asked.get());
        // What a submission asks whatever it holds (the ring's placement).
        let mut noops = Env::new(EngineId::Bcs);
        ok(noops.run_limits(&vec![MI_NOOP; inside.len()], &off));
        let mut e = Env::new(EngineId::Bcs);
        let s = ok(e.run_limits(&inside, &off));
        assert_eq!(
            e.asked.get(),
            noops.asked.get(),
            "no command's policy asked with the checks off"
        );
        assert!(on.asked.get() >= noops.asked.get() + 8);
        assert_eq!(e.out, on.out, "the same shadow");
        assert_eq!(s.commands, 8);
    }

    #[test]
    fn rejects_addresses_outside_the_vgpu() {
        let mut e = Env::new(EngineId::Bcs);
        let end = GM.end();
        assert!(e.run(&sdi(Space::Ggtt, end - 4, 0)).is_ok());
        assert_eq!(
            e.run(&sdi(Space::Ggtt, end, 0)),
            rej(Reject::AddressNotAllowed)
        );
        assert_eq!(
            e.run(&sdi_qw(Space::Ggtt, end - 4, [0, 0])),
            rej(Reject::AddressNotAllowed),
            "straddles the end"
        );
        assert_eq!(
            e.run(&sdi(Space::Ggtt, (1 << 32) | DATA, 0)),
            rej(Reject::AddressNotAllowed),
            "high dword"
        );
        assert_eq!(
            e.run(&flush_dw_store(Space::Ggtt, end, 0, false)),
            rej(Reject::AddressNotAllowed)
        );
        // MI_FLUSH_DW addresses are qword-aligned (bits 2:0 masked): a qword
        // timestamp at end - 4 lands at end - 8 and fits.
        let mut ts = flush_dw_store(Space::Ggtt, end - 4, 0, false);
        ts[0] |= MI_FLUSH_DW_OP_TIMESTAMP;
        let (op, n) = decode(ts[0]).unwrap();
        assert_eq!(
            parse(op, &ts[..n]).unwrap(),
            Command::FlushDw {
                post: PostSync::Timestamp {
                    space: Space::Ggtt,
                    addr: end - 8
                },
                notify: false
            }
        );
        assert!(e.run(&ts).is_ok());
        let mut ts = flush_dw_store(Space::Ggtt, end, 0, false);
        ts[0] |= MI_FLUSH_DW_OP_TIMESTAMP;
        assert_eq!(e.run(&ts), rej(Reject::AddressNotAllowed));
        assert_eq!(
            Env::new(EngineId::Rcs)
                .run(&pipe_control_qw(Space::Ggtt, end - 8, [0, 0]))
                .map(|_| ()),
            Ok(())
        );
        assert_eq!(
            Env::new(EngineId::Rcs).run(&pipe_control_qw(Space::Ggtt, end, [0, 0])),
            rej(Reject::AddressNotAllowed)
        );
    }

    #[test]
    fn blits_check_both_ends_of_the_rectangle() {
        let mut e = Env::new(EngineId::Bcs);
        // 16 rows of 256 bytes pitch, 8 pixels wide, ending exactly at the end of HIGH.
        let base = HIGH.end() - 15 * 256 - 32;
        assert!(e.run(&color_blt(base, 256, (0, 0, 8, 16), 1)).is_ok());
        assert_eq!(
            e.run(&color_blt(base, 256, (0, 0, 9, 16), 1)),
            rej(Reject::AddressNotAllowed),
            "last pixel one past"
        );
        assert_eq!(
            e.run(&color_blt(base, 256, (0, 0, 8, 17), 1)),
            rej(Reject::AddressNotAllowed),
            "one more row"
        );
        assert_eq!(
            e.run(&color_blt(HIGH.base - 4, 256, (1, 0, 8, 2), 1))
                .map(|_| ()),
            Ok(()),
            "x offset moves first byte in"
        );
        assert_eq!(
            e.run(&color_blt(HIGH.base - 4, 256, (0, 0, 8, 2), 1)),
            rej(Reject::AddressNotAllowed),
            "first byte before"
        );
        // Huge coordinates and pitch: stays far outside, no overflow.
        assert_eq!(
            e.run(&color_blt(
                0xffff_fff0,
                0x7fff,
                (0xffff, 0xfff0, 0xffff, 0xffff),
                1
            ))
            .map(|_| ()),
            Ok(()),
            "empty: w = 0"
        );
        assert_eq!(
            e.run(&color_blt(
                0xffff_0000_0000,
                0x7fff,
                (0, 0, 0x1fff, 0x7fff),
                1
            )),
            rej(Reject::AddressNotAllowed)
        );
        assert_eq!(
            e.run(&color_blt(
                0xffff_0000_0000,
                0x7fff,
                (0, 0, 0xffff, 0xffff),
                1
            )),
            rej(Reject::BadGeometry),
            "rows overlap"
        );
        assert_eq!(
            e.run(&color_blt(DATA, 0x7fff, (0, 0, 4, 0x100), 1)),
            rej(Reject::AddressNotAllowed),
            "pitch × height"
        );
        // Copies check the source too.
        assert!(e
            .run(&src_copy_blt(DATA, 64, (0, 0, 4, 4), HIGH.base, 64, (0, 0)))
            .is_ok());
        assert_eq!(
            e.run(&src_copy_blt(DATA, 64, (0, 0, 4, 4), 0x50000, 64, (0, 0))),
            rej(Reject::AddressNotAllowed)
        );
        assert_eq!(
            e.run(&src_copy_blt(
                DATA,
                64,
                (0, 0, 4, 4),
                HIGH.base,
                64,
                (0, 0x3ff)
            )),
            rej(Reject::AddressNotAllowed)
        );
        // A rectangle spanning two separate ranges is refused even if both are the vGPU's.
        let mut e2 = Env::new(EngineId::Bcs);
        e2.ranges = vec![GmRange::new(0, 0x8000), GmRange::new(0x8000, 0x1000)];
        assert!(e2.run(&color_blt(0x7e00, 256, (0, 0, 4, 2), 1)).is_ok());
        assert_eq!(
            e2.run(&color_blt(0x7f00, 256, (0, 0, 4, 2), 1)),
            rej(Reject::AddressNotAllowed)
        );
    }

    /// Review finding 1: the span of a blit with overlapping rows lies about
    /// its work (pitch 0: 65535 rows written over one row's bytes).
    #[test]
    fn blits_with_degenerate_geometry_are_rejected() {
        let mut e = Env::new(EngineId::Bcs);
        // The finding's blit: pitch 0, 65535 × 65535 at 32 bpp, whose span
        // (one 256 KiB row) fits the vGPU but that writes 17 GB.
        let big = GmRange::new(0x100_0000, 0x100_0000);
        e.ranges.push(big);
        assert_eq!(
            e.run(&color_blt(big.base, 0, (0, 0, 0xffff, 0xffff), 1)),
            rej(Reject::BadGeometry)
        );
        // Pitch 0 and pitch one byte short of a row, blit and copy.
        assert_eq!(
            e.run(&color_blt(DATA, 0, (0, 0, 4, 2), 1)),
            rej(Reject::BadGeometry)
        );
        assert_eq!(
            e.run(&color_blt(DATA, 15, (0, 0, 4, 2), 1)),
            rej(Reject::BadGeometry)
        );
        assert!(
            e.run(&color_blt(DATA, 16, (0, 0, 4, 2), 1)).is_ok(),
            "pitch = row bytes"
        );
        assert_eq!(
            e.run(&src_copy_blt(DATA, 64, (0, 0, 4, 4), HIGH.base, 8, (0, 0))),
            rej(Reject::BadGeometry),
            "source rows overlap"
        );
        assert_eq!(
            e.run(&src_copy_blt(DATA, 0, (0, 0, 4, 4), HIGH.base, 64, (0, 0))),
            rej(Reject::BadGeometry),
            "destination rows overlap"
        );
        assert!(e
            .run(&src_copy_blt(DATA, 16, (0, 0, 4, 4), HIGH.base, 16, (0, 0)))
            .is_ok());
        // One row: the pitch is never used, the span is the work.
        assert!(e.run(&color_blt(DATA, 0, (0, 7, 64, 8), 1)).is_ok());
        // Per-surface size cap.
        let s = Surface {
            base: 0,
            pitch: 0x4000,
            x: 0,
            y: 0,
        };
        assert!(
            s.geometry_ok(0x1000, 0xffff, 4),
            "16 KiB rows: just under 1 GiB"
        );
        assert!(
            !Surface { pitch: 0x7ffc, ..s }.geometry_ok(0x1fff, 0xffff, 4),
            "> MAX_BLIT_BYTES"
        );
        assert!(Surface { pitch: 0x7ffc, ..s }.geometry_ok(0x1fff, 0x8000, 4));
        // Counted as their own class.
        let mut c = RejectCounters::new();
        c.record(Reject::BadGeometry);
        assert_eq!(c.get(Reject::BadGeometry), 1);
        assert_eq!(
            Reject::ALL[Reject::BadGeometry.index()],
            Reject::BadGeometry
        );
    }

    #[test]
    fn ppgtt_addresses_must_be_mapped_and_render_only() {
        let mut e = Env::new(EngineId::Rcs);
        e.pp_mapped.push((0x1000, 0x1000));
        assert!(e.run(&sdi(Space::Ppgtt, 0x1ffc, 0)).is_ok());
        assert_eq!(
            e.run(&sdi_qw(Space::Ppgtt, 0x1ffc, [0, 0])),
            rej(Reject::PpgttNotMapped)
        );
        assert_eq!(
            e.run(&pipe_control_qw(Space::Ppgtt, 0x3000, [0, 0])),
            rej(Reject::PpgttNotMapped)
        );
        let mut b = Env::new(EngineId::Bcs);
        b.pp_mapped.push((0x1000, 0x1000));
        assert_eq!(
            b.run(&sdi(Space::Ppgtt, 0x1000, 0)),
            rej(Reject::PpgttNotMapped),
            "blitter has no PPGTT"
        );
        // A PPGTT batch: fetched from PPGTT, must be mapped.
        e.ppgtt.insert(0x1000, MI_BATCH_BUFFER_END);
        assert!(e.run(&bb_start(Space::Ppgtt, 0x1000, false)).is_ok());
        assert_eq!(
            e.run(&bb_start(Space::Ppgtt, 0x5000, false)),
            rej(Reject::PpgttNotMapped)
        );
    }

    #[test]
    fn rejects_lri_outside_the_whitelist() {
        let mut e = Env::new(EngineId::Rcs);
        assert!(e.run(&lri(0x2600, 1)).is_ok());
        assert!(e.run(&lri(0x2430, 1)).is_ok());
        for reg in [
            0x2034, 0x2030, 0x941C, 0x44018, 0x22600, 0x2680, 0x2601, 0x100000,
        ] {
            assert_eq!(
                e.run(&lri(reg, 1)),
                rej(Reject::RegisterNotAllowed),
                "reg {reg:#x}"
            );
        }
        // One bad register among several.
        assert_eq!(
            e.run(&[MI_LOAD_REGISTER_IMM | 3, 0x2600, 1, 0x2034, 2]),
            rej(Reject::RegisterNotAllowed)
        );
        assert!(Env::new(EngineId::Bcs).run(&lri(0x22600, 1)).is_ok());
        assert_eq!(
            Env::new(EngineId::Bcs).run(&lri(0x2400, 1)),
            rej(Reject::RegisterNotAllowed)
        );
    }

    #[test]
    fn batches_are_rewritten_to_shadows_and_chains_flattened() {
        let mut e = Env::new(EngineId::Rcs);
        let (b1, b2, b3) = (BB, BB + 0x100, HIGH.base);
        e.put(
            b1,
            &cat(&[
                &sdi(Space::Ggtt, DATA, 1),
                &bb_start(Space::Ggtt, b2, true),
                &bb_start(Space::Ggtt, b3, false),
            ]),
        );
        e.put(
            b2,
            &cat(&[&sdi(Space::Ggtt, DATA, 2), &[MI_BATCH_BUFFER_END]]),
        );
        e.put(
            b3,
            &cat(&[&sdi(Space::Ggtt, DATA, 3), &[MI_BATCH_BUFFER_END]]),
        );
        let sum = ok(e.run(&cat(&[
            &bb_start(Space::Ggtt, b1, false),
            &bb_start(Space::Ggtt, b1, false),
        ])));
        assert_eq!(sum.batches, 6);
        // Ring: two BB_STARTs to consecutive first-level copies.
        let l1_len = 4 + 3 + 4 + 1; // SDI, BB_START(2nd), [chain flattened] SDI, BBE
        assert_eq!(
            e.out[0],
            cat(&[
                &bb_start(Space::Ggtt, SHADOW[1], false),
                &bb_start(Space::Ggtt, SHADOW[1] + 4 * l1_len, false)
            ])
        );
        let l1 = cat(&[
            &sdi(Space::Ggtt, DATA, 1),
            &bb_start(Space::Ggtt, SHADOW[2], true),
            &sdi(Space::Ggtt, DATA, 3),
            &[MI_BATCH_BUFFER_END],
        ]);
        assert_eq!(&e.out[1][..l1_len as usize], &l1[..]);
        assert_eq!(e.out[1].len(), 2 * l1_len as usize);
        assert_eq!(
            e.out[2][..5],
            cat(&[&sdi(Space::Ggtt, DATA, 2), &[MI_BATCH_BUFFER_END]])[..]
        );
        // The second call's second-level copy is a fresh one.
        assert_eq!(e.out[1][l1_len as usize + 5], SHADOW[2] as u32 + 20);
        // PPGTT bit is cleared in the rewritten start (shadows are GGTT).
        let mut p = Env::new(EngineId::Rcs);
        p.pp_mapped.push((0, 0x1000));
        p.ppgtt.insert(0, MI_BATCH_BUFFER_END);
        ok(p.run(&bb_start(Space::Ppgtt, 0, false)));
        assert_eq!(p.out[0][..3], bb_start(Space::Ggtt, SHADOW[1], false));
    }

    #[test]
    fn rejects_nesting_too_deep() {
        let mut e = Env::new(EngineId::Rcs);
        assert_eq!(
            e.run(&bb_start(Space::Ggtt, BB, true)),
            rej(Reject::ChainTooDeep),
            "second level from the ring"
        );
        e.put(BB, &bb_start(Space::Ggtt, BB + 0x100, true));
        e.put(BB + 0x100, &bb_start(Space::Ggtt, BB + 0x200, true));
        e.put(BB + 0x200, &[MI_BATCH_BUFFER_END]);
        assert_eq!(
            e.run(&bb_start(Space::Ggtt, BB, false)),
            rej(Reject::ChainTooDeep)
        );
        // Chaining inside the second level is fine.
        e.put(BB + 0x100, &bb_start(Space::Ggtt, BB + 0x200, false));
        e.put(BB + 0x10, &[MI_BATCH_BUFFER_END]);
        e.put(BB + 12, &[MI_NOOP]);
        assert!(e.run(&bb_start(Space::Ggtt, BB, false)).is_ok());
    }

    #[test]
    fn rejects_loops_but_not_reuse() {
        let mut e = Env::new(EngineId::Rcs);
        e.put(BB, &bb_start(Space::Ggtt, BB, false));
        assert_eq!(
            e.run(&bb_start(Space::Ggtt, BB, false)),
            rej(Reject::ChainLoop),
            "self loop"
        );
        e.put(
            BB,
            &cat(&[
                &sdi(Space::Ggtt, DATA, 0),
                &bb_start(Space::Ggtt, HIGH.base, false),
            ]),
        );
        e.put(HIGH.base, &bb_start(Space::Ggtt, BB, false));
        assert_eq!(
            e.run(&bb_start(Space::Ggtt, BB, false)),
            rej(Reject::ChainLoop),
            "A → B → A"
        );
        // Second level loop.
        e.put(
            BB,
            &cat(&[
                &bb_start(Space::Ggtt, HIGH.base, true),
                &[MI_BATCH_BUFFER_END, 0],
            ]),
        );
        e.put(HIGH.base, &bb_start(Space::Ggtt, HIGH.base + 0x40, false));
        e.put(HIGH.base + 0x40, &bb_start(Space::Ggtt, HIGH.base, false));
        assert_eq!(
            e.run(&bb_start(Space::Ggtt, BB, false)),
            rej(Reject::ChainLoop)
        );
        // Calling the same subroutine twice, and the same batch from the ring twice, is no loop.
        e.put(HIGH.base, &[MI_BATCH_BUFFER_END]);
        e.put(
            BB,
            &cat(&[
                &bb_start(Space::Ggtt, HIGH.base, true),
                &bb_start(Space::Ggtt, HIGH.base, true),
                &[MI_BATCH_BUFFER_END],
            ]),
        );
        assert!(e
            .run(&cat(&[
                &bb_start(Space::Ggtt, BB, false),
                &bb_start(Space::Ggtt, BB, false)
            ]))
            .is_ok());
    }

    #[test]
    fn rejects_too_many_chain_targets() {
        let mut e = Env::new(EngineId::Rcs);
        for i in 0..=MAX_CHAIN_TARGETS as u64 {
            e.put(
                BB + 0x100 * i,
                &bb_start(Space::Ggtt, BB + 0x100 * (i + 1), false),
            );
        }
        e.put(
            BB + 0x100 * (MAX_CHAIN_TARGETS as u64 + 1),
            &[MI_BATCH_BUFFER_END],
        );
        assert_eq!(
            e.run(&bb_start(Space::Ggtt, BB, false)),
            rej(Reject::TooManyChains)
        );
        e.put(
            BB + 0x100 * (MAX_CHAIN_TARGETS as u64 - 1),
            &[MI_BATCH_BUFFER_END],
        );
        assert!(e.run(&bb_start(Space::Ggtt, BB, false)).is_ok());
    }

    #[test]
    fn rejects_batch_end_in_ring_truncation_and_runaway() {
        let mut e = Env::new(EngineId::Rcs);
        assert_eq!(e.run(&[MI_BATCH_BUFFER_END]), rej(Reject::BatchEndInRing));
        let c = sdi(Space::Ggtt, DATA, 0);
        e.put(RING, &c);
        assert_eq!(
            audit_ring(
                &mut e,
                RingWindow {
                    start: RING,
                    size: RING_SIZE
                },
                0,
                8,
                &Limits::DEFAULT
            ),
            rej(Reject::Truncated)
        );
        // A batch of NOOPs without an end runs until the budget.
        for i in 0..64 {
            e.put(BB + 4 * i, &[MI_NOOP]);
        }
        let l = Limits {
            max_commands: 32,
            ..Limits::DEFAULT
        };
        assert_eq!(
            e.run_limits(&bb_start(Space::Ggtt, BB, false), &l),
            rej(Reject::Runaway)
        );
        // BB_START + 28 NOOPs + BB_END + the ring's NOOP pad = 31 commands.
        e.put(BB + 4 * 28, &[MI_BATCH_BUFFER_END]);
        assert!(e.run_limits(&bb_start(Space::Ggtt, BB, false), &l).is_ok());
        // A batch running off the end of the vGPU's memory.
        for i in 0..8 {
            e.put(GM.end() - 32 + 4 * i, &[MI_NOOP]);
        }
        assert_eq!(
            e.run(&bb_start(Space::Ggtt, GM.end() - 32, false)),
            rej(Reject::AddressNotAllowed)
        );
        assert_eq!(
            e.run(&bb_start(Space::Ggtt, 0x7000_0000, false)),
            rej(Reject::AddressNotAllowed)
        );
    }

    #[test]
    fn rejects_bad_ring_and_tail() {
        let mut e = Env::new(EngineId::Rcs);
        let w = |start, size| RingWindow { start, size };
        let l = Limits::DEFAULT;
        assert_eq!(
            audit_ring(&mut e, w(GM.end() - 0x1000, 0x2000), 0, 8, &l),
            rej(Reject::BadRing)
        );
        assert_eq!(
            audit_ring(&mut e, w(0x10, 0x1000), 0, 8, &l),
            rej(Reject::BadRing)
        );
        assert_eq!(audit_ring(&mut e, w(0, 0), 0, 0, &l), rej(Reject::BadRing));
        assert_eq!(
            audit_ring(&mut e, w(0, 0x1000), 0, 4, &l),
            rej(Reject::BadTail)
        );
        assert_eq!(
            audit_ring(&mut e, w(0, 0x1000), 0, 0x1000, &l),
            rej(Reject::BadTail)
        );
        assert_eq!(
            audit_ring(&mut e, w(0, 0x1000), 2, 8, &l),
            rej(Reject::BadTail)
        );
    }

    #[test]
    fn ring_range_wraps() {
        let mut e = Env::new(EngineId::Rcs);
        let c = sdi(Space::Ggtt, DATA, 0x55);
        e.put(RING + RING_SIZE as u64 - 8, &c[..2]);
        e.put(RING, &[c[2], c[3], MI_NOOP, MI_NOOP]);
        let sum = audit_ring(
            &mut e,
            RingWindow {
                start: RING,
                size: RING_SIZE,
            },
            RING_SIZE - 8,
            16,
            &Limits::DEFAULT,
        )
        .expect("ok");
        assert_eq!(sum.commands, 3);
        assert_eq!(e.out[0], cat(&[&c, &[MI_NOOP, MI_NOOP]]));
    }

    #[test]
    fn shadow_full_is_not_a_rejection() {
        let mut e = Env::new(EngineId::Rcs);
        e.cap = 4;
        e.put(
            BB,
            &cat(&[&sdi(Space::Ggtt, DATA, 1), &[MI_BATCH_BUFFER_END]]),
        );
        assert_eq!(
            e.run(&bb_start(Space::Ggtt, BB, false)),
            Err(AuditError::ShadowFull)
        );
    }

    /// A batch's audited commands are emitted in runs; when the run
    /// overflows the shadow before a later command is refused, the answer
    /// is the per-command walker's: the shadow filled first.
    #[test]
    fn shadow_full_before_a_later_rejection_is_shadow_full() {
        let mut e = Env::new(EngineId::Rcs);
        e.cap = 8;
        let s = sdi(Space::Ggtt, DATA, 1);
        e.put(BB, &cat(&[&s, &s, &s, &[0x1f << 23]]));
        assert_eq!(
            e.run(&bb_start(Space::Ggtt, BB, false)),
            Err(AuditError::ShadowFull)
        );
        // With room for all three, the fourth is refused.
        e.cap = usize::MAX;
        e.out = [vec![], vec![], vec![]];
        assert_eq!(
            e.run(&bb_start(Space::Ggtt, BB, false)),
            rej(Reject::UnknownOpcode)
        );
        assert_eq!(e.out[1], cat(&[&s, &s, &s]), "audited before the refusal");
    }

    /// A header the guest rewrites between the auditor's two reads of it
    /// (a command across the end of a read-ahead window, read again from
    /// its own address) is audited and emitted as first read: the length
    /// the auditor walked is the length the engine will decode.
    #[test]
    fn a_header_rewritten_between_two_reads_is_emitted_as_audited() {
        let mut e = Env::new(EngineId::Rcs);
        let noops = vec![MI_NOOP; FETCH_DWORDS - 2];
        let lri3 = [MI_LOAD_REGISTER_IMM | 5, 0x2600, 1, 0x2604, 2, 0x2608, 3];
        let batch = cat(&[&noops, &lri3, &[MI_BATCH_BUFFER_END]]);
        e.put(BB, &batch);
        let at = BB + 4 * noops.len() as u64;
        e.flip = Some((at, MI_LOAD_REGISTER_IMM | 1));
        ok(e.run(&bb_start(Space::Ggtt, BB, false)));
        assert_eq!(e.flip, None, "the guest did rewrite it");
        assert_eq!(e.out[1], batch);
    }

    /// A batch whose read-ahead window runs past the vGPU's memory is
    /// checked command by command: everything up to the end is accepted,
    /// the first command past it refused.
    #[test]
    fn a_window_partly_outside_the_vgpu_is_checked_per_command() {
        let mut e = Env::new(EngineId::Rcs);
        let end = BB + 0x80;
        e.ranges = vec![GmRange::new(0, end)];
        let inside = cat(&[&[MI_NOOP; 31], &[MI_BATCH_BUFFER_END]]);
        e.put(BB, &inside);
        ok(e.run(&bb_start(Space::Ggtt, BB, false)));
        assert_eq!(e.out[1], inside);
        e.put(BB, &cat(&[&[MI_NOOP; 32], &[MI_BATCH_BUFFER_END]]));
        assert_eq!(
            e.run(&bb_start(Space::Ggtt, BB, false)),
            rej(Reject::AddressNotAllowed)
        );
        // The same bounds for the PPGTT.
        let mut p = Env::new(EngineId::Rcs);
        p.pp_mapped = vec![(BB, 0x80)];
        for (i, w) in inside.iter().enumerate() {
            p.ppgtt.insert(BB + 4 * i as u64, *w);
        }
        ok(p.run(&bb_start(Space::Ppgtt, BB, false)));
        p.ppgtt.insert(BB + 0x7C, MI_NOOP);
        p.ppgtt.insert(BB + 0x80, MI_BATCH_BUFFER_END);
        assert_eq!(
            p.run(&bb_start(Space::Ppgtt, BB, false)),
            rej(Reject::PpgttNotMapped)
        );
    }

    #[test]
    fn reject_counters_count_per_class() {
        let mut c = RejectCounters::new();
        for r in Reject::ALL {
            assert_eq!(Reject::ALL[r.index()], r);
            c.record(r);
        }
        c.record(Reject::ChainLoop);
        assert_eq!(c.get(Reject::ChainLoop), 2);
        assert_eq!(c.get(Reject::BadLength), 1);
        assert_eq!(c.total(), Reject::COUNT as u64 + 1);
    }

    /// A long LRI (`n` whitelisted registers): longer than one fetch window
    /// when `n` is 32.
    fn long_lri(n: u32) -> Vec<u32> {
        let mut v = vec![(0x22 << 23) | (2 * n - 1)];
        for i in 0..n {
            v.extend([0x2600 + 4 * (i % 8), i]);
        }
        v
    }

    fn piece() -> impl proptest::strategy::Strategy<Value = Vec<u32>> {
        use proptest::prelude::*;
        prop_oneof![
            8 => (0usize..10).prop_map(|i| one_of_each()[i].clone()),
            2 => any::<u32>().prop_map(|d| vec![d]),
            3 => (0u64..0x3000, any::<bool>(), any::<bool>()).prop_map(|(o, s, pp)| {
                let sp = if pp { Space::Ppgtt } else { Space::Ggtt };
                bb_start(sp, BB + (o & !3), s).to_vec()
            }),
            2 => (1u32..=32).prop_map(long_lri),
            1 => (0u64..0x2000).prop_map(|o| sdi(Space::Ggtt, DATA + o * 4, 3).to_vec()),
        ]
    }

    /// The windowed walker and the per-dword one ([`reference`]) on `e`
    /// with the ring (from `8 * head`) and a batch at GM `RING` and `BB`
    /// (held at `base` above them: a moved view's host addresses; the
    /// batch's PPGTT copy at `BB`), a page of the batch unreadable, a shadow
    /// of `cap` dwords: the same result and, unless the shadow filled, the
    /// same output.
    fn walkers_agree(
        mut e: Env,
        base: u64,
        ring: &[Vec<u32>],
        batch: &[Vec<u32>],
        head: u32,
        hole: Option<u64>,
        cap: Option<usize>,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        e.pp_mapped = vec![(BB, 0x2000)];
        let mut b: Vec<u32> = batch.concat();
        b.push(MI_BATCH_BUFFER_END);
        e.put(base + BB, &b);
        for (i, w) in b.iter().enumerate() {
            e.ppgtt.insert(BB + 4 * i as u64, *w);
        }
        if let Some(h) = hole {
            e.holes.push(base + BB + h * PAGE_SIZE);
        }
        if let Some(c) = cap {
            e.cap = c;
        }
        let mut r: Vec<u32> = ring.concat();
        if r.len() % 2 == 1 {
            r.push(MI_NOOP);
        }
        r.truncate(RING_SIZE as usize / 4 - 2);
        let head = head * 8;
        let start = base + RING;
        for (i, w) in r.iter().enumerate() {
            let o = (head as u64 + 4 * i as u64) % RING_SIZE as u64;
            e.ggtt.insert(start + o, *w);
        }
        let tail = ((head as u64 + 4 * r.len() as u64) % RING_SIZE as u64) as u32;
        let win = RingWindow {
            start,
            size: RING_SIZE,
        };
        // (The per-dword walker always audits: no `checks` switch.)
        let (mut a, mut b) = (e.clone(), e);
        let ra = audit_ring(&mut a, win, head, tail, &Limits::DEFAULT);
        let rb = reference::audit_ring(&mut b, win, head, tail, &Limits::DEFAULT);
        proptest::prop_assert_eq!(ra, rb);
        if ra == Err(AuditError::ShadowFull) {
            // Emission in runs stops at the run that did not fit, the
            // per-command walker at its command: the caller discards
            // both, and neither emitted anything the other did not.
            for (x, y) in a.out.iter().zip(&b.out) {
                proptest::prop_assert!(y.starts_with(x));
            }
        } else {
            proptest::prop_assert_eq!(&a.out, &b.out);
        }
        Ok(())
    }

    /// A range of the test vGPU that ends off a qword boundary (no real
    /// slice does, but the shortcut must not depend on it).
    const ODD: GmRange = GmRange::new(0x60000, 0x104);

    /// The edges of what the test vGPU may touch (its ranges, [`ODD`] and
    /// the mapped PPGTT of [`edge_env`]).
    const EDGES: [u64; 8] = [
        0,
        DATA,
        GM.end(),
        HIGH.base,
        HIGH.end(),
        ODD.base,
        ODD.end(),
        DATA + 0x2000,
    ];

    /// The test vGPU with [`ODD`] and, if `pp`, a mapped PPGTT range.
    fn edge_env(engine: EngineId, pp: bool) -> Env {
        let mut e = Env::new(engine);
        e.ranges.push(ODD);
        if pp {
            e.pp_mapped.push((DATA, 0x2000));
        }
        e
    }

    /// A dword for the body of a command: anything, an address near an
    /// edge of what the test vGPU may touch (with any of the low flag
    /// bits), a register near the LRI whitelist, or 0 (a high address
    /// dword).
    fn body_dword() -> impl proptest::strategy::Strategy<Value = u32> {
        use proptest::prelude::*;
        let edges = EDGES;
        prop_oneof![
            2 => any::<u32>(),
            4 => (0..edges.len(), -4i64..4, 0u32..8).prop_map(move |(e, d, f)| {
                (edges[e] as i64 + 4 * d) as u32 | f
            }),
            2 => (0..LRI_WHITELIST.len(), -2i32..34).prop_map(|(k, d)| {
                (LRI_WHITELIST[k].1 as i32 + 4 * d) as u32 | (d as u32 & 1)
            }),
            3 => Just(0u32),
        ]
    }

    /// [`accepts`] against [`parse`] and [`audit_command`] on every
    /// combination of the flag bits the shortcut reads, every legal length,
    /// addresses at every edge of the test vGPU's ranges (± two dwords,
    /// every low bit), either engine, PPGTT or not; and single-register
    /// loads around every end of the whitelist.
    #[test]
    fn accepts_is_parse_and_audit_at_every_edge() {
        let edges = EDGES;
        let flags = [
            MI_USE_GGTT,
            MI_FLUSH_DW_STORE_INDEX,
            1 << 15,
            1 << 14,
            MI_FLUSH_DW_NOTIFY,
        ];
        let mut envs = vec![];
        for engine in EngineId::ALL {
            for pp in [false, true] {
                envs.push(edge_env(engine, pp));
            }
        }
        let mut checked = [0usize; 2];
        let mut check = |d: &[u32]| {
            let (op, n) = decode(d[0]).unwrap();
            assert_eq!(n, d.len());
            for e in &envs {
                let full = parse(op, d).and_then(|c| audit_command(e, op, &c, d));
                assert_eq!(
                    accepts(e, op, d),
                    full.is_ok(),
                    "{op:?} {d:x?} {:?} {full:?}",
                    e.engine
                );
                checked[full.is_ok() as usize] += 1;
            }
        };
        for base in [MI_STORE_DATA_IMM, MI_FLUSH_DW] {
            for len in [2u32, 3] {
                for f in 0u32..1 << flags.len() {
                    let h = flags
                        .iter()
                        .enumerate()
                        .filter(|&(i, _)| f & (1 << i) != 0)
                        .fold(base | len, |h, (_, &b)| h | b);
                    for &edge in &edges {
                        for delta in -2i64..=2 {
                            for low in 0..8u32 {
                                for hi in [0u32, 1] {
                                    let lo = (edge as i64 + 4 * delta) as u32 | low;
                                    check(&[h, lo, hi, 7, 8][..len as usize + 2]);
                                }
                            }
                        }
                    }
                }
            }
        }
        for &(_, first, last) in LRI_WHITELIST {
            for reg in (first - 8..=last + 8).chain([0, 0x2034, u32::MAX]) {
                check(&lri(reg, 1));
                check(&[MI_LOAD_REGISTER_IMM | 3, first, 0, reg, 1]);
            }
        }
        assert!(checked[0] > 1000 && checked[1] > 1000, "{checked:?}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 4000, ..Default::default() })]

        /// The walker's shortcut ([`accepts`]) gives the verdict of
        /// [`parse`] and [`audit_command`] on every command of the table:
        /// any header bits and legal length, any body, either engine,
        /// PPGTT or not.
        #[test]
        fn accepts_is_parse_and_audit(
            row in 0usize..COMMANDS.len(),
            low in proptest::prelude::any::<u32>(),
            pick in 0usize..64,
            body in proptest::collection::vec(body_dword(), MAX_CMD_DWORDS),
            rcs in proptest::bool::ANY,
            pp in proptest::bool::ANY,
        ) {
            let spec = &COMMANDS[row];
            let lens: Vec<usize> = (0..=MAX_CMD_DWORDS).filter(|&n| spec.len.allows(n)).collect();
            let n = lens[pick % lens.len()];
            let field = (n as u32).wrapping_sub(spec.len.bias as u32) & spec.len.field;
            let h = spec.header | (low & !spec.mask & !spec.len.field) | field;
            proptest::prop_assert_eq!(decode(h), Ok((spec.op, n)));
            let op = spec.op;
            let mut d = body;
            d[0] = h;
            let d = &d[..n];
            let e = edge_env(if rcs { EngineId::Rcs } else { EngineId::Bcs }, pp);
            let full = parse(op, d).and_then(|c| audit_command(&e, op, &c, d));
            proptest::prop_assert_eq!(accepts(&e, op, d), full.is_ok(), "{} {:x?} {:?}", spec.name, d, full);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2000, ..Default::default() })]

        /// The walker with its read-ahead window and the walker that read
        /// every dword alone ([`reference`]) accept, reject (for the same
        /// reason) and emit exactly alike: on streams made of every command,
        /// random dwords, batch calls and chains anywhere in a batch area,
        /// commands longer than a window or across pages and the ring's
        /// wrap, pages that cannot be read, and a small shadow.
        #[test]
        fn windowed_walker_matches_the_per_dword_walker(
            ring in proptest::collection::vec(piece(), 0..24),
            batch in proptest::collection::vec(piece(), 0..200),
            head in 0u32..(RING_SIZE / 8),
            hole in proptest::option::of(0u64..4),
            cap in proptest::option::of(0usize..300),
            rcs in proptest::bool::ANY,
        ) {
            let e = Env::new(if rcs { EngineId::Rcs } else { EngineId::Bcs });
            walkers_agree(e, 0, &ring, &batch, head, hole, cap)?;
        }
    }

    mod view {
        use super::super::super::gm_view::{GmView, VgpuGm};
        use super::*;
        use proptest::prelude::*;

        /// The guest's view: the test slices ([`GM`], [`HIGH`]); the host's:
        /// the same sizes elsewhere, each slice moved by its own offset.
        const HOST_GM: GmRange = GmRange::new(0x4000_0000, GM.size);
        const HOST_HIGH: GmRange = GmRange::new(0x2000_0000, HIGH.size);

        fn view() -> GmView {
            GmView::new(
                VgpuGm {
                    aperture: GM,
                    high: HIGH,
                },
                VgpuGm {
                    aperture: HOST_GM,
                    high: HOST_HIGH,
                },
                1 << 32,
            )
            .unwrap()
        }

        /// One command of every row with GGTT addresses `ap` (in the
        /// aperture slice) and `hi` (in the high slice), both forms where a
        /// row has two.
        fn samples(ap: u64, hi: u64) -> Vec<(Opcode, Vec<u32>)> {
            let mut narrow_fill = color_blt(hi, 512, (4, 2, 20, 10), 7).to_vec();
            narrow_fill.remove(5);
            narrow_fill[0] -= 1;
            let mut narrow_copy =
                src_copy_blt(ap + 0x100, 512, (0, 0, 8, 8), hi, 256, (2, 1)).to_vec();
            narrow_copy.remove(9);
            narrow_copy.remove(5);
            narrow_copy[0] -= 2;
            let flush_ts = {
                let mut f = flush_dw_store(Space::Ggtt, ap + 0x40, 0, true).to_vec();
                f[0] = (f[0] & !MI_FLUSH_DW_OP_TIMESTAMP) | MI_FLUSH_DW_OP_TIMESTAMP;
                f
            };
            vec![
                (Opcode::Noop, vec![MI_NOOP]),
                (Opcode::UserInterrupt, vec![MI_USER_INTERRUPT]),
                (Opcode::BatchBufferEnd, vec![MI_BATCH_BUFFER_END]),
                (
                    Opcode::StoreDataImm,
                    sdi(Space::Ggtt, ap + 0x24, 5).to_vec(),
                ),
                (
                    Opcode::StoreDataImm,
                    sdi_qw(Space::Ggtt, hi + 0x8, [1, 2]).to_vec(),
                ),
                (Opcode::LoadRegisterImm, lri(0x2600, 3).to_vec()),
                (
                    Opcode::FlushDw,
                    flush_dw_store(Space::Ggtt, hi + 0x10, 9, false).to_vec(),
                ),
                (Opcode::FlushDw, flush_ts),
                (
                    Opcode::BatchBufferStart,
                    bb_start(Space::Ggtt, ap + 0x1000, false).to_vec(),
                ),
                (
                    Opcode::BatchBufferStart,
                    bb_start(Space::Ggtt, hi, true).to_vec(),
                ),
                (
                    Opcode::XyColorBlt,
                    color_blt(ap, 512, (0, 0, 16, 4), 0xff).to_vec(),
                ),
                (Opcode::XyColorBlt, narrow_fill),
                (
                    Opcode::XySrcCopyBlt,
                    src_copy_blt(hi + 0x200, 512, (1, 1, 9, 9), ap, 512, (0, 0)).to_vec(),
                ),
                (Opcode::XySrcCopyBlt, narrow_copy),
                (
                    Opcode::PipeControl,
                    pipe_control_qw(Space::Ggtt, ap + 0x80, [3, 4]).to_vec(),
                ),
            ]
        }

        fn translated(op: Opcode, d: &[u32]) -> Result<Vec<u32>, Reject> {
            let mut d = d.to_vec();
            let cmd = parse(op, &d)?;
            translate_command(&view(), op, &cmd, &mut d)?;
            Ok(d)
        }

        #[test]
        fn every_address_of_every_row_moves_by_its_slice_offset() {
            let guest = samples(GM.base, HIGH.base);
            let host = samples(HOST_GM.base, HOST_HIGH.base);
            let mut seen = [false; COMMANDS.len()];
            for ((op, g), (_, h)) in guest.iter().zip(&host) {
                assert_eq!(decode(g[0]).map(|x| x.0), Ok(*op));
                assert_eq!(translated(*op, g).as_ref(), Ok(h), "{op:?}");
                seen[*op as usize] = true;
            }
            assert!(seen.iter().all(|s| *s), "a row of COMMANDS has no sample");
            // PPGTT addresses are the guest's own address space: untouched.
            for d in [
                sdi(Space::Ppgtt, 0x24, 1).to_vec(),
                bb_start(Space::Ppgtt, 0x1000, false).to_vec(),
                pipe_control_qw(Space::Ppgtt, 0x80, [0, 0]).to_vec(),
            ] {
                let op = decode(d[0]).unwrap().0;
                assert_eq!(translated(op, &d), Ok(d.clone()));
            }
            // Outside the view, or across the end of a slice: refused.
            for (op, d) in [
                (
                    Opcode::StoreDataImm,
                    sdi(Space::Ggtt, HOST_GM.base, 1).to_vec(),
                ),
                (
                    Opcode::StoreDataImm,
                    sdi_qw(Space::Ggtt, GM.end() - 4, [0, 0]).to_vec(),
                ),
                (
                    Opcode::BatchBufferStart,
                    bb_start(Space::Ggtt, GM.end(), false).to_vec(),
                ),
                (
                    Opcode::XyColorBlt,
                    color_blt(HIGH.end() - 512, 512, (0, 0, 4, 2), 0).to_vec(),
                ),
            ] {
                assert_eq!(translated(op, &d), Err(Reject::AddressNotAllowed), "{d:x?}");
            }
        }

        /// The view env: the guest's slices are allowed; the host env: the
        /// host's, with the view set (the walker translates).
        fn envs() -> (Env, Env) {
            let g = Env::new(EngineId::Bcs);
            let mut h = g.clone();
            h.ranges = vec![HOST_GM, HOST_HIGH];
            h.view = Some(view());
            (g, h)
        }

        #[test]
        fn a_moved_view_emits_host_addresses_and_both_walkers_agree() {
            // Guest ring at GM 0 calling a batch at GM BB that stores and
            // blits; the host holds them at the moved addresses.
            let batch = cat(&[
                &sdi(Space::Ggtt, DATA, 1),
                &color_blt(HIGH.base, 512, (0, 0, 8, 8), 3),
                &[MI_BATCH_BUFFER_END],
            ]);
            let ring = cat(&[
                &bb_start(Space::Ggtt, BB, false),
                &flush_dw_store(Space::Ggtt, DATA + 8, 2, true),
            ]);
            let (mut g, mut h) = envs();
            g.put(BB, &batch);
            h.put(HOST_GM.base + BB, &batch);
            let mut r = ring.clone();
            r.push(MI_NOOP);
            g.put(RING, &r);
            h.put(HOST_GM.base + RING, &r);
            let lim = Limits::DEFAULT;
            let gw = RingWindow {
                start: RING,
                size: RING_SIZE,
            };
            let hw = RingWindow {
                start: HOST_GM.base + RING,
                size: RING_SIZE,
            };
            let tail = 4 * r.len() as u32;
            let rg = audit_ring(&mut g, gw, 0, tail, &lim);
            let mut h2 = h.clone();
            let rh = audit_ring(&mut h, hw, 0, tail, &lim);
            let rr = reference::audit_ring(&mut h2, hw, 0, tail, &lim);
            assert!(rg.is_ok());
            assert_eq!(rh, rg);
            assert_eq!(rr, rg);
            assert_eq!(h.out, h2.out);
            let want_batch = cat(&[
                &sdi(Space::Ggtt, HOST_GM.base + DATA, 1),
                &color_blt(HOST_HIGH.base, 512, (0, 0, 8, 8), 3),
                &[MI_BATCH_BUFFER_END],
            ]);
            assert_eq!(h.out[Level::First as usize], want_batch);
            assert_eq!(
                h.out[Level::Ring as usize][3..7],
                flush_dw_store(Space::Ggtt, HOST_GM.base + DATA + 8, 2, true)
            );
            // A store the view does not hold is refused, even at an address
            // the host slices hold.
            let (_, mut h) = envs();
            let bad = cat(&[&sdi(Space::Ggtt, HOST_GM.base, 1), &[MI_NOOP, MI_NOOP]]);
            h.put(HOST_GM.base + RING, &bad);
            assert_eq!(
                audit_ring(&mut h, hw, 0, 4 * bad.len() as u32, &lim),
                rej(Reject::AddressNotAllowed)
            );
        }

        fn any_cmd() -> impl Strategy<Value = Vec<u32>> {
            // Addresses around and inside both slices, any geometry.
            let addr = prop_oneof![
                (0u64..GM.size + 0x2000).prop_map(|a| a & !3),
                (HIGH.base - 0x2000..HIGH.end() + 0x2000).prop_map(|a| a & !3),
                (0u64..1 << 34).prop_map(|a| a & !3),
            ];
            let rect = (0u32..64, 0u32..64, 0u32..96, 0u32..96);
            prop_oneof![
                addr.clone().prop_map(|a| sdi(Space::Ggtt, a, 0).to_vec()),
                addr.clone()
                    .prop_map(|a| sdi_qw(Space::Ggtt, a, [0, 0]).to_vec()),
                addr.clone()
                    .prop_map(|a| flush_dw_store(Space::Ggtt, a & !7, 0, false).to_vec()),
                addr.clone()
                    .prop_map(|a| pipe_control_qw(Space::Ggtt, a & !7, [0, 0]).to_vec()),
                (addr.clone(), 0u32..2048, rect.clone())
                    .prop_map(|(a, p, r)| color_blt(a, p, r, 0).to_vec()),
                (
                    addr.clone(),
                    0u32..2048,
                    rect,
                    addr,
                    0u32..2048,
                    (0u32..64, 0u32..64)
                )
                    .prop_map(|(d, dp, r, s, sp, sxy)| src_copy_blt(d, dp, r, s, sp, sxy).to_vec()),
            ]
        }

        proptest::proptest! {
            #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]
            /// A command the guest's view allows is allowed on the host
            /// once translated, one it refuses is refused for the same
            /// reason, and a translated command never touches anything but
            /// the host slices.
            #[test]
            fn translation_preserves_the_audit_and_stays_in_the_host_slices(
                d in any_cmd(),
                rcs in proptest::bool::ANY,
            ) {
                let (mut g, mut h) = envs();
                if rcs {
                    (g.engine, h.engine) = (EngineId::Rcs, EngineId::Rcs);
                }
                let Ok((op, n)) = decode(d[0]) else { return Ok(()); };
                proptest::prop_assume!(n == d.len());
                let Ok(cmd) = parse(op, &d) else { return Ok(()); };
                let guest = audit_command(&g, op, &cmd, &d);
                let mut t = d.clone();
                // As the walkers do: the audit refuses a command on the
                // wrong engine before any address matters.
                let moved = if op.runs_on(h.engine) {
                    translate_command(&view(), op, &cmd, &mut t)
                } else {
                    Ok(())
                };
                let host = moved
                    .and_then(|()| parse(op, &t))
                    .and_then(|c| audit_command(&h, op, &c, &t));
                proptest::prop_assert_eq!(guest, host);
                if host.is_ok() {
                    // What the engine will touch: inside the host slices.
                    let c = parse(op, &t).unwrap();
                    let inside = |a: u64, l: u64| HOST_GM.contains(a, l) || HOST_HIGH.contains(a, l);
                    match c {
                        Command::StoreData { addr, n, .. } => proptest::prop_assert!(inside(addr, 4 * u64::from(n))),
                        Command::FlushDw { post, .. } | Command::PipeControl { post, .. } => {
                            if let Some((_, a, l)) = post.target() {
                                proptest::prop_assert!(inside(a, l));
                            }
                        }
                        Command::ColorBlt { dst, w, h, cpp, .. } => {
                            if let Some((a, l)) = dst.span(w, h, cpp) {
                                proptest::prop_assert!(inside(a, l));
                            }
                        }
                        Command::SrcCopyBlt { dst, src, w, h, cpp } => {
                            for s in [dst, src] {
                                if let Some((a, l)) = s.span(w, h, cpp) {
                                    proptest::prop_assert!(inside(a, l));
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
        }

        /// A straight run translates a batch's commands in the read-ahead
        /// window; a second-level call back into those dwords must read
        /// them from memory again, not translate the window's copy twice
        /// (which would move the store out of the view and refuse it for
        /// the wrong reason).
        #[test]
        fn a_call_back_into_translated_dwords_reads_them_again() {
            // (The first command after a window fill goes the one-command
            // way; the store is in the straight run that follows.)
            let batch = cat(&[
                &[MI_NOOP],
                &sdi(Space::Ggtt, DATA, 1),
                &bb_start(Space::Ggtt, BB + 4, true),
            ]);
            let ring = cat(&[&bb_start(Space::Ggtt, BB, false), &[MI_NOOP]]);
            let (_, mut h) = envs();
            h.put(HOST_GM.base + BB, &batch);
            h.put(HOST_GM.base + RING, &ring);
            let hw = RingWindow {
                start: HOST_GM.base + RING,
                size: RING_SIZE,
            };
            let tail = 4 * ring.len() as u32;
            let mut h2 = h.clone();
            let r = audit_ring(&mut h, hw, 0, tail, &Limits::DEFAULT);
            let rr = reference::audit_ring(&mut h2, hw, 0, tail, &Limits::DEFAULT);
            assert_eq!(rr, rej(Reject::ChainTooDeep));
            assert_eq!(r, rr);
            assert_eq!(h.out, h2.out);
        }

        proptest::proptest! {
            #![proptest_config(proptest::prelude::ProptestConfig { cases: 1000, ..Default::default() })]

            /// Under a moved view the windowed walker (straight runs
            /// translated in place) and the per-dword walker (every command
            /// translated alone) accept, reject and emit exactly alike: the
            /// same random streams as the identity test, ring and batches at
            /// their host addresses, chains back into batch dwords a straight
            /// run already translated, pages that cannot be read, a small
            /// shadow.
            #[test]
            fn under_a_view_the_windowed_walker_matches_the_per_dword_walker(
                ring in proptest::collection::vec(piece(), 0..24),
                batch in proptest::collection::vec(piece(), 0..200),
                head in 0u32..(RING_SIZE / 8),
                hole in proptest::option::of(0u64..4),
                cap in proptest::option::of(0usize..300),
                rcs in proptest::bool::ANY,
            ) {
                let (_, mut e) = envs();
                e.engine = if rcs { EngineId::Rcs } else { EngineId::Bcs };
                walkers_agree(e, HOST_GM.base, &ring, &batch, head, hole, cap)?;
            }
        }
    }
}
