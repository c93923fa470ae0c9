"""Kernel lab: Dense (fully connected) forward + backward.

The ops and their math are the contract's (tinynet/ops/dense/__init__.py);
tinynet.backends.ref is the reference. Three GEMMs carry all the arithmetic;
the variants differ in where the bias and its gradient go and how the GEMMs
use the cores. All have the signatures of the ref ops
(``dense_forward(x, W, b) -> y``,
``dense_backward(x, W, dy, has_bias, need_dx) -> (dx, dW, db)``);
``VARIANTS`` numbers them:

- naive port (the reference): ``x @ W.T``, then ``y += b`` (NumPy
  broadcast); db = ``dy.sum(axis=0)``, a float32 sum in float32.
- ones column: [x | 1] [W | b]^T puts the bias in the GEMM, and
  [dW | db] = dy^T [x | 1] gives db as the GEMM's last column. Costs a copy
  of x (and of W) into the augmented arrays on every call.
- GEMM + bias kernels: the GEMM (``np.matmul``, BLAS's own threads)
  writes y, and tinynet's serial Numba kernels add b in place
  (``tinynet.ops.dense.cpu.add_bias``) and sum dy's rows in float64 for db
  (``bias_grad``). Serial because a parallel launch costs about 10 us
  against 1 us of work at these sizes.
- GEMM row blocks in the pool: the bias kernels with each GEMM split by rows
  of its output over numba's pool, one single-threaded BLAS call per thread
  (``np.dot`` inside a ``prange``), as the convolution runs its GEMMs. Lost:
  blocks of 32 rows (and dW's inner dimension of 64) run far below BLAS's
  own two-thread rate.
- one BLAS thread: GEMM + bias kernels with numpy's BLAS on one thread
  (``tinynet.ops.dense.cpu.forward_one_thread`` / ``backward_one_thread``),
  the cpu backend's ops until the split below and still its path for
  products under SMALL_MACS: slower alone than BLAS's own threads, but OpenBLAS's two-thread
  GEMM leaves its worker polling for work on the core numba's pool needs
  next, which slowed every numba kernel after it in the training step up to
  2x (``python -m kernels.system.instep``).
- tinynet, GEMM blocks in the pool: the cpu backend's ops. Each GEMM split
  into one block per numba thread, each a single-threaded BLAS call on a
  block of the row-major arrays in place (``tinynet.backends.cpu_blas.gemm``
  passes the leading dimension, which ``np.dot`` cannot): the forward by
  rows or columns of y, whichever is longer, with b added per block; the
  backward by blocks of the input features, dW's and dx's together.

GFLOP/s counts 2*N*I*O per GEMM: 3 GEMMs for forward + backward. Floor: the
bytes of x, W, b, y, dy, dx, dW and db.

The bench times the dense layers of the reference CNN at batch 64,
Dense(3136, 128) and Dense(128, 10), forward + backward with dx, against
torch.nn.Linear (forward + backward(dy), input with requires_grad=True), and
the public layer tn.Dense the same way.

    python -m kernels.dense --check      every variant against the reference
    python -m kernels.dense --bench      timings, GFLOP/s, torch beside them
"""
import numba
import numpy as np

from tinynet.backends import cpu, ref
from tinynet.backends.cpu_jit import njit_kernel
from tinynet.ops.dense.cases import CASES
from tinynet.ops.dense.cpu import add_bias, backward_one_thread, bias_grad, forward_one_thread
from tinynet.threads import single_threaded_kernel_blas
from kernels.common import Row, lab_main, median_time, tensor_bytes, torch_layer_seconds, try_torch

BATCH = 64
SHAPES = ((3136, 128), (128, 10))


def forward_ones_column(x, W, b):
    if b is None:
        return x @ W.T
    ones = np.ones((x.shape[0], 1), dtype=x.dtype)
    return np.concatenate([x, ones], axis=1) @ np.concatenate([W, b[:, None]], axis=1).T


def backward_ones_column(x, W, dy, has_bias, need_dx):
    dx = dy @ W if need_dx else None
    if not has_bias:
        return dx, dy.T @ x, None
    ones = np.ones((x.shape[0], 1), dtype=x.dtype)
    dWb = dy.T @ np.concatenate([x, ones], axis=1)
    return dx, np.ascontiguousarray(dWb[:, :-1]), dWb[:, -1].copy()


@njit_kernel(parallel=True)
def _gemm_row_blocks(A, B, C, blocks):
    # C = A @ B by blocks of rows: block i is C[r0:r1] = A[r0:r1] @ B, one
    # single-threaded BLAS call.
    # Parallel axis: row blocks (one per thread); block i writes only C[r0:r1].
    M = A.shape[0]
    for i in numba.prange(blocks):
        r0 = i * M // blocks
        r1 = (i + 1) * M // blocks
        np.dot(A[r0:r1], B, C[r0:r1])


