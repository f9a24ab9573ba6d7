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
