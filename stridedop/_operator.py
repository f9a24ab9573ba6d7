"""`ConvOperator`: the convolution operator as an object that applies itself without being built.

An operator is one immutable `_Convolution` (the kernel, the geometry, the method, and the
buffers of its views, built on first use) seen in one of four directions: ``A``, ``A.T``,
``A.H`` and ``conj(A)``. The direction is two flags, *transposed* and *conjugated*; ``.T``
flips the first, ``.H`` both. Every member is written once, for all four.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np

from . import _spectral
from ._algebra import BaseOperator, check_sparse_format
from ._apply import convolve, convolve_adjoint, resolve_method
from ._buffer import fold_circular_taps, plan_buffer, read_kernel
from ._compose import compose_convolutions
from ._conv import StridedOperator, canonical_kernel, plan, require_view
from ._dask import is_zarr_array, to_dask, write_zarr
from ._dense import check_allocation, check_out, dense_allocation, dense_block, fill_dense
from ._geometry import Geometry, IntOrInts, LayoutName, Padding, PaddingModeName, as_numeric_array, brief
from ._memory import format_bytes
from ._modes import pad_adjoint
from ._sparse import sparse_matrix
from ._view import OperatorView

__all__ = ["ConvOperator"]

Method = Literal["auto", "direct", "fft"]


@dataclass(frozen=True, eq=False)
class _Convolution:
    """What the four directions of one operator share: kernel, geometry, method, view buffers."""

    kernel: np.ndarray  # a read-only copy, in the geometry's layout
    geometry: Geometry
    method: str
    _buffers: dict[bool, StridedOperator] = field(default_factory=dict, repr=False)

    @property
    def canonical_kernel(self) -> np.ndarray:
        """The kernel as channels-last ``(*k, C // groups, F)`` (a view)."""
        return canonical_kernel(self.kernel, self.geometry.layout)

    def oriented_kernel(self, conjugated: bool) -> np.ndarray:
        """The channels-last kernel, conjugated for a conjugated direction of a complex kernel."""
        kernel = self.canonical_kernel
        return kernel.conj() if conjugated and kernel.dtype.kind == "c" else kernel

    def applied(self, conjugated: bool) -> tuple[np.ndarray, Geometry]:
        """The channels-last kernel and the geometry that `@` computes with.

        Circular axes whose dilated kernel is wider than the input are folded first (see
        `fold_circular_taps`): taps that read one input entry are summed in the kernel's dtype,
        so the operator's entries are those of the view (uint8 ``200 + 100`` is 44) whatever the
        dtype of the input, and no padding is wider than the input, whatever the dilation.
        """
        kernel = self.oriented_kernel(conjugated)
        if not self.geometry.circular:
            return kernel, self.geometry
        folded, geometry = self._folded
        if geometry is self.geometry:
            return kernel, geometry
        return (folded.conj() if conjugated and folded.dtype.kind == "c" else folded), geometry

    @cached_property
    def _folded(self) -> tuple[np.ndarray, Geometry]:
        return fold_circular_taps(self.canonical_kernel, self.geometry)

    def buffer(self, conjugated: bool) -> StridedOperator:
        """The filled buffer of the views (of the conjugated kernel if asked), built once."""
        conjugated = conjugated and self.kernel.dtype.kind == "c"
        if conjugated not in self._buffers:
            require_view(self.geometry)
            self._buffers[conjugated] = StridedOperator.build(self.oriented_kernel(conjugated), self.geometry)
        return self._buffers[conjugated]


class ConvOperator(BaseOperator):
    """The linear operator of a convolution, applied without ever building its dense form.

    Takes the same arguments as `conv_view`. ``op @ x`` convolves, ``op.H @ y`` applies the
    adjoint (the transposed convolution, conjugated for complex kernels), ``op.T`` is the plain
    transpose, and ``op.view`` is the read-only strided view that `conv_view` returns. Scalars,
    sums and compositions of operators are operators again (a `ConvOperator` wherever the result
    is one convolution).

    Parameters
    ----------
    kernel : (*k, C // groups, F) or (F, C // groups, *k) array_like
        The kernel (copied: later changes do not show), any numeric dtype.
    input_shape : sequence of int
        Shape of one input, with or without its channel axis.
    padding, padding_mode, stride, dilation, groups, layout
        As in `conv_view`. Every padding mode works here, including ``'reflect'`` and
        ``'replicate'``, which have no view.
    method : {'auto', 'direct', 'fft'}
        The algorithm for ``@`` and ``.H @``: spatial-domain products, products of spectra (real
        and complex floats), or the planner's choice from the geometry and dtype. Results agree to
        rounding whatever the method; `method` names the one in use.

    Attributes
    ----------
    view : OperatorView
        The read-only operator view, shape ``(*output_shape, *input_shape)``, whose
        ``view.operator`` is this operator; its buffer is built on first use. Raises ValueError
        for the padding modes that have none.
    shape, ndim, dtype : tuple of int, int, numpy.dtype
        Those of the dense operator (and of `view`).
    input_shape, output_shape : tuple of int
        Full shapes (with channel axes) of ``x`` and ``op @ x``.
    matrix_shape : (int, int)
        ``(prod(output_shape), prod(input_shape))``.
    nbytes : int
        Bytes of the dense operator.
    buffer_nbytes : int
        Bytes of the buffer behind `view` (0 for the modes without a view).
    H, T : ConvOperator
        The adjoint (conjugate transpose) and the plain transpose.

    See Also
    --------
    conv_view, materialize, dottest

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
    >>> bool(np.isclose(np.vdot(op @ x, z), np.vdot(x, op.H @ z)))
    True
    >>> (2 * op - op).shape == op.shape
    True
    """

    _state: _Convolution
    _transposed: bool
    _conjugated: bool

    def __init__(
        self,
        kernel: np.typing.ArrayLike,
        input_shape: IntOrInts,
        *,
        padding: Padding = "valid",
        padding_mode: PaddingModeName = "zeros",
        stride: IntOrInts = 1,
        dilation: IntOrInts = 1,
        groups: int = 1,
        layout: LayoutName = "channels_last",
        method: Method = "auto",
    ) -> None:
        kernel = as_numeric_array(kernel, "kernel")
        arguments = (input_shape, padding, padding_mode, stride, dilation, groups, layout)
        geometry, _ = plan(kernel.shape, *arguments, itemsize=kernel.dtype.itemsize)
        state = _new_state(kernel, geometry, resolve_method(method, geometry, kernel.dtype))
        self._become(state, transposed=False, conjugated=False)

    def _become(self, state: _Convolution, *, transposed: bool, conjugated: bool) -> None:
        self._state = state
        self._transposed = transposed
        self._conjugated = conjugated and state.kernel.dtype.kind == "c"
        self._directions: dict[tuple[bool, bool], ConvOperator] = {}

    def _direction(self, transposed: bool, conjugated: bool) -> ConvOperator:
        """The same state seen in another direction (cached)."""
        key = (transposed, conjugated and self.dtype.kind == "c")
        if key == (self._transposed, self._conjugated):
            return self
        if key not in self._directions:
            other = object.__new__(ConvOperator)
            other._become(self._state, transposed=key[0], conjugated=key[1])
            other._directions[(self._transposed, self._conjugated)] = self
            self._directions[key] = other
        return self._directions[key]

    @classmethod
    def _from_kernel(
        cls, kernel: np.ndarray, geometry: Geometry, method: str, *, transposed: bool = False
    ) -> ConvOperator:
        """An operator of an already checked geometry (`kernel` in the geometry's layout)."""
        operator = object.__new__(cls)
        operator._become(_new_state(kernel, geometry, method), transposed=transposed, conjugated=False)
        return operator

    # -- shapes and sizes ---------------------------------------------------------------------
    @property
    def _geometry(self) -> Geometry:
        """The checked geometry of the forward convolution."""
        return self._state.geometry

    @property
    def _kernel(self) -> np.ndarray:
        """The forward kernel, read-only, in the layout it was given in."""
        return self._state.kernel

    @property
    def method(self) -> str:
        """The algorithm in use for ``@`` and ``.H @``: ``"direct"`` or ``"fft"``."""
        return self._state.method

    @property
    def view(self) -> OperatorView:
        """The read-only strided view of the operator (a view, never a copy); ``view.operator is self``."""
        return self._state.buffer(self._conjugated).view(self, adjoint=self._transposed)

    def _strided(self) -> StridedOperator | None:
        """The buffer of `view` with its geometry and plan (None for the modes without a view)."""
        return self._state.buffer(self._conjugated) if self._geometry.mode.has_view else None

    @classmethod
    def _of_buffer(cls, strided: StridedOperator) -> ConvOperator:
        """The forward operator whose view `strided` holds, sharing that buffer (`conv_view`'s)."""
        geometry = strided.geometry
        kernel = read_kernel(geometry, strided.plan, strided.buffer)  # (*k, Cg, F)
        if geometry.layout == "channels_first":
            kernel = np.moveaxis(kernel, (-1, -2), (0, 1))
        operator = cls._from_kernel(kernel, geometry, resolve_method("auto", geometry, kernel.dtype))
        operator._state._buffers[False] = strided
        return operator

    @property
    def input_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        geometry = self._geometry
        return geometry.output_shape if self._transposed else geometry.input_shape

    @property
    def output_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        geometry = self._geometry
        return geometry.input_shape if self._transposed else geometry.output_shape

    @property
    def shape(self) -> tuple[int, ...]:
        return (*self.output_shape, *self.input_shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> np.dtype:  # type: ignore[override]
        return self._state.kernel.dtype

    @property
    def nbytes(self) -> int:
        """Bytes of the dense operator."""
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def buffer_nbytes(self) -> int:
        """Bytes of the buffer behind `view` (0 where the padding mode has no view)."""
        geometry = self._geometry
        if not geometry.mode.has_view:
            return 0
        itemsize = self.dtype.itemsize
        return plan_buffer(geometry, itemsize).size * itemsize

    # -- directions ---------------------------------------------------------------------------
    @property
    def H(self) -> ConvOperator:  # noqa: N802 (SciPy's name for the adjoint)
        """The adjoint (conjugate transpose): ``op.H @ y`` is the transposed convolution of ``y``."""
        return self._direction(not self._transposed, not self._conjugated)

    @property
    def T(self) -> ConvOperator:  # noqa: N802 (NumPy's name for the transpose)
        """The plain transpose, as in NumPy and SciPy (equal to `H` for real kernels).

        .. versionchanged:: 0.2
           0.1's ``op.T`` was the conjugate adjoint, now `H`. For complex kernels, where the two
           differ, ``op.T`` warns (`FutureWarning`) during 0.2; ``op.transpose()`` is the same
           operator without the warning.
        """
        if self.dtype.kind == "c":
            warnings.warn(
                "`op.T` is the plain transpose since stridedop 0.2; 0.1's `op.T` (the conjugate "
                "adjoint) is `op.H`. Write `op.transpose()` to get the transpose without this warning",
                FutureWarning,
                stacklevel=2,
            )
        return self.transpose()

    def transpose(self) -> ConvOperator:
        """The plain transpose, `T`, without 0.2's `FutureWarning` for complex kernels."""
        return self._direction(not self._transposed, self._conjugated)

    def adjoint(self, y: np.typing.ArrayLike | None = None) -> Any:  # type: ignore[override]
        """The adjoint operator `H`, as SciPy's ``LinearOperator.adjoint()`` returns it.

        .. deprecated:: 0.2
           ``op.adjoint(y)`` (0.1: apply the adjoint to `y`) still works for this release and
           warns; write ``op.H @ y``.
        """
        if y is None:
            return self.H
        warnings.warn(
            "`op.adjoint(y)` is deprecated since stridedop 0.2 and will be removed in 0.3: "
            "`op.adjoint()` now returns the adjoint operator, as in SciPy; write `op.H @ y`",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.H @ y

    # -- applying -----------------------------------------------------------------------------
    def _product(self, batch: np.ndarray) -> np.ndarray:
        kernel, geometry = self._state.applied(self._conjugated)
        dtype = np.result_type(kernel.dtype, batch.dtype)
        mode = geometry.mode
        if mode.folds and not mode.has_view and kernel.dtype.kind in "biu" and dtype != kernel.dtype:
            # Reflect and replicate padding sum the taps that read one entry where they do, in the
            # kernel's dtype (uint8 200 + 100 is 44): no kernel folds once for all outputs, so a
            # promoted product goes through the matrix, whose entries are those sums.
            return self._product_by_matrix(batch, dtype)
        channels_first = geometry.layout == "channels_first"
        if self._transposed:
            return convolve_adjoint(kernel, geometry, batch, channels_first, self._state.method)
        return convolve(kernel, geometry, batch, channels_first, self._state.method)

    def _product_by_matrix(self, batch: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """``matrix @ x`` for a batch, with the sparse matrix if SciPy is there, else the dense one."""
        try:
            matrix = self.to_sparse("csr")
        except ImportError:
            matrix = self.to_matrix()
        columns = batch.reshape(batch.shape[0], -1).T
        result = np.asarray(matrix @ columns).T.astype(dtype, copy=False)
        return result.reshape(batch.shape[0], *self.output_shape)

    # -- the algebra: results that are one convolution again -----------------------------------
    def _forward_kernel(self) -> np.ndarray:
        """The kernel of this direction seen unconjugated (in the geometry's layout)."""
        kernel = self._kernel
        return kernel.conj() if self._conjugated else kernel

    def _with_forward_kernel(self, kernel: np.ndarray) -> ConvOperator:
        """An operator of the same geometry, method and direction with another forward kernel."""
        method, transposed = self._state.method, self._transposed
        return ConvOperator._from_kernel(kernel, self._geometry, method, transposed=transposed)

    def _scaled(self, scalar: Any) -> BaseOperator:
        return self._with_forward_kernel(self._forward_kernel() * scalar)

    def _negated(self) -> BaseOperator:
        # NumPy's unary minus: unsigned kernels wrap around
        return self._with_forward_kernel(np.negative(self._forward_kernel()))

    def _added(self, other: BaseOperator) -> BaseOperator:
        if (
            isinstance(other, ConvOperator)
            and other._geometry == self._geometry
            and other._transposed == self._transposed
        ):
            return self._with_forward_kernel(self._forward_kernel() + other._forward_kernel())
        return super()._added(other)

    def _composed_with(self, first: BaseOperator) -> BaseOperator:
        if isinstance(first, ConvOperator) and not (self._transposed or first._transposed):
            fused = compose_convolutions(
                self._forward_kernel(), self._geometry, first._forward_kernel(), first._geometry
            )
            if fused is not None:
                kernel, geometry = fused
                return ConvOperator._from_kernel(kernel, geometry, self._state.method)
        return super()._composed_with(first)

    # -- dense and sparse forms ---------------------------------------------------------------
    def materialize(self, out: Any = None, max_bytes: int | None = None) -> Any:
        """Dense writable copy of the operator, shape `shape`; see `stridedop.materialize`.

        Every padding mode works: the modes without a view are the 'valid' operator on the padded
        grid with each padded input entry folded back onto the entry it reads. `out` may also be
        a zarr array (extra ``dask``): only its chunks in the band are written.
        """
        if is_zarr_array(out):
            check_allocation((0,), self.dtype, max_bytes)  # validates `max_bytes` alone
            return write_zarr(self, out)
        if self._work_dwarfs_dense():
            # A huge padding or dilation: write the entries where the taps land, by index arithmetic.
            bounds = [(0, size) for size in self.shape]
            kernel = self._state.oriented_kernel(self._conjugated)
            if out is None:
                check_allocation(self.shape, self.dtype, max_bytes)
                return dense_block(kernel, self._geometry, bounds, transposed=self._transposed)
            out = check_out(out, self.shape, self.dtype, max_bytes)
            out[...] = dense_block(kernel, self._geometry, bounds, transposed=self._transposed)
            return out
        if self._geometry.mode.has_view:
            if out is None:
                check_allocation(self.shape, self.dtype, max_bytes)
                return fill_dense(self.view)
            return fill_dense(self.view, check_out(out, self.shape, self.dtype, max_bytes))
        return self._materialize_folded(out, max_bytes)

    def _work_dwarfs_dense(self) -> bool:
        """Whether the usual routes' work arrays would be far larger than the dense operator.

        The view's buffer holds about ``F + 1`` padded input images, the folded modes' route the
        'valid' operator on the whole padded grid: with a padding or dilation far past the input,
        either can dwarf the result (a 2 x 2 matrix with a padding of 2**26 took 1 GiB).
        """
        geometry, itemsize = self._geometry, self.dtype.itemsize
        if geometry.mode.has_view:
            work = self.buffer_nbytes
        else:
            padded = math.prod(axis.padded for axis in geometry.axes) * geometry.channels
            work = padded * math.prod(geometry.output_shape) * itemsize
        return work > 4 * self.nbytes + 2**20 * itemsize

    def _materialize_folded(self, out: np.ndarray | None, max_bytes: int | None) -> np.ndarray:
        geometry = self._geometry
        valid = ConvOperator._from_kernel(self._kernel, geometry.valid_on_padded(), self._state.method)
        valid = valid._direction(self._transposed, self._conjugated)
        if out is not None:
            out = check_out(out, self.shape, self.dtype, max_bytes)
        else:
            check_allocation(self.shape, self.dtype, max_bytes)
        with dense_allocation(self.shape, self.dtype):
            dense = valid.materialize(max_bytes=max_bytes)  # the padded grid: a little larger
            spatial = list(geometry.pads)
            input_pads = [(0, 0), *spatial] if geometry.layout == "channels_first" else [*spatial, (0, 0)]
            output_axes = [(0, 0)] * len(self._geometry.output_shape)
            pads = input_pads + output_axes if self._transposed else output_axes + input_pads
            folded = pad_adjoint(dense, pads, geometry.mode)
            if out is None:
                return np.ascontiguousarray(folded)
        out[...] = folded
        return out

    def to_dask(self, chunks: Any = "auto") -> Any:
        """The dense operator as a lazy ``dask.array.Array``, built block by block where computed.

        The task graph holds the kernel and geometry once, whatever the number of blocks; each
        block is built where it is computed, by allocating zeros and writing only the kernel
        entries that fall inside it, so a block outside the band costs nothing until touched.
        Needs the optional extra ``dask`` (``pip install stridedop[dask]``). Every padding mode
        works.

        Parameters
        ----------
        chunks : int, tuple, dict or 'auto'
            Block sizes, as `dask.array.from_array` takes them (``'auto'``: Dask's
            ``array.chunk-size``).

        Returns
        -------
        dask.array.Array
            Shape `shape`, dtype `dtype`, equal to `view` (to `materialize` for the modes without
            a view).

        Examples
        --------
        >>> import numpy as np
        >>> import stridedop
        >>> op = stridedop.ConvOperator(np.ones((2, 1, 1)), (5, 1))
        >>> D = op.to_dask(chunks=2)
        >>> D.shape, D.numblocks
        ((4, 1, 5, 1), (2, 1, 3, 1))
        >>> np.array_equal(D.compute(), op.view)
        True
        """
        return to_dask(self, chunks)

    def to_matrix(self, max_bytes: int | None = None) -> np.ndarray:
        """Dense writable matrix `matrix_shape` (a copy)."""
        return self.materialize(max_bytes=max_bytes).reshape(self.matrix_shape)  # guarded there

    def to_sparse(self, format: str = "csr") -> Any:
        """``scipy.sparse`` array of `to_matrix` with exactly the structural non-zeros.

        The structural non-zeros are the places where a kernel tap reads an input entry,
        whatever the tap's value (taps that read the same entry add up). Built from the
        geometry, never through the dense form. The dtype is the operator's, in native byte
        order, and float32 for float16 (which `scipy.sparse` does not support; the values are
        exact).
        """
        format = check_sparse_format(format)
        kernel = self._state.oriented_kernel(self._conjugated)
        forward = sparse_matrix(kernel, self._geometry, "csr")
        return (forward.T if self._transposed else forward).asformat(format)

    # -- singular values and norms (svdvals, svds, norm, norm_bounds: see BaseOperator) ---------
    def _spectral_layer(self) -> _spectral.Layer:
        """The convolution whose singular values this operator has, in every direction."""
        return _spectral.Layer(self._state.canonical_kernel, self._geometry)

    def norm_grad(self) -> np.ndarray:
        """Gradient of ``op.norm(2)`` with respect to the kernel, in the kernel's shape and layout.

        The correlation of the top singular vectors ``u``, ``v`` of the convolution
        (``d sigma = Re(u^H dA v)``); for a complex kernel the complex gradient
        ``d/dRe + i d/dIm``. Every direction (``op.H``, ``op.T``) has the norm, so the gradient,
        of the kernel's convolution. Defined where the largest singular value is simple.

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
        forward = self._direction(False, False)
        gradient = _spectral.norm_grad(_spectral.linear_map_of(forward))
        if self._geometry.layout == "channels_first":
            n = gradient.ndim - 2
            gradient = gradient.transpose(n + 1, n, *range(n))
        return gradient

    # -- pickling and display -----------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        geometry = self._geometry
        names = ("padding", "padding_mode", "stride", "dilation", "groups", "layout")
        return {
            "kernel": self._kernel,
            "input_shape": geometry.input_shape,
            **dict(zip(names, _arguments(geometry))),
            "method": self._state.method,
            "transposed": self._transposed,
            "conjugated": self._conjugated,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A pickle is untrusted input: checked as strictly as the arguments of __init__.
        state = _checked_state(state)
        kernel = as_numeric_array(state["kernel"], "kernel")
        names = ("padding", "padding_mode", "stride", "dilation", "groups", "layout")
        arguments = [state[name] for name in names]
        geometry, _ = plan(kernel.shape, state["input_shape"], *arguments, itemsize=kernel.dtype.itemsize)
        self._become(
            _new_state(kernel, geometry, resolve_method(state["method"], geometry, kernel.dtype)),
            transposed=state["transposed"],
            conjugated=state["conjugated"],
        )

    def _direction_name(self) -> str:
        """'', '.H', '.T' or '.H.T': the direction as the user writes it (real: .H is .T)."""
        if self._transposed:
            return ".H" if self._conjugated or self.dtype.kind != "c" else ".T"
        return ".H.T" if self._conjugated else ""

    def _rows(self) -> list[tuple[str, Any]]:
        geometry = self._geometry
        return [
            ("input shape", self.input_shape),
            ("output shape", self.output_shape),
            ("kernel", f"{self._kernel.shape} {self.dtype}"),
            ("geometry", geometry.describe()),
            ("dense operator", f"{format_bytes(self.nbytes)} ({self.nbytes} bytes)"),
            ("buffer held", f"{format_bytes(self.buffer_nbytes)} ({self.buffer_nbytes} bytes)"),
        ]

    def __repr__(self) -> str:
        geometry = self._geometry
        return (
            f"<ConvOperator{self._direction_name()} {self.input_shape} -> {self.output_shape}: "
            f"kernel {self._kernel.shape} {self.dtype}, {geometry.describe()}; "
            f"dense {format_bytes(self.nbytes)}, buffer {format_bytes(self.buffer_nbytes)}>"
        )

    def _repr_html_(self) -> str:
        """A table (shapes, geometry, bytes) and an SVG picture of the unfolded matrix."""
        from ._display import operator_html

        return operator_html(self)


_STATE_KEYS = frozenset(
    ("kernel", "input_shape", "padding", "padding_mode", "stride", "dilation", "groups", "layout")
    + ("method", "transposed", "conjugated")
)


def _checked_state(state: Any) -> dict[str, Any]:
    """A pickled operator's state, refused with TypeError or ValueError unless well formed.

    The state must be a dict with exactly the keys `__getstate__` writes, an ndarray kernel and
    bool directions; the geometry is then checked by `plan` as for `__init__`.
    """
    if not isinstance(state, dict):
        raise TypeError(f"a pickled ConvOperator's state must be a dict, got {type(state).__name__}")
    missing, unexpected = sorted(_STATE_KEYS - state.keys()), sorted(map(str, state.keys() - _STATE_KEYS))
    if missing or unexpected:
        raise ValueError(
            f"a pickled ConvOperator's state must have the keys {sorted(_STATE_KEYS)}; "
            f"missing {missing}, unexpected {unexpected}"
        )
    if not isinstance(state["kernel"], np.ndarray):
        raise TypeError(
            f"a pickled ConvOperator's `kernel` must be a numpy.ndarray, got {type(state['kernel']).__name__}"
        )
    for name in ("transposed", "conjugated"):
        if not isinstance(state[name], (bool, np.bool_)):
            raise TypeError(
                f"a pickled ConvOperator's `{name}` must be a bool, got {brief(state[name])} "
                f"of type {type(state[name]).__name__}"
            )
    return {**state, "transposed": bool(state["transposed"]), "conjugated": bool(state["conjugated"])}


def _new_state(kernel: np.ndarray, geometry: Geometry, method: str) -> _Convolution:
    copy = np.array(kernel, copy=True, order="C")
    copy.flags.writeable = False
    return _Convolution(copy, geometry, method)


def _arguments(geometry: Geometry) -> tuple[Any, ...]:
    """``(padding, padding_mode, stride, dilation, groups, layout)`` that rebuild `geometry`."""
    padding = geometry.padding if isinstance(geometry.padding, str) else geometry.pads
    return (padding, geometry.mode.name, geometry.stride, geometry.dilation, geometry.groups, geometry.layout)
