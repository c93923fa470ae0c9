"""Kernel lab: inverted dropout with the counter-based splitmix64 mask.

The ops, their math and the mask's hash are the contract's
(tinynet/ops/dropout/__init__.py); tinynet.backends.ref is the reference.
Every variant is a pair ``fwd(x, p, seed, step) -> (y, cache)``,
``bwd(dy, cache, p) -> dx`` that gives the ref's mask and the ref's y and dx
bit for bit; ``VARIANTS`` numbers them. The hashing variants call the cpu
kernels' hash and threshold, ``splitmix64_u64`` and ``keep_threshold`` of
tinynet.ops.dropout.cpu.

- naive serial mask: a serial njit loop writes the mask with the float test
  (h >> 11) * 2^-53 >= p, then numpy computes x * keep * scale.
- parallel mask: the same mask loop under prange; numpy multiplies.
- fused, uint8 mask (tinynet): one prange pass hashes, tests h >= T with the
  integer threshold T = ceil(p * 2^53) * 2^11 (the same test, no
  int-to-float conversion), writes y and the uint8 mask; backward reads the
  mask. The row calls the cpu backend's ops, so it times what tinynet runs.
- recompute in bwd: the forward writes y only and the "mask" is just (seed,
  step); the backward hashes every index again. Saves the 1-byte mask write
  and read, pays a second hash.
- bit-packed mask: as the fused one, but 8 mask bits per byte (n/8 bytes);
  each prange iteration handles 8 elements.

``--check`` runs every variant over tinynet.ops.dropout.cases: each shape
with each mask, x with NaN and infinities.

Floor: x read, y written, dy read, dx written (4 bytes each per element in
float32); a stored uint8 mask adds 2 bytes, a bit-packed one 2/8 bytes.
The fwd+bwd rows keep y alive through the backward pass, as in a network; the
layer row times ``y = tn.Dropout(0.5).forward(x); dx = layer.backward(dy)``
on (64, 32, 28, 28) float32 against torch.nn.Dropout(0.5) forward +
``backward(dy)``.

    python -m kernels.dropout --check      every variant against the reference
    python -m kernels.dropout --bench      timings, % of floor, torch beside them
"""

import numpy as np
import numba

import tinynet as tn
from tinynet.backends import cpu, ref
from tinynet.backends.cpu_jit import njit_kernel
from tinynet.ops.dropout.cases import MASKS, SHAPES
from tinynet.ops.dropout.cpu import keep_threshold, splitmix64_u64
from kernels.common import Row, lab_main, race, tensor_bytes, try_torch

SHAPE = (64, 32, 28, 28)
P = 0.5
SEED, STEP = 1234, 7


def _scale(dtype, p):
    return np.dtype(dtype).type(1.0 / (1.0 - p))


@njit_kernel()
def _mask_serial(seed, step, p, keep):
    key = splitmix64_u64(seed ^ splitmix64_u64(step))
    for i in range(keep.size):
        u = (splitmix64_u64(key + np.uint64(i)) >> np.uint64(11)) * 2.0**-53
        keep[i] = u >= p


def fwd_serial_mask(x, p, seed, step):
    keep = np.empty(x.shape, np.uint8)
    _mask_serial(np.uint64(seed), np.uint64(step), p, keep.reshape(-1))
    return x * keep * _scale(x.dtype, p), keep


def bwd_mask(dy, cache, p):
    return dy * cache * _scale(dy.dtype, p)


@njit_kernel(parallel=True)
def _mask_parallel(seed, step, p, keep):
    key = splitmix64_u64(seed ^ splitmix64_u64(step))
    # Parallel axis: the flat index i; iteration i writes only keep[i].
    for i in numba.prange(keep.size):
        u = (splitmix64_u64(key + np.uint64(i)) >> np.uint64(11)) * 2.0**-53
        keep[i] = u >= p


def fwd_parallel_mask(x, p, seed, step):
    keep = np.empty(x.shape, np.uint8)
    _mask_parallel(np.uint64(seed), np.uint64(step), p, keep.reshape(-1))
    return x * keep * _scale(x.dtype, p), keep


@njit_kernel(parallel=True)
def _hash_apply(x, seed, step, threshold, scale, y):
    key = splitmix64_u64(seed ^ splitmix64_u64(step))
    # Parallel axis: the flat index i; iteration i writes only y[i].
    for i in numba.prange(x.size):
        k = np.uint8(splitmix64_u64(key + np.uint64(i)) >= threshold)
        y[i] = x[i] * k * scale


def fwd_recompute(x, p, seed, step):
    y = np.empty_like(x)
    _hash_apply(x.reshape(-1), np.uint64(seed), np.uint64(step), keep_threshold(p),
                _scale(x.dtype, p), y.reshape(-1))
    return y, (seed, step)


def bwd_recompute(dy, cache, p):
    seed, step = cache
    dx = np.empty_like(dy)
    _hash_apply(dy.reshape(-1), np.uint64(seed), np.uint64(step), keep_threshold(p),
                _scale(dy.dtype, p), dx.reshape(-1))
    return dx


