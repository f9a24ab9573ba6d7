"""`ConvOperator`: the convolution operator as an object that applies itself without being built."""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np

from . import _spectral
from ._apply import convolve, convolve_adjoint
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
    ) -> None:
        kernel = as_numeric_array(kernel, "kernel")
        geometry, layout_plan = plan(kernel.shape, input_shape, padding, stride, dilation, groups, layout)
        self._setup(kernel, geometry, layout_plan, adjoint=False)

    def _setup(self, kernel: np.ndarray, geometry: Geometry, layout: BufferLayout, *, adjoint: bool) -> None:
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
            self._transpose = other
        return self._transpose

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
        result = convolve(self._canonical_kernel, geometry, batched, channels_first)
        return result.reshape(*batch, *geometry.output_shape)

    def _convolve_adjoint(self, y: Any, name: str) -> np.ndarray:
        geometry = self._geometry
        batched, batch = self._batched(y, geometry.output_shape, name)
        kernel = self._canonical_kernel
        if kernel.dtype.kind == "c":
            kernel = kernel.conj()
        channels_first = geometry.layout == "channels_first"
        result = convolve_adjoint(kernel, geometry, batched, channels_first)
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

    # -- singular values and norms ------------------------------------------------------------
    def _linear_map(self) -> _spectral.LinearMap:
        """The operator as `_spectral` sees it: its two products, dense form and the layer behind it."""
        forward = _spectral.LinearMap(
            forward=lambda x: self @ x,
            adjoint=lambda y: self.T @ y,
            input_shape=self.input_shape,
            output_shape=self.output_shape,
            dtype=self.dtype,
            dense=lambda max_bytes: self.to_matrix(max_bytes=max_bytes),
            layer=_spectral.Layer(
                self._canonical_kernel, self._geometry, _spectral.mode_of(self._geometry)
            ),
            transposed=self._adjoint,
        )
        return forward

    def svdvals(self, k: int | None = None) -> np.ndarray:
        """Singular values of the operator's matrix, descending (float64).

        Parameters
        ----------
        k : int, optional
            Return only the `k` largest. By default all ``min(rows, columns)`` of them.

        Returns
        -------
        (min(rows, columns),) or (k,) ndarray of float64

        Raises
        ------
        ValueError
            If `k` is not an int between 1 and ``min(rows, columns)``.
        MemoryError
            Non-circular padding with ``k=None`` when the dense matrix does not fit in memory
            (pass `k` to use the matrix-free Lanczos iteration).

        Notes
        -----
        Circular padding: exact, from the DFT of the kernel (any number of axes, stride, dilation,
        groups; real kernels use half the frequencies); the dense matrix is never formed. Every
        other mode: the dense SVD of `to_matrix` when all values are asked for or the matrix is
        small (guarded like `materialize`), else Golub-Kahan-Lanczos bidiagonalization on ``op @ x``
        and the adjoint, converged to relative 1e-10.

        Examples
        --------
        >>> import numpy as np
        >>> import stridedop
        >>> kernel = np.random.default_rng(0).standard_normal((3, 3, 2, 4))
        >>> op = stridedop.ConvOperator(kernel, (8, 6, 2), padding="circular", stride=2)
        >>> s = op.svdvals()
        >>> bool(np.allclose(s, np.linalg.svd(op.to_matrix(), compute_uv=False)))
        True
        """
        return _spectral.svdvals(self._linear_map(), k)

    def svds(self, k: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The `k` largest singular triplets ``(u, s, vh)``.

        Returns
        -------
        u : (k, *output_shape) ndarray
        s : (k,) ndarray of float64, descending
        vh : (k, *input_shape) ndarray
            Unit vectors with ``op @ vh[i] == s[i] * u[i]`` (for a complex operator, ``vh[i]`` is
            the right singular vector itself, the conjugate of a row of NumPy's ``vh``).

        Examples
        --------
        >>> import numpy as np
        >>> import stridedop
        >>> op = stridedop.ConvOperator(np.ones((3, 1, 1)), (10, 1), padding="same")
        >>> u, s, vh = op.svds(2)
        >>> u.shape, s.shape, vh.shape
        ((2, 10, 1), (2,), (2, 10, 1))
        >>> bool(np.allclose(op @ vh[0], s[0] * u[0]))
        True
        """
        return _spectral.svds(self._linear_map(), k)

    def norm(self, ord: int | str = 2) -> float:
        """Spectral (``ord=2``) or Frobenius (``ord="fro"``) norm of the operator's matrix.

        ``ord=2`` is exact for circular padding (DFT of the kernel) and converged to relative
        1e-10 otherwise (see `svdvals`); ``"fro"`` is exact from the kernel and geometry, with no
        product at all (taps that fold onto one input entry are summed first).

        Examples
        --------
        >>> import numpy as np
        >>> import stridedop
        >>> op = stridedop.ConvOperator(np.arange(24.0).reshape(2, 3, 4), (7, 3), padding="same")
        >>> bool(np.isclose(op.norm("fro"), np.linalg.norm(op.to_matrix())))
        True
        >>> bool(np.isclose(op.norm(), np.linalg.norm(op.to_matrix(), 2)))
        True
        """
        return _spectral.norm(self._linear_map(), ord)

    def norm_bounds(self) -> tuple[float, float]:
        """Cheap ``(lower, upper)`` with ``lower <= op.norm(2) <= upper``, without the dense matrix.

        Why each bound holds:

        * ``lower = norm(op @ v) / norm(v)`` for an explicit vector ``v`` (the Ritz vector of a few
          Lanczos steps): the spectral norm is the maximum of that ratio.
        * circular padding: ``upper`` is the exact norm (the largest singular value of the DFT
          blocks, see `svdvals`).
        * zero padding: along each axis, embed the input at offset ``lo`` in a grid of length ``L``
          (a multiple of the stride with ``L >= lo + m``, ``L >= (o - 1) * stride + ke - lo`` and
          ``L >= o * stride``). Every tap of every output then reads either the same input entry
          as the zero-padded operator or a wrapped position below ``lo``, which holds zero. So the
          operator is ``R C E``: the circulant ``C`` of the kernel on that grid with an isometric
          embedding ``E`` and a row selection ``R``, and ``||op|| <= ||C||``, which is exact from
          the DFT.
        * reflect / replicate: ``op = V P`` with the padding map ``P`` (a Kronecker product of 0/1
          matrices with one 1 per row, so ``||P||`` is the product over axes of the square root of
          the largest number of padded positions reading one input entry) and the 'valid'
          convolution ``V`` on the padded grid, bounded as for zero padding; ``||op|| <= ||V|| ||P||``.

        Examples
        --------
        >>> import numpy as np
        >>> import stridedop
        >>> op = stridedop.ConvOperator(np.random.default_rng(1).standard_normal((3, 3, 2, 2)), (6, 5, 2),
        ...                            padding="same")
        >>> lower, upper = op.norm_bounds()
        >>> bool(lower <= op.norm() <= upper)
        True
        """
        return _spectral.norm_bounds(self._linear_map())

    def norm_grad(self) -> np.ndarray:
        """Gradient of ``op.norm(2)`` with respect to the kernel, in the kernel's shape and layout.

        The correlation of the top singular vectors ``u``, ``v`` (``d sigma = Re(u^H dA v)``); for a
        complex kernel the complex gradient ``d/dRe + i d/dIm``. Defined where the largest
        singular value is simple.

        Examples
        --------
        >>> import numpy as np
        >>> import stridedop
        >>> kernel = np.random.default_rng(2).standard_normal((3, 2, 2))
        >>> op = stridedop.ConvOperator(kernel, (9, 2), padding="same")
        >>> step = np.zeros_like(kernel)
        >>> step[1, 0, 1] = 1e-6
        >>> plus = stridedop.ConvOperator(kernel + step, (9, 2), padding="same").norm()
        >>> minus = stridedop.ConvOperator(kernel - step, (9, 2), padding="same").norm()
        >>> bool(np.isclose(op.norm_grad()[1, 0, 1], (plus - minus) / 2e-6))
        True
        """
        gradient = _spectral.norm_grad(self._linear_map())
        if self._geometry.layout == "channels_first":
            n = gradient.ndim - 2
            gradient = gradient.transpose(n + 1, n, *range(n))
        return gradient

    # -- pickling and display -----------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {
            "kernel": self._kernel,
            "input_shape": self._geometry.input_shape,
            "adjoint": self._adjoint,
            **self._geometry_arguments(),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        kernel, adjoint = state["kernel"], state["adjoint"]
        arguments = [state[name] for name in ("padding", "stride", "dilation", "groups", "layout")]
        geometry, layout = plan(kernel.shape, state["input_shape"], *arguments)
        self._setup(kernel, geometry, layout, adjoint=adjoint)

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
