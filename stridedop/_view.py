"""`OperatorView`: the read-only operator view that knows its operator.

A view ``W`` of shape ``(*output_shape, *input_shape)`` is an ``ndarray`` like any other, except
that the contractions that *are* the operator go through it instead of through the dense tensor:

* ``np.tensordot(W, x, N + 1)`` (W's input axes with axes of ``x``, any spelling) is ``op @ x``;
* ``np.tensordot(y, W, len(output_shape))`` (W's output axes) is ``op.T @ y``, not conjugated;
* ``np.einsum`` with exactly those contractions, and for 2-D views (the structured matrices)
  ``W @ v``, ``v @ W``, ``np.dot`` and ``W.dot``.

Everything else is NumPy's own meaning, computed on a plain view of the same memory, so that
every array derived from ``W`` (slices, ufunc results, reshapes, copies, ``W.T``) is a plain
``numpy.ndarray``: only the view itself carries the operator.

How derived arrays stay plain: NumPy creates views and copies of a subclass with the subclass's
type, so the methods that derive arrays run on ``W.view(np.ndarray)`` instead (see
`_PLAIN_METHODS`); ufuncs and ``__array_function__`` unwrap their arguments first. Whatever still
slips through (``W.view(OperatorView)``) is an orphan: `__array_finalize__` gives it no operator,
and it behaves as a plain array.
"""

from __future__ import annotations

import copy
import string
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["OperatorView", "find_operator_view", "make_view", "plain"]


def plain(array: Any) -> Any:
    """`array` seen as a plain ndarray (a view, nothing copied) if it is an OperatorView."""
    if isinstance(array, OperatorView):
        return np.ndarray.view(array, np.ndarray)
    return array


def _plain_arguments(values: Any) -> Any:
    """The arguments of a NumPy function with every OperatorView, also in lists, made plain."""
    if isinstance(values, OperatorView):
        return plain(values)
    if type(values) in (list, tuple):
        return type(values)([plain(value) for value in values])
    return values


_FIRST_USE = threading.RLock()  # held while a view's operator is first built