def _matmul_pool(A, B):
    """A @ B as row blocks in numba's pool, BLAS on one thread."""
    A = np.ascontiguousarray(A)
    C = np.empty((A.shape[0], B.shape[1]), dtype=A.dtype)
    with single_threaded_kernel_blas():
        _gemm_row_blocks(A, B, C, max(1, min(A.shape[0], numba.get_num_threads())))
    return C


def _forward_bias_kernel(matmul, x, W, b):
    """y = matmul(x, W^T), then tinynet's bias kernel adds b in place."""
    y = matmul(x, W.T)
    if b is not None:
        add_bias(y, b)
    return y


def _backward_bias_kernel(matmul, x, W, dy, has_bias, need_dx):
    """dx and dW by ``matmul``, db by tinynet's float64 row-sum kernel."""
    db = None
    if has_bias:
        db = np.empty(dy.shape[1], dtype=dy.dtype)
        bias_grad(dy, db)
    dx = matmul(dy, W) if need_dx else None
    return dx, matmul(dy.T, x), db


def forward_bias_kernel(x, W, b):
    return _forward_bias_kernel(np.matmul, x, W, b)


def backward_bias_kernel(x, W, dy, has_bias, need_dx):
    return _backward_bias_kernel(np.matmul, x, W, dy, has_bias, need_dx)


def forward_row_blocks(x, W, b):
    return _forward_bias_kernel(_matmul_pool, x, W, b)


def backward_row_blocks(x, W, dy, has_bias, need_dx):
    return _backward_bias_kernel(_matmul_pool, x, W, dy, has_bias, need_dx)


VARIANTS = {
    "1 naive port": (ref.dense_forward, ref.dense_backward),
    "2 ones column": (forward_ones_column, backward_ones_column),
    "3 GEMM + bias kernels": (forward_bias_kernel, backward_bias_kernel),
    "4 GEMM row blocks in the pool": (forward_row_blocks, backward_row_blocks),
    "5 one BLAS thread": (forward_one_thread, backward_one_thread),
    "6 tinynet, GEMM blocks in the pool": (cpu.dense_forward, cpu.dense_backward),
}


def check():
    """Every variant against the ref ops over tinynet.ops.dense.cases, float32
    and float64, with and without the bias and dx."""
    rng = np.random.default_rng(0)
    for case in CASES:
        x64, W64 = rng.standard_normal(case.x_shape), rng.standard_normal(case.w_shape)
        b64, dy64 = rng.standard_normal(case.out_features), rng.standard_normal(case.y_shape)
        want = (ref.dense_forward(x64, W64, b64),) + ref.dense_backward(x64, W64, dy64, True, True)
        for dtype, tol in ((np.float64, 1e-12), (np.float32, 1e-4)):
            x, W, b, dy = (a.astype(dtype) for a in (x64, W64, b64, dy64))
            for name, (fwd, bwd) in VARIANTS.items():
                got = (fwd(x, W, b),) + tuple(bwd(x, W, dy, True, True))
                for what, g, w in zip(("y", "dx", "dW", "db"), got, want):
                    scale = max(1.0, float(np.abs(w).max()))
                    if g.dtype != dtype or not np.allclose(g, w, rtol=tol, atol=tol * scale):
                        raise AssertionError(f"variant {name}: {what} wrong for "
                                             f"{dtype.__name__} case {case.name}")
                assert bwd(x, W, dy, False, False)[0::2] == (None, None), name


def _torch_seconds(torch, x, W, dy):
    """torch.nn.Linear forward + backward(dy)."""
    linear = torch.nn.Linear(W.shape[1], W.shape[0])
    return torch_layer_seconds(torch, linear, x, dy, repeat=51)


def bench():
    import tinynet as tn
    rows = []
    torch = try_torch()
    rng = np.random.default_rng(0)
    for n_in, n_out in SHAPES:
        x = rng.standard_normal((BATCH, n_in)).astype(np.float32)
        W = rng.standard_normal((n_out, n_in)).astype(np.float32)
        b = rng.standard_normal(n_out).astype(np.float32)
        dy = rng.standard_normal((BATCH, n_out)).astype(np.float32)
        flops = 3 * 2 * BATCH * n_in * n_out
        floor = tensor_bytes(x, W, b, dy, dy, x, W, b)
        t_torch = _torch_seconds(torch, x, W, dy) if torch is not None else None
        op = f"{n_in}->{n_out} fwd+bwd"
        for name, (fwd, bwd) in VARIANTS.items():
            def step():
                fwd(x, W, b)
                bwd(x, W, dy, True, True)
            rows.append(Row(op, name, median_time(step, repeat=51), floor, flops, t_torch))
        layer = tn.Dense(n_in, n_out)

        def layer_step():
            layer.zero_grad()  # as torch's side, whose grads are set to None each time
            layer.forward(x)
            layer.backward(dy)
        rows.append(Row(f"Dense({n_in}, {n_out}) fwd+bwd", f"layer, tinynet {tn.backend_name()}",
                        median_time(layer_step, repeat=51), floor, flops, t_torch))
    return rows


def main(argv=None):
    return lab_main("dense", check, bench, argv)


if __name__ == "__main__":
    main()
