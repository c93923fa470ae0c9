"""Kernel lab: the normalization family (BatchNorm, LayerNorm, InstanceNorm, GroupNorm).

SCRATCH
"""
import math

import numpy as np
import numba

from tinynet.backends import ref
from tinynet.backends.cpu.jit import njit_kernel

SHAPE = (64, 32, 28, 28)


def _sets(N, C, groups, per_channel):
    return C if per_channel else N * groups


# -- variant 1: naive port, one prange iteration per set ----------------------

@njit_kernel(parallel=True)
def _v1_stats(x, groups, per_channel, eps, mean, var):
    N, C, L = x.shape
    S = mean.shape[0]
    for s in numba.prange(S):
        if per_channel:
            n0, n1, c0, c1 = 0, N, s, s + 1
        else:
            Cg = C // groups
            n0 = s // groups
            n1 = n0 + 1
            c0 = (s - n0 * groups) * Cg
            c1 = c0 + Cg
        M = (n1 - n0) * (c1 - c0) * L
        acc = 0.0
        for n in range(n0, n1):
            for c in range(c0, c1):
                for l in range(L):
                    acc += x[n, c, l]
        m = acc / M
        acc = 0.0
        for n in range(n0, n1):
            for c in range(c0, c1):
                for l in range(L):
                    d = x[n, c, l] - m
                    acc += d * d
        mean[s] = m
        var[s] = acc / M


def stats_v1(x, groups, per_channel, eps):
    S = _sets(x.shape[0], x.shape[1], groups, per_channel)
    mean = np.empty(S)
    var = np.empty(S)
    _v1_stats(x, groups, per_channel, eps, mean, var)
    return mean, var, 1.0 / np.sqrt(var + eps)