class OperatorView(np.ndarray):
    """A read-only operator view that knows its operator: ``W.operator``.

    Returned by `conv_view`, ``ConvOperator.view`` (``op.H.view``, ``op.T.view``) and, for 2-D
    matrices, the structured matrices (`toeplitz`, ...). It has the shape, strides, dtype and
    values of the plain strided view; it cannot be made writable. Never construct it directly.

    Contractions that apply the operator are computed through it, never building the dense
    tensor: ``np.tensordot(W, x, axes=N + 1)`` and the explicit axes (``x`` may carry trailing
    batch axes), ``np.tensordot(y, W, axes=len(output_shape))`` (the plain transpose; ``y`` may
    carry leading batch axes), ``np.einsum`` with the same contractions, and for 2-D views
    ``W @ v``, ``v @ W``, ``np.dot`` and ``W.dot``. Results equal NumPy's dense ones in shape,
    dtype and values (to rounding). Everything else is NumPy's meaning, and arrays derived from
    ``W`` are plain ndarrays.

    Attributes
    ----------
    operator : ConvOperator
        The operator of this view's direction (``op.H.view.operator is op.H``), sharing the view's
        buffer: nothing is copied.

    Notes
    -----
    ``pickle`` and ``copy.deepcopy`` store the kernel and the geometry, not the dense tensor, and
    load as an equal read-only `OperatorView`. ``repr`` stays short for any size, and notebooks
    show a table with a picture of the unfolded matrix (``_repr_html_``).

    Examples
    --------
    >>> import numpy as np
    >>> import stridedop
    >>> rng = np.random.default_rng(0)
    >>> K = rng.standard_normal((3, 3, 16, 16))
    >>> A = rng.standard_normal((32, 32, 16))
    >>> W = stridedop.conv_view(K, A.shape)
    >>> isinstance(W, stridedop.OperatorView), W.nbytes  # 1.9 GB if it were dense
    (True, 1887436800)
    >>> B = np.tensordot(W, A, 3)  # through W.operator: milliseconds, no dense tensor
    >>> np.allclose(B, W.operator @ A)
    True
    >>> type(W[0]) is np.ndarray and type(W.T) is np.ndarray
    True
    """

    # The operator, or a recipe ``(factory, *arguments)`` that builds it. Set where a view is
    # built; an array derived through a path that kept the type never gets it (an orphan, with no
    # operator): it is read with `_origin_of`. (No `__array_finalize__`: a Python call per build.)
    __slots__ = ("_origin",)
    _origin: Any

    # -- the operator ---------------------------------------------------------------------------
    @property
    def operator(self) -> Any:
        """The operator of this view (a `ConvOperator`, or the matrix of a structured view)."""
        origin = _origin_of(self)
        if origin is None:
            raise AttributeError(
                "this OperatorView was derived from another one and has no operator; "
                "use the view returned by `conv_view` or `op.view`"
            )
        if type(origin) is tuple:  # built on first use: a view is built in microseconds
            with _FIRST_USE:  # one operator per view, also when threads ask for it at once
                origin = self._origin
                if type(origin) is tuple:
                    factory, *arguments = origin
                    origin = self._origin = factory(*arguments)
        return origin

    def _operator_or_none(self) -> Any:
        return None if _origin_of(self) is None else self.operator

    # -- NumPy protocols: contractions through the operator, the rest on a plain view -------------
    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        if ufunc is np.matmul and method == "__call__" and not kwargs and len(inputs) == 2:
            result = _matmul(*inputs)
            if result is not NotImplemented:
                return result
        inputs = tuple([plain(value) for value in inputs])
        kwargs = {name: _plain_arguments(value) for name, value in kwargs.items()}
        return getattr(ufunc, method)(*inputs, **kwargs)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        handler = _HANDLERS.get(func)
        if handler is not None:
            result = handler(*args, **kwargs)
            if result is not NotImplemented:
                return result
        if not all(issubclass(kind, np.ndarray) for kind in types):
            return NotImplemented
        args = tuple([_plain_arguments(value) for value in args])
        kwargs = {name: _plain_arguments(value) for name, value in kwargs.items()}
        return _plain_arguments(func._implementation(*args, **kwargs))

    def __array_wrap__(self, array: Any, context: Any = None, return_scalar: bool = False) -> Any:
        return np.ndarray.__array_wrap__(plain(self), plain(array), context, return_scalar)

    def dot(self, b: Any, out: Any = None) -> Any:
        """``np.dot(W, b)``; for a 2-D view (a structured matrix) applied through the operator."""
        if out is None:
            return np.dot(self, b)
        return plain(self).dot(plain(b), out)

    # -- pickling and copies --------------------------------------------------------------------
    def __reduce__(self) -> Any:
        operator = self._operator_or_none()
        if operator is None:
            return plain(self).__reduce__()
        return (_operator_view, (operator,))

    def __reduce_ex__(self, protocol: Any) -> Any:
        return self.__reduce__()

    def __deepcopy__(self, memo: Any) -> Any:
        operator = self._operator_or_none()
        if operator is None:
            return copy.deepcopy(plain(self), memo)
        return _operator_view(copy.deepcopy(operator, memo))

    # -- display --------------------------------------------------------------------------------
    def __repr__(self) -> str:
        from ._display import view_text

        return view_text(self) if _origin_of(self) is not None else repr(plain(self))

    def __str__(self) -> str:
        from ._display import view_text

        return view_text(self) if _origin_of(self) is not None else str(plain(self))

    def _repr_html_(self) -> str | None:
        from ._display import view_html

        return view_html(self) if _origin_of(self) is not None else None


def _origin_of(view: OperatorView) -> Any:
    """The origin of `view` (its operator or the recipe of it), None for an orphan."""
    return getattr(view, "_origin", None)


def _operator_view(operator: Any) -> OperatorView:
    """Unpickle: the view of an operator (built again from its kernel and geometry)."""
    from ._algebra import BaseOperator  # imports this module

    if not (isinstance(operator, BaseOperator) and hasattr(type(operator), "view")):  # tampered
        kind = type(operator).__name__
        raise TypeError(f"a pickled OperatorView must hold a stridedop operator with a view, got {kind}")
    return operator.view  # type: ignore[attr-defined,no-any-return]


def make_view(array: np.ndarray, origin: Any) -> OperatorView:
    """`array` (a read-only view) as an OperatorView of `origin` (an operator or a recipe)."""
    view = np.ndarray.view(array, OperatorView)
    view._origin = origin
    return view  # type: ignore[no-any-return]