@njit_kernel(parallel=True)
def _packed_forward(x, seed, step, threshold, scale, y, bits):
    key = splitmix64_u64(seed ^ splitmix64_u64(step))
    n = x.size
    # Parallel axis: bytes b of the packed mask; iteration b writes only
    # bits[b] and y[8b : 8b + 8].
    for b in numba.prange(bits.size):
        byte = 0
        for j in range(8):
            i = 8 * b + j
            if i < n:
                k = np.uint8(splitmix64_u64(key + np.uint64(i)) >= threshold)
                byte |= k << j
                y[i] = x[i] * k * scale
        bits[b] = byte


@njit_kernel(parallel=True)
def _packed_backward(dy, bits, scale, dx):
    n = dy.size
    # Parallel axis: bytes b of the packed mask; iteration b writes only dx[8b : 8b + 8].
    for b in numba.prange(bits.size):
        byte = bits[b]
        for j in range(8):
            i = 8 * b + j
            if i < n:
                dx[i] = dy[i] * np.uint8((byte >> j) & 1) * scale


def fwd_packed(x, p, seed, step):
    y = np.empty_like(x)
    bits = np.empty((x.size + 7) // 8, np.uint8)
    _packed_forward(x.reshape(-1), np.uint64(seed), np.uint64(step), keep_threshold(p),
                    _scale(x.dtype, p), y.reshape(-1), bits)
    return y, bits


def bwd_packed(dy, cache, p):
    dx = np.empty_like(dy)
    _packed_backward(dy.reshape(-1), cache, _scale(dy.dtype, p), dx.reshape(-1))
    return dx


VARIANTS = {
    "1 naive serial mask": (fwd_serial_mask, bwd_mask),
    "2 parallel mask": (fwd_parallel_mask, bwd_mask),
    "3 tinynet, fused, uint8 mask": (cpu.dropout_forward, cpu.dropout_backward),
    "4 recompute in bwd": (fwd_recompute, bwd_recompute),
    "5 fused, bit-packed mask": (fwd_packed, bwd_packed),
}


def check():
    rng = np.random.default_rng(0)
    for case in SHAPES:
        for m in MASKS:
            for dtype in (np.float32, np.float64):
                x, dy = case.draw(rng, dtype)
                with np.errstate(invalid="ignore"):
                    y_ref, keep = ref.dropout_forward(x, m.p, m.seed, m.step)
                    dx_ref = ref.dropout_backward(dy, keep, m.p)
                for name, (fwd, bwd) in VARIANTS.items():
                    with np.errstate(invalid="ignore"):
                        y, cache = fwd(x, m.p, m.seed, m.step)
                        dx = bwd(dy, cache, m.p)
                    # Bit for bit: compare the raw bytes (NaN included).
                    what = (name, case.name, m.name)
                    assert y.dtype == dtype and dx.dtype == dtype, what
                    assert np.array_equal(y.view(np.uint8), y_ref.view(np.uint8)), what
                    assert np.array_equal(dx.view(np.uint8), dx_ref.view(np.uint8)), what


def bench():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(SHAPE).astype(np.float32)
    dy = rng.standard_normal(SHAPE).astype(np.float32)
    floor_fwd = tensor_bytes(x, x)
    floor_bwd = tensor_bytes(dy, dy)
    torch = try_torch()
    fns = {}
    if torch is not None:
        xt = torch.from_numpy(x).requires_grad_(True)
        dyt = torch.from_numpy(dy)
        drop = torch.nn.Dropout(P)

        def torch_step():
            xt.grad = None
            drop(xt).backward(dyt)
        fns["torch"] = torch_step
    layer = tn.Dropout(P, seed=SEED)

    def layer_step():
        y = layer.forward(x)
        dx = layer.backward(dy)
        return y, dx
    fns["layer"] = layer_step
    for name, (fwd, bwd) in VARIANTS.items():
        cache = fwd(x, P, SEED, STEP)[1]
        fns[name + " fwd"] = lambda fwd=fwd: fwd(x, P, SEED, STEP)
        fns[name + " bwd"] = lambda bwd=bwd, cache=cache: bwd(dy, cache, P)
        # y stays alive through the backward pass, as in a network.
        fns[name] = lambda fwd=fwd, bwd=bwd: (lambda yc: (yc[0], bwd(dy, yc[1], P)))(
            fwd(x, P, SEED, STEP))
    t = race(fns)
    t_torch = t.get("torch")
    rows = []
    for name in VARIANTS:
        rows.append(Row("dropout fwd", name, t[name + " fwd"], floor_fwd))
        rows.append(Row("dropout bwd", name, t[name + " bwd"], floor_bwd))
        rows.append(Row("dropout fwd+bwd", name, t[name], floor_fwd + floor_bwd,
                        torch_seconds=t_torch))
    rows.append(Row("layer Dropout(0.5) fwd+bwd", f"tinynet {tn.backend_name()}",
                    t["layer"], floor_fwd + floor_bwd, torch_seconds=t_torch))
    return rows


def main(argv=None):
    return lab_main("dropout", check, bench, argv)


if __name__ == "__main__":
    main()
