"""`dottest`: the adjoint test ``<A x, y> == <x, A^H y>`` for any operator."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["dottest"]


def _random(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Random entries of `dtype`: small integers, bools, or standard normals (complex too)."""
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(dtype)
    if dtype.kind in "iu":
        low = 0 if dtype.kind == "u" else -3
        return rng.integers(low, 4, size=shape).astype(dtype)
    values = rng.standard_normal(shape)
    if dtype.kind == "c":
        values = values + 1j * rng.standard_normal(shape)
    return values.astype(dtype)


def dottest(operator: Any, *, rtol: float | None = None, seed: int = 0) -> bool:
    """Check that ``operator.H`` is the adjoint of `operator` on random vectors.

    Draws ``x`` of `input_shape` and ``y`` of `output_shape` with the operator's dtype and
    compares ``<op @ x, y>`` with ``<x, op.H @ y>`` (``np.vdot`` conjugates its first argument).

    Parameters
    ----------
    operator : object
        Anything with `input_shape`, `output_shape`, `dtype`, ``@`` and `H`: a `ConvOperator`,
        a sum or product of them, or another library's operator with those members.
    rtol : float, optional
        Tolerance relative to ``|op x| |y| + |x| |op^H y|``. Default: exact for integer and bool
        dtypes (their arithmetic is exact, modulo wrap-around), else the square root of the
        floating dtype's machine epsilon.
    seed : int
        Seed of `numpy.random.default_rng` for ``x`` and ``y``.

    Returns
    -------
    bool
        True when the test passes.

    Raises
    ------
    AssertionError
        With both inner products, when they differ by more than the tolerance or either is NaN.
    ValueError
        If `rtol` is negative, infinite or NaN.

    Examples
    --------
    >>> import numpy as np
    >>> import stridedop
    >>> op = stridedop.ConvOperator(np.ones((3, 3, 2, 4)), (8, 8, 2), padding="same",
    ...                             padding_mode="reflect")
    >>> stridedop.dottest(op)
    True
    """
    number = isinstance(rtol, (int, float, np.integer, np.floating)) and not isinstance(rtol, bool)
    if rtol is not None and not (number and 0 <= rtol < np.inf):
        raise ValueError(f"`rtol` must be a finite number >= 0, got {rtol!r}")
    dtype = np.dtype(operator.dtype)
    rng = np.random.default_rng(seed)
    x = _random(rng, tuple(operator.input_shape), dtype)
    y = _random(rng, tuple(operator.output_shape), dtype)
    forward = np.asarray(operator @ x)
    adjoint = np.asarray(operator.H @ y)
    left: complex
    right: complex
    if dtype.kind in "biu":
        left, right = int(np.vdot(forward, y)), int(np.vdot(x, adjoint))  # bools as 0 and 1
        scale = 0.0
        tolerance = 0.0 if rtol is None else rtol
    else:
        left, right = complex(np.vdot(forward, y)), complex(np.vdot(x, adjoint))
        scale = float(
            np.linalg.norm(forward) * np.linalg.norm(y) + np.linalg.norm(x) * np.linalg.norm(adjoint)
        )
        tolerance = float(np.sqrt(np.finfo(dtype).eps)) if rtol is None else rtol
    if not abs(left - right) <= tolerance * scale:  # (NaN inner products fail too)
        raise AssertionError(
            f"dot test failed: <op @ x, y> = {left!r} but <x, op.H @ y> = {right!r} "
            f"(difference {abs(left - right):.3g}, allowed {tolerance * scale:.3g})"
        )
    return True