def find_operator_view(array: Any) -> OperatorView | None:
    """The OperatorView that `array` is, or is a view of (through plain views), or None."""
    while isinstance(array, np.ndarray):
        if isinstance(array, OperatorView):
            return array if _origin_of(array) is not None else None
        array = array.base
    return None


# Methods of ndarray that derive new arrays, run on a plain view so that the results are plain.
# (Arithmetic and reductions go through __array_ufunc__; `setflags`, `tolist`, `item`, `tobytes`,
# `__len__` and the like return no array and keep the subclass's own.)
_PLAIN_METHODS = (
    "__getitem__", "__iter__", "__copy__", "__array__", "all", "any", "argmax", "argmin",
    "argpartition", "argsort", "astype", "byteswap", "choose", "clip", "compress", "conj",
    "conjugate", "copy", "cumprod", "cumsum", "diagonal", "flatten", "getfield", "max", "mean",
    "min", "nonzero", "partition", "prod", "put", "ravel", "repeat", "reshape", "resize", "round",
    "searchsorted", "setfield", "sort", "squeeze", "std", "sum", "swapaxes", "take", "trace",
    "transpose", "var", "view", "fill", "to_device",
)  # fmt: skip
_PLAIN_PROPERTIES = ("T", "mT", "real", "imag", "flat")


def _on_plain_view(name: str) -> Callable[..., Any]:
    method = getattr(np.ndarray, name)

    def on_plain_view(self: OperatorView, *args: Any, **kwargs: Any) -> Any:
        return method(np.ndarray.view(self, np.ndarray), *args, **kwargs)

    on_plain_view.__name__ = name
    on_plain_view.__doc__ = f"``ndarray.{name}`` of the plain view: arrays it returns are plain ndarrays."
    return on_plain_view


def _plain_property(name: str) -> property:
    descriptor = getattr(np.ndarray, name)
    return property(
        lambda self: descriptor.__get__(np.ndarray.view(self, np.ndarray)),
        doc=f"``ndarray.{name}`` of the plain view (a plain ndarray).",
    )


for _name in _PLAIN_METHODS:
    if hasattr(np.ndarray, _name):  # `to_device`, `mT` are NumPy 2
        setattr(OperatorView, _name, _on_plain_view(_name))
for _name in _PLAIN_PROPERTIES:
    if hasattr(np.ndarray, _name):
        setattr(OperatorView, _name, _plain_property(_name))


# -- the contractions that are the operator -----------------------------------------------------
def _normalized_axes(axes: Any, ndim: int) -> list[int] | None:
    """Axes as non-negative ints (an int is one axis), or None if any is invalid."""
    values = [axes] if isinstance(axes, (int, np.integer)) else axes
    try:
        result = [int(axis) for axis in values]
    except (TypeError, ValueError):
        return None
    if any(not -ndim <= axis < ndim for axis in result):
        return None
    result = [axis % ndim for axis in result]
    return result if len(set(result)) == len(result) else None


def _contract(view: Any, view_axes: Any, other: Any, other_axes: Any, view_first: bool) -> Any:
    """``tensordot`` of `view` and `other` over paired axes, through the operator; else NotImplemented.

    Applies when the view's contracted axes are exactly its input axes (the operator) or exactly
    its output axes (the plain transpose). The result has NumPy's axis order: the view's free
    axes then `other`'s (`view_first`), or the other way round.
    """
    operator = view._operator_or_none()
    if operator is None or isinstance(other, OperatorView):
        return NotImplemented
    x = np.asarray(other)
    if x.dtype.kind not in "biufc":
        return NotImplemented
    view_axes = _normalized_axes(view_axes, view.ndim)
    other_axes = _normalized_axes(other_axes, x.ndim)
    if view_axes is None or other_axes is None or len(view_axes) != len(other_axes):
        return NotImplemented
    if any(view.shape[a] != x.shape[b] for a, b in zip(view_axes, other_axes)):
        return NotImplemented  # NumPy raises its own error
    pairs = sorted(zip(view_axes, other_axes))
    rows = len(operator.output_shape)
    contracted = [a for a, _ in pairs]
    if contracted == list(range(rows, view.ndim)):
        applied = operator
    elif contracted == list(range(rows)):
        applied = operator.transpose()  # the plain transpose (no FutureWarning of 0.2)
    else:
        return NotImplemented
    taken = [b for _, b in pairs]
    free = [axis for axis in range(x.ndim) if axis not in taken]
    x = x.transpose(free + taken)  # (*batch, *applied.input_shape)
    dtype = np.result_type(view.dtype, x.dtype)
    if x.size == 0:
        result = np.zeros((*x.shape[: len(free)], *applied.output_shape), dtype=dtype)
    elif dtype == np.bool_:  # NumPy's products of booleans are "any": count, then compare
        result = applied @ x.astype(np.int64) != 0
    else:
        result = applied @ x
    if view_first and free:
        result = np.moveaxis(result, range(len(free), result.ndim), range(result.ndim - len(free)))
    return np.ascontiguousarray(result, dtype=dtype)


