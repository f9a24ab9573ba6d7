"""materialize against the two dense constructions, float32, 3x3x16x16 kernel."""

import numpy as np

import stridedop

from .common import advanced_index, loop_fill


class Materialize:
    params = [[12, 21]]
    param_names = ["input size"]
    timeout = 120

    def setup(self, size):
        self.kernel = np.random.default_rng(0).standard_normal((3, 3, 16, 16)).astype(np.float32)
        self.input_shape = (size, size, 16)
        self.view = stridedop.conv_view(self.kernel, self.input_shape)

    def time_materialize(self, size):
        stridedop.materialize(self.view)

    def time_loop_fill(self, size):
        loop_fill(self.kernel, self.input_shape)

    def time_advanced_index(self, size):
        advanced_index(self.kernel, self.input_shape)

    def peakmem_materialize(self, size):
        stridedop.materialize(self.view)

    def track_dense_bytes(self, size):
        return self.view.nbytes

    track_dense_bytes.unit = "bytes"
