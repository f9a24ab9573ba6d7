"""`MatrixOperator`: the operator of a 2-D structured matrix view (`toeplitz`, `hankel`, ...).

Each of those matrices is a one-channel 1-D convolution (a Hankel matrix with its columns
reversed), so its operator is that `ConvOperator` seen on flat vectors: input ``(n,)``, output
``(rows,)``. ``T @ v`` on the view is ``T.operator @ v``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._algebra import BaseOperator, check_sparse_format
from ._conv import StridedOperator
from ._memory import format_bytes
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
        return MatrixOperator(self.convolution.T, self.reverse_output, self.reverse_input)

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


def matrix_operator(strided: StridedOperator, reverse_input: bool) -> MatrixOperator:
    """The `MatrixOperator` of a filled one-channel 1-D buffer (a view's recipe)."""
    return MatrixOperator(ConvOperator._of_buffer(strided), reverse_input)
