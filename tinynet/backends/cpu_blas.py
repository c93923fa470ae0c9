"""A BLAS GEMM on sub-blocks of arrays, callable inside cpu kernels.

numba's ``np.dot`` inside a kernel takes whole contiguous arrays and copies
any other operand first. Splitting one GEMM over numba's pool, a block of
columns per thread, needs operands that are column blocks of a row-major
array: ``x[:, i0:i1]`` is not contiguous, but BLAS reads it in place given
its leading dimension. ``gemm`` passes one:

    gemm(transa, transb, m, n, k, a, a_offset, lda, b, b_offset, ldb, beta, c, c_offset, ldc)

computes, in row-major terms, ``C = op(A) @ op(B) + beta * C``, where

- A is the matrix that starts at ``a.flat[a_offset]`` with rows ``lda``
  elements apart, op(A) is A (m, k) for transa == NOTRANS and A^T for
  TRANS (then A is (k, m) in memory); the same for B (k, n) and C (m, n);
- a, b and c are C-contiguous arrays of one float dtype (float32 or
  float64), of any number of dimensions: only their data pointer and dtype
  are used, so offsets count elements from the first one.

BLAS is column-major: the call computes C^T = op(B)^T op(A)^T, that is
BLAS's gemm with the operands swapped. It reaches the same BLAS as
``np.dot`` (``scipy.linalg.cython_blas``, through numba's own helper
``numba_xxgemm``, called by name), so a kernel that calls it is cached on
disk like any other. Run it with that BLAS on one thread
(``tinynet.threads.single_threaded_kernel_blas``) when many threads call it
at once. Nothing checks the bounds: the caller keeps every block inside its
array.

``tests/test_cpu_blas.py`` checks it against numpy over transposes, offsets,
leading dimensions and beta; ``kernels/dense.py`` races the Dense layer's
splits that use it.
"""
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic
from numba.np.linalg import ensure_blas

from .cpu_jit import njit_kernel

__all__ = ["gemm", "NOTRANS", "TRANS"]

NOTRANS = np.int8(ord("n"))
TRANS = np.int8(ord("t"))

_KIND = {types.float32: ord("s"), types.float64: ord("d")}


@intrinsic
def _element_pointer(typingctx, array, offset):
    """A pointer to ``array``'s element ``offset`` (counted in elements from the first)."""
    if not isinstance(array, types.Array) or array.dtype not in _KIND:
        return None
    sig = types.CPointer(array.dtype)(array, types.intp)

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        return builder.gep(data, [args[1]])
    return sig, codegen


@intrinsic
def _xxgemm(typingctx, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """numba's ``numba_xxgemm`` (column-major BLAS gemm), its kind taken from a's dtype."""
    if not isinstance(a, types.CPointer) or a.dtype not in _KIND:
        return None
    dtype = a.dtype
    pointer = types.CPointer(dtype)
    sig = types.intc(types.int8, types.int8, types.intp, types.intp, types.intp, pointer,
                     pointer, types.intp, pointer, types.intp, pointer, pointer, types.intp)

    def codegen(context, builder, signature, args):
        ensure_blas()  # scipy's BLAS must be importable, as for np.dot
        fnty = ir.FunctionType(ir.IntType(32), [ir.IntType(8)] + [context.get_value_type(t)
                                                                 for t in signature.args])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "numba_xxgemm")
        return builder.call(fn, [ir.Constant(ir.IntType(8), _KIND[dtype])] + list(args))
    return sig, codegen


@njit_kernel(inline="always")
def gemm(transa, transb, m, n, k, a, a_offset, lda, b, b_offset, ldb, beta, c, c_offset, ldc):
    """Row-major C = op(A) op(B) + beta C on blocks of a, b, c (see the module docstring).

    Returns numba's status, 0. (Its other value, -1, means the BLAS could not
    be loaded, which compiling the caller already rules out: it raises then,
    as for ``np.dot``. Nothing is raised inside, so a ``prange`` that calls
    gemm stays parallel.)
    Shapes: op(A) (m, k), op(B) (k, n), C (m, n); beta a float (0 ignores C's
    old values, NaN included).
    """
    coef = np.empty(2, c.dtype)
    coef[0] = 1
    coef[1] = beta
    # Column-major BLAS sees row-major C^T = op(B)^T op(A)^T: swap A and B.
    return _xxgemm(transb, transa, n, m, k, _element_pointer(coef, 0),
                     _element_pointer(b, b_offset), ldb, _element_pointer(a, a_offset), lda,
                     _element_pointer(coef, 1), _element_pointer(c, c_offset), ldc)
