"""`conv_view`: the convolution operator as a read-only strided view."""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import numpy as np

from ._buffer import (
    BufferPlan,
    FrozenBuffer,
    fill_buffer,
    forward_view,
    operator_view,
    plan_buffer,
    plan_layout,
    plan_unpadded,
)
from ._geometry import (
    CheckedGeometry,
    Geometry,
    IntOrInts,
    LayoutName,
    Padding,
    PaddingModeName,
    as_numeric_array,
    check_geometry,
    geometry_of,
)
from ._memory import (
    INTP_MAX,
    check_addressable,
)
from ._view import OperatorView

__all__ = ["Planned", "StridedOperator", "canonical_kernel", "conv_view", "plan", "require_view"]


def canonical_kernel(kernel: np.ndarray, layout: LayoutName) -> np.ndarray:
    """The kernel as channels-last ``(*k, C // groups, F)`` (a view, never a copy)."""
    if layout == "channels_last":
        return kernel
    ndim = kernel.ndim - 2
    return kernel.transpose(*range(2, ndim + 2), 1, 0)


class StridedOperator(NamedTuple):
    """One filled, read-only buffer with the geometry and buffer plan that read it as an operator."""

    geometry: Geometry
    plan: BufferPlan
    buffer: np.ndarray

    @classmethod
    def build(cls, kernel: np.ndarray, geometry: Geometry, plan: BufferPlan | None = None) -> StridedOperator:
        """Lay out the channels-last `kernel` for `geometry`; checks every size first."""
        return cls(*filled_buffer(kernel, geometry, plan))

    def view(self, origin: Any = None, *, adjoint: bool = False) -> OperatorView:
        """The read-only operator view (shape ``(*output_shape, *input_shape)``, or reversed).

        `origin` is the view's operator; by default a `ConvOperator` of this buffer, built when
        ``view.operator`` is first asked for.
        """
        if origin is None:
            origin = (_conv_operator, *self)
        return operator_view(self.buffer, self.geometry, self.plan, origin, adjoint=adjoint)


def filled_buffer(
    kernel: np.ndarray, geometry: Geometry, plan: BufferPlan | None = None
) -> tuple[Geometry, BufferPlan, np.ndarray]:
    """The channels-last `kernel` laid out for `geometry` (`StridedOperator`'s fields); checks sizes first.

    `plan` is `geometry`'s buffer plan if already made (for the kernel's itemsize).
    """
    itemsize = kernel.dtype.itemsize
    if geometry.dense_size * itemsize > INTP_MAX:
        check_addressable(geometry.view_shape, itemsize, "the operator view")
    if plan is None or plan.itemsize != itemsize:
        plan = plan_buffer(geometry, itemsize)
    data = fill_buffer(kernel, plan, geometry if geometry.circular else None)
    return geometry, plan, FrozenBuffer((plan.size,), kernel.dtype, data)


def _conv_operator(geometry: Geometry, plan: BufferPlan, buffer: np.ndarray) -> Any:
    """The `ConvOperator` (forward direction) whose view reads `buffer`, sharing it."""
    from ._operator import ConvOperator  # the operator module builds on this one

    return ConvOperator._of_buffer(StridedOperator(geometry, plan, buffer))


def _planned_operator(planned: Planned, data: bytes, dtype: np.dtype) -> Any:
    """`_conv_operator` of a `conv_view`: its geometry and the array of its buffer made now."""
    plan = planned.buffer_plan
    assert plan is not None  # a view has a plan
    return _conv_operator(planned.geometry, plan, FrozenBuffer((plan.size,), dtype, data))