def _tensordot(a: Any, b: Any, axes: Any = 2) -> Any:
    view_first = isinstance(a, OperatorView)
    view, other = (a, b) if view_first else (b, a)
    if not isinstance(view, OperatorView):
        return NotImplemented
    if isinstance(axes, (int, np.integer)):
        n = int(axes)
        if n < 1 or n > view.ndim or n > np.ndim(other):
            return NotImplemented
        a_axes, b_axes = list(range(np.ndim(a) - n, np.ndim(a))), list(range(n))
    else:
        try:
            a_axes, b_axes = axes
        except (TypeError, ValueError):
            return NotImplemented
    view_axes, other_axes = (a_axes, b_axes) if view_first else (b_axes, a_axes)
    return _contract(view, view_axes, other, other_axes, view_first)


def _dot(a: Any, b: Any, out: Any = None) -> Any:
    if out is not None:
        return NotImplemented
    a_ndim, b_ndim = np.ndim(a), np.ndim(b)
    if a_ndim == 0 or b_ndim == 0:
        return NotImplemented
    # np.dot contracts a's last axis with b's second-to-last (its only one when b is 1-D).
    return _tensordot(a, b, ([a_ndim - 1], [max(b_ndim - 2, 0)]))


def _matmul(a: Any, b: Any) -> Any:
    """``a @ b`` through the operator when one side is a 2-D view and the other 1-D or 2-D."""
    view = a if isinstance(a, OperatorView) else b
    if view.ndim != 2 or np.ndim(a) not in (1, 2) or np.ndim(b) not in (1, 2):
        return NotImplemented
    return _dot(a, b)  # for these shapes matmul and dot agree


_LETTERS = set(string.ascii_letters)


def _einsum(*operands: Any, out: Any = None, optimize: Any = False, **kwargs: Any) -> Any:
    """Two-operand einsum whose subscripts make exactly one of the view's two contractions."""
    if out is not None or kwargs or len(operands) != 3 or not isinstance(operands[0], str):
        return NotImplemented
    subscripts, a, b = operands
    subscripts = subscripts.replace(" ", "")
    inputs, arrow, output = subscripts.partition("->")
    terms = inputs.split(",")
    if len(terms) != 2 or not set(inputs + output) <= _LETTERS | {","}:
        return NotImplemented
    view_first = isinstance(a, OperatorView)
    view, other = (a, b) if view_first else (b, a)
    view_labels, other_labels = terms if view_first else terms[::-1]
    if not isinstance(view, OperatorView):
        return NotImplemented
    if (len(view_labels), len(other_labels)) != (view.ndim, np.ndim(other)):
        return NotImplemented
    if len(set(view_labels)) != len(view_labels) or len(set(other_labels)) != len(other_labels):
        return NotImplemented
    shared = set(view_labels) & set(other_labels)
    if not arrow:  # implicit output: the labels that appear once, sorted
        output = "".join(sorted(set(view_labels) ^ set(other_labels)))
    view_free = [label for label in view_labels if label not in shared]
    other_free = [label for label in other_labels if label not in shared]
    if len(set(output)) != len(output) or sorted(output) != sorted(view_free + other_free):
        return NotImplemented  # summed free axes or kept shared ones: not a plain contraction
    view_axes = [view_labels.index(label) for label in shared]
    other_axes = [other_labels.index(label) for label in shared]
    result = _contract(view, view_axes, other, other_axes, view_first)
    if result is NotImplemented:
        return result
    order = view_free + other_free if view_first else other_free + view_free
    return np.ascontiguousarray(result.transpose([order.index(label) for label in output]))


_HANDLERS: dict[Any, Callable[..., Any]] = {np.tensordot: _tensordot, np.einsum: _einsum, np.dot: _dot}
