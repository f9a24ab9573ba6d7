"""Argument checking and the geometry of a convolution.

Everything a public function receives passes through here first: the kernel is checked for a
numeric dtype and brought to the channels-last form ``(*k, C // groups, F)``, and the shape,
padding, stride, dilation, groups and layout arguments become one immutable `Geometry`. The
rest of the package computes only with a `Geometry`, never with raw arguments.

All size arithmetic uses Python ints, which cannot overflow.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

LayoutName = Literal["channels_last", "channels_first"]
PaddingMode = Literal["valid", "same", "full", "circular"]
Padding = PaddingMode | int | Sequence[int] | Sequence[tuple[int, int]]
IntOrInts = int | Sequence[int]

LAYOUTS = ("channels_last", "channels_first")
MAX_SPATIAL_AXES = 31  # the operator view (*o, F, *m, C) has 2N + 2 axes; NumPy allows 64
PADDING_MODES = ("valid", "same", "full", "circular")

__all__ = [
    "Axis",
    "Geometry",
    "IntOrInts",
    "LayoutName",
    "Padding",
    "PaddingMode",
    "as_int",
    "as_numeric_array",
    "make_geometry",
    "outputs_inside",
    "positions_in_range",
]


def as_numeric_array(value: Any, name: str) -> np.ndarray:
    """Return `value` as an ndarray (no copy when possible) with a numeric or bool dtype.

    A masked array with masked entries is refused: `np.asarray` would silently drop its mask.
    """
    masked = np.ma.count_masked(value) if isinstance(value, np.ma.MaskedArray) else 0
    if masked:
        raise ValueError(
            f"`{name}` is a masked array with {masked} masked entries; "
            f"fill them first (`{name}.filled(0)`) or pass `{name}.data` to use the values under the mask"
        )
    array = np.asarray(value)
    kind = array.dtype.kind
    if kind not in "biufc":
        raise TypeError(
            f"`{name}` has dtype {array.dtype}, which is not numeric; "
            "expected a bool, integer, floating or complex dtype"
        )
    return array


def as_int(value: Any, name: str) -> int:
    """Return `value` as a Python int, refusing bools, floats and strings with a clear message."""
    if type(value) is int:
        return value
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"`{name}` must be an integer, got the bool {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        pass
    if isinstance(value, (float, np.floating)):
        raise ValueError(f"`{name}` must be an integer, got the fractional value {value!r}")
    raise ValueError(f"`{name}` must be an integer, got {value!r} of type {type(value).__name__}")


def _as_int_tuple(value: Any, name: str, length: int | None = None) -> tuple[int, ...]:
    """Return a sequence of ints as a tuple of Python ints; a single int gives `length` copies."""
    if type(value) is int:
        return (value,) * (1 if length is None else length)
    if isinstance(value, (str, bytes)):
        raise ValueError(f"`{name}` must be an integer or a sequence of integers, got the string {value!r}")
    if not isinstance(value, (tuple, list)) and np.ndim(value) == 0:
        number = as_int(value, name)
        return (number,) * (1 if length is None else length)
    items = tuple([as_int(item, name) for item in value])
    if length is not None and len(items) != length:
        raise ValueError(
            f"`{name}` must be one integer or {length} integers (one per spatial axis), "
            f"got {len(items)}: {value!r}"
        )
    return items


def _at_least(values: tuple[int, ...], minimum: int, name: str, raw: Any) -> tuple[int, ...]:
    if min(values) < minimum:
        raise ValueError(f"`{name}` must be >= {minimum} on every axis, got {raw!r}")
    return values


class Axis:
    """One spatial axis: input size, kernel size, stride, dilation and padding.

    Output position ``o`` with kernel tap ``r`` reads the (padded) input at
    ``o * stride + r * dilation - lo``. `extent` is the dilated kernel size
    ``(k - 1) * dilation + 1`` and `output` the number of output positions
    ``(m + lo + hi - extent) // stride + 1``.
    """

    __slots__ = ("dilation", "extent", "hi", "kernel", "lo", "output", "size", "stride")

    def __init__(self, size: int, kernel: int, stride: int = 1, dilation: int = 1, lo: int = 0, hi: int = 0):
        self.size, self.kernel, self.stride, self.dilation = size, kernel, stride, dilation
        self.lo, self.hi = lo, hi
        self.extent = (kernel - 1) * dilation + 1
        self.output = (size + lo + hi - self.extent) // stride + 1

    def _key(self) -> tuple[int, ...]:
        return (self.size, self.kernel, self.stride, self.dilation, self.lo, self.hi)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Axis) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return "Axis(size={}, kernel={}, stride={}, dilation={}, lo={}, hi={})".format(*self._key())


class Geometry:
    """A fully checked convolution geometry; see `make_geometry`.

    The values needed on every build are computed once here; the rest are properties.
    """

    def __init__(
        self,
        axes: tuple[Axis, ...],
        channels: int,
        filters: int,
        groups: int,
        circular: bool,
        layout: LayoutName,
        padding: Any,
    ) -> None:
        self.axes = axes
        self.channels = channels
        self.filters = filters
        self.groups = groups
        self.circular = circular
        self.layout = layout
        self.padding = padding  # the argument as given, kept for repr and pickling
        self.ndim = len(axes)  # N, the number of spatial axes
        self.group_channels = channels // groups
        self.group_filters = filters // groups
        self.spatial_input = tuple(axis.size for axis in axes)
        self.spatial_output = tuple(axis.output for axis in axes)
        self.spatial_kernel = tuple(axis.kernel for axis in axes)
        if layout == "channels_last":
            self.input_shape = (*self.spatial_input, channels)
            self.output_shape = (*self.spatial_output, filters)
        else:
            self.input_shape = (channels, *self.spatial_input)
            self.output_shape = (filters, *self.spatial_output)
        self.view_shape = (*self.output_shape, *self.input_shape)
        # The operator's axes in the buffer's own order, whatever the layout: (*o, F, *m, C).
        self.canonical_shape = (*self.spatial_output, filters, *self.spatial_input, channels)
        self.dense_size = math.prod(self.view_shape)  # entries of the dense operator

    @property
    def stride(self) -> tuple[int, ...]:
        return tuple(axis.stride for axis in self.axes)

    @property
    def dilation(self) -> tuple[int, ...]:
        return tuple(axis.dilation for axis in self.axes)

    @property
    def pads(self) -> tuple[tuple[int, int], ...]:
        return tuple((axis.lo, axis.hi) for axis in self.axes)

    @property
    def taps(self) -> int:
        """Number of spatial kernel taps, prod(k)."""
        return math.prod(self.spatial_kernel)

    @property
    def input_size(self) -> int:
        return math.prod(self.input_shape)

    @property
    def output_size(self) -> int:
        return math.prod(self.output_shape)

    @property
    def nonzero_count(self) -> int:
        """Number of structural non-zeros (kernel taps that land inside the input)."""
        # The axes are independent: the total is the product of per-axis counts of (output, tap)
        # pairs that land inside the input, times the channel pairs. Each count is closed-form, so
        # this costs nothing proportional to the kernel or the input.
        total = self.filters * self.group_channels
        for axis in self.axes:
            total *= axis.output * _distinct_residues(axis) if self.circular else _pairs_inside(axis)
        return total

    def describe(self) -> str:
        """A one-line summary of the geometry, used by repr and the command line."""
        padding = self.padding if isinstance(self.padding, str) else list(self.pads)
        parts = [f"padding={padding!r}"]
        if any(s != 1 for s in self.stride):
            parts.append(f"stride={self.stride if len(set(self.stride)) > 1 else self.stride[0]}")
        if any(d != 1 for d in self.dilation):
            parts.append(f"dilation={self.dilation if len(set(self.dilation)) > 1 else self.dilation[0]}")
        if self.groups != 1:
            parts.append(f"groups={self.groups}")
        parts.append(f"layout={self.layout!r}")
        return ", ".join(parts)


def outputs_inside(axis: Axis, shift: int) -> tuple[int, int]:
    """Half-open range ``[first, stop)`` of outputs ``o`` with ``0 <= o * stride + shift < size``."""
    first = max(0, -(shift // axis.stride))  # ceil(-shift / stride)
    stop = min(axis.output, (axis.size - 1 - shift) // axis.stride + 1)
    return first, max(first, stop)


def positions_in_range(axis: Axis, tap: int) -> tuple[int, int]:
    """Half-open range ``[first, stop)`` of output positions whose `tap` reads a real input entry.

    Output ``o`` reads input position ``o * stride + tap * dilation - lo``; positions outside
    ``[0, size)`` are padding.
    """
    return outputs_inside(axis, tap * axis.dilation - axis.lo)


def _floor_sum(count: int, divisor: int, slope: int, offset: int) -> int:
    """``sum((slope * i + offset) // divisor for i in range(count))`` in O(log) steps.

    For non-negative `slope` and `offset` and a positive `divisor` (the classic Euclid-like
    reduction: take out the whole multiples, then swap the roles of the axes).
    """
    total = 0
    while count > 0:
        if slope >= divisor:
            total += (count - 1) * count // 2 * (slope // divisor)
            slope %= divisor
        if offset >= divisor:
            total += count * (offset // divisor)
            offset %= divisor
        last = slope * count + offset
        if last < divisor:
            break
        count, offset = last // divisor, last % divisor
        divisor, slope = slope, divisor
    return total


def _outputs_reaching(axis: Axis, top: int) -> int:
    """``sum(#{o < output : o * stride <= top - r * dilation} for r in range(kernel))``."""
    output, stride, dilation = axis.output, axis.stride, axis.dilation
    # Taps r <= full reach every output, taps r >= empty reach none; in between, tap r reaches
    # (top - r * dilation) // stride + 1 outputs, summed below with r counted down from the top.
    full = min(axis.kernel, max(0, (top - (output - 1) * stride) // dilation + 1))
    empty = min(axis.kernel, max(full, top // dilation + 1)) if top >= 0 else full
    between = empty - full
    if between <= 0:
        return full * output
    base = top - (empty - 1) * dilation  # >= 0: the value at the last partial tap
    return full * output + between + _floor_sum(between, stride, dilation, base)


def _pairs_inside(axis: Axis) -> int:
    """Pairs (output, tap) of one zero-padded axis whose input ``o*s + r*d - lo`` is in ``[0, m)``."""
    return _outputs_reaching(axis, axis.size - 1 + axis.lo) - _outputs_reaching(axis, axis.lo - 1)


def _distinct_residues(axis: Axis) -> int:
    """Distinct input positions ``(r * d - lo) mod m`` of a circular axis's taps.

    ``r * d mod m`` runs through the multiples of ``g = gcd(d, m)`` with period ``m / g``, all
    distinct within a period.
    """
    return min(axis.kernel, axis.size // math.gcd(axis.dilation, axis.size))


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


def _parse_padding(padding: Any, ndim: int) -> Any:
    """The padding mode as a string, or one ``(lo, hi)`` pair of ints per spatial axis."""
    if isinstance(padding, str):
        if padding not in PADDING_MODES:
            raise ValueError(
                f"`padding` must be one of {', '.join(map(repr, PADDING_MODES))}, an int, "
                f"{ndim} ints or {ndim} (lo, hi) pairs; got {padding!r}"
            )
        return padding
    if isinstance(padding, bytes) or padding is None:
        raise ValueError(f"`padding` must be a string, an int or a sequence, got {padding!r}")
    if not isinstance(padding, (tuple, list)) and np.ndim(padding) == 0:
        value = as_int(padding, "padding")
        pairs = ((value, value),) * ndim
    else:
        items = list(padding)
        if len(items) != ndim:
            raise ValueError(
                f"`padding` must give one entry per spatial axis ({ndim}), got {len(items)}: {padding!r}"
            )
        pairs_list = []
        for item in items:
            if isinstance(item, (str, bytes)):
                raise ValueError(f"`padding` entries must be ints or (lo, hi) pairs, got {item!r}")
            if not isinstance(item, (tuple, list)) and np.ndim(item) == 0:
                value = as_int(item, "padding")
                pairs_list.append((value, value))
            else:
                pair = tuple(as_int(v, "padding") for v in item)
                if len(pair) != 2:
                    raise ValueError(f"`padding` pairs must have two entries (lo, hi), got {item!r}")
                pairs_list.append(pair)
        pairs = tuple(pairs_list)  # type: ignore[assignment]
    if any(v < 0 for pair in pairs for v in pair):
        raise ValueError(f"`padding` must be non-negative, got {padding!r}")
    return pairs  # type: ignore[return-value]


def _same_pads(size: int, extent: int, stride: int) -> tuple[int, int]:
    output = _ceil_div(size, stride)
    total = max((output - 1) * stride + extent - size, 0)
    return total // 2, total - total // 2


def make_geometry(
    kernel_shape: tuple[int, ...],
    input_shape: Any,
    *,
    padding: Any = "valid",
    stride: Any = 1,
    dilation: Any = 1,
    groups: Any = 1,
    layout: Any = "channels_last",
) -> Geometry:
    """Check every geometry argument against the kernel shape and return a `Geometry`.

    Raises `ValueError` naming the offending argument and what would be accepted.
    """
    if not isinstance(layout, str) or layout not in LAYOUTS:
        raise ValueError(f"`layout` must be 'channels_last' or 'channels_first', got {layout!r}")
    if len(kernel_shape) < 3:
        raise ValueError(
            f"`kernel` must have at least 3 axes (N >= 1 spatial axes, input channels, filters), "
            f"got shape {kernel_shape}"
        )
    if 0 in kernel_shape:
        raise ValueError(f"`kernel` must not be empty, got shape {kernel_shape}")
    ndim = len(kernel_shape) - 2
    if ndim > MAX_SPATIAL_AXES:
        raise ValueError(
            f"`kernel` has {ndim} spatial axes (shape {kernel_shape}); at most {MAX_SPATIAL_AXES} are "
            f"supported: the operator has 2N + 2 axes and NumPy arrays at most {2 * MAX_SPATIAL_AXES + 2}. "
            "Merge spatial axes of size 1 into their neighbours"
        )
    if layout == "channels_last":
        *spatial_kernel, group_channels, filters = kernel_shape
    else:
        filters, group_channels, *spatial_kernel = kernel_shape

    groups = as_int(groups, "groups")
    if groups < 1:
        raise ValueError(f"`groups` must be >= 1, got {groups}")
    channels = group_channels * groups
    if filters % groups:
        raise ValueError(
            f"`groups`={groups} must divide the number of filters F={filters} (kernel shape {kernel_shape})"
        )

    if isinstance(input_shape, (str, bytes)):
        raise ValueError(f"`input_shape` must be a sequence of integers, got the string {input_shape!r}")
    if not isinstance(input_shape, (tuple, list)) and np.ndim(input_shape) == 0:
        input_shape = (input_shape,)
    sizes = tuple([as_int(v, "input_shape") for v in input_shape])
    if len(sizes) == ndim + 1:
        given_channels = sizes[-1] if layout == "channels_last" else sizes[0]
        spatial_input = sizes[:-1] if layout == "channels_last" else sizes[1:]
        if given_channels != channels:
            where = "last" if layout == "channels_last" else "first"
            detail = f" = {group_channels} x groups={groups}" if groups > 1 else ""
            raise ValueError(
                f"`input_shape` {sizes} has {given_channels} channels on its {where} axis, but the "
                f"kernel expects C = {channels}{detail}"
            )
    elif len(sizes) == ndim:
        spatial_input = sizes
    else:
        raise ValueError(
            f"`input_shape` must have {ndim + 1} entries (with the channel axis) or {ndim} "
            f"(spatial sizes only) for a kernel with {ndim} spatial axes, got {sizes}"
        )
    if min(spatial_input) < 1:
        raise ValueError(f"`input_shape` sizes must be >= 1, got {sizes}")

    strides = _at_least(_as_int_tuple(stride, "stride", ndim), 1, "stride", stride)
    dilations = _at_least(_as_int_tuple(dilation, "dilation", ndim), 1, "dilation", dilation)
    parsed = _parse_padding(padding, ndim)

    axes = []
    for i, (m, k, s, d) in enumerate(zip(spatial_input, spatial_kernel, strides, dilations)):
        extent = (k - 1) * d + 1
        if parsed == "valid":
            lo, hi = 0, 0
        elif parsed in ("same", "circular"):
            lo, hi = _same_pads(m, extent, s)
        elif parsed == "full":
            lo, hi = extent - 1, extent - 1
        else:
            lo, hi = parsed[i]
        axis = Axis(m, k, s, d, lo, hi)
        if parsed != "circular" and extent > m + lo + hi:
            raise ValueError(
                f"the kernel (effective size {extent} = ({k} - 1) * dilation {d} + 1) is larger than "
                f"the padded input ({m} + {lo} + {hi}) along spatial axis {i}: the output would be "
                f"empty; use a smaller `dilation`, more `padding`, or a larger `input_shape`"
            )
        axes.append(axis)

    return Geometry(
        axes=tuple(axes),
        channels=channels,
        filters=filters,
        groups=groups,
        circular=parsed == "circular",
        layout=layout,  # type: ignore[arg-type]
        padding=padding,
    )
