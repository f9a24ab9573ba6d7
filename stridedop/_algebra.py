"""What every stridedop operator shares, and the lazy operators that the algebra builds.

`BaseOperator` holds the conventions of SciPy's ``LinearOperator`` once: ``@`` (apply, or
compose with another operator), ``.H``/``.T``, ``matrix_shape``, ``matvec``/``rmatvec``/``dot``,
scalars, sums, differences, and the exports. A subclass provides its shapes, dtype, ``.H``,
``.T``, the product with a batch, and its dense and sparse forms. `ConvOperator` is one; when
the algebra's result is not a single convolution it is a `SumOperator` or a `ProductOperator`,
which apply their parts and never build anything dense.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _spectral
from ._dask import apply as apply_dask
from ._dask import is_dask_array
from ._dense import check_allocation, dense_allocation
from ._geometry import as_numeric_array, brief
from ._memory import format_bytes, refused_allocation
from ._sparse import require_scipy, sparse_dtype

__all__ = ["BaseOperator", "ProductOperator", "SumOperator", "is_scalar"]

SPARSE_FORMATS = ("csr", "csc", "coo", "bsr", "dia", "dok", "lil")


def is_scalar(value: Any) -> bool:
    """Whether `value` is a number that can scale an operator: a Python or NumPy int, float or complex.

    Bools are not (as NumPy's ``bool - bool`` is not arithmetic); nor are other `numbers.Number`
    types such as `fractions.Fraction` or `decimal.Decimal`, which would give object kernels.
    """
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, (int, float, complex, np.integer, np.floating, np.complexfloating)):
        return True
    return isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iufc"


def _unwrap(scalar: Any) -> Any:
    """A 0-d array as its NumPy scalar; numbers as they are (Python numbers stay weakly typed)."""
    return scalar[()] if isinstance(scalar, np.ndarray) else scalar


def check_sparse_format(format: Any) -> str:
    """`format` if it is a scipy.sparse format name, else ValueError listing them."""
    if not isinstance(format, str) or format not in SPARSE_FORMATS:
        choices = ", ".join(map(repr, SPARSE_FORMATS))
        raise ValueError(f"`format` must be one of {choices}, got {brief(format)}")
    return format


class BaseOperator:
    """A linear map from arrays of `input_shape` to arrays of `output_shape`.

    Subclasses provide `input_shape`, `output_shape`, `dtype`, `H`, `T`, `_product` (the map on a
    batch ``(B, *input_shape)``), `to_matrix` and `to_sparse`.
    """

    __array_ufunc__ = None  # NumPy defers ``2.0 * op`` and ``x @ op`` to the operator

    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    dtype: np.dtype

    # -- what a subclass provides -----------------------------------------------------------------
    @property
    def H(self) -> BaseOperator:  # noqa: N802 (SciPy's name)
        """The adjoint (conjugate transpose)."""
        raise NotImplementedError

    @property
    def T(self) -> BaseOperator:  # noqa: N802 (NumPy's name)
        """The plain transpose (not conjugated)."""
        raise NotImplementedError

    def _product(self, batch: np.ndarray) -> np.ndarray:
        """The operator applied to a checked batch ``(B, *input_shape)``; ``(B, *output_shape)``."""
        raise NotImplementedError

    def to_matrix(self, max_bytes: int | None = None) -> np.ndarray:
        """Dense writable matrix ``matrix_shape`` (a copy)."""
        raise NotImplementedError

    def to_sparse(self, format: str = "csr") -> Any:
        """``scipy.sparse`` array of the matrix."""
        raise NotImplementedError

    # -- the conventions --------------------------------------------------------------------------
    @property
    def matrix_shape(self) -> tuple[int, int]:
        """``(prod(output_shape), prod(input_shape))``: the shape of the unfolded matrix."""
        return math.prod(self.output_shape), math.prod(self.input_shape)

    def apply(self, x: np.typing.ArrayLike) -> np.ndarray:
        """Apply the operator to `x` of shape `input_shape` or ``(*batch, *input_shape)``.

        Returns a new array of shape ``(*batch, *output_shape)``; nothing dense is built. A
        `dask.array.Array` gives a lazy dask array (needs the extra ``dask``).
        """
        if is_dask_array(x):  # checked without importing dask
            return apply_dask(self, x)
        batch, leading = _as_batch(x, self.input_shape, "x")
        with refused_allocation(lambda: _apply_refusal(self, batch)):
            result = self._product(batch)
        return result.reshape(*leading, *self.output_shape)

    def dot(self, x: np.typing.ArrayLike) -> np.ndarray:
        """``op @ x``, as in SciPy's ``LinearOperator.dot``."""
        return self @ x

    def matvec(self, v: np.typing.ArrayLike) -> np.ndarray:
        """Apply to a flat vector of ``prod(input_shape)`` entries (shape ``(n,)`` or ``(n, 1)``)."""
        return _flat_product(self, v, "v")

    def rmatvec(self, u: np.typing.ArrayLike) -> np.ndarray:
        """Apply the adjoint to a flat vector of ``prod(output_shape)`` entries."""
        return _flat_product(self.H, u, "u")

    def __matmul__(self, other: Any) -> Any:
        if isinstance(other, BaseOperator):
            if tuple(other.output_shape) != tuple(self.input_shape):
                raise ValueError(
                    f"cannot compose: the right operator's output_shape {other.output_shape} differs "
                    f"from the left operator's input_shape {self.input_shape}"
                )
            return self._composed_with(other)
        if hasattr(other, "matvec") or hasattr(other, "tocsr"):  # SciPy's LinearOperator, sparse
            raise TypeError(
                f"`@` composes stridedop operators and applies them to arrays, not to a "
                f"{type(other).__name__}: compose in SciPy with `op.aslinearoperator() @ other`, or "
                "apply the operator to a dense array"
            )
        return self.apply(other)

    def __mul__(self, scalar: Any) -> BaseOperator:
        if not is_scalar(scalar):
            return NotImplemented
        return self._scaled(_unwrap(scalar))

    __rmul__ = __mul__

    def __truediv__(self, scalar: Any) -> BaseOperator:
        if not is_scalar(scalar):
            return NotImplemented
        return self._scaled(1 / _unwrap(scalar))

    def __neg__(self) -> BaseOperator:
        return self._negated()

    def __pos__(self) -> BaseOperator:
        return self

    def __add__(self, other: Any) -> BaseOperator:
        if not isinstance(other, BaseOperator):
            return NotImplemented
        if (tuple(self.input_shape), tuple(self.output_shape)) != (
            tuple(other.input_shape),
            tuple(other.output_shape),
        ):
            raise ValueError(
                f"cannot add operators of different shapes: {self.input_shape} -> {self.output_shape} "
                f"and {other.input_shape} -> {other.output_shape}"
            )
        return self._added(other)

    def __sub__(self, other: Any) -> BaseOperator:
        if not isinstance(other, BaseOperator):
            return NotImplemented
        return self + (-other)

    # Hooks where a subclass returns a simpler operator (ConvOperator returns a ConvOperator).
    def _scaled(self, scalar: Any) -> BaseOperator:
        return SumOperator([(scalar, self)])

    def _negated(self) -> BaseOperator:
        """``-op``, with NumPy's unary minus on the entries (unsigned integers wrap around)."""
        return SumOperator([(-1, self)])

    def _added(self, other: BaseOperator) -> BaseOperator:
        return SumOperator([(1, self), (1, other)])

    def _composed_with(self, first: BaseOperator) -> BaseOperator:
        return ProductOperator([self, first])

    def _repr_html_(self) -> str:
        """A table of shapes and parts (and for convolutions a picture of the matrix)."""
        from ._display import operator_html

        return operator_html(self)

    # -- singular values and norms ------------------------------------------------------------------
    def _spectral_layer(self) -> Any:
        """The single convolution whose singular values this operator has, or None (ConvOperator)."""
        return None

    def svdvals(self, k: int | None = None) -> np.ndarray:
        """Singular values of the unfolded matrix, descending (float64).

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
            When all values are asked for and the dense matrix does not fit in memory (except for
            circular padding); pass `k` to use the matrix-free Lanczos iteration.

        Notes
        -----
        A circular convolution: exact, from the DFT of the kernel (any number of axes, stride,
        dilation, groups; real kernels use half the frequencies); the dense matrix is never
        formed. Every other operator: the dense SVD of `to_matrix` when all values are asked for
        or the matrix is small (guarded like `materialize`), else Golub-Kahan-Lanczos
        bidiagonalization on ``op @ x`` and ``op.H @ y``, converged to relative 1e-10, or for
        values below about 1e-5 of `norm_bounds`' upper bound to within 4 machine epsilons of it,
        the rounding of the products themselves (each value
        is within its Kato-Temple estimate of a true singular value; like every Krylov method it
        cannot prove that no larger value is hidden from its start vector, which `norm_bounds`
        brackets with a proof).

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
        return _spectral.svdvals(_spectral.linear_map_of(self), k)

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
        return _spectral.svds(_spectral.linear_map_of(self), k)

    def norm(self, ord: int | str = 2) -> float:
        """Spectral (``ord=2``) or Frobenius (``ord="fro"``) norm of the unfolded matrix.

        ``ord=2`` is exact for circular padding (DFT of the kernel) and converged to relative
        1e-10 otherwise (see `svdvals`). ``"fro"`` of a convolution is exact from the kernel and
        geometry, with no product at all (taps that fold onto one input entry are summed first);
        of a composed operator, from its dense matrix (guarded like `materialize`).

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
        return _spectral.norm(_spectral.linear_map_of(self), ord)

    def norm_bounds(self) -> tuple[float, float]:
        """Cheap ``(lower, upper)`` with ``lower <= op.norm(2) <= upper``, without the dense matrix.

        Why each bound holds (both carry a relative margin against rounding: 1e-12, or 64 machine
        epsilons of a float32 or float16 operator's dtype, whose products are rounded more coarsely):

        * ``lower = norm(op @ v) / norm(v)`` for an explicit vector ``v`` (the Ritz vector of a few
          Lanczos steps): the spectral norm is the maximum of that ratio.
        * circular padding: ``upper`` is the exact norm (the largest singular value of the DFT
          blocks, see `svdvals`).
        * zero padding: along each axis, embed the input at offset ``lo`` in a grid of length ``L``
          (a multiple of the stride with ``L >= lo + m``, ``L >= (o - 1) * stride + ke - lo`` and
          ``L >= o * stride``). Every tap of every output then reads either the same input entry
          as the zero-padded operator or a wrapped position below ``lo``, which holds zero. So the
          operator is ``R C E``: the circulant ``C`` of the kernel on that grid with an isometric
          embedding ``E`` and a row selection ``R``, and ``||op|| <= ||C||``, exact from the DFT.
        * reflect / replicate: ``op = V P`` with the padding map ``P`` (a Kronecker product of 0/1
          matrices with one 1 per row, so ``||P||`` is the product over axes of the square root of
          the largest number of padded positions reading one input entry) and the 'valid'
          convolution ``V`` on the padded grid, bounded as for zero padding: ``||op|| <= ||V|| ||P||``.
        * sums and products of operators: ``sum |c_i| upper_i`` (triangle inequality) and
          ``prod upper_i`` (submultiplicativity).
        * ``op.H``, ``op.T`` and the conjugate ``op.H.T`` have the singular values of ``op``.

        Examples
        --------
        >>> import numpy as np
        >>> import stridedop
        >>> rng = np.random.default_rng(1)
        >>> op = stridedop.ConvOperator(rng.standard_normal((3, 3, 2, 2)), (6, 5, 2), padding="same")
        >>> lower, upper = op.norm_bounds()
        >>> bool(lower <= op.norm() <= upper)
        True
        >>> lower, upper = (op.H @ op).norm_bounds()
        >>> bool(lower <= (op.H @ op).norm() <= upper)
        True
        """
        return _spectral.norm_bounds(_spectral.linear_map_of(self))

    # -- exports ----------------------------------------------------------------------------------
    def adjoint(self) -> BaseOperator:
        """The adjoint operator, `H` (as SciPy's ``LinearOperator.adjoint()``)."""
        return self.H

    def transpose(self) -> BaseOperator:
        """The plain transpose, `T` (never warns; see `ConvOperator.T`)."""
        return self.T

    def aslinearoperator(self) -> Any:
        """``scipy.sparse.linalg.LinearOperator`` of the matrix (matvec, rmatvec, matmat, rmatmat)."""
        require_scipy("`aslinearoperator`")
        from scipy.sparse.linalg import LinearOperator

        rows, columns = self.matrix_shape
        forward, adjoint = self, self.H

        def matmat(matrix: np.ndarray) -> np.ndarray:
            batch = np.asarray(matrix).T.reshape(-1, *forward.input_shape)
            return forward.apply(batch).reshape(-1, rows).T

        def rmatmat(matrix: np.ndarray) -> np.ndarray:
            batch = np.asarray(matrix).T.reshape(-1, *adjoint.input_shape)
            return adjoint.apply(batch).reshape(-1, columns).T

        return LinearOperator(
            (rows, columns),
            matvec=self.matvec,
            rmatvec=self.rmatvec,
            matmat=matmat,
            rmatmat=rmatmat,
            dtype=self.dtype,
        )

    def topylops(self) -> Any:
        """``pylops.LinearOperator`` with ``dims=input_shape`` and ``dimsd=output_shape``.

        PyLops' solvers and ``pylops.utils.dottest`` run on it. Needs the optional extra
        ``pylops`` (``pip install stridedop[pylops]``).
        """
        try:
            import pylops
        except ImportError as error:
            raise ImportError(
                "`topylops` needs PyLops, an optional dependency of stridedop; install it with "
                "`pip install pylops` (or `pip install stridedop[pylops]`)"
            ) from error
        return _pylops_operator(pylops, self)


def _pylops_operator(pylops: Any, operator: BaseOperator) -> Any:
    """A PyLops operator that applies `operator` and its adjoint on flat or shaped vectors."""

    class StridedopOperator(pylops.LinearOperator):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__(
                dtype=operator.dtype, dims=operator.input_shape, dimsd=operator.output_shape, name="C"
            )

        def _matvec(self, x: np.ndarray) -> np.ndarray:
            return (operator @ x.reshape(operator.input_shape)).ravel()

        def _rmatvec(self, y: np.ndarray) -> np.ndarray:
            return (operator.H @ y.reshape(operator.output_shape)).ravel()

    return StridedopOperator()


def _apply_refusal(operator: BaseOperator, batch: np.ndarray) -> str:
    """Why applying `operator` to `batch` ran out of memory, with what to do instead."""
    result = batch.shape[0] * math.prod(operator.output_shape) * np.dtype(operator.dtype).itemsize
    return (
        f"applying the operator to a batch of {batch.shape[0]} inputs of shape {operator.input_shape} "
        f"needs its result ({format_bytes(result)}) and work arrays of a few times the input and output, "
        "more memory than this process may use. Apply it to smaller batches, or to a `dask.array` "
        "(`pip install stridedop[dask]`), which works chunk by chunk"
    )


def _as_batch(x: Any, expected: tuple[int, ...], name: str) -> tuple[np.ndarray, tuple[int, ...]]:
    """`x` as a batch ``(B, *expected)`` and its leading (batch) shape; ValueError otherwise."""
    x = as_numeric_array(x, name)
    n = len(expected)
    if x.ndim < n or x.shape[x.ndim - n :] != tuple(expected):
        raise ValueError(f"`{name}` must have shape {expected} or (*batch, *{expected}), got {x.shape}")
    leading = x.shape[: x.ndim - n]
    return x.reshape(math.prod(leading), *expected), leading


def _flat_product(operator: BaseOperator, v: Any, name: str) -> np.ndarray:
    v = as_numeric_array(v, name)
    size = math.prod(operator.input_shape)
    if v.shape not in ((size,), (size, 1)):
        raise ValueError(f"`{name}` must have shape ({size},) or ({size}, 1), got {v.shape}")
    result = operator.apply(v.reshape(operator.input_shape))
    return result.reshape(-1, *v.shape[1:])


class SumOperator(BaseOperator):
    """``sum(c_i * A_i)``: a lazy linear combination of operators of one shape."""

    def __init__(self, terms: list[tuple[Any, BaseOperator]]) -> None:
        flat: list[tuple[Any, BaseOperator]] = []
        for coefficient, operator in terms:  # a sum of sums is one sum
            if isinstance(operator, SumOperator):
                flat.extend((coefficient * inner, part) for inner, part in operator.terms)
            else:
                flat.append((coefficient, operator))
        self.terms: tuple[tuple[Any, BaseOperator], ...] = tuple(flat)
        first = self.terms[0][1]
        self.input_shape, self.output_shape = tuple(first.input_shape), tuple(first.output_shape)
        self.dtype = np.result_type(*[part.dtype for _, part in self.terms], *[c for c, _ in self.terms])

    @property
    def H(self) -> BaseOperator:  # noqa: N802
        # `c.conjugate()` keeps a coefficient's type (`np.conj(1)` is a 64-bit NumPy int, which
        # would promote a float32 sum's adjoint to float64).
        return SumOperator([(c.conjugate(), part.H) for c, part in self.terms])

    @property
    def T(self) -> BaseOperator:  # noqa: N802
        return SumOperator([(c, part.transpose()) for c, part in self.terms])

    def _product(self, batch: np.ndarray) -> np.ndarray:
        dtype = np.result_type(self.dtype, batch.dtype)
        # Each part computes in the sum's dtype: a bool part applied to a bool batch would
        # saturate (True + True is True) where the sum's matrix counts.
        batch = batch.astype(dtype, copy=False)
        out = np.zeros((batch.shape[0], *self.output_shape), dtype=dtype)
        for coefficient, part in self.terms:
            out += coefficient * part.apply(batch)
        return out

    def _scaled(self, scalar: Any) -> BaseOperator:
        return SumOperator([(scalar * c, part) for c, part in self.terms])

    def _negated(self) -> BaseOperator:
        return SumOperator([(c, -part) for c, part in self.terms])

    def to_matrix(self, max_bytes: int | None = None) -> np.ndarray:
        check_allocation(self.matrix_shape, self.dtype, max_bytes)
        with dense_allocation(self.matrix_shape, self.dtype):
            out = np.zeros(self.matrix_shape, dtype=self.dtype)
            for coefficient, part in self.terms:
                out += coefficient * part.to_matrix(max_bytes)
        return out

    def to_sparse(self, format: str = "csr") -> Any:
        format = check_sparse_format(format)
        total = sum(coefficient * part.to_sparse("csr") for coefficient, part in self.terms)
        return total.astype(sparse_dtype(self.dtype)).asformat(format)

    def __repr__(self) -> str:
        parts = " + ".join(f"{c!r} * {type(part).__name__}" for c, part in self.terms)
        return f"<SumOperator {self.input_shape} -> {self.output_shape}: {parts}>"


class ProductOperator(BaseOperator):
    """``A_1 @ A_2 @ ... @ A_n``: a lazy composition, applied right to left."""

    def __init__(self, factors: list[BaseOperator]) -> None:
        flat: list[BaseOperator] = []
        for factor in factors:  # a product of products is one product
            flat.extend(factor.factors if isinstance(factor, ProductOperator) else [factor])
        self.factors: tuple[BaseOperator, ...] = tuple(flat)
        self.input_shape = tuple(self.factors[-1].input_shape)
        self.output_shape = tuple(self.factors[0].output_shape)
        self.dtype = np.result_type(*[factor.dtype for factor in self.factors])

    @property
    def H(self) -> BaseOperator:  # noqa: N802
        return ProductOperator([factor.H for factor in reversed(self.factors)])

    @property
    def T(self) -> BaseOperator:  # noqa: N802
        return ProductOperator([factor.transpose() for factor in reversed(self.factors)])

    def _product(self, batch: np.ndarray) -> np.ndarray:
        for factor in reversed(self.factors):
            batch = factor.apply(batch)
        return batch

    def _negated(self) -> BaseOperator:
        return ProductOperator([-self.factors[0], *self.factors[1:]])

    def to_matrix(self, max_bytes: int | None = None) -> np.ndarray:
        check_allocation(self.matrix_shape, self.dtype, max_bytes)
        with dense_allocation(self.matrix_shape, self.dtype):
            result = self.factors[-1].to_matrix(max_bytes)
            for factor in reversed(self.factors[:-1]):
                result = factor.to_matrix(max_bytes) @ result
            return np.ascontiguousarray(result, dtype=self.dtype)

    def to_sparse(self, format: str = "csr") -> Any:
        format = check_sparse_format(format)
        result = self.factors[-1].to_sparse("csr")
        for factor in reversed(self.factors[:-1]):
            result = factor.to_sparse("csr") @ result
        return result.astype(sparse_dtype(self.dtype)).asformat(format)

    def __repr__(self) -> str:
        parts = " @ ".join(type(factor).__name__ for factor in self.factors)
        return f"<ProductOperator {self.input_shape} -> {self.output_shape}: {parts}>"
