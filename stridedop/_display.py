"""How views and operators show themselves: a short text, and an HTML table with a picture.

The picture is the unfolded matrix (rows: the output entries in C order, columns: the input
entries) cut into a grid of at most a few hundred cells, each shaded by the share of its entries
that are structural non-zeros. The counts are exact and cost nothing like the matrix: along each
spatial axis (and the channel-to-filter map) the non-zeros form a small 0/1 pattern, the matrix's
pattern is their Kronecker product, and the number of non-zeros in any top-left corner of a
Kronecker product follows from the corners of its factors (`_Kronecker.corner`).
"""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np

from ._geometry import input_positions
from ._memory import format_bytes
from ._view import OperatorView, plain

__all__ = ["operator_html", "view_html", "view_text"]

MAX_TEXT = 2000  # characters of repr(W), whatever its size
_GRID = 24  # cells along the longer side of the picture
_MAX_WORK = 4 * 10**6  # entries of an axis's pattern beyond which no picture is drawn (about 1 s)
_INDENT = "  "


# -- text ---------------------------------------------------------------------------------------
def view_text(view: OperatorView) -> str:
    """``repr(W)``: values (a corner of them beyond 2-D), dtype, the operator; <= MAX_TEXT chars."""
    options = {"threshold": 64, "edgeitems": 3, "max_line_width": 100, "separator": ", ", "precision": 4}
    operator = f"operator={view.operator!r}"
    if view.ndim <= 2:
        values = np.array2string(plain(view), prefix="OperatorView(", **options)  # type: ignore[arg-type]
        text = f"OperatorView({values}, dtype={view.dtype},\n{_INDENT}{operator})"
    else:
        corner = (0,) * (view.ndim - 2)
        label = f"W[{', '.join(map(str, corner))}]="
        values = np.array2string(view[corner], prefix=_INDENT + label, **options)  # type: ignore[arg-type]
        text = (
            f"OperatorView(shape={view.shape}, dtype={view.dtype},\n{_INDENT}{operator},\n"
            f"{_INDENT}{label}{values})"
        )
    if len(text) > MAX_TEXT:
        text = text[: MAX_TEXT - 5] + " ...)"
    return text


