"""The fits behind the cpu backend's float32 GELU (tinynet/ops/activation/cpu.py).

float32 GELU needs Phi(v) = erfc(-v / sqrt(2)) / 2 in a loop that vectorizes,
so without libm. With z = |v| / sqrt(2) and t = 1 / (1 + p z) it writes

    Phi(-|v|) = t * Q(t) * exp(-z^2),   Q(t) = 1/2 + (t - 1) * S(t),

and Phi(|v|) = 1 - Phi(-|v|). exp(-z^2) = sqrt(2 pi) * pdf(v) is the one
exponential of both the forward and the backward (which also needs the pdf).
S is a polynomial of degree 6 fitted here for the smallest maximum relative
error of Phi(-|v|) over z in [0, 10] (past z = 9.3, Phi(-|v|) is below
float32's smallest normal number). The form 1/2 + (t - 1) S(t) makes Phi(0)
exactly 1/2. As z grows, t Q(t) tends to Q(0) / (p z), against the true
1 / (2 sqrt(pi) z): the fit finds that tail too.

The exponential is e^r = 1 + r S_e(r) on |r| <= ln(2) / 2 after the usual
reduction exp(a) = 2^n e^r, with S_e of degree 4 fitted the same way
(tinynet.backends.cpu_jit's ``vector_exp_normal_f32``).

The fit is Lawson's algorithm: weighted least squares whose weights grow
where the error is largest, which converges to the minimax fit; p is chosen
by a golden-section search. ``python -m kernels.gelu_fit`` prints the
coefficients the cpu backend carries, rounded to float32, and their maximum
relative errors evaluated in float64 (computing in float32 adds a few
float32 ulps, which tests/ops/test_activation.py bounds). NumPy and the
standard library only.
"""
import math

import numpy as np

# Degrees of S and S_e, and the number of Lawson iterations.
GELU_DEGREE = 6
EXP_DEGREE = 4
ITERATIONS = 300


def lawson(x, f, a, b, degree, iterations=ITERATIONS):
    """Coefficients c (lowest first) of S minimizing max |a + b S(x) - f| / |f|.

    Parameters
    ----------
    x, f, a, b : (M,) float64 arrays
        Sample points, target values, and the fixed offset and factor of the
        form a + b * S(x).
    degree : int
        Degree of S.

    Returns
    -------
    (c, err)
        c : (degree + 1,) float64, the coefficients of S, x^0 first;
        err : float, the maximum relative error on the samples.
    """
    rows = np.vander(x, degree + 1, increasing=True) * (b / f)[:, None]
    target = (f - a) / f
    weights = np.full(x.size, 1.0 / x.size)
    for _ in range(iterations):
        root = np.sqrt(weights)
        c = np.linalg.lstsq(rows * root[:, None], target * root, rcond=None)[0]
        err = np.abs(rows @ c - target)
        weights = weights * err
        weights /= weights.sum()
    return c, float(np.abs(rows @ c - target).max())


def _erfcx(z):
    """exp(z^2) * erfc(z) in float64 (math.erfc is right to a few ulps here)."""
    return np.array([math.exp(w * w) * math.erfc(w) for w in z])


def fit_gelu(p, samples=20001, iterations=ITERATIONS):
    """The fit of S for a given p: (c, max relative error of Phi(-|v|))."""
    z = np.linspace(0.0, 10.0, samples)
    t = 1.0 / (1.0 + p * z)
    # Phi(-|v|) = erfc(z) / 2 = t Q(t) exp(-z^2): the target is Q(t).
    q = 0.5 * _erfcx(z) / t
    return lawson(t, q, np.full_like(t, 0.5), t - 1.0, GELU_DEGREE, iterations)


def best_p(lo=0.2, hi=0.7, steps=24):
    """Golden-section search of p for the smallest maximum relative error."""
    golden = (math.sqrt(5.0) - 1.0) / 2.0

    def err(p):
        return fit_gelu(p, samples=4001, iterations=60)[1]

    a, b = lo, hi
    c, d = b - golden * (b - a), a + golden * (b - a)
    ec, ed = err(c), err(d)
    for _ in range(steps):
        if ec < ed:
            b, d, ed = d, c, ec
            c = b - golden * (b - a)
            ec = err(c)
        else:
            a, c, ec = c, d, ed
            d = a + golden * (b - a)
            ed = err(d)
    return float(np.float32((a + b) / 2))


def fit_exp(samples=20001, iterations=ITERATIONS):
    """S_e with e^r = 1 + r S_e(r) on |r| <= ln(2) / 2: (c, max relative error)."""
    r = np.linspace(-math.log(2.0) / 2, math.log(2.0) / 2, samples)
    return lawson(r, np.exp(r), np.ones_like(r), r, EXP_DEGREE, iterations)


def gelu_error(p, s, samples=200001):
    """Max relative error of t Q(t) exp(-z^2) against erfc(z) / 2, z in [0, 10]."""
    z = np.linspace(0.0, 10.0, samples)
    t = 1.0 / (1.0 + p * z)
    q = 0.5 + (t - 1.0) * np.polynomial.polynomial.polyval(t, s)
    return float(np.max(np.abs(t * q / (0.5 * _erfcx(z)) - 1)))


def exp_error(s, samples=200001):
    """Max relative error of 1 + r S_e(r) against e^r, |r| <= ln(2) / 2."""
    r = np.linspace(-math.log(2.0) / 2, math.log(2.0) / 2, samples)
    return float(np.max(np.abs((1.0 + r * np.polynomial.polynomial.polyval(r, s)) / np.exp(r) - 1)))


def main():
    # The kernel carries float32 coefficients: the errors are those of the
    # rounded coefficients, evaluated in float64.
    p = best_p()
    s = [float(np.float32(c)) for c in fit_gelu(p)[0]]
    print(f"p = {p!r}")
    print(f"S (t^0 first) = {s}")
    print(f"max relative error of Phi(-|v|), z in [0, 10]: {gelu_error(p, s):.3g}")
    se = [float(np.float32(c)) for c in fit_exp()[0]]
    print(f"S_e (r^0 first) = {se}")
    print(f"max relative error of e^r, |r| <= ln(2)/2: {exp_error(se):.3g}")


if __name__ == "__main__":
    main()
