"""`MatrixOperator`: the operator of a 2-D structured matrix view (`toeplitz`, `hankel`, ...).

Each of those matrices is a one-channel 1-D convolution (a Hankel matrix with its columns
reversed), so its operator is that `ConvOperator` seen on flat vectors: input ``(n,)``, output
``(rows,)``. ``T @ v`` on the view is ``T.operator @ v``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._algebra import BaseOperator, check_sparse_format
from ._conv import StridedOperator
from ._memory import format_bytes
from ._modes import pad, pad_adjoint
from ._operator import ConvOperator
from ._view import OperatorView, make_view

__all__ = ["MatrixOperator", "matrix_operator"]


class MatrixOperator(BaseOperator):
    """A matrix ``(rows, n)`` that is a 1-D one-channel convolution, its input or output reversed.

    Parameters
    ----------
    convolution : ConvOperator
        Channels-last, one spatial axis, one channel and one filter.
    reverse_input, reverse_output : bool
        Whether the vectors are reversed before, or the results after, the convolution.
    """

    def __init__(self, convolution: ConvOperator, reverse_input: bool = False, reverse_output: bool = False):
        self.convolution = convolution
        self.reverse_input = reverse_input
        self.reverse_output = reverse_output

    @property
    def input_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return self.convolution.input_shape[:1]

    @property
    def output_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return self.convolution.output_shape[:1]

    @property
    def dtype(self) -> np.dtype:  # type: ignore[override]
        return self.convolution.dtype

    @property
    def shape(self) -> tuple[int, int]:
        return self.matrix_shape

    @property
    def nbytes(self) -> int:
        """Bytes of the dense matrix."""
        return self.convolution.nbytes

    @property
    def buffer_nbytes(self) -> int:
        """Bytes of the buffer behind `view`."""
        return self.convolution.buffer_nbytes

    @property
    def H(self) -> MatrixOperator:  # noqa: N802
        return MatrixOperator(self.convolution.H, self.reverse_output, self.reverse_input)

    @property
    def T(self) -> MatrixOperator:  # noqa: N802
        return MatrixOperator(self.convolution.transpose(), self.reverse_output, self.reverse_input)

    @property
    def view(self) -> OperatorView:
        """The read-only matrix view; ``view.operator is self``."""
        return make_view(self._flipped(self.convolution.view[:, 0, :, 0]), self)

    def _flipped(self, matrix: Any) -> Any:
        """`matrix` (rows, n) of the convolution with this operator's reversals (a view)."""
        return matrix[:: -1 if self.reverse_output else 1, :: -1 if self.reverse_input else 1]

    def _product(self, batch: np.ndarray) -> np.ndarray:
        if self.reverse_input:
            batch = batch[:, ::-1]
        convolution = self.convolution
        work = math.prod(convolution.output_shape) * convolution._kernel.size  # direct products per vector
        if np.result_type(self.dtype, batch.dtype).kind in "fc" and work > _FFT_ABOVE:
            result = _fft_product(convolution, batch)
        else:  # small matrices, integers and booleans: the direct products
            result = self.convolution.apply(batch[..., None])[..., 0]
        return result[:, ::-1] if self.reverse_output else result

    def to_matrix(self, max_bytes: int | None = None) -> np.ndarray:
        return np.ascontiguousarray(self._flipped(self.convolution.to_matrix(max_bytes)))

    def materialize(self, out: np.ndarray | None = None, max_bytes: int | None = None) -> np.ndarray:
        """Dense writable copy of the matrix; see `stridedop.materialize`."""
        from ._materialize import materialize

        return materialize(self.view, out=out, max_bytes=max_bytes)

    def to_sparse(self, format: str = "csr") -> Any:
        format = check_sparse_format(format)
        matrix = self.convolution.to_sparse("csr")
        rows, columns = self.matrix_shape
        rows_order = np.arange(rows)[:: -1 if self.reverse_output else 1]
        columns_order = np.arange(columns)[:: -1 if self.reverse_input else 1]
        return matrix[rows_order][:, columns_order].asformat(format)

    def __repr__(self) -> str:
        both = (("rows", self.reverse_output), ("columns", self.reverse_input))
        flips = [name for name, flip in both if flip]
        return (
            f"<MatrixOperator {self.matrix_shape} {self.dtype}: {self.convolution._kernel.shape[0]}-tap "
            f"convolution{''.join(f', reversed {name}' for name in flips)}; "
            f"{format_bytes(self.nbytes)} dense, {format_bytes(self.buffer_nbytes)} held>"
        )


_FFT_ABOVE = 2**18  # direct products per vector above which the FFT is used (floats only)


def _fft_size(length: int) -> int:
    """The smallest ``2**a * 3**b >= length``: a fast FFT length."""
    best = 1 << max(0, (length - 1).bit_length())
    power3 = 1
    while power3 < best:
        size = power3 << max(0, (-(-length // power3) - 1).bit_length())
        best = min(best, size)
        power3 *= 3
    return best


def _fft_convolve(a: np.ndarray, b: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Full linear convolution of the rows of `a` with the vector `b`, by FFT."""
    length = a.shape[-1] + b.shape[-1] - 1
    size = _fft_size(length)
    if dtype.kind == "c":
        product = np.fft.fft(a, size) * np.fft.fft(b, size)
        return np.fft.ifft(product)[..., :length].astype(dtype, copy=False)
    product = np.fft.rfft(a, size) * np.fft.rfft(b, size)
    return np.fft.irfft(product, size)[..., :length].astype(dtype, copy=False)


def _fft_product(convolution: ConvOperator, batch: np.ndarray) -> np.ndarray:
    """A one-channel 1-D convolution (either direction) of a batch ``(B, n)``, by FFT.

    A structured matrix's kernel is as long as its rows and columns together, so the direct
    products cost ``rows * columns`` operations where the FFT needs ``(rows + columns) log``.
    """
    geometry = convolution._geometry
    taps = convolution._state.oriented_kernel(convolution._conjugated)[:, 0, 0]
    dtype = np.result_type(taps.dtype, batch.dtype)
    pads = [(0, 0), *geometry.pads]
    if not convolution._transposed:  # correlate the padded input: convolve with reversed taps
        padded = pad(batch, pads, geometry.mode)
        full = _fft_convolve(padded, taps[::-1], dtype)
        return full[:, taps.size - 1 : padded.shape[1]]
    return pad_adjoint(_fft_convolve(batch, taps, dtype), pads, geometry.mode)


def matrix_operator(strided: StridedOperator, reverse_input: bool) -> MatrixOperator:
    """The `MatrixOperator` of a filled one-channel 1-D buffer (a view's recipe)."""
    return MatrixOperator(ConvOperator._of_buffer(strided), reverse_input)
