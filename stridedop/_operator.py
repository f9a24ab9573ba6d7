"""`ConvOperator`: the convolution operator as an object that applies itself without being built."""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np

from ._apply import convolve, convolve_adjoint, resolve_method
from ._conv import StridedOperator, canonical_kernel, plan
from ._geometry import Geometry, IntOrInts, LayoutName, Padding, as_numeric_array
from ._layout import BufferLayout
from ._materialize import materialize
from ._memory import format_bytes
from ._sparse import require_scipy, sparse_matrix

__all__ = ["ConvOperator"]


class ConvOperator:
    """The linear operator of a convolution, applied without ever building its dense form.

    Takes the same arguments as `conv_view`. ``op @ x`` convolves, ``op.T @ y`` applies the
    adjoint (the transposed convolution, conjugated for complex kernels), and ``op.view`` is the
    read-only strided view that `conv_view` returns.

    Parameters
    ----------
    kernel : (*k, C // groups, F) or (F, C // groups, *k) array_like
        The kernel (copied: later changes do not show), any numeric dtype.
    input_shape : sequence of int
        Shape of one input, with or without its channel axis.
    padding, stride, dilation, groups, layout
        As in `conv_view`.
    method : {"auto", "direct", "fft"}, optional
        How ``op @ x`` and ``op.T @ y`` compute: ``"direct"`` (spatial-domain products),
        ``"fft"`` (products of spectra; real and complex floats) or ``"auto"`` (the planner picks
        from the geometry and dtype). Results agree to rounding whatever the method.

    Attributes
    ----------
    view : ndarray
        The read-only operator view, shape ``(*output_shape, *input_shape)``.
    shape, ndim, dtype : tuple of int, int, numpy.dtype
        Those of `view`.
    input_shape, output_shape : tuple of int
        Full shapes (with channel axes) of ``x`` and ``op @ x``.
    nbytes : int
        Bytes of the dense operator (``view.nbytes``).
    buffer_nbytes : int
        Bytes actually held by the view's buffer.
    T : ConvOperator
        The adjoint operator.
    method : str
        The method in use, ``"direct"`` or ``"fft"``.

    See Also
    --------
    conv_view, materialize

    Examples
    --------
    >>> import numpy as np
    >>> import stridedop
    >>> rng = np.random.default_rng(0)
    >>> op = stridedop.ConvOperator(rng.standard_normal((3, 3, 4, 8)), (16, 16, 4), padding="same")
    >>> x = rng.standard_normal(op.input_shape)
    >>> y = op @ x
    >>> y.shape
    (16, 16, 8)
    >>> np.allclose(y, np.tensordot(op.view, x, 3))
    True
    >>> z = rng.standard_normal(op.output_shape)
    >>> bool(np.isclose(np.vdot(op @ x, z), np.vdot(x, op.T @ z)))
    True
    """

    __array_ufunc__ = None  # ``x @ op`` raises TypeError instead of treating `op` as an array

    def __init__(
        self,
        kernel: np.typing.ArrayLike,
        input_shape: IntOrInts,
        *,
        padding: Padding = "valid",
        stride: IntOrInts = 1,
        dilation: IntOrInts = 1,
        groups: int = 1,
        layout: LayoutName = "channels_last",
        method: str = "auto",
    ) -> None:
        kernel = as_numeric_array(kernel, "kernel")
        geometry, layout_plan = plan(kernel.shape, input_shape, padding, stride, dilation, groups, layout)
        self._setup(kernel, geometry, layout_plan, adjoint=False, method=method)

    def _setup(
        self, kernel: np.ndarray, geometry: Geometry, layout: BufferLayout, *, adjoint: bool, method: str
    ) -> None:
        self._method = resolve_method(method, geometry, kernel.dtype)
        # Build the view first: it checks every size before anything is copied.
        strided = StridedOperator.build(canonical_kernel(kernel, geometry.layout), geometry, layout)
        self._kernel = np.array(kernel, copy=True, order="C")
        self._kernel.flags.writeable = False
        self._geometry = geometry
        self._adjoint = adjoint
        self._forward_strided = strided
        self._conjugate_strided: StridedOperator | None = None
        self._transpose: ConvOperator | None = None

    # -- construction helpers -----------------------------------------------------------------
    @property
    def _canonical_kernel(self) -> np.ndarray:
        return canonical_kernel(self._kernel, self._geometry.layout)

    def _strided(self) -> StridedOperator:
        """The buffer this direction's view reads: the conjugated kernel for a complex adjoint."""
        if not self._adjoint or self.dtype.kind != "c":
            return self._forward_strided
        if self._conjugate_strided is None:
            conjugate = self._canonical_kernel.conj()
            layout = self._forward_strided.layout
            self._conjugate_strided = StridedOperator.build(conjugate, self._geometry, layout)
        return self._conjugate_strided

    def _geometry_arguments(self) -> dict[str, Any]:
        geometry = self._geometry
        return {
            "padding": geometry.padding,
            "stride": geometry.stride,
            "dilation": geometry.dilation,
            "groups": geometry.groups,
            "layout": geometry.layout,
        }

    # -- shapes and sizes ---------------------------------------------------------------------
    @property
    def view(self) -> np.ndarray:
        """The read-only strided view of the operator (a view, never a copy)."""
        return self._strided().view(adjoint=self._adjoint)

    @property
    def input_shape(self) -> tuple[int, ...]:
        geometry = self._geometry
        return geometry.output_shape if self._adjoint else geometry.input_shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        geometry = self._geometry
        return geometry.input_shape if self._adjoint else geometry.output_shape

    @property
    def shape(self) -> tuple[int, ...]:
        return (*self.output_shape, *self.input_shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> np.dtype:
        return self._kernel.dtype

    @property
    def nbytes(self) -> int:
        """Bytes of the dense operator."""
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def buffer_nbytes(self) -> int:
        """Bytes of the buffer behind `view`."""
        return self._strided().buffer.nbytes

    @property
    def T(self) -> ConvOperator:  # noqa: N802 (NumPy's name for the transpose)
        """The adjoint operator: ``op.T @ y`` is the transposed convolution of ``y``."""
        if self._transpose is None:
            other = object.__new__(ConvOperator)
            other._kernel = self._kernel
            other._geometry = self._geometry
            other._adjoint = not self._adjoint
            other._forward_strided = self._forward_strided
            other._conjugate_strided = self._conjugate_strided
            other._transpose = self
            other._method = self._method
            self._transpose = other
        return self._transpose

    @property
    def method(self) -> str:
        """The algorithm ``@`` uses in both directions: ``"direct"`` or ``"fft"``."""
        return self._method

    # -- applying -----------------------------------------------------------------------------
    def _batched(self, x: Any, expected: tuple[int, ...], name: str) -> tuple[np.ndarray, tuple[int, ...]]:
        x = as_numeric_array(x, name)
        n = len(expected)
        if x.ndim < n or x.shape[x.ndim - n :] != expected:
            raise ValueError(f"`{name}` must have shape {expected} or (*batch, *{expected}), got {x.shape}")
        batch = x.shape[: x.ndim - n]
        return x.reshape(math.prod(batch), *expected), batch

    def _convolve(self, x: Any, name: str) -> np.ndarray:
        geometry = self._geometry
        batched, batch = self._batched(x, geometry.input_shape, name)
        channels_first = geometry.layout == "channels_first"
        result = convolve(self._canonical_kernel, geometry, batched, channels_first, self._method)
        return result.reshape(*batch, *geometry.output_shape)

    def _convolve_adjoint(self, y: Any, name: str) -> np.ndarray:
        geometry = self._geometry
        batched, batch = self._batched(y, geometry.output_shape, name)
        kernel = self._canonical_kernel
        if kernel.dtype.kind == "c":
            kernel = kernel.conj()
        channels_first = geometry.layout == "channels_first"
        result = convolve_adjoint(kernel, geometry, batched, channels_first, self._method)
        return result.reshape(*batch, *geometry.input_shape)

    def apply(self, x: np.typing.ArrayLike) -> np.ndarray:
        """Apply the operator to `x` of shape `input_shape` or ``(*batch, *input_shape)``.

        Equals ``np.tensordot(op.view, x, len(op.input_shape))`` (batched over the leading axes)
        and returns a new array; the dense operator is never built.
        """
        if self._adjoint:
            return self._convolve_adjoint(x, "x")
        return self._convolve(x, "x")

    def adjoint(self, y: np.typing.ArrayLike) -> np.ndarray:
        """Apply the adjoint (transposed convolution, conjugated for complex kernels) to `y`."""
        if self._adjoint:
            return self._convolve(y, "y")
        return self._convolve_adjoint(y, "y")

    def __matmul__(self, x: Any) -> np.ndarray:
        return self.apply(x)

    # -- dense and sparse forms ---------------------------------------------------------------
    def materialize(self, out: np.ndarray | None = None, max_bytes: int | None = None) -> np.ndarray:
        """Dense writable copy of `view`; see `stridedop.materialize`."""
        return materialize(self.view, out=out, max_bytes=max_bytes)

    def to_matrix(self, max_bytes: int | None = None) -> np.ndarray:
        """Dense writable matrix ``(prod(output_shape), prod(input_shape))`` (a copy)."""
        rows, columns = math.prod(self.output_shape), math.prod(self.input_shape)
        return self.materialize(max_bytes=max_bytes).reshape(rows, columns)  # guarded there

    def to_sparse(self, format: str = "csr") -> Any:
        """``scipy.sparse`` array of `to_matrix` with exactly the structural non-zeros.

        The structural non-zeros are the places where a kernel tap lands inside the input,
        whatever the tap's value. Built from the geometry, never through the dense form.
        """
        if not isinstance(format, str):
            raise ValueError(f"`format` must be a scipy.sparse format name such as 'csr', got {format!r}")
        known = ("csr", "csc", "coo", "bsr", "dia", "dok", "lil")
        if format not in known:
            raise ValueError(f"`format` must be one of {', '.join(map(repr, known))}, got {format!r}")
        forward = sparse_matrix(self._canonical_kernel, self._geometry, "csr")
        if not self._adjoint:
            return forward.asformat(format)
        adjoint = forward.T.conj() if self.dtype.kind == "c" else forward.T
        return adjoint.asformat(format)

    def aslinearoperator(self) -> Any:
        """``scipy.sparse.linalg.LinearOperator`` of `to_matrix` (matvec, rmatvec, matmat)."""
        require_scipy("`aslinearoperator`")
        from scipy.sparse.linalg import LinearOperator

        rows, columns = math.prod(self.output_shape), math.prod(self.input_shape)
        operator = self

        def matvec(v: np.ndarray) -> np.ndarray:
            return operator.apply(np.reshape(v, operator.input_shape)).reshape(rows)

        def rmatvec(v: np.ndarray) -> np.ndarray:
            return operator.adjoint(np.reshape(v, operator.output_shape)).reshape(columns)

        def matmat(matrix: np.ndarray) -> np.ndarray:
            batch = np.asarray(matrix).T.reshape(-1, *operator.input_shape)
            return operator.apply(batch).reshape(-1, rows).T

        def rmatmat(matrix: np.ndarray) -> np.ndarray:
            batch = np.asarray(matrix).T.reshape(-1, *operator.output_shape)
            return operator.adjoint(batch).reshape(-1, columns).T

        return LinearOperator(
            (rows, columns), matvec=matvec, rmatvec=rmatvec, matmat=matmat, rmatmat=rmatmat, dtype=self.dtype
        )

    # -- pickling and display -----------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {
            "kernel": self._kernel,
            "input_shape": self._geometry.input_shape,
            "adjoint": self._adjoint,
            "method": self._method,
            **self._geometry_arguments(),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        kernel, adjoint = state["kernel"], state["adjoint"]
        arguments = [state[name] for name in ("padding", "stride", "dilation", "groups", "layout")]
        geometry, layout = plan(kernel.shape, state["input_shape"], *arguments)
        self._setup(kernel, geometry, layout, adjoint=adjoint, method=state.get("method", "auto"))

    def _summary(self) -> tuple[str, str]:
        geometry = self._geometry
        head = (
            f"kernel {self._kernel.shape} {self.dtype}, input_shape {geometry.input_shape}, "
            f"{geometry.describe()}"
        )
        sizes = f"dense {format_bytes(self.nbytes)}, buffer {format_bytes(self.buffer_nbytes)}"
        return head, sizes

    def __repr__(self) -> str:
        head, sizes = self._summary()
        suffix = ".T" if self._adjoint else ""
        return f"<ConvOperator{suffix} {self.input_shape} -> {self.output_shape}: {head}; {sizes}>"

    def _repr_html_(self) -> str:
        geometry = self._geometry
        rows = [
            ("input shape", self.input_shape),
            ("output shape", self.output_shape),
            ("kernel", f"{self._kernel.shape} {self.dtype}"),
            ("geometry", geometry.describe()),
            ("dense operator", f"{format_bytes(self.nbytes)} ({self.nbytes} bytes)"),
            ("buffer held", f"{format_bytes(self.buffer_nbytes)} ({self.buffer_nbytes} bytes)"),
        ]
        body = "".join(
            f"<tr><th style='text-align:left'>{html.escape(name)}</th><td>{html.escape(str(value))}</td></tr>"
            for name, value in rows
        )
        title = "ConvOperator.T" if self._adjoint else "ConvOperator"
        return f"<table><caption>{title}</caption>{body}</table>"