def conv_view(
    kernel: np.typing.ArrayLike,
    input_shape: IntOrInts,
    *,
    padding: Padding = "valid",
    padding_mode: PaddingModeName = "zeros",
    stride: IntOrInts = 1,
    dilation: IntOrInts = 1,
    groups: int = 1,
    layout: LayoutName = "channels_last",
) -> OperatorView:
    """Return the linear operator of a convolution as a read-only strided view.

    The convolution (a cross-correlation, as in TensorFlow and PyTorch) of an input ``x`` with
    `kernel` is ``np.tensordot(W, x, x.ndim)``. `W` is not a dense copy: it is a view over one
    small zero-padded buffer that holds each kernel entry once, so it is built in microseconds
    and holds about ``F + 1`` input images of memory.

    Parameters
    ----------
    kernel : (*k, C // groups, F) or (F, C // groups, *k) array_like
        The kernel with ``N = kernel.ndim - 2 >= 1`` spatial axes, channels-last (TensorFlow)
        or channels-first (PyTorch) according to `layout`. Any numeric dtype. It is copied into
        the buffer: later changes to `kernel` never show in `W`.
    input_shape : sequence of int
        Shape of one input, with its channel axis (``(*m, C)`` or ``(C, *m)``) or the `N`
        spatial sizes alone.
    padding : {'valid', 'same', 'full', 'circular'}, int, sequence of int or of (int, int)
        The padding amounts. ``'valid'``: none. ``'same'``: output size ``ceil(m / stride)``, the
        odd padding entry on the high side. ``'full'``: ``ke - 1`` on both sides, where
        ``ke = (k - 1) * dilation + 1``. ``'circular'``: shorthand for ``padding='same',
        padding_mode='circular'``. An int pads both sides of every axis; `N` ints one per axis;
        `N` ``(lo, hi)`` pairs each side separately. Strings are case-insensitive (``'SAME'``).
    padding_mode : {'zeros', 'circular', 'reflect', 'replicate'}
        What the padding holds (PyTorch's names): zeros, the input wrapped around (taps of a
        kernel wider than the input add up), or ``np.pad``'s ``'reflect'`` and ``'edge'``. Only
        ``'zeros'`` and ``'circular'`` are shift-invariant and have a view; for the others use
        `ConvOperator`.
    stride, dilation : int or sequence of int
        One value for all spatial axes or one per axis, each ``>= 1``.
    groups : int
        Grouped convolution as in PyTorch: `C` and `F` must be divisible by `groups`, and
        filter ``f`` sees only the input channels of its group (``groups == C`` is depthwise).
    layout : {'channels_last', 'channels_first'}
        Axis order of `kernel`, `input_shape` and `W`.

    Returns
    -------
    W : (*o, F, *m, C) or (F, *o, C, *m) OperatorView
        A read-only view (``W.flags.writeable`` is False and cannot be set), of the kernel's
        dtype, whose entries are the kernel's own values and exact zeros. ``W.operator`` is the
        `ConvOperator`, and ``np.tensordot(W, x, N + 1)`` is computed through it.

    Raises
    ------
    ValueError
        If the kernel or a geometry argument is malformed, the output would be empty, or
        `padding_mode` is ``'reflect'`` or ``'replicate'``, which have no strided view.
    TypeError
        If the kernel's dtype is not numeric.
    MemoryError
        If the buffer does not fit in the available memory, or the view is larger than NumPy
        can address.

    See Also
    --------
    materialize : a writable dense copy of `W`.
    OperatorView : what `W` is, and which contractions go through its operator.
    ConvOperator : the same operator, applied without building it.

    Notes
    -----
    Output sizes are ``o = (m + lo + hi - ke) // stride + 1``.

    ==================  =======================  ==========  ===============  ==============
    layout              kernel                   input       W                tensordot(W, x)
    ==================  =======================  ==========  ===============  ==============
    ``channels_last``   ``(*k, C//groups, F)``   ``(*m, C)`` ``(*o, F, *m, C)`` ``(*o, F)``
    ``channels_first``  ``(F, C//groups, *k)``   ``(C, *m)`` ``(F, *o, C, *m)`` ``(F, *o)``
    ==================  =======================  ==========  ===============  ==============

    .. warning::
       Many entries of `W` share one memory location. Never write to it through another
       strided view; call `materialize` for a dense, writable copy.

    Examples
    --------
    A 5x5 input with 3 channels and a 2x2 kernel with 2 filters:

    >>> import numpy as np
    >>> import stridedop
    >>> rng = np.random.default_rng(0)
    >>> A = rng.standard_normal((5, 5, 3))
    >>> K = rng.standard_normal((2, 2, 3, 2))
    >>> W = stridedop.conv_view(K, A.shape)
    >>> W.shape
    (4, 4, 2, 5, 5, 3)
    >>> direct = np.array([[[np.sum(A[i:i + 2, j:j + 2] * K[..., f]) for f in range(2)]
    ...                     for j in range(4)] for i in range(4)])
    >>> np.allclose(np.tensordot(W, A, 3), direct)
    True
    >>> W.flags.writeable
    False
    """
    kernel = as_numeric_array(kernel, "kernel")
    dtype = kernel.dtype
    arguments = (input_shape, padding, padding_mode, stride, dilation, groups, layout)
    if _all_plain(arguments):  # `_planned`, written out: this is the path of every repeated build
        planned = _cached_plan(kernel.shape, dtype.itemsize, *arguments)
    else:
        planned = _plan(kernel.shape, dtype.itemsize, *arguments)
    plan = planned.buffer_plan
    if plan is None or planned.view_nbytes > INTP_MAX:
        _refuse_view(planned)
    assert plan is not None  # (refused above)
    if planned.layout != "channels_last":
        kernel = canonical_kernel(kernel, planned.layout)
    # Only the buffer plan is needed here: the `Geometry` is built when the operator is.
    data = fill_buffer(kernel, plan, planned.geometry if planned.circular else None)
    return forward_view(data, plan, dtype, (_planned_operator, planned, data, dtype))


