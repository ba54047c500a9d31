#!/usr/bin/env python3
"""Write valid command streams as seed inputs for fuzz_targets/submit.rs.

Input format: dword 0 = engine bit | ring_len << 1, then the ring, then the
batch area (placed at GM 0x40000).  Encodings follow driver/core/src/cmd.rs."""
import os, struct, sys

MI_NOOP, MI_USER_INTERRUPT, MI_BBE = 0, 0x02 << 23, 0x0A << 23
SDI, LRI, FLUSH_DW, BBS = 0x20 << 23, 0x22 << 23, 0x26 << 23, 0x31 << 23
XY_COLOR, XY_COPY, PIPE_CONTROL = (2 << 29) | (0x50 << 22), (2 << 29) | (0x53 << 22), (3 << 29) | (3 << 27) | (2 << 24)
RGBA, D32, BATCH, DATA = 3 << 20, 3 << 24, 0x40000, 0x20000

def sdi(a, d): return [SDI | (1 << 22) | 2, a, 0, d]
def bbs(a, second=False): return [BBS | ((1 << 22) if second else 0) | 1, a, 0]
def fill(a, pitch, w, h, c): return [XY_COLOR | RGBA | 5, D32 | (0xF0 << 16) | pitch, 0, (h << 16) | w, a, 0, c]
def copy(d, s, pitch, w, h): return [XY_COPY | RGBA | 8, D32 | (0xCC << 16) | pitch, 0, (h << 16) | w, d, 0, 0, pitch, s, 0]
def flush(a, d): return [FLUSH_DW | (1 << 14) | 2, a | 4, 0, d]
def pipe(a): return [PIPE_CONTROL | 4, (1 << 14) | (1 << 24), a, 0, 1, 2]
def lri(r, v): return [LRI | 1, r, v]

def pad(l): return l + [MI_NOOP] * (len(l) % 2)

def seed(bcs, ring, batch=()):
    ring = pad(ring)
    return struct.pack("<%dI" % (1 + len(ring) + len(batch)), (1 if bcs else 0) | (len(ring) << 1), *ring, *batch)

batch_calls = sdi(DATA, 1) + bbs(BATCH + 0x40, True) + [MI_BBE]
batch_calls += [MI_NOOP] * (0x10 - len(batch_calls)) + sdi(DATA + 4, 2) + [MI_BBE]
chain = bbs(BATCH + 0x20, False) + [MI_NOOP] * 5 + flush(DATA, 3) + [MI_BBE]
seeds = {
    "sdi": seed(False, sdi(DATA, 0x1234) + [MI_USER_INTERRUPT]),
    "blits": seed(True, fill(DATA, 256, 16, 16, 0xff00ff) + copy(DATA + 0x8000, DATA, 256, 16, 16) + flush(DATA + 0x4000, 7)),
    "calls": seed(False, bbs(BATCH) + [MI_USER_INTERRUPT], batch_calls),
    "lri_pipe": seed(False, lri(0x2600, 5) + pipe(DATA) + [MI_USER_INTERRUPT]),
    "chain": seed(True, bbs(BATCH), chain),
}
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
print("wrote %d seeds to %s" % (len(seeds), out))
