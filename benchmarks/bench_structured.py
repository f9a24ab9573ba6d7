"""Structured matrices: the zero-copy views against SciPy's dense copies."""

import numpy as np
from numpy.lib.array_utils import byte_bounds

import stridedop


def _arguments(kind, n, rng):
    if kind == "convolution_matrix":
        return (rng.standard_normal(max(1, n // 16)), n)
    if kind == "circulant":
        return (rng.standard_normal(n),)
    return (rng.standard_normal(n), rng.standard_normal(n + 3))


class Structured:
    params = [["toeplitz", "hankel", "circulant", "convolution_matrix"], [64, 2048]]
    param_names = ["matrix", "n"]

    def setup(self, kind, n):
        self.arguments = _arguments(kind, n, np.random.default_rng(0))
        self.function = getattr(stridedop, kind)

    def time_view(self, kind, n):
        self.function(*self.arguments)

    def peakmem_view(self, kind, n):
        self.function(*self.arguments)

    def track_reachable_over_dense(self, kind, n):
        view = self.function(*self.arguments)
        low, high = byte_bounds(view)
        return (high - low) / view.nbytes

    track_reachable_over_dense.unit = "ratio"


class ScipyStructured:
    """SciPy's dense copies of the same matrices (skipped when SciPy is not installed)."""

    params = Structured.params
    param_names = Structured.param_names

    def setup(self, kind, n):
        try:
            import scipy.linalg
        except ImportError:
            raise NotImplementedError("SciPy is not installed") from None
        self.arguments = _arguments(kind, n, np.random.default_rng(0))
        self.function = getattr(scipy.linalg, kind)

    def time_dense(self, kind, n):
        self.function(*self.arguments)

    def peakmem_dense(self, kind, n):
        self.function(*self.arguments)


class StructuredProduct:
    """``T @ v`` on a Toeplitz view (through its operator, by FFT) against NumPy on the plain view."""

    params = [[1000, 20000]]
    param_names = ["n"]

    def setup(self, n):
        rng = np.random.default_rng(0)
        self.T = stridedop.toeplitz(rng.standard_normal(n), rng.standard_normal(n))
        self.plain = np.asarray(self.T)
        self.v = rng.standard_normal(n)
        self.T @ self.v  # builds T.operator

    def time_view_matvec(self, n):
        self.T @ self.v

    def time_view_rmatvec(self, n):
        self.v @ self.T

    def time_numpy_on_plain_view(self, n):
        self.plain @ self.v