def _refuse_view(planned: Planned) -> None:
    """Raise ValueError if the padding mode has no view, MemoryError if NumPy cannot address it."""
    require_view(planned.geometry)
    if planned.buffer_plan is not None:
        check_addressable(planned.buffer_plan.view_shape, planned.buffer_plan.itemsize, "the operator view")


def require_view(geometry: Geometry) -> None:
    """Raise ValueError if `geometry`'s padding mode has no strided view."""
    if not geometry.mode.has_view:
        raise ValueError(
            f"`padding_mode`={geometry.mode.name!r} is not shift-invariant: the operator has no strided "
            "view. Use `ConvOperator(...)` instead: `op @ x`, `op.H @ y`, `op.to_matrix()`, "
            "`op.to_sparse()` and `op.materialize()` work for every padding mode"
        )


def _all_plain(values: tuple[Any, ...]) -> bool:
    """True if every value is an int, a str, or a tuple of ints or of int tuples (hashed by value, type).

    `values` are `conv_view`'s ``(input_shape, padding, padding_mode, stride, dilation, groups,
    layout)``; the usual ones (a shape, ints and strings) are told in one condition, twice as fast.
    """
    input_shape, padding, padding_mode, stride, dilation, groups, layout = values
    if type(input_shape) is tuple and type(stride) is int and type(dilation) is int and type(groups) is int:
        if type(padding) is str and type(padding_mode) is str and type(layout) is str:
            for size in input_shape:
                if type(size) is not int:
                    break
            else:
                return True
    for value in values:
        kind = type(value)
        if kind is int or kind is str:
            continue
        if kind is not tuple:
            return False
        for item in value:
            if type(item) is not int and not (type(item) is tuple and all(type(w) is int for w in item)):
                return False
    return True


