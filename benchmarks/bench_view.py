"""Building the operator view: time, peak memory, and the bytes it can reach."""

import math

import numpy as np
from numpy.lib.array_utils import byte_bounds

import stridedop
from stridedop._conv import _cached_plan

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
