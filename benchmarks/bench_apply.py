"""ConvOperator: apply and adjoint, on one BLAS thread (PyTorch on one thread too, when installed)."""

import numpy as np
from threadpoolctl import threadpool_limits

import stridedop

SHAPES = {
    # name: (batch, m, C, F, k)
    "1x32x32x16->16 3x3": (1, 32, 16, 16, 3),
    "8x32x32x16->16 3x3": (8, 32, 16, 16, 3),
    "4x64x64x32->32 3x3": (4, 64, 32, 32, 3),
    "1x128x128x3->16 7x7": (1, 128, 3, 16, 7),
}


class Apply:
    params = [list(SHAPES), ["float32", "float64"], ["channels_last", "channels_first"]]
    param_names = ["shape", "dtype", "layout"]

    def setup(self, shape, dtype, layout):
        self.limits = threadpool_limits(limits=1)
        batch, m, channels, filters, k = SHAPES[shape]
        rng = np.random.default_rng(0)
        kernel = rng.standard_normal((k, k, channels, filters)).astype(dtype)
        if layout == "channels_first":
            self.op = stridedop.ConvOperator(kernel.transpose(3, 2, 0, 1), (channels, m, m), layout=layout)
        else:
            self.op = stridedop.ConvOperator(kernel, (m, m, channels))
        self.x = rng.standard_normal((batch, *self.op.input_shape)).astype(dtype)
        self.y = rng.standard_normal((batch, *self.op.output_shape)).astype(dtype)

    def teardown(self, shape, dtype, layout):
        self.limits.restore_original_limits()

    def time_apply(self, shape, dtype, layout):
        self.op @ self.x

    def time_adjoint(self, shape, dtype, layout):
        self.op.T @ self.y

    def peakmem_apply(self, shape, dtype, layout):
        self.op @ self.x


class TorchConv2d:
    """The reference the apply speed is compared with (skipped when PyTorch is not installed)."""

    params = [list(SHAPES), ["float32", "float64"]]
    param_names = ["shape", "dtype"]

    def setup(self, shape, dtype):
        try:
            import torch
        except ImportError:
            raise NotImplementedError("PyTorch is not installed") from None
        torch.set_num_threads(1)
        batch, m, channels, filters, k = SHAPES[shape]
        rng = np.random.default_rng(0)
        self.conv = torch.nn.functional.conv2d
        self.kernel = torch.from_numpy(rng.standard_normal((filters, channels, k, k)).astype(dtype))
        self.x = torch.from_numpy(rng.standard_normal((batch, channels, m, m)).astype(dtype))

    def time_conv2d(self, shape, dtype):
        self.conv(self.x, self.kernel)
