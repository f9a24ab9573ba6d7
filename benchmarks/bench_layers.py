"""The layer table of issue 12 and the FFT rows: apply and adjoint, one BLAS thread.

`benchmarks/planner_figures.py` prints the same rows as ratios against PyTorch, SciPy and PyLops
measured in one run; here asv tracks each row across commits.
"""

import numpy as np
from threadpoolctl import threadpool_limits

try:  # SciPy's BLAS is a library of its own: load it before threadpoolctl limits the threads
    import scipy.linalg.blas  # noqa: F401
except ImportError:
    pass

import stridedop

from .layers import FFT_SIZES, LAYERS


def _adjoint(op):
    """``op.H`` where it exists, else 0.1's ``op.T`` (the conjugate transpose there)."""
    return op.H if hasattr(op, "H") else op.T


class Layers:
    params = [list(LAYERS), ["channels_first", "channels_last"]]
    param_names = ["layer", "layout"]
    timeout = 120

    def setup(self, layer, layout):
        self.limits = threadpool_limits(limits=1)
        spec = LAYERS[layer]
        kernel, x = spec.arrays()
        self.op = spec.operator(kernel, layout)
        self.x = x if layout == "channels_first" else np.ascontiguousarray(np.moveaxis(x, 1, -1))
        self.y = self.op @ self.x
        self.adjoint = _adjoint(self.op)

    def teardown(self, layer, layout):
        self.limits.restore_original_limits()

    def time_apply(self, layer, layout):
        self.op @ self.x

    def time_adjoint(self, layer, layout):
        self.adjoint @ self.y

    def peakmem_adjoint(self, layer, layout):
        self.adjoint @ self.y


class SingleChannelFFT:
    """One channel, 'same', float64 on 256x256: the planner's FFT rows, and SciPy's correlate."""

    params = [list(FFT_SIZES)]
    param_names = ["case"]

    def setup(self, case):
        self.limits = threadpool_limits(limits=1)
        size, k = FFT_SIZES[case]
        rng = np.random.default_rng(5)
        self.kernel = rng.standard_normal((k, k))
        self.image = rng.standard_normal((size, size))
        self.op = stridedop.ConvOperator(self.kernel[:, :, None, None], (size, size, 1), padding="same")
        self.adjoint = _adjoint(self.op)
        self.x = self.image[..., None]

    def teardown(self, case):
        self.limits.restore_original_limits()

    def time_apply(self, case):
        self.op @ self.x

    def time_adjoint(self, case):
        self.adjoint @ self.x

    def time_scipy_correlate_fft(self, case):
        try:
            import scipy.signal
        except ImportError:
            raise NotImplementedError("SciPy is not installed") from None
        scipy.signal.correlate(self.image, self.kernel, mode="same", method="fft")
