"""Every process-wide setting tinynet makes, and when it makes them.

Importing tinynet changes nothing in the process. The settings below are made
once, by ``apply()``, when the cpu backend is first loaded (the first layer
that runs a cpu op, or ``tn.set_backend("cpu")``) or by ``tn.set_num_threads``
/ ``tn.get_num_threads``, whichever comes first, that is before numba's thread
pool starts. ``tn.set_num_threads(n)`` is the one run-time knob. Each is skipped when the user has already chosen:

===============================  ==========================  ===============================
setting                          why (measured)              opt out
===============================  ==========================  ===============================
``OMP_WAIT_POLICY=PASSIVE``      idle omp workers spin and   set ``OMP_WAIT_POLICY`` yourself
(environment, read by libgomp    take the cores BLAS needs:
when numba starts its pool)      kernel + GEMM interleaved
                                 ran 3.3x their sum
                                 (``python -m kernels.system.threads``);
                                 for the omp fallback
``NUMBA_THREADING_LAYER_         tbb, omp, workqueue (tbb,   set ``NUMBA_THREADING_LAYER`` or
PRIORITY`` (and                  workqueue, omp when torch's ``NUMBA_THREADING_LAYER_PRIORITY``
``numba.config``); a             libgomp is already loaded):
pip-installed libtbb is          the step 0.83-0.84x of omp
loaded (``preload_tbb``)         + PASSIVE, 1.0x with a
                                 core busy elsewhere
                                 (``python -m kernels.system.instep``)
glibc ``mallopt``                multi-MB outputs reused     ``TINYNET_MALLOPT=0``, or set any
(M_MMAP_THRESHOLD,               without page faults: the    ``MALLOC_*_`` variable of glibc
M_TRIM_THRESHOLD, M_TOP_PAD)     step 27 -> 24 ms
                                 (``kernels.system.instep``,
                                 "glibc malloc defaults")
===============================  ==========================  ===============================

The details and the full measurements are in ``tinynet.threads`` (the
threading layer and the wait policy) and ``tinynet.alloc`` (the allocator).
``APPLIED`` records what was set in this process.
"""
import functools
from typing import TypedDict

from . import alloc, threads

__all__ = ["apply", "APPLIED", "set_num_threads", "get_num_threads", "ThreadCounts"]

APPLIED: dict[str, str | int] = {}
"""What ``apply()`` set in this process: environment variables (name -> value)
and mallopt parameters (name -> bytes); empty until the cpu backend loads."""
_done = False


def apply() -> dict[str, str | int]:
    """Make the settings of the module docstring, once per process.

    Returns
    -------
    dict
        Everything applied in this process (``APPLIED``).
    """
    global _done
    if not _done:
        _done = True
        APPLIED.update(threads.configure_threading())
        APPLIED.update(alloc.configure_allocator())
    return APPLIED


class ThreadCounts(TypedDict):
    """What ``get_num_threads`` returns: numba's count, and BLAS's (None without a BLAS)."""

    numba: int
    blas: int | None


# tn.set_num_threads / tn.get_num_threads: tinynet.threads' functions after
# apply(), since numba's pool starts there at the latest (their docstrings).
@functools.wraps(threads.set_num_threads)
def set_num_threads(n: int) -> None:
    apply()
    threads.set_num_threads(n)


@functools.wraps(threads.get_num_threads)
def get_num_threads() -> ThreadCounts:
    apply()
    return threads.get_num_threads()