class Planned:
    """A buffer plan with the checked geometry arguments it was made for.

    What `plan` computes and caches, with what `conv_view` reads on every build. The `Geometry`
    object is built from the checked arguments when first asked for, and so are the checked
    arguments of a plan made in closed form (`plan_unpadded`): a view needs only the plan.
    """

    __slots__ = ("_checked", "_geometry", "_unpadded", "buffer_plan", "circular", "layout", "view_nbytes")

    def __init__(
        self,
        buffer_plan: BufferPlan | None,
        layout: LayoutName,
        checked: CheckedGeometry | None,
        unpadded: tuple[tuple[int, ...], Any] | None = None,
    ) -> None:
        """`buffer_plan` is None for the padding modes without a view.

        Pass the `checked` arguments, or None with the kernel shape and `input_shape` of a plan
        made by `plan_unpadded`.
        """
        self.buffer_plan = buffer_plan
        self.layout = layout
        self.circular = checked is not None and checked[4].name == "circular"
        # Bytes of the dense view, which NumPy must be able to address.
        self.view_nbytes = 0
        if buffer_plan is not None:
            self.view_nbytes = math.prod(buffer_plan.view_shape) * buffer_plan.itemsize
        self._checked, self._unpadded = checked, unpadded
        self._geometry: Geometry | None = None

    @property
    def checked(self) -> CheckedGeometry:
        """The arguments as `check_geometry` gives them."""
        checked = self._checked
        if checked is None:  # a plan in closed form: the default geometry (two threads: equal values)
            assert self._unpadded is not None
            kernel_shape, input_shape = self._unpadded
            checked = self._checked = check_geometry(kernel_shape, input_shape, *_DEFAULTS, self.layout)
        return checked

    @property
    def geometry(self) -> Geometry:
        geometry = self._geometry
        if geometry is None:  # two threads may both build it: equal geometries
            geometry = self._geometry = geometry_of(self.checked)
        return geometry


_DEFAULTS = ("valid", "zeros", 1, 1, 1)  # `conv_view`'s padding, padding_mode, stride, dilation, groups


def _plan(kernel_shape: tuple[int, ...], itemsize: int, *arguments: Any) -> Planned:
    """`check_geometry` of the `arguments` (`input_shape`, ..., `layout`), then `plan_layout`."""
    checked = check_geometry(kernel_shape, *arguments)
    return Planned(plan_layout(checked, itemsize) if checked[4].has_view else None, checked[5], checked)


def _plain_plan(kernel_shape: tuple[int, ...], itemsize: int, *arguments: Any) -> Planned:
    """`_plan` of plain arguments (see `_all_plain`), the ones that are cached.

    `conv_view`'s default geometry (no padding, stride, dilation or groups) is planned in closed
    form, `plan_unpadded`, in less than half the time: most views are built that way. (Plain
    arguments equal the defaults only if they are them: no bool, float or NumPy scalar gets here.)
    """
    if arguments[1:6] == _DEFAULTS:
        plan = plan_unpadded(kernel_shape, arguments[0], arguments[6], itemsize)
        if plan is not None:
            return Planned(plan, arguments[6], None, (kernel_shape, arguments[0]))
    return _plan(kernel_shape, itemsize, *arguments)


_cached_plan = functools.lru_cache(maxsize=256)(_plain_plan)


def _planned(kernel_shape: tuple[int, ...], itemsize: int, arguments: tuple[Any, ...]) -> Planned:
    """`plan`'s work: cached when every argument is plain (see there)."""
    if _all_plain(arguments):
        return _cached_plan(kernel_shape, itemsize, *arguments)
    return _plan(kernel_shape, itemsize, *arguments)


def plan(kernel_shape: tuple[int, ...], *arguments: Any, itemsize: int) -> tuple[Geometry, BufferPlan | None]:
    """Check the geometry arguments and lay out the buffer for `itemsize` (arithmetic, no allocation).

    Both depend only on the arguments, so they are cached when every argument is a plain int,
    str or tuple of ints: a float or a list that equals a cached int or tuple must still be
    checked (and refused) on its own, so such arguments bypass the cache. (`kernel_shape` is an
    ndarray's shape, always a tuple of ints, and `itemsize` a dtype's, an int.)
    """
    planned = _planned(kernel_shape, itemsize, arguments)
    return planned.geometry, planned.buffer_plan
