"""Singular values and norms, on one BLAS thread: stridedop against the textbook FFT + SVD."""

import numpy as np
from threadpoolctl import threadpool_limits

import stridedop

SHAPES = {
    # name: (k, C, F, m, stride)
    "3x3x64x64 on 32x32": (3, 64, 64, 32, 1),
    "5x5x64x64 on 12x12": (5, 64, 64, 12, 1),
    "3x3x64x128 on 16x16 stride 2": (3, 64, 128, 16, 2),
}


class _Layer:
    """A seeded random layer of one of `SHAPES` with the subclass's `padding`, on one thread."""

    params = [list(SHAPES)]
    param_names = ["shape"]
    padding = "same"

    def setup(self, shape):
        self.limits = threadpool_limits(limits=1)
        k, channels, filters, m, stride = SHAPES[shape]
        self.kernel = np.random.default_rng(0).standard_normal((k, k, channels, filters))
        self.op = stridedop.ConvOperator(self.kernel, (m, m, channels), padding=self.padding, stride=stride)

    def teardown(self, shape):
        self.limits.restore_original_limits()


class Circular(_Layer):
    padding = "circular"

    def time_svdvals(self, shape):
        self.op.svdvals()

    def time_norm(self, shape):
        self.op.norm()

    def time_textbook_fft_svd(self, shape):
        """Sedghi et al.: FFT of the kernel on the grid, SVD of every frequency (stride 1 values)."""
        m = self.op.input_shape[0]
        np.linalg.svd(np.fft.fft2(self.kernel, (m, m), axes=(0, 1)), compute_uv=False)

    def peakmem_svdvals(self, shape):
        self.op.svdvals()


class ZeroPadding(_Layer):
    padding = "same"

    def time_norm(self, shape):
        self.op.norm()

    def time_norm_bounds(self, shape):
        self.op.norm_bounds()

    def time_norm_fro(self, shape):
        self.op.norm("fro")

    def time_power_iteration_100(self, shape):
        x = np.random.default_rng(0).standard_normal(self.op.input_shape)
        for _ in range(100):
            x = self.op.H @ (self.op @ x)
            x /= np.linalg.norm(x)

    def track_bounds_gap(self, shape):
        lower, upper = self.op.norm_bounds()
        return upper / lower - 1

    track_bounds_gap.unit = "relative"
