"""The buffer plan: where each kernel entry lives, and the strides that read the operator back.

Every view in stridedop is built here. For a `Geometry` (or the checked arguments of one) this
module computes a `BufferPlan` (pure integer arithmetic, no allocation), fills one small zero
buffer with the kernel, and hands out read-only strided views of it whose reach is checked
against the buffer (by NumPy's ndarray constructor, or `strided_view` first).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from ._geometry import MAX_SPATIAL_AXES, Axis, CheckedGeometry, Geometry
from ._memory import DescribedMemoryError, available_memory, format_bytes, refused_allocation
from ._view import OperatorView

__all__ = [
    "BufferPlan",
    "canonical_permutation",
    "FrozenBuffer",
    "fill_buffer",
    "fold_axis",
    "fold_circular_taps",
    "folded_kernel_view",
    "forward_view",
    "kernel_view",
    "operator_view",
    "plan_buffer",
    "plan_layout",
    "plan_unpadded",
    "read_kernel",
    "strided_view",
]


_QUERY_MEMORY_ABOVE = 64 * 2**20  # bytes: a smaller buffer is allocated without asking the system


class BufferPlan(NamedTuple):
    """Where the operator lies in its flat buffer: offsets, shapes and byte strides.

    The canonical (channels-last) view ``W[o_0, ..., f, x_0, ..., c]`` is the array of shape
    ``(*o, F, *m, C)`` with byte `strides` starting at element `origin`; the public view is it in
    the geometry's axis order. A plan is made for one `itemsize`: the byte strides of the views and
    of the kernel are computed with it once, so that building a view is a few ndarray
    constructions. Strides are 0 along the axes of length 1, which never move (NumPy keeps
    strides in C integers).
    """

    size: int
    origin: int
    strides: tuple[int, ...]  # of the canonical view (*o, F, *m, C)
    kernel_origin: int
    itemsize: int
    # The public view's shape (`Geometry.view_shape`) and byte strides, and the shape of the
    # kernel with its byte strides (both () for a circular buffer, which is written whole): the
    # channels-last (*k, Cg, F), its filters split as (*k, Cg, groups, F // groups) for groups > 1.
    view_shape: tuple[int, ...]
    view_strides: tuple[int, ...]
    kernel_shape: tuple[int, ...]
    kernel_strides: tuple[int, ...]

    @property
    def steps(self) -> tuple[int, ...]:
        """Element strides of the canonical view ``(*o, F, *m, C)``."""
        return tuple([stride // self.itemsize for stride in self.strides])

    @property
    def filter_step(self) -> int:
        """Element stride between filters (0 for one filter)."""
        return self.strides[len(self.strides) // 2 - 1] // self.itemsize

    @property
    def input_steps(self) -> tuple[int, ...]:
        """Element strides of the spatial input axes ``m``: from one row of the buffer to the next."""
        return self.steps[len(self.strides) // 2 : -1]

    @property
    def view_steps(self) -> tuple[int, ...]:
        """Element strides of the public view."""
        return tuple([stride // self.itemsize for stride in self.view_strides])

    @property
    def kernel_steps(self) -> tuple[int, ...]:
        """Element strides of the kernel as `kernel_shape` gives it."""
        return tuple([stride // self.itemsize for stride in self.kernel_strides])


def plan_buffer(geometry: Geometry, itemsize: int) -> BufferPlan:
    """The `BufferPlan` of `geometry` for entries of `itemsize` bytes (see `plan_layout`)."""
    axes = tuple(
        [(axis.size, axis.kernel, axis.stride, axis.dilation, axis.lo, axis.hi) for axis in geometry.axes]
    )
    checked = (axes, geometry.channels, geometry.filters, geometry.groups, geometry.mode, geometry.layout, "")
    return plan_layout(checked, itemsize)  # type: ignore[arg-type]


def plan_layout(checked: CheckedGeometry, itemsize: int) -> BufferPlan:
    r"""Compute the smallest buffer from which one strided view yields the whole operator.

    `itemsize` is the bytes of one entry (the kernel's dtype), for the plan's byte strides.

    The memory trick, along one spatial axis: output ``o`` applies tap ``r`` to input
    ``x = o*s + r*d - lo``, so ``W[o, x]`` depends only on ``t = x - o*s + lo``. Store the kernel
    at ``t = r*d`` in a zero row and give the view stride ``+1`` along ``x`` and ``-s`` along ``o``:
    every ``(o, x)`` then lands on ``row[t]``. Rows of the different axes are laid out in mixed
    radix, each axis's row width ``w`` just large enough that no window can see a neighbouring
    kernel row; channels are innermost and filters one (padded) image apart::

        filter 0                              filter 1
        | margin | k00 k01 0 0 0 | k10 k11 0 0 0 | ... | k00 k01 ...
        ^ zeros a window may     \__ width w ___/
          reach before the kernel

    For ``circular`` padding each axis instead holds the kernel folded modulo ``m``, repeated
    along a row of ``(o - 1) * s + m`` entries (the circulant trick; ``2m - 1`` or fewer for
    'same' amounts), so that ``t`` never needs to wrap.
    """
    axes, channels, filters, groups, mode, layout, _ = checked
    n = len(axes)
    if mode.name == "circular":
        outputs = [(m + lo + hi - (k - 1) * d - 1) // s + 1 for m, k, s, d, lo, hi in axes]
        # Along an axis, t = x - o*s + (o_last)*s with o_last = (output - 1) * s ranges over
        # [0, o_last + m - 1]; entry t holds the folded kernel at residue (t - o_last) mod m.
        lasts = [(output - 1) * axis[2] for output, axis in zip(outputs, axes)]
        widths = [last + axis[0] for last, axis in zip(lasts, axes)]
        row_steps = _mixed_radix(widths, channels)
        filter_step = math.prod(widths) * channels
        origin = sum([last * step for last, step in zip(lasts, row_steps)])
        output_steps = [-axis[2] * step for axis, step in zip(axes, row_steps)]
        # The folded kernel is written whole (see `_fill_circular`): no kernel steps.
        size = filter_step * filters
        return _circular_plan(checked, outputs, itemsize, size, origin, output_steps, filter_step, row_steps)

    # Along axis i, t = x - o*s + lo ranges over [lo - reach, size - 1 + lo] for the views, where
    # reach = (output - 1) * s, and the kernel sits at [0, extent). An axis's width is chosen so
    # that no difference t - r*d between a window position and a kernel tap is a non-zero multiple
    # of it: rows never alias (the outermost width is not used). One pass from the innermost axis
    # out lays the rows out in mixed radix, writing the shape and byte strides (0 along axes of
    # length 1, see `_byte_strides`) of the canonical view (*o, F, *m, C) and of the kernel.
    # (Conditional expressions rather than max(): a call costs as much as a line here, and this
    # runs on every first build of a view.)
    shape = [channels] * (2 * n + 2)
    strides = [itemsize if channels > 1 else 0] * (2 * n + 2)
    taps, tap_strides = [0] * n, [0] * n
    step = channels
    window_low = origin = 0
    window_high = kernel_high = channels - 1
    for i in range(n - 1, -1, -1):
        size, kernel, stride, dilation, lo, hi = axes[i]
        extent = (kernel - 1) * dilation + 1
        reach = (size + lo + hi - extent) // stride * stride  # the last output's shift (output - 1) * s
        byte_step = step * itemsize
        shape[i], shape[n + 1 + i], taps[i] = reach // stride + 1, size, kernel
        strides[i] = -stride * byte_step if reach else 0
        strides[n + 1 + i] = byte_step if size > 1 else 0
        tap_strides[i] = dilation * byte_step if kernel > 1 else 0
        window_low += (lo - reach) * step
        window_high += (size - 1 + lo) * step
        kernel_high += (extent - 1) * step
        origin += lo * step
        width = extent - lo + reach  # every kernel tap as the farthest window sees it ...
        step *= width if width > size + lo else size + lo  # ... and every window position
    # Filters are far enough apart that no window of one filter reaches another filter's kernel.
    filter_step = max(window_high + 1, kernel_high - window_low + 1)
    low = window_low if window_low < 0 else 0
    high = (filters - 1) * filter_step + max(window_high, kernel_high)
    shape[n], strides[n] = filters, filter_step * itemsize if filters > 1 else 0
    # Tap r of filter f = (g, j) and channel c goes to kernel_origin + f * filter_step
    # + sum(r_i * d_i * input_steps[i]) + g * Cg + c.
    group_channels, group_filters = channels // groups, filters // groups
    channel_stride = itemsize if group_channels > 1 else 0
    filter_stride = filter_step * itemsize if group_filters > 1 else 0
    if groups == 1:
        kernel_shape = (*taps, group_channels, group_filters)
        kernel_strides = (*tap_strides, channel_stride, filter_stride)
    else:
        group_stride = (group_filters * filter_step + group_channels) * itemsize
        kernel_shape = (*taps, group_channels, groups, group_filters)
        kernel_strides = (*tap_strides, channel_stride, group_stride, filter_stride)
    view_shape, view_strides = canonical_shape, canonical_strides = tuple(shape), tuple(strides)
    if layout != "channels_last":
        order = _public_order(n, layout)
        view_shape = tuple([canonical_shape[axis] for axis in order])
        view_strides = tuple([canonical_strides[axis] for axis in order])
    # Every window lies in [window_low, window_high] + f * filter_step and every kernel entry in
    # [0, kernel_high] + f * filter_step, both shifted by -low: inside the buffer by construction
    # (and NumPy checks every array made on the buffer against its size once more).
    return BufferPlan(
        high - low + 1,
        origin - low,
        canonical_strides,
        -low,
        itemsize,
        view_shape,
        view_strides,
        kernel_shape,
        kernel_strides,
    )


def plan_unpadded(
    kernel_shape: tuple[int, ...], input_shape: Any, layout: Any, itemsize: int
) -> BufferPlan | None:
    """`plan_layout` in closed form for a convolution without padding, stride, dilation or groups.

    These are `conv_view`'s defaults, and the layout is then simply the filters' input images one
    after another behind a margin of zeros. Along each axis a window's shift ``x - o`` runs over
    ``[-(m - k), m - 1]`` and the kernel over ``[0, k - 1]``, so a row of width ``m`` holds them
    all: the rows are the images' own rows, with element steps ``step_i = C * m_(i+1) * ...``,
    and the filters are ``P = C * prod(m)`` apart. The views start after the margin
    ``sum((m_i - k_i) * step_i)`` that the farthest output reaches back, where the kernel is too::

        | margin | filter 0: an image of P entries, the kernel in its leading corner | filter 1 | ...

    Returns the plan (equal to `plan_layout`'s) if `check_geometry` accepts the arguments with
    the default geometry, else None: then the general path checks them and gives the error.
    """
    n = len(kernel_shape) - 2
    if type(input_shape) is not tuple or not 1 <= n <= MAX_SPATIAL_AXES:
        return None
    with_channels = len(input_shape) - n  # 1 if `input_shape` has its channel axis, 0 if not
    if with_channels not in (0, 1):
        return None
    if layout == "channels_last":
        taps, channels, filters = kernel_shape[:-2], kernel_shape[-2], kernel_shape[-1]
        given, sizes = input_shape[-1] if with_channels else channels, input_shape[:n]
    elif layout == "channels_first":
        taps, channels, filters = kernel_shape[2:], kernel_shape[1], kernel_shape[0]
        given, sizes = input_shape[0] if with_channels else channels, input_shape[with_channels:]
    else:
        return None
    if type(given) is not int or given != channels or not (channels and filters):
        return None
    # One pass from the innermost axis out, as in `plan_layout`; byte strides are 0 along axes
    # of length 1 (see `_byte_strides`).
    output_strides, input_strides, tap_strides = [0] * n, [0] * n, [0] * n
    outputs = [0] * n
    step, margin = channels, 0
    for i in range(n - 1, -1, -1):
        size, kernel = sizes[i], taps[i]
        if type(size) is not int or not 1 <= kernel <= size:
            return None
        byte_step = step * itemsize
        output_strides[i] = -byte_step if size > kernel else 0
        input_strides[i] = byte_step if size > 1 else 0
        tap_strides[i] = byte_step if kernel > 1 else 0
        outputs[i] = size - kernel + 1
        margin += (size - kernel) * step
        step *= size
    channel_stride = itemsize if channels > 1 else 0
    filter_stride = step * itemsize if filters > 1 else 0
    canonical_strides = (*output_strides, filter_stride, *input_strides, channel_stride)
    if layout == "channels_last":
        view_shape, view_strides = (*outputs, filters, *sizes, channels), canonical_strides
    else:
        view_shape = (filters, *outputs, channels, *sizes)
        view_strides = (filter_stride, *output_strides, channel_stride, *input_strides)
    return BufferPlan(
        margin + filters * step,
        margin,
        canonical_strides,
        margin,
        itemsize,
        view_shape,
        view_strides,
        (*taps, channels, filters),
        (*tap_strides, channel_stride, filter_stride),
    )


def _circular_plan(
    checked: CheckedGeometry,
    outputs: list[int],
    itemsize: int,
    size: int,
    origin: int,
    output_steps: list[int],
    filter_step: int,
    input_steps: tuple[int, ...],
) -> BufferPlan:
    """The `BufferPlan` of a circular buffer's element steps (no kernel steps: it is written whole)."""
    axes, channels, filters, _, _, layout, _ = checked
    view_shape = canonical_shape = (*outputs, filters, *[axis[0] for axis in axes], channels)
    steps = (*output_steps, filter_step, *input_steps, 1)
    view_strides = canonical_strides = _byte_strides(canonical_shape, steps, itemsize)
    if layout != "channels_last":
        order = _public_order(len(axes), layout)
        view_shape = tuple([canonical_shape[axis] for axis in order])
        view_strides = tuple([canonical_strides[axis] for axis in order])
    return BufferPlan(size, origin, canonical_strides, 0, itemsize, view_shape, view_strides, (), ())


def _byte_strides(shape: tuple[int, ...], steps: Sequence[int], itemsize: int) -> tuple[int, ...]:
    """Byte strides of element `steps`, 0 along the axes of length 1.

    A length-1 axis never moves: an unused step (a huge stride, say) must not overflow the C
    integers NumPy keeps strides in.
    """
    return tuple([step * itemsize if n > 1 else 0 for n, step in zip(shape, steps)])


def _mixed_radix(widths: list[int], innermost: int) -> tuple[int, ...]:
    """Element steps of a C-ordered array of shape ``(*widths, innermost)`` (the last axis unit)."""
    steps = []
    step = innermost
    for width in reversed(widths):
        steps.append(step)
        step *= width
    return tuple(reversed(steps))


def fill_buffer(kernel: np.ndarray, plan: BufferPlan, circular: Geometry | None = None) -> bytes:
    """The buffer of `plan` holding the channels-last `kernel` ``(*k, C//groups, F)``, as `bytes`.

    `circular` is the geometry of a circular `plan` (whose folded kernel is written whole), None
    for the other padding modes. Raises a descriptive MemoryError if the buffer does not fit.

    The buffer is filled in a scratch `bytearray`, then copied into an immutable `bytes` object
    that every array of it reads (`FrozenBuffer`, `forward_view`): nothing reachable from them
    (``.base``, a memoryview's ``.obj``) can be written, made writable or released, so no view can
    ever change or outlive its memory. The copy doubles the buffer's memory while it is built.
    """
    needed = plan.size * plan.itemsize
    if needed > _QUERY_MEMORY_ABOVE:  # small buffers cannot exhaust memory: ask only about large ones
        _require_available(needed, plan)
    try:
        storage = bytearray(needed)  # zero-filled
        if circular is None:
            # Written through an array on the scratch memory itself, released at once. The kernel
            # shape is (*k, Cg, F), or (*k, Cg, groups, F // groups) for groups.
            try:
                offset = plan.kernel_origin * plan.itemsize
                target = np.ndarray(plan.kernel_shape, kernel.dtype, storage, offset, plan.kernel_strides)
            except ValueError as error:  # NumPy checks the reach against the buffer
                raise _wrong_plan(plan.kernel_shape, plan) from error
            target[...] = kernel if target.ndim == kernel.ndim else kernel.reshape(plan.kernel_shape)
        else:
            # The kernel (*k, Cg, F) seen as (*k, Cg, groups, F // groups).
            grouped = kernel.reshape(kernel.shape[:-1] + (circular.groups, circular.group_filters))
            _fill_circular(circular, grouped, np.frombuffer(storage, kernel.dtype))
        return bytes(storage)
    except MemoryError as error:  # the descriptive message; nothing to pay when all goes well
        with refused_allocation(
            lambda: (
                f"the operator's buffer needs {format_bytes(needed)} ({needed} bytes), more than "
                f"this process may allocate; the kernel and the input of shape {_input_shape(plan)} (with "
                "its channel axis) are too large for a view here"
            )
        ):
            raise error


def _require_available(needed: int, plan: BufferPlan) -> None:
    """Raise a descriptive MemoryError if the system has not twice `needed` bytes available."""
    available = available_memory()
    if available is not None and 2 * needed > available:
        raise DescribedMemoryError(
            f"the operator's buffer needs {format_bytes(needed)} ({needed} bytes, twice that while "
            f"it is built) but only {format_bytes(available)} are available; the kernel and the input "
            f"of shape {_input_shape(plan)} (with its channel axis) are too large for a view on this machine"
        )


def _input_shape(plan: BufferPlan) -> tuple[int, ...]:
    """The input shape of `plan`'s view ``(*output_shape, *input_shape)`` (both have ``N + 1`` axes)."""
    return plan.view_shape[len(plan.view_shape) // 2 :]


class FrozenBuffer(np.ndarray):
    """The 1-D read-only buffer of an operator over its `bytes` (see `fill_buffer`), a type of its own.

    A type of its own: NumPy then stops at an `OperatorView` when it shortens the chain of ``.base``
    of a plain view of it, so that any slice of a view still leads to its operator.
    """


def fold_axis(array: np.ndarray, index: int, axis: Axis) -> np.ndarray:
    """Sum the taps along axis `index` of `array` that read one input entry of a circular `axis`.

    Tap ``r`` reads residue ``(r * d - lo) mod m``; the result has `m` entries along that axis,
    entry ``p`` the sum (in `array`'s dtype, wrapping as NumPy does) of the taps that read ``p``.
    Works on 3-D reshapes: `np.add.at` crashes on arrays of more than 32 axes.
    """
    before, after = math.prod(array.shape[:index]), math.prod(array.shape[index + 1 :])
    target = np.zeros((before, axis.size, after), dtype=array.dtype)
    np.add.at(target, (slice(None), residues(axis)), array.reshape(before, axis.kernel, after))  # type: ignore[arg-type]
    return target.reshape(*array.shape[:index], axis.size, *array.shape[index + 1 :])


def residues(axis: Axis) -> np.ndarray:
    """``(r * d - lo) mod m`` for every tap ``r`` of a circular axis, without int64 overflow."""
    step, shift, size = axis.dilation % axis.size, axis.lo % axis.size, axis.size
    if axis.kernel * size < 2**62:
        return (np.arange(axis.kernel, dtype=np.int64) * step - shift) % size
    return np.array([(r * step - shift) % size for r in range(axis.kernel)], dtype=np.intp)


def fold_circular_taps(kernel: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, Geometry]:
    """The circular operator with each axis's taps folded onto the input entries they read.

    Along each axis whose dilated kernel is wider than the input (the only axes where taps can
    coincide), the channels-last `kernel` gets ``m`` taps at dilation 1, tap ``p`` reading
    ``(o * s + p) mod m`` (padding ``(0, (o - 1) * s)``), each the sum in the kernel's dtype of
    the taps that read that entry: the operator as the view shows it, entry for entry (uint8
    ``200 + 100`` is 44, bool ``True + True`` is True), and no padding wider than the input,
    whatever the dilation. Returns the kernel and geometry unchanged when no axis is that wide.
    """
    axes = list(geometry.axes)
    for i, axis in enumerate(geometry.axes):
        if axis.extent > axis.size:
            kernel = fold_axis(kernel, i, axis)
            last = (axis.output - 1) * axis.stride
            axes[i] = Axis(axis.size, axis.size, axis.stride, 1, 0, last)
    if axes == list(geometry.axes):
        return kernel, geometry
    return kernel, geometry.replace(axes=tuple(axes), padding=[(axis.lo, axis.hi) for axis in axes])


def _fill_circular(geometry: Geometry, grouped: np.ndarray, buffer: np.ndarray) -> None:
    """Fold each axis's taps modulo its size (taps that coincide add up), then lay the rows out."""
    groups, group_filters = geometry.groups, geometry.group_filters
    group_channels, n = geometry.group_channels, geometry.ndim
    sizes = geometry.spatial_input
    # Fold one axis at a time, in the kernel's dtype, into (*m, Cg, groups, F // groups).
    folded = grouped
    for i, axis in enumerate(geometry.axes):
        folded = fold_axis(folded, i, axis)
    # Each group's channels at their place among all C: (groups, F // groups, *m, C).
    placed = np.zeros((groups, group_filters, *sizes, geometry.channels), dtype=buffer.dtype)
    group = np.arange(groups)[:, None]
    placed[group, ..., group * group_channels + np.arange(group_channels)] = folded.transpose(
        n + 1, n, n + 2, *range(n)
    )  # (groups, Cg, F // groups, *m), the order of the indexed axes first
    # Entry j of an axis's row holds the residue (j - last) mod m, last = (output - 1) * stride.
    repeated = placed
    for i, axis in enumerate(geometry.axes):
        last = (axis.output - 1) * axis.stride
        repeated = repeated.take((np.arange(last + axis.size) - last) % axis.size, axis=2 + i)
    buffer[...] = repeated.reshape(-1)


def _check_reach(size: int, offset: int, shape: tuple[int, ...], steps: tuple[int, ...]) -> None:
    """Raise if a strided view of `shape` would reach outside a buffer of `size` elements."""
    low = high = offset
    for n, step in zip(shape, steps):
        if n == 0:
            return
        if step < 0:
            low += (n - 1) * step
        else:
            high += (n - 1) * step
    if low < 0 or high >= size:
        raise RuntimeError(
            f"stridedop internal error: a view of shape {shape} would reach elements "
            f"[{low}, {high}] of a buffer of {size}; please report this geometry"
        )


def _view(buffer: np.ndarray, offset: int, shape: tuple[int, ...], steps: tuple[int, ...]) -> np.ndarray:
    strides = _byte_strides(shape, steps, buffer.itemsize)
    return np.ndarray(shape, buffer.dtype, buffer, offset * buffer.itemsize, strides)


def strided_view(
    buffer: np.ndarray, offset: int, shape: tuple[int, ...], steps: tuple[int, ...]
) -> np.ndarray:
    """Strided view of the 1-D `buffer` with element `steps`, checked to stay inside it.

    The view is what ``numpy.lib.stride_tricks.as_strided(buffer[offset:], shape, strides)``
    returns, made with the ndarray constructor, which is several times faster, checks the bounds
    once more and keeps `buffer` as the view's base. It is read-only exactly when `buffer` is.
    """
    _check_reach(buffer.size, offset, shape, steps)
    return _view(buffer, offset, shape, steps)


def canonical_permutation(geometry: Geometry, *, adjoint: bool = False) -> tuple[int, ...]:
    """Axis order that turns the canonical ``(*o, F, *m, C)`` view into the public one."""
    return _public_order(geometry.ndim, geometry.layout, adjoint=adjoint)


def _public_order(n: int, layout: str, *, adjoint: bool = False) -> tuple[int, ...]:
    """`canonical_permutation` for `n` spatial axes in `layout`."""
    out_spatial, filters = list(range(n)), [n]
    in_spatial, channels = list(range(n + 1, 2 * n + 1)), [2 * n + 1]
    if layout == "channels_last":
        output_axes, input_axes = out_spatial + filters, in_spatial + channels
    else:
        output_axes, input_axes = filters + out_spatial, channels + in_spatial
    if adjoint:
        return tuple(input_axes + output_axes)
    return tuple(output_axes + input_axes)


def operator_view(
    buffer: np.ndarray, geometry: Geometry, plan: BufferPlan, origin: Any, *, adjoint: bool = False
) -> OperatorView:
    """The `OperatorView` of a filled `FrozenBuffer` in the public axis order of `geometry`.

    `origin` is its operator, or a recipe ``(factory, *arguments)`` that builds it on first use.
    """
    if not adjoint:
        return forward_view(buffer, plan, buffer.dtype, origin)
    order = canonical_permutation(geometry, adjoint=True)
    shape = tuple([geometry.canonical_shape[axis] for axis in order])
    strides = tuple([plan.strides[axis] for axis in order])
    view = OperatorView(shape, buffer.dtype, buffer, plan.origin * plan.itemsize, strides)
    view._origin = origin
    return view  # type: ignore[no-any-return]


def forward_view(buffer: np.ndarray | bytes, plan: BufferPlan, dtype: np.dtype, origin: Any) -> OperatorView:
    """The `OperatorView` of `plan`'s public view over a filled buffer.

    `buffer` is the `FrozenBuffer` or, for `conv_view`, the `bytes` under it (no array of it is
    made until the operator is). Either stops NumPy's shortening of the chain of ``.base``: the
    view stays the base of any plain view of it, so that every slice still leads to its operator.
    (NumPy checks the view's reach against `buffer`.)
    """
    try:
        view = OperatorView(plan.view_shape, dtype, buffer, plan.origin * plan.itemsize, plan.view_strides)
    except ValueError as error:  # NumPy checks the reach against the buffer
        raise _wrong_plan(plan.view_shape, plan) from error
    view._origin = origin
    return view  # type: ignore[no-any-return]


def _wrong_plan(shape: tuple[int, ...], plan: BufferPlan) -> RuntimeError:
    """The error for an array of `shape` that `plan` would place partly outside its buffer."""
    return RuntimeError(
        f"stridedop internal error: an array of shape {shape} would reach outside its buffer of "
        f"{plan.size} elements; please report this geometry"
    )


def kernel_view(geometry: Geometry, plan: BufferPlan, buffer: np.ndarray) -> np.ndarray:
    """The kernel entries in a (not circular) buffer, as ``(*k, C // groups, groups, F // groups)``."""
    shape = (*geometry.spatial_kernel, geometry.group_channels, geometry.groups, geometry.group_filters)
    return strided_view(buffer, plan.kernel_origin, plan.kernel_shape, plan.kernel_steps).reshape(shape)


def folded_kernel_view(geometry: Geometry, plan: BufferPlan, buffer: np.ndarray) -> np.ndarray:
    """The folded kernel in a circular buffer, as ``(*m, C // groups, groups, F // groups)``.

    Residue ``p`` of an axis sits at row entry ``p + last`` (``last = (o - 1) * s``), and the
    view's origin is every axis's entry ``last``.
    """
    shape = (*geometry.spatial_input, geometry.group_channels, geometry.groups, geometry.group_filters)
    filter_steps = (geometry.group_filters * plan.filter_step + geometry.group_channels, plan.filter_step)
    return strided_view(buffer, plan.origin, shape, (*plan.input_steps, 1, *filter_steps))


def read_kernel(geometry: Geometry, plan: BufferPlan, buffer: np.ndarray) -> np.ndarray:
    """A channels-last kernel ``(*k, C // groups, F)`` whose buffer is `buffer` (a new array).

    Without circular padding it is the kernel itself. A circular buffer holds the kernel folded
    (taps that land on one input entry added up): each sum is put on the first of its taps and
    the others are zero, which gives the same operator, exactly.
    """
    if not geometry.circular:
        grouped = kernel_view(geometry, plan, buffer)
    else:
        grouped = folded_kernel_view(geometry, plan, buffer)
        first = np.ones(geometry.spatial_kernel, dtype=bool)
        for i, axis in enumerate(geometry.axes):
            reached = residues(axis)
            grouped = grouped.take(reached, axis=i)
            _, firsts = np.unique(reached, return_index=True)
            along = np.zeros(axis.kernel, dtype=bool)
            along[firsts] = True
            first &= along.reshape((1,) * i + (-1,) + (1,) * (geometry.ndim - i - 1))
        grouped = np.where(first[(...,) + (None,) * 3], grouped, np.zeros((), grouped.dtype))
    return grouped.reshape(*geometry.spatial_kernel, geometry.group_channels, geometry.filters)


def kernel_taps(geometry: Geometry) -> itertools.product:
    """Every spatial kernel tap as a tuple of indices, in C order."""
    return itertools.product(*(range(axis.kernel) for axis in geometry.axes))
