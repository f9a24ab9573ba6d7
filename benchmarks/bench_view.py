"""Building the operator view: time, peak memory, and the bytes it can reach."""

import math

import numpy as np
from numpy.lib.array_utils import byte_bounds

import stridedop
from stridedop._buffer import _view
from stridedop._conv import StridedOperator, _cached_plan

from .common import advanced_index, loop_fill

CASES = {
    "2x2x3x2 on 5x5x3": ((2, 2, 3, 2), (5, 5, 3), {}),
    "3x3x16x16 on 32x32x16": ((3, 3, 16, 16), (32, 32, 16), {}),
    "3x3x16x16 on 32x32x16 same s2": ((3, 3, 16, 16), (32, 32, 16), {"padding": "same", "stride": 2}),
    "3x3x16x16 on 32x32x16 circular": ((3, 3, 16, 16), (32, 32, 16), {"padding": "circular"}),
    "3x3x3x8x8 on 16x16x16x8 same d2": ((3, 3, 3, 8, 8), (16, 16, 16, 8), {"padding": "same", "dilation": 2}),
}


class ConvView:
    params = [list(CASES)]
    param_names = ["case"]

    def setup(self, case):
        kernel_shape, self.input_shape, self.kwargs = CASES[case]
        self.kernel = np.random.default_rng(0).standard_normal(kernel_shape)

    def time_conv_view(self, case):
        stridedop.conv_view(self.kernel, self.input_shape, **self.kwargs)

    def time_conv_view_uncached(self, case):
        _cached_plan.cache_clear()  # geometry and layout computed again
        stridedop.conv_view(self.kernel, self.input_shape, **self.kwargs)

    def peakmem_conv_view(self, case):
        stridedop.conv_view(self.kernel, self.input_shape, **self.kwargs)

    def track_reachable_over_dense(self, case):
        W = stridedop.conv_view(self.kernel, self.input_shape, **self.kwargs)
        low, high = byte_bounds(W)
        return (high - low) / W.nbytes

    track_reachable_over_dense.unit = "ratio"

    def track_reachable_over_bound(self, case):
        op = stridedop.ConvOperator(self.kernel, self.input_shape, **self.kwargs)
        low, high = byte_bounds(op.view)
        geometry = op._geometry
        sizes = [
            2 * axis.size if geometry.circular else axis.size + axis.lo + axis.hi for axis in geometry.axes
        ]
        return (high - low) / (
            op.view.itemsize * geometry.channels * (geometry.filters + 1) * math.prod(sizes)
        )

    track_reachable_over_bound.unit = "ratio"


class DenseConstructions:
    """The baselines of the view build, at the 5x5 example (the large one is in core_figures.py)."""

    def setup(self):
        self.kernel = np.random.default_rng(0).standard_normal((2, 2, 3, 2))

    def time_loop_fill(self):
        loop_fill(self.kernel, (5, 5, 3))

    def time_advanced_index(self):
        advanced_index(self.kernel, (5, 5, 3))


class ViewContractions:
    """Contractions on the view (through its operator) against ``op @ x``; 3x3x16x16 kernels."""

    params = [["32x32x16 float32", "64x64x16 float64"]]
    param_names = ["input"]

    def setup(self, case):
        size, dtype = (32, np.float32) if case.startswith("32") else (64, np.float64)
        rng = np.random.default_rng(0)
        self.x = rng.standard_normal((size, size, 16)).astype(dtype)
        self.W = stridedop.conv_view(rng.standard_normal((3, 3, 16, 16)).astype(dtype), self.x.shape)
        self.op = self.W.operator
        self.y = self.op @ self.x

    def time_tensordot_view(self, case):
        np.tensordot(self.W, self.x, 3)

    def time_einsum_view(self, case):
        np.einsum("abcdef,def->abc", self.W, self.x)

    def time_tensordot_transpose_view(self, case):
        np.tensordot(self.y, self.W, 3)

    def time_apply(self, case):
        self.op @ self.x

    def peakmem_tensordot_view(self, case):
        np.tensordot(self.W, self.x, 3)

    def peakmem_einsum_view(self, case):
        np.einsum("abcdef,def->abc", self.W, self.x)


class ViewBuild:
    """What the OperatorView subclass adds to building a view from a filled buffer."""

    def setup(self):
        kernel = np.random.default_rng(0).standard_normal((3, 3, 16, 16))
        geometry = stridedop.ConvOperator(kernel, (32, 32, 16))._geometry
        self.strided = StridedOperator.build(kernel, geometry)

    def time_plain_view(self):
        geometry, plan, buffer = self.strided
        _view(buffer, plan.origin, geometry.view_shape, plan.view_steps)

    def time_operator_view(self):
        self.strided.view()
