"""The layer table of issue 12: one definition shared by the figures script and the asv suite."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import stridedop


@dataclass(frozen=True)
class Layer:
    """One convolution layer: batch, spatial input, channels, filters, kernel and geometry."""

    batch: int
    spatial: tuple[int, ...]
    channels: int
    filters: int
    kernel: tuple[int, ...]
    stride: int = 1
    dilation: int = 1
    groups: int = 1
    padding: int = 0  # on both sides of every axis
    dtype: str = "float32"

    def arrays(self, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Channels-first kernel ``(F, C // groups, *k)`` and input ``(B, C, *m)``."""
        rng = np.random.default_rng(seed)
        kernel = rng.standard_normal((self.filters, self.channels // self.groups, *self.kernel))
        x = rng.standard_normal((self.batch, self.channels, *self.spatial))
        return kernel.astype(self.dtype), x.astype(self.dtype)

    def operator(self, kernel_cf: np.ndarray, layout: str, method: str = "auto") -> stridedop.ConvOperator:
        """The stridedop operator of this layer for a channels-first kernel, in either layout."""
        n = len(self.spatial)
        options = {"padding": self.padding, "stride": self.stride, "dilation": self.dilation}
        options["groups"] = self.groups
        if method != "auto":  # 0.1 has no `method`
            options["method"] = method
        if layout == "channels_first":
            shape = (self.channels, *self.spatial)
            return stridedop.ConvOperator(kernel_cf, shape, layout=layout, **options)
        kernel = np.ascontiguousarray(kernel_cf.transpose(*range(2, n + 2), 1, 0))
        return stridedop.ConvOperator(kernel, (*self.spatial, self.channels), **options)

    def output_padding(self) -> int:
        """The ``output_padding`` that makes PyTorch's transposed convolution give the input size."""
        size, k = self.spatial[0], self.kernel[0]
        extent = (k - 1) * self.dilation + 1
        return (size + 2 * self.padding - extent) % self.stride


LAYERS = {
    "8x32x32, 3x3, 16->16": Layer(8, (32, 32), 16, 16, (3, 3)),
    "stride 2, 16->32": Layer(8, (32, 32), 16, 32, (3, 3), stride=2),
    "dilation 2": Layer(8, (32, 32), 16, 16, (3, 3), dilation=2),
    "depthwise 32": Layer(8, (32, 32), 32, 32, (3, 3), groups=32),
    "groups 4": Layer(8, (32, 32), 32, 32, (3, 3), groups=4),
    "1x1, 64->64": Layer(8, (32, 32), 64, 64, (1, 1)),
    "7x7 stride 2, 3->32": Layer(8, (64, 64), 3, 32, (7, 7), stride=2, padding=3),
    "1x128x128, 7x7, 3->16": Layer(1, (128, 128), 3, 16, (7, 7)),
    "1-D, 1024, 5 taps, 16->16": Layer(8, (1024,), 16, 16, (5,)),
    "3-D, 16^3, 8->8": Layer(2, (16, 16, 16), 8, 8, (3, 3, 3)),
    "float64 4x64x64, 32->32": Layer(4, (64, 64), 32, 32, (3, 3), dtype="float64"),
    "float64 1 channel 256^2, 15x15": Layer(1, (256, 256), 1, 1, (15, 15), padding=7, dtype="float64"),
}

# Single-channel 'same' correlations against SciPy's and PyLops' FFT convolutions (float64).
FFT_SIZES = {"7x7 on 256x256": (256, 7), "15x15 on 256x256": (256, 15), "31x31 on 256x256": (256, 31)}