# -- the structure of the unfolded matrix -------------------------------------------------------
class _Pattern:
    """A 0/1 matrix ``(rows, cols)`` given by the sorted distinct columns of each row."""

    def __init__(self, columns: np.ndarray, cols: int) -> None:
        # columns: (rows, t) ints, -1 or >= cols for none; sorted, repeats in a row count once
        columns = np.where((columns < 0) | (columns >= cols), cols, columns)
        columns = np.sort(columns, axis=1)
        columns[:, 1:][columns[:, 1:] == columns[:, :-1]] = cols
        self.columns, self.rows, self.cols = columns, columns.shape[0], cols

    def corner(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Non-zeros in ``[:r, :c]`` for every ``r`` in `rows` and ``c`` in `cols`: (len(rows), len(cols))."""
        rows = np.clip(rows, 0, self.rows)
        result = np.empty((len(rows), len(cols)), dtype=np.int64)
        for j, c in enumerate(np.clip(cols, 0, self.cols)):
            per_row = np.count_nonzero(self.columns < c, axis=1)
            result[:, j] = np.concatenate(([0], np.cumsum(per_row)))[rows]
        return result


class _Transposed:
    def __init__(self, inner: Any) -> None:
        self.inner, self.rows, self.cols = inner, inner.cols, inner.rows

    def corner(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return self.inner.corner(cols, rows).T  # type: ignore[no-any-return]


class _Reversed:
    """The pattern with its rows and/or columns in reverse order."""

    def __init__(self, inner: Any, reverse_rows: bool, reverse_cols: bool) -> None:
        self.inner, self.rows, self.cols = inner, inner.rows, inner.cols
        self.reverse_rows, self.reverse_cols = reverse_rows, reverse_cols

    def corner(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        def with_columns(rows: np.ndarray) -> np.ndarray:
            if not self.reverse_cols:
                return self.inner.corner(rows, cols)  # type: ignore[no-any-return]
            whole = self.inner.corner(rows, np.array([self.cols]))
            return whole - self.inner.corner(rows, self.cols - cols)  # type: ignore[no-any-return]

        if not self.reverse_rows:
            return with_columns(rows)
        return with_columns(np.array([self.rows])) - with_columns(self.rows - rows)


class _Kronecker:
    """The Kronecker product of patterns, outermost first."""

    def __init__(self, factors: list[Any]) -> None:
        self.factors = factors
        self.rows = math.prod(factor.rows for factor in factors)
        self.cols = math.prod(factor.cols for factor in factors)

    def corner(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        first, rest = self.factors[0], self.factors[1:]
        if not rest:
            return first.corner(rows, cols)  # type: ignore[no-any-return]
        inner = _Kronecker(rest)
        # [:r, :c] = whole blocks of `first`, a partial block row, a partial block column, a corner.
        i, r = np.divmod(rows, inner.rows)
        j, c = np.divmod(cols, inner.cols)
        p00, p01 = first.corner(i, j), first.corner(i, j + 1)
        p10, p11 = first.corner(i + 1, j), first.corner(i + 1, j + 1)
        # The inner counts at the partial rows and columns and at the whole inner matrix, in one
        # call: one per factor (four calls each would make 4**N of them).
        counts = inner.corner(np.append(r, inner.rows), np.append(c, inner.cols))
        partial, by_rows, by_cols, full = counts[:-1, :-1], counts[:-1, -1:], counts[-1:, :-1], counts[-1, -1]
        return (  # type: ignore[no-any-return]
            p00 * full + (p01 - p00) * by_cols + (p10 - p00) * by_rows + (p11 - p10 - p01 + p00) * partial
        )


def _axis_pattern(axis: Any, mode: Any) -> _Pattern | None:
    """Output position ``o`` reads the inputs that its taps reach (after the padding mode)."""
    if axis.output * axis.kernel > _MAX_WORK:
        return None
    return _Pattern(np.asarray(mode.source(input_positions(axis), axis.size)), axis.size)


def convolution_pattern(operator: Any) -> Any:
    """The non-zero pattern of a ConvOperator's unfolded matrix (None if too large to count)."""
    geometry = operator._geometry
    axes = [_axis_pattern(axis, geometry.mode) for axis in geometry.axes]
    if any(axis is None for axis in axes):
        return None
    group = np.arange(geometry.filters) // geometry.group_filters
    channels = group[:, None] * geometry.group_channels + np.arange(geometry.group_channels)
    factors = [*axes, _Pattern(channels, geometry.channels)]
    if geometry.layout == "channels_first":
        factors = factors[-1:] + factors[:-1]
    pattern: Any = _Kronecker(factors)
    return _Transposed(pattern) if operator._transposed else pattern


def _pattern_of(operator: Any) -> Any:
    from ._matrix import MatrixOperator
    from ._operator import ConvOperator

    if isinstance(operator, ConvOperator):
        return convolution_pattern(operator)
    if isinstance(operator, MatrixOperator):
        inner = convolution_pattern(operator.convolution)
        if inner is None:
            return None
        return _Reversed(inner, operator.reverse_output, operator.reverse_input)
    return None


def _cuts(total: int, cells: int) -> np.ndarray:
    return np.array(sorted({total * i // cells for i in range(cells + 1)}), dtype=np.int64)


def structure_svg(pattern: Any, size: int = 260) -> str:
    """An inline SVG of the pattern aggregated to at most ``_GRID x _GRID`` cells."""
    rows, cols = pattern.rows, pattern.cols
    longer = max(rows, cols)
    row_cuts = _cuts(rows, min(rows, max(1, round(_GRID * rows / longer))))
    col_cuts = _cuts(cols, min(cols, max(1, round(_GRID * cols / longer))))
    corners = pattern.corner(row_cuts, col_cuts)
    counts = corners[1:, 1:] - corners[:-1, 1:] - corners[1:, :-1] + corners[:-1, :-1]
    areas = np.diff(row_cuts)[:, None].astype(float) * np.diff(col_cuts)[None, :]
    density = counts / areas
    nonzeros = int(corners[-1, -1])
    top = density.max() if density.max() > 0 else 1.0
    width = size if cols >= rows else max(40, round(size * cols / rows))
    height = size if rows >= cols else max(40, round(size * rows / cols))
    scale_x, scale_y = width / cols, height / rows
    cells = []
    for i in range(len(row_cuts) - 1):
        for j in range(len(col_cuts) - 1):
            if counts[i, j]:
                shade = 0.15 + 0.85 * math.sqrt(density[i, j] / top)
                cells.append(
                    f'<rect x="{col_cuts[j] * scale_x:.2f}" y="{row_cuts[i] * scale_y:.2f}" '
                    f'width="{(col_cuts[j + 1] - col_cuts[j]) * scale_x:.2f}" '
                    f'height="{(row_cuts[i + 1] - row_cuts[i]) * scale_y:.2f}" '
                    f'fill="#1f5fa8" fill-opacity="{shade:.2f}"><title>rows {row_cuts[i]}:{row_cuts[i + 1]}, '
                    f"columns {col_cuts[j]}:{col_cuts[j + 1]}: {counts[i, j]} non-zeros</title></rect>"
                )
    share = nonzeros / (rows * cols)
    caption = f"{rows} x {cols} matrix, {nonzeros} structural non-zeros ({share:.2g} of the entries)"
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width + 2}" height="{height + 2}" '
        f'viewBox="-1 -1 {width + 2} {height + 2}" shape-rendering="crispEdges" role="img" '
        f'aria-label="{html.escape(caption)}">'
        f"<title>{html.escape(caption)}</title>"
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="white" stroke="#888" stroke-width="1"/>'
        f"{''.join(cells)}</svg>"
        f"<div style='font-size:smaller'>{html.escape(caption)}; darker: denser</div>"
    )


# -- HTML ---------------------------------------------------------------------------------------
def _table(caption: str, rows: list[tuple[str, Any]]) -> str:
    body = "".join(
        f"<tr><th style='text-align:left'>{html.escape(name)}</th><td>{html.escape(str(value))}</td></tr>"
        for name, value in rows
    )
    return f"<table><caption>{html.escape(caption)}</caption>{body}</table>"


def _with_picture(table: str, operator: Any) -> str:
    pattern = _pattern_of(operator)
    if pattern is None or pattern.rows * pattern.cols >= 2**62:  # counted in int64
        return table
    picture = structure_svg(pattern)
    return (
        "<div style='display:flex;gap:1.5em;align-items:flex-start'>"
        f"<div>{table}</div><div>{picture}</div></div>"
    )


def _operator_rows(operator: Any) -> list[tuple[str, Any]]:
    rows = getattr(operator, "_rows", None)
    if rows is not None:
        return rows()  # type: ignore[no-any-return]
    rows_ = [
        ("input shape", operator.input_shape),
        ("output shape", operator.output_shape),
        ("matrix shape", operator.matrix_shape),
        ("dtype", operator.dtype),
    ]
    for name in ("terms", "factors"):
        parts = getattr(operator, name, None)
        if parts is not None:
            rows_.append((name, ", ".join(repr(part) for part in parts)))
    return rows_


def operator_html(operator: Any) -> str:
    """``op._repr_html_()``: a table of shapes, geometry and bytes, and the matrix's picture."""
    name = type(operator).__name__ + getattr(operator, "_direction_name", lambda: "")()
    return _with_picture(_table(name, _operator_rows(operator)), operator)


def view_html(view: OperatorView) -> str:
    """``W._repr_html_()``: the view's shape and bytes, its operator's table, the picture."""
    operator = view.operator
    name = type(operator).__name__ + getattr(operator, "_direction_name", lambda: "")()
    held = operator.buffer_nbytes
    rows = [
        ("view", f"OperatorView {view.shape} {view.dtype}, read-only"),
        ("dense bytes", f"{format_bytes(view.nbytes)} ({view.nbytes} bytes)"),
        ("held bytes", f"{format_bytes(held)} ({held} bytes)"),
        ("operator", name),
        *[row for row in _operator_rows(operator) if row[0] not in ("dense operator", "buffer held")],
    ]
    return _with_picture(_table("OperatorView", rows), operator)
