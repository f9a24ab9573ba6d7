"""Singular values and norms of convolution operators.

Everything here works on plain inputs: the channels-last kernel ``(*k, C // groups, F)`` with its
`Geometry` and padding mode (a `Layer`), and/or the operator as a pair of matrix-free callables
(a `LinearMap`). `ConvOperator` and the composed operators only wrap these functions.

Circular padding is block-diagonalised by the discrete Fourier transform. Along an axis where the
stride ``s`` divides the size ``m`` (and there are ``m / s`` outputs) the polyphase decomposition
splits the input into ``s`` phases of length ``n = m / s``; tap ``r`` reads phase
``p = (r * d - lo) mod s`` shifted by ``q = (r * d - lo - p) / s``, so at frequency ``b`` (of ``n``)
the operator is the small matrix

    M_b[f, (p, c)] = sum over taps r with phase p of K[r, c, f] * exp(2 pi i b q / n)

(taps that fold onto one position just add up). Along any other axis the rows do not form a
subgroup, and the axis is kept as an explicit ``(o, m)`` 0/1 matrix per tap instead. Groups are
independent blocks. The singular values of the operator are those of all the blocks (the DFT is
unitary), plus zeros up to ``min(rows, columns)``::

    operator  =  F_out^H  diag(M_0, M_1, ..., M_{B-1})  F_in       (F unitary, B blocks)

For a real kernel ``M_{-b} = conj(M_b)``: only half of the frequencies along one axis are
computed, each counted twice unless it is its own conjugate (``b = 0`` or ``b = n / 2``).

Every other mode uses the dense SVD when the matrix is small enough, else Golub-Kahan-Lanczos
bidiagonalization with full reorthogonalization on the two matrix-free products (`lanczos_svds`).
The norm alone (``k = 1`` without vectors) takes a cheaper road, `lanczos_norm`: Lanczos on the
smaller of ``A^H A`` and ``A A^H`` with partial reorthogonalization, stopped by a residual bound
on the value (quadratic in the vectors' error, and robust to a nearly double top value), with
stride-1 zero padding applied as one GEMM per direction.
"""

from __future__ import annotations

import functools
import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ._buffer import residues
from ._dense import check_allocation
from ._geometry import Axis, Geometry, input_positions
from ._memory import available_memory
from ._modes import pad, padding_mode

__all__ = [
    "Layer",
    "LinearMap",
    "circular_blocks",
    "circular_norm",
    "circular_svdvals",
    "frobenius_norm",
    "lanczos_norm",
    "lanczos_svds",
    "linear_map_of",
    "norm",
    "norm_bounds",
    "norm_grad",
    "operator_upper_bound",
    "padding_norm",
    "svds",
    "svdvals",
    "upper_bound",
]

_DENSE_MAX_SIDE = 512  # below this min(rows, columns) the dense SVD is the fastest route
_LANCZOS_BYTES = (256 * 2**20, 4 * 2**30)  # Krylov bases: at least, at most (else 1/8 of free memory)
TOLERANCE = 1e-10
_FLOOR_EPSILONS = 4  # errors within this many epsilons of a norm bound are the products' rounding
_LANCZOS_ENTRIES = 2**25  # entries of the two Krylov bases before Lanczos restarts
_UNFOLDED_BYTES = 2**27  # largest unfolded windows (im2col) matrix of the stride-1 zero-padded products
_ROUNDING = 1e-12  # relative margin that makes floating-point bounds safe against rounding


@dataclass(frozen=True)
class Layer:
    """One convolution: channels-last kernel ``(*k, C // groups, F)`` and its geometry."""

    kernel: np.ndarray
    geometry: Geometry

    @property
    def mode(self) -> str:
        return self.geometry.mode.name


@dataclass(frozen=True)
class LinearMap:
    """An operator given by its two products on arrays of `input_shape` and `output_shape`.

    `forward` and `adjoint` accept a batch ``(B, *shape)`` too. `dense` returns the dense matrix
    ``(prod(output_shape), prod(input_shape))`` given ``max_bytes``; `layer` is the convolution
    whose singular values the map has (the map is that convolution in any direction: itself, its
    transpose, adjoint or conjugate); `upper` (optional) returns a proven upper bound of the
    spectral norm.
    """

    forward: Callable[[np.ndarray], np.ndarray]
    adjoint: Callable[[np.ndarray], np.ndarray]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    dtype: np.dtype
    dense: Callable[[Any], np.ndarray]
    layer: Layer | None = None
    upper: Callable[[], float] | None = field(default=None, compare=False)

    @property
    def rows(self) -> int:
        return math.prod(self.output_shape)

    @property
    def columns(self) -> int:
        return math.prod(self.input_shape)


def linear_map_of(operator: Any) -> LinearMap:
    """The `LinearMap` of a stridedop operator, through its public members.

    A `ConvOperator` names its convolution through ``_spectral_layer()``; a sum (``.terms``) or a
    product (``.factors``) gets the upper bound of `operator_upper_bound`.
    """
    layer = operator._spectral_layer()
    return LinearMap(
        forward=lambda x: operator @ x,
        adjoint=lambda y: operator.H @ y,
        input_shape=tuple(operator.input_shape),
        output_shape=tuple(operator.output_shape),
        dtype=np.dtype(operator.dtype),
        dense=lambda max_bytes: operator.to_matrix(max_bytes=max_bytes),
        layer=layer,
        upper=None if layer is not None else (lambda: operator_upper_bound(operator)),
    )


def operator_upper_bound(operator: Any) -> float:
    """A proven upper bound of the spectral norm of a convolution, sum or product of operators.

    Sums: ``||sum c_i A_i|| <= sum |c_i| ||A_i||`` (triangle inequality); products:
    ``||A_1 ... A_n|| <= prod ||A_i||`` (submultiplicativity); convolutions: `upper_bound`.
    """
    layer = operator._spectral_layer()
    if layer is not None:
        return upper_bound(layer)
    terms = getattr(operator, "terms", None)
    if terms is not None:
        return math.fsum(abs(complex(c)) * operator_upper_bound(part) for c, part in terms)
    factors = getattr(operator, "factors", None)
    if factors is not None:
        return math.prod(operator_upper_bound(factor) for factor in factors)
    raise ValueError(f"no proven upper bound is known for {type(operator).__name__}")


# -- padding maps -------------------------------------------------------------------------------------
def padding_norm(geometry: Geometry, mode: str) -> float:
    """Exact spectral norm of the padding map ``P`` (identity on channels).

    ``P`` is the Kronecker product of the per-axis 0/1 matrices ``P_a`` (one 1 per padded row), so
    ``P_a^T P_a`` is diagonal with the number of padded positions reading each input index, and
    ``||P||_2 = prod_a ||P_a||_2 = prod_a sqrt(max count)``.
    """
    result = 1.0
    for axis in geometry.axes:
        result *= math.sqrt(_most_reads(axis, mode))
    return result


def _most_reads(axis: Axis, mode: str) -> int:
    """The largest number of padded positions of `axis` that read one input entry, in closed form.

    Whatever the padding amounts: replicate adds each side's padding to its end entry; circular
    and reflect repeat with a period (``m``, ``2 (m - 1)``), over which a range of ``L`` padded
    positions meets each residue ``L // period`` times, or once more for ``L % period`` residues
    in a row from the first position's.
    """
    m, lo, hi = axis.size, axis.lo, axis.hi
    total = lo + m + hi
    if mode == "zeros":
        return 1
    if m == 1:
        return total  # every position reads the one entry
    if mode == "replicate":
        return max(lo, hi) + 1
    period = m if mode == "circular" else 2 * (m - 1)
    base, rest = divmod(total, period)
    if mode == "circular":
        return base + (rest > 0)
    # Reflect: entry i is read at the residues i and period - i (one residue for the two ends).
    entries, shift = np.arange(m), lo % period  # the first position, -lo, is residue -shift
    extra = (entries + shift) % period < rest
    mirrored = (period - entries + shift) % period < rest
    ends = base + int(max(extra[0], extra[-1]))
    inner = 2 * base + int((extra[1:-1].astype(int) + mirrored[1:-1]).max()) if m > 2 else 0
    return max(ends, inner)


# -- Frobenius norm ------------------------------------------------------------------------------------
def _tap_overlaps(axis: Axis, mode: str) -> np.ndarray:
    """``G[r, r']``: output positions where taps ``r`` and ``r'`` read the same real input entry.

    With the 0/1 landing matrices ``L_r[o, i]`` of one axis, ``G = [sum_{o,i} L_r L_r']``; it is
    diagonal (the in-range count) unless taps fold (circular, reflect, replicate). Positions are
    computed per output and tap (Python ints where int64 could overflow), never over the padding.
    """
    read = padding_mode(mode).source(input_positions(axis), axis.size)  # (o, r): input index or -1
    same = (read[:, :, None] == read[:, None, :]) & (read[:, :, None] >= 0)
    return same.sum(axis=0).astype(np.float64)


def frobenius_norm(layer: Layer) -> float:
    """Exact Frobenius norm from the kernel and geometry, without any product.

    The operator's entry at row ``(o, f)``, column ``(i, c)`` is ``sum_r K[r, c, f] prod_a L_a[r_a,
    o_a, i_a]``, so its squared norm is ``sum_{r, r'} <K[r], K[r']> prod_a G_a[r_a, r'_a]`` with
    the per-axis overlap matrices ``G_a`` of `_tap_overlaps`.
    """
    kernel = np.asarray(layer.kernel)
    geometry = layer.geometry
    n = geometry.ndim
    flat: np.ndarray = kernel.reshape(*kernel.shape[:n], -1).astype(_work_dtype(kernel.dtype))
    # (prod_a G_a) applied to the kernel one tap axis at a time, then <K, G K>: O(taps * sum(k) * C * F).
    applied = flat
    for a, axis in enumerate(geometry.axes):
        applied = np.moveaxis(np.tensordot(_tap_overlaps(axis, layer.mode), applied, axes=([1], [a])), 0, a)
    return math.sqrt(max(float(np.real(np.vdot(flat, applied))), 0.0))


# -- circular padding: exact through the DFT --------------------------------------------------------
def _polyphase(axis: Axis) -> bool:
    """Whether the outputs of `axis` read every ``stride``-th position once around the circle."""
    return axis.size % axis.stride == 0 and axis.output == axis.size // axis.stride


def _axis_factors(axis: Axis, half: bool) -> np.ndarray:
    """Per-tap factors ``T[r, b, R, Q]`` of one axis (frequencies ``0 .. n // 2`` only when `half`).

    Polyphase axis (``s`` divides ``m``, ``m / s`` outputs): ``b`` frequency, ``R = 1``, ``Q = s``
    phases. Otherwise ``b = 1`` block, ``R`` outputs and ``Q = m`` inputs (a 0/1 matrix per tap,
    folded taps add).
    """
    m, s = axis.size, axis.stride
    shifts = residues(axis)  # only the shifts modulo m matter (the input wraps around)
    if _polyphase(axis):
        n = m // s
        phases = shifts % s
        q = (shifts - phases) // s
        count = n // 2 + 1 if half else n
        b = np.arange(count)
        angle = 2 * np.pi * ((b[None, :] * q[:, None]) % n) / n  # (r, b), exact integer reduction
        factors = np.zeros((axis.kernel, count, 1, s), dtype=np.complex128)
        factors[np.arange(axis.kernel), :, 0, phases] = np.exp(1j * angle)
        return factors[..., np.unique(phases)]  # phases no tap reads are zero columns
    outputs = axis.output
    factors = np.zeros((axis.kernel, 1, outputs, m), dtype=np.complex128)
    o = np.arange(outputs)
    for r in range(axis.kernel):
        np.add.at(factors[r, 0], (o, (o * (s % m) + shifts[r]) % m), 1.0)
    return factors[..., factors.any(axis=(0, 1, 2))]  # inputs no tap reads are zero columns


def circular_blocks(kernel: np.ndarray, axes: Sequence[Axis], groups: int) -> list[tuple[np.ndarray, float]]:
    """The DFT blocks of a circular operator, as ``(blocks, multiplicity)`` pieces.

    Each piece is a ``(B, cols, rows)`` stack of transposed blocks ``M^T`` (the transpose has the
    same singular values and is what the contraction leaves contiguous). `axes` read the input
    at ``(o * stride + r * dilation - lo) mod size``; the operator's singular values are those of
    the blocks, each repeated by its multiplicity, plus zeros.

    For a real kernel the longest polyphase axis keeps the frequencies ``0 .. n // 2`` only. Its
    planes ``b = 0`` and ``b = n / 2`` are their own conjugates as a whole, so inside them only one
    block of each conjugate pair (all other frequencies negated, same group) is kept.
    """
    kernel = np.asarray(kernel)
    n = len(axes)
    real = kernel.dtype.kind != "c"
    polyphase = [_polyphase(axis) for axis in axes]
    periods = [axis.size // axis.stride if polyphase[a] else 1 for a, axis in enumerate(axes)]
    half = -1
    if real and any(polyphase):
        half = max((a for a in range(n) if polyphase[a]), key=lambda a: periods[a])
    # Contract the taps axis by axis, the halved axis last, each time putting the factor's
    # (b, R, Q) axes in front: the frequencies end up leading, the halved one first.
    *taps, group_channels, filters = kernel.shape
    work = kernel.reshape(*taps, group_channels, groups, filters // groups)
    remaining = list(range(n))
    for a in [a for a in range(n) if a != half] + ([half] if half >= 0 else []):
        position = 3 * (n - len(remaining)) + remaining.index(a)
        work = np.tensordot(_axis_factors(axis=axes[a], half=a == half), work, axes=([0], [position]))
        remaining.remove(a)
    # work: ([b, R, Q] for the axes in reverse contraction order, cg, g, fg)
    lead = range(n)
    b_axes, r_axes, q_axes = [3 * t for t in lead], [3 * t + 1 for t in lead], [3 * t + 2 for t in lead]
    order = [*b_axes, 3 * n + 1, *q_axes, 3 * n, *r_axes, 3 * n + 2]
    counts = [work.shape[i] for i in b_axes] + [groups]
    columns = math.prod(work.shape[i] for i in q_axes) * group_channels
    rows = math.prod(work.shape[i] for i in r_axes) * (filters // groups)
    blocks = work.transpose(order).reshape(counts[0], math.prod(counts[1:]), columns, rows)
    if real and not any(polyphase):
        return [(blocks.reshape(-1, columns, rows).real, 1.0)]  # only 0/1 tap matrices: real blocks
    if half < 0:
        return [(blocks.reshape(-1, columns, rows), 1.0)]
    # Planes 1 .. (n - 1) // 2 of the halved axis stand for their conjugates too.
    pieces = [(blocks[1 : (periods[half] + 1) // 2].reshape(-1, columns, rows), 2.0)]
    # The other axes in the order they lead, then groups: negate every frequency.
    others = [a for a in reversed([a for a in range(n) if a != half])]
    index = np.indices(counts[1:]).reshape(len(counts) - 1, -1)
    partner = index.copy()
    for t, a in enumerate(others):
        partner[t] = (-index[t]) % periods[a]
    partner_flat = np.ravel_multi_index(partner, counts[1:])
    own = np.arange(partner_flat.size)
    for plane in sorted({0, periods[half] // 2} if periods[half] % 2 == 0 else {0}):
        pieces.append((blocks[plane, partner_flat == own], 1.0))
        pieces.append((blocks[plane, partner_flat > own], 2.0))
    return [(piece, weight) for piece, weight in pieces if len(piece)]


def circular_svdvals(layer: Layer, k: int | None = None) -> np.ndarray:
    """All (or the `k` largest) singular values of a circular layer, descending, from its DFT blocks."""
    geometry = layer.geometry
    pieces = circular_blocks(layer.kernel, geometry.axes, geometry.groups)
    values = np.concatenate(
        [np.repeat(np.linalg.svd(blocks, compute_uv=False).ravel(), int(weight)) for blocks, weight in pieces]
    )
    values = np.sort(values)[::-1]
    total = min(geometry.input_size, geometry.output_size)
    if values.size < total:
        values = np.concatenate([values, np.zeros(total - values.size)])
    return values[: total if k is None else k]


def _largest_block_value(kernel: np.ndarray, axes: Sequence[Axis], groups: int) -> float:
    """Largest singular value over the DFT blocks, from the top eigenvalue of each block's Gram.

    The largest eigenvalue of the Hermitian Gram has a relative error of a few units in the last
    place, so its square root is as accurate as the SVD's largest value, for less work.
    """
    best = 0.0
    for blocks, _ in circular_blocks(kernel, axes, groups):
        adjoint = blocks.conj().transpose(0, 2, 1)
        gram = blocks @ adjoint if blocks.shape[1] <= blocks.shape[2] else adjoint @ blocks
        best = max(best, float(np.linalg.eigvalsh(gram)[:, -1].max()))
    return math.sqrt(best)


def circular_norm(layer: Layer) -> float:
    """Exact spectral norm of a circular layer: the largest singular value over the DFT blocks."""
    return _largest_block_value(layer.kernel, layer.geometry.axes, layer.geometry.groups)


# -- matrix-free: Golub-Kahan-Lanczos -----------------------------------------------------------------
def _work_dtype(dtype: np.dtype) -> type:
    return np.complex128 if np.dtype(dtype).kind == "c" else np.float64


def _orthogonalize(w: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Remove from `w` its components along the orthonormal rows of `basis`."""
    return _orthogonalize_with_coefficients(w, basis)[0]


def _orthogonalize_with_coefficients(w: np.ndarray, basis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`w` minus its components along the orthonormal rows of `basis`, and those components.

    Classical Gram-Schmidt, repeated when the first pass cancelled most of `w` (the DGKS test),
    which keeps the result orthogonal to working precision.
    """
    coefficients = np.zeros(len(basis), dtype=np.result_type(w, basis))
    if not len(basis):
        return w, coefficients
    before = np.linalg.norm(w)
    for _ in range(2):
        step = basis @ w if basis.dtype.kind != "c" else basis.conj() @ w
        w = w - basis.T @ step
        coefficients += step
        after = np.linalg.norm(w)
        if after > 0.7071 * before:
            break
        before = after
    return w, coefficients


def _error_estimates(residuals: np.ndarray, values: np.ndarray, count: int) -> np.ndarray:
    """Error estimates of the `count` largest Ritz values from their residuals.

    ``[U p; V q] / sqrt(2)`` is a unit Ritz vector of the Hermitian ``[[0, A], [A^H, 0]]`` with
    residual ``r / sqrt(2)``, so an eigenvalue (a singular value of ``A``) lies within ``r`` of
    ``sigma``, and within ``r^2 / (2 * gap)`` once the other eigenvalues are ``gap`` away
    (Kato-Temple). The gap is taken from the neighbouring Ritz values (`values` descending), as
    ARPACK and PRIMME do.
    """
    padded = np.concatenate(([np.inf], values, [-np.inf]))
    neighbours = np.minimum(padded[:count] - values[:count], values[:count] - padded[2 : count + 2])
    residuals = residuals[:count]
    gaps = neighbours - residuals
    separated = gaps > residuals  # then gap > 0 and r^2 / (2 gap) < r / 2: no overflow
    quadratic = np.divide(residuals**2, 2 * gaps, out=residuals.copy(), where=separated)
    return np.minimum(residuals, quadratic)


def _lanczos_pass(
    forward: Callable[[np.ndarray], np.ndarray],
    adjoint: Callable[[np.ndarray], np.ndarray],
    shape: tuple[int, int],
    k: int,
    tol: float,
    start: np.ndarray,
    capacity: int,
    limit: int,
    random_vector: Callable[[int], np.ndarray],
    floor: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """One Golub-Kahan-Lanczos run on flat vectors, thick-restarted when the bases are full.

    A value has converged when its error is at most ``tol`` times itself, or at most `floor`
    (the products' rounding, `_rounding_floor`), below which nothing more can be resolved.

    ``B = U^H A V`` is kept as a dense matrix: each new column holds the coefficients that the
    reorthogonalization of ``A v_j`` against ``U`` removed (``beta_{j-1}`` in a plain step) and
    ``alpha_j``. A restart keeps the best half of the Ritz triplets and the next vector
    ``v_{j+1}``; then ``B`` starts as ``diag(sigma)`` and the couplings ``U_i^H A v_{j+1}`` come
    out of the next reorthogonalization by themselves.
    """
    rows, columns = shape
    dimension = min(rows, columns)
    dtype = start.dtype
    V = np.zeros((capacity + 1, columns), dtype=dtype)
    U = np.zeros((capacity, rows), dtype=dtype)
    B = np.zeros((capacity, capacity), dtype=dtype)
    V[0] = start / np.linalg.norm(start)
    j = 0  # columns of B filled
    total_steps = 0
    since_check = 0
    converged = False
    while True:
        u = forward(V[j])
        scale = np.linalg.norm(u)
        u, B[:j, j] = _orthogonalize_with_coefficients(u, U[:j])
        alpha = float(np.linalg.norm(u))
        if alpha <= 1e-12 * scale:
            # A v_j lies in the span of U: what is left is rounding, whose direction is noise
            # (normalized, it broke U's orthogonality and gave values above the norm).
            alpha = 0.0
        B[j, j] = alpha
        U[j] = u / alpha if alpha > 0 else 0
        w = _orthogonalize(adjoint(U[j]) - alpha * V[j], V[: j + 1])
        beta = float(np.linalg.norm(w))
        j += 1
        total_steps += 1
        since_check += 1
        if beta <= 1e-14 * max(np.abs(B[:j, :j]).max(), np.finfo(float).tiny):
            # An invariant subspace: its values are exact; go on with a fresh direction.
            beta = 0.0
            if j < dimension:
                w = _orthogonalize(random_vector(columns), V[:j])
                V[j] = w / np.linalg.norm(w)
        else:
            V[j] = w / beta
        full = j >= capacity or j >= dimension
        if not full and (j < k or since_check < max(2, total_steps // 16)):
            continue  # test convergence every second step, then every 6 % or so
        since_check = 0
        P, S, Qh = np.linalg.svd(B[:j, :j])
        top = min(k, j)
        errors = _error_estimates(np.abs(beta * P[j - 1]), S, top)
        if j >= dimension or np.all(errors <= np.maximum(tol * S[:top], max(floor, np.finfo(float).tiny))):
            converged = True
            break
        if total_steps >= limit:
            break
        if full:
            keep = min(j - 1, max(k + 4, j // 2))
            V[:keep], V[keep] = Qh[:keep].conj() @ V[:j], V[j].copy()
            U[:keep] = P[:, :keep].T @ U[:j]
            B[:] = 0
            B[np.arange(keep), np.arange(keep)] = S[:keep]
            j = keep
    top = min(k, j)
    return P[:, :top].T @ U[:j], S[:top], Qh[:top].conj() @ V[:j], converged


def _random_vectors(dtype: type, seed: int) -> Callable[[int], np.ndarray]:
    """Seeded standard normal vectors of `dtype` (real and imaginary parts for a complex one)."""
    rng = np.random.default_rng(seed)

    def random_vector(size: int) -> np.ndarray:
        w = rng.standard_normal(size)
        if dtype is np.complex128:
            w = w + 1j * rng.standard_normal(size)
        return w.astype(dtype)

    return random_vector


def _krylov_capacity(size: int, itemsize: int, least: int) -> int:
    """Vectors of length `size` a Krylov basis may hold (see `lanczos_svds`)."""
    low, high = _LANCZOS_BYTES
    memory = max(low, min(high, (available_memory() or 0) // 8))
    return max(least, min(memory // (itemsize * size), _LANCZOS_ENTRIES // size))


def _flipped_vectors(
    linear_map: LinearMap, u: np.ndarray, s: np.ndarray, v: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(u, s, v)`` of a map from the Lanczos triplets of its adjoint, with ``A v = s u``.

    There ``A^H u = s v`` holds up to the Krylov residual, and ``v`` (the adjoint's left vectors)
    is 0 where ``s`` is 0. Where ``s`` is not negligible, ``u = A v / s`` exactly; elsewhere ``u``
    keeps its unit vector and ``v`` is completed (`_null_rows`).
    """
    negligible = _negligible(s)
    images = np.asarray(linear_map.forward(v.reshape(len(v), *linear_map.input_shape))).reshape(len(v), -1)
    u[~negligible] = images[~negligible] / s[~negligible, None]
    return u, s, _null_rows(v, negligible, seed)


def _negligible(s: np.ndarray) -> np.ndarray:
    """Which of the descending values `s` are zero to rounding (relative to the largest)."""
    return s <= (s[0] if len(s) else 0.0) * 1e-12


def _null_rows(vectors: np.ndarray, negligible: np.ndarray, seed: int) -> np.ndarray:
    """`vectors` with the rows of negligible values replaced by unit vectors orthogonal to the rest.

    The Krylov bases leave 0 there. Every value at least as large was found, so the others span
    the range, and a vector orthogonal to them is a singular vector of the value 0.
    """
    random_vector = _random_vectors(vectors.dtype.type, seed + 1)
    done = ~negligible
    for i in np.flatnonzero(negligible):
        w = _orthogonalize(random_vector(vectors.shape[1]), vectors[done])
        vectors[i] = w / np.linalg.norm(w)
        done[i] = True
    return vectors


def lanczos_svds(
    linear_map: LinearMap,
    k: int = 1,
    *,
    tol: float = TOLERANCE,
    start: np.ndarray | None = None,
    max_steps: int | None = None,
    seed: int = 0,
    floor: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Largest `k` singular triplets by Golub-Kahan-Lanczos bidiagonalization.

    Full reorthogonalization (classical Gram-Schmidt, repeated when needed) keeps both Krylov
    bases orthonormal. With ``B = U^H A V`` (upper bidiagonal between restarts),
    ``A V = U B`` and ``A^H U = V B^H + beta v_{j+1} e_j^T``, so the Ritz triplet
    ``(U p, sigma, V q)`` of ``B = P S Q^H`` has residual ``|beta p_j|``: some singular value of
    ``A`` lies within it of ``sigma``, and within its square over twice the gap to the other
    values (`_error_estimates`). The iteration stops when that error is at most ``tol * sigma``
    for the `k` largest. The bases hold at most about ``2**25`` entries (and 1/8 of the free
    memory), so that reorthogonalizing stays cheaper than the products; when they are full the
    iteration restarts thick, from the better half of its Ritz vectors (Wu & Simon 2000; Baglama
    & Reichel 2005).

    One start vector sees one copy of a repeated singular value, so for ``k > 1`` the found right
    vectors are locked and the run repeats on ``A (I - V V^H)`` until its largest value is below
    the `k`-th found: repeated values (circular and symmetric kernels have them) are not missed.

    Values at the rounding level of the products (`floor`, by default `_rounding_floor` for a run
    to convergence) stop the iteration as converged values do: otherwise an operator that is zero
    up to rounding, such as ``(A + B) - (B + A)``, iterated on noise until the step limit.

    Returns ``(u, s, v, converged)``: ``u`` ``(k, rows)``, ``v`` ``(k, columns)`` flat, with
    ``A v[i] = s[i] u[i]``.
    """
    if floor is None:
        floor = _rounding_floor(linear_map) if max_steps is None else 0.0
    if linear_map.rows < linear_map.columns:
        # The right basis would span only `rows` of its `columns` dimensions when the run stops
        # at min(rows, columns) steps, giving inexact values: run on the adjoint, which is tall.
        # (A^H u = s v is A v = s u.)
        flipped = replace(
            linear_map,
            forward=linear_map.adjoint,
            adjoint=linear_map.forward,
            input_shape=linear_map.output_shape,
            output_shape=linear_map.input_shape,
            dense=lambda max_bytes: linear_map.dense(max_bytes).conj().T,
        )
        if start is not None:
            start = np.asarray(linear_map.forward(np.asarray(start).reshape(linear_map.input_shape)))
        v, s, u, converged = lanczos_svds(
            flipped, k, tol=tol, start=start, max_steps=max_steps, seed=seed, floor=floor
        )
        return (*_flipped_vectors(linear_map, u, s, v, seed), converged)
    rows, columns = linear_map.rows, linear_map.columns
    dtype = _work_dtype(linear_map.dtype)
    dimension = min(rows, columns)
    capacity = _krylov_capacity(rows + columns, np.dtype(dtype).itemsize, 2 * k + 40)
    capacity = min(dimension, capacity if max_steps is None else max(max_steps, k))
    limit = 100 * capacity if max_steps is None else max_steps
    random_vector = _random_vectors(dtype, seed)

    locked_u: np.ndarray = np.zeros((0, rows), dtype=dtype)
    locked_v: np.ndarray = np.zeros((0, columns), dtype=dtype)
    locked_s = np.zeros(0)

    def forward(v: np.ndarray) -> np.ndarray:
        v = _orthogonalize(v, locked_v) if len(locked_v) else v
        return np.asarray(linear_map.forward(v.reshape(linear_map.input_shape)), dtype=dtype).reshape(rows)

    def adjoint(u: np.ndarray) -> np.ndarray:
        w: np.ndarray = np.asarray(linear_map.adjoint(u.reshape(linear_map.output_shape)), dtype=dtype)
        w = w.reshape(columns)
        return _orthogonalize(w, locked_v) if len(locked_v) else w

    v0 = random_vector(columns) if start is None else np.asarray(start, dtype=dtype).reshape(columns).copy()
    if not np.linalg.norm(v0):
        v0 = random_vector(columns)
    wanted = k
    converged = True
    while True:
        u, s, v, done = _lanczos_pass(
            forward, adjoint, (rows, columns), wanted, tol, v0, capacity, limit, random_vector, floor
        )
        converged = converged and done
        if len(locked_s) >= k and (not len(s) or s[0] <= locked_s[k - 1] * (1 + tol)):
            break
        locked_u = np.concatenate([locked_u, u])
        locked_v = np.concatenate([locked_v, v])
        locked_s = np.concatenate([locked_s, s])
        order = np.argsort(locked_s)[::-1]
        locked_u, locked_v, locked_s = locked_u[order], locked_v[order], locked_s[order]
        if k == 1 or len(locked_s) >= dimension or not done:
            break
        wanted = 1  # look for a value the earlier runs did not see
        v0 = _orthogonalize(random_vector(columns), locked_v)
    s = locked_s[:k]
    return _null_rows(locked_u[:k], _negligible(s), seed), s, locked_v[:k], converged


# -- matrix-free norm: Lanczos on the Gram operator -----------------------------------------------------
class _Correlation:
    """Zero-padded stride-1 correlation on channels-last arrays, as one GEMM per group (im2col).

    ``out[o, g, f] = sum_{r, c} W[r, c, g, f] x[o + r * d - lo, g, c]`` for `weights`
    ``(*k, Cg, G * Fg)``; `x` ``(*sizes, G * Cg)``. The input is copied into a padded buffer whose
    border stays zero, and its windows (a strided view) into one ``(outputs, taps * Cg)`` matrix.
    """

    def __init__(
        self,
        weights: np.ndarray,
        sizes: Sequence[int],
        lo: Sequence[int],
        hi: Sequence[int],
        dilation: Sequence[int],
        groups: int,
    ) -> None:
        n = len(sizes)
        *taps, group_channels, filters = weights.shape
        self.groups, self.group_filters = groups, filters // groups
        self.extents = tuple((k - 1) * d + 1 for k, d in zip(taps, dilation))
        self.outputs = tuple(m + a + b - e + 1 for m, a, b, e in zip(sizes, lo, hi, self.extents))
        self.interior = tuple(slice(a, a + m) for a, m in zip(lo, sizes))
        self.taps = tuple(slice(None, None, d) for d in dilation)
        padded_shape = tuple(m + a + b for m, a, b in zip(sizes, lo, hi))
        self.padded = np.zeros((*padded_shape, group_channels * groups), dtype=weights.dtype)
        # a group's window axes (*o, Cg, *k) -> (*o, *k, Cg): the order of the weights' rows
        self.order = (*range(n), *range(n + 1, 2 * n + 1), n)
        self.columns = np.empty((*self.outputs, *taps, group_channels), dtype=weights.dtype)
        rows = math.prod(taps) * group_channels
        blocks = weights.reshape(rows, groups, self.group_filters)
        self.matrices = [np.ascontiguousarray(blocks[:, g]) for g in range(groups)]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        n = len(self.outputs)
        self.padded[self.interior] = x
        windows = np.lib.stride_tricks.sliding_window_view(self.padded, self.extents, axis=tuple(range(n)))
        windows = windows[(Ellipsis,) + self.taps]  # (*o, C, *k)
        windows = windows.reshape(*self.outputs, self.groups, -1, *windows.shape[n + 1 :])
        pixels = math.prod(self.outputs)
        matrix = self.columns.reshape(pixels, -1)
        parts = []
        for g, weights in enumerate(self.matrices):
            np.copyto(self.columns, windows[(slice(None),) * n + (g,)].transpose(self.order))
            parts.append(matrix @ weights)
        out = parts[0] if self.groups == 1 else np.concatenate(parts, axis=1)
        return out.reshape(*self.outputs, -1)


def _zero_padding_products(
    layer: Layer,
) -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray], int, int] | None:
    """``(forward, adjoint, columns, rows)`` on flat channels-last vectors of a stride-1 zero-padded layer.

    The adjoint of a stride-1 correlation with zero padding ``(lo, hi)`` is the correlation of the
    output with the kernel flipped along its taps, conjugated and its channels swapped group by
    group, zero-padded by ``(extent - 1 - lo, extent - 1 - hi)``. None for any other layer (or
    padding wider than the kernel's reach), whose products then come from the operator.
    """
    geometry = layer.geometry
    axes = geometry.axes
    if layer.mode != "zeros" or any(
        a.stride != 1 or not (0 <= a.lo < a.extent and 0 <= a.hi < a.extent) for a in axes
    ):
        return None
    vectors = math.prod(a.size for a in axes) + math.prod(a.output for a in axes)
    if math.prod(a.padded for a in axes) > 4 * vectors:
        return None  # a padded buffer far larger than the vectors (a huge dilation): the operator's products
    n, groups = geometry.ndim, geometry.groups
    kernel = np.asarray(layer.kernel)
    kernel = kernel.astype(_work_dtype(kernel.dtype))
    # the unfolded windows: (outputs, taps * Cg) forward, (inputs, taps * Fg) adjoint
    pixels = max(
        math.prod(a.output for a in axes) * geometry.group_channels,
        math.prod(a.size for a in axes) * geometry.group_filters,
    )
    if pixels * math.prod(a.kernel for a in axes) * kernel.itemsize > _UNFOLDED_BYTES:
        return None
    *taps, group_channels, filters = kernel.shape
    flipped = kernel[(slice(None, None, -1),) * n].conj()
    swapped = flipped.reshape(*taps, group_channels, groups, filters // groups)
    swapped = swapped.transpose(*range(n), n + 2, n + 1, n).reshape(*taps, filters // groups, -1)
    dilation = [a.dilation for a in axes]
    sizes, outputs = [a.size for a in axes], [a.output for a in axes]
    forward = _Correlation(kernel, sizes, [a.lo for a in axes], [a.hi for a in axes], dilation, groups)
    lo, hi = [a.extent - 1 - a.lo for a in axes], [a.extent - 1 - a.hi for a in axes]
    adjoint = _Correlation(swapped, outputs, lo, hi, dilation, groups)
    columns, rows = math.prod(sizes) * geometry.channels, math.prod(outputs) * geometry.filters
    in_shape, out_shape = (*sizes, geometry.channels), (*outputs, geometry.filters)
    return (
        lambda v: forward(v.reshape(in_shape)).reshape(rows),
        lambda u: adjoint(u.reshape(out_shape)).reshape(columns),
        columns,
        rows,
    )


def _top_value_error(values: np.ndarray, residuals: np.ndarray) -> float:
    """Error bound of the largest Ritz value of a Hermitian operator (`values` descending).

    The ``c`` largest Ritz vectors have the block residual ``R = beta v_{j+1} s^H`` of norm
    ``sqrt(r_1^2 + ... + r_c^2)``, so (quadratic residual bound for a cluster: Mathias 1998,
    Li & Li 2013) each of their values, the largest included, is within ``||R||^2 / delta`` of an
    eigenvalue, ``delta`` being the gap from the cluster to the rest of the spectrum; it is
    estimated from the next Ritz value and its residual, as ARPACK does. ``c = 1`` is Kato-Temple;
    a larger cluster serves a nearly repeated top value, whose vectors mix long after the value is
    known. Never more than ``r_1`` (Weyl).
    """
    best = float(residuals[0])
    cluster = 0.0
    for c in range(1, min(len(values), 8)):
        cluster += float(residuals[c - 1]) ** 2
        gap = float(values[c - 1] - values[c] - residuals[c])
        if gap > 0:
            best = min(best, cluster / gap)
    return best


def _orthogonality_estimate(
    omega: np.ndarray, omega_prev: np.ndarray, T: np.ndarray, j: int, beta: float, noise: float
) -> np.ndarray:
    """Simon's estimate of ``|v_{j+1}^H v_k|`` from those of ``v_j`` and ``v_{j-1}`` (partial reorth.).

    The Lanczos recurrence ``beta_j v_{j+1} = G v_j - alpha_j v_j - beta_{j-1} v_{j-1}``, taken
    against ``v_k`` (which obeys the same recurrence), gives
    ``beta_j w_{j+1,k} = beta_k w_{j,k+1} + (alpha_k - alpha_j) w_{j,k} + beta_{k-1} w_{j,k-1}
    - beta_{j-1} w_{j-1,k}``, plus rounding of at most `noise` (added with the sign that grows the
    estimate). While all estimates stay below ``sqrt(eps)`` the basis is semi-orthogonal, and
    ``T`` is then the projection of ``G`` to working precision (Simon 1984).
    """
    alphas = np.real(np.diagonal(T))[: j + 1]
    betas = np.real(np.diagonal(T, -1))[:j]
    new = np.zeros_like(omega)
    if j:
        t = betas * omega[1 : j + 1] + (alphas[:j] - alphas[j]) * omega[:j] - betas[j - 1] * omega_prev[:j]
        t[1:] += betas[: j - 1] * omega[: j - 1]
        new[:j] = (t + np.where(t >= 0, noise, -noise)) / beta if beta else np.inf
    new[j] = noise / beta if beta else np.inf
    new[j + 1] = 1.0
    return new


_SEMI_ORTHOGONAL = math.sqrt(np.finfo(float).eps)


@functools.cache
def _tridiagonal_solver() -> Callable[..., Any] | None:
    """SciPy's `eigh_tridiagonal` (a few eigenpairs in O(j) each), or None without SciPy."""
    try:
        return importlib.import_module("scipy.linalg").eigh_tridiagonal  # type: ignore[no-any-return]
    except ImportError:
        return None


def _top_tridiagonal(T: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The `count` largest eigenpairs of the real symmetric tridiagonal `T`, descending.

    Exact Lanczos leaves only the tridiagonal band; the reorthogonalization's corrections
    elsewhere are rounding-sized and dropped.
    """
    j = len(T)
    diagonal, off = np.real(np.diagonal(T)).copy(), np.real(np.diagonal(T, 1)).copy()
    solver = _tridiagonal_solver()
    assert solver is not None
    values, vectors = solver(diagonal, off, select="i", select_range=(max(0, j - count), j - 1))
    return values[::-1], vectors[:, ::-1]


def _largest_eigenvalue(
    gram: Callable[[np.ndarray], np.ndarray],
    start: np.ndarray,
    tol: float,
    capacity: int,
    limit: int,
    random_vector: Callable[[int], np.ndarray],
    floor: float = 0.0,
) -> tuple[float, bool, int]:
    """Largest eigenvalue of the Hermitian positive semidefinite `gram` by Lanczos, convergence, steps.

    It has converged when its error is at most ``2 tol`` times itself, or at most `floor` (the
    rounding of the Gram products).

    ``T = V^H G V`` is kept dense: the known couplings of ``G v_j`` (``beta_{j-1}``, or the
    thick-restart arrow) are removed first. Until the first restart the basis is only kept
    semi-orthogonal (partial reorthogonalization: `_orthogonality_estimate` says when a pair of
    vectors needs it; a run that stops on the value rarely does), and convergence is checked on
    the tridiagonal ``T`` with SciPy when installed (else, and after a restart, with the dense
    eigensolver). After a restart or an invariant subspace every vector gets a classical
    Gram-Schmidt pass (a second only when the first cancelled most of it) whose coefficients
    correct ``T``. The
    relative error of ``sqrt(theta)`` is at most ``error / (2 theta)`` (`_top_value_error`).
    """
    size = start.size
    dtype = start.dtype
    V = np.empty((capacity + 1, size), dtype=dtype)
    T = np.zeros((capacity + 1, capacity + 1), dtype=dtype)
    V[0] = start / np.linalg.norm(start)
    j = steps = 0
    next_check = 4
    tridiagonal = partial = True
    again = False  # reorthogonalize in this step: the second of a pair
    omega, omega_prev = np.zeros(capacity + 2), np.zeros(capacity + 2)
    omega[0] = 1.0
    scale = 0.0  # an estimate of ||G|| from T
    last_error, last_step = math.inf, 0
    while True:
        w = gram(V[j])
        known = np.flatnonzero(T[:j, j])
        if known.size:
            w -= T[known, j] @ V[known]
        alpha = np.vdot(V[j], w)
        w -= alpha * V[j]
        T[j, j] += alpha
        before = float(np.linalg.norm(w))
        scale = max(scale, abs(alpha) + before + (abs(T[j, j - 1]) if j else 0.0))
        if partial and not again:
            noise = np.finfo(float).eps * math.sqrt(size) * scale
            omega_prev, omega = omega, _orthogonality_estimate(omega, omega_prev, T, j, before, noise)
        if not partial or again or np.abs(omega[: j + 1]).max() > _SEMI_ORTHOGONAL:
            for _ in range(2):
                basis = V[: j + 1]
                step = basis @ w if dtype.kind != "c" else basis.conj() @ w
                w -= basis.T @ step
                T[: j + 1, j] += step
                after = float(np.linalg.norm(w))
                if after > 0.7071 * before:
                    break
                before = after
            if partial:  # v_{j+1} is orthogonal again; v_{j+2} will be too (Simon's pairs)
                if again:
                    omega_prev, omega = omega, np.zeros_like(omega)
                omega[: j + 1], omega[j + 1], omega[j + 2 :] = np.finfo(float).eps, 1.0, 0.0
                again = not again
        T[j, : j + 1] = T[: j + 1, j].conj()
        T[j, j] = T[j, j].real
        beta = float(np.linalg.norm(w))
        j += 1
        steps += 1
        if beta <= 1e-14 * max(float(np.abs(T[:j, :j]).max()), np.finfo(float).tiny):
            beta = 0.0  # an invariant subspace: its values are exact; go on with a fresh direction
            partial = False
            if j < size:
                w = _orthogonalize(random_vector(size), V[:j])
                V[j] = w / np.linalg.norm(w)
        else:
            V[j] = w / beta
            T[j, j - 1] = T[j - 1, j] = beta
        full = j >= capacity or j >= size
        if not full and steps < next_check:
            continue
        cheap = tridiagonal and not full and _tridiagonal_solver() is not None
        if cheap:
            values, vectors = _top_tridiagonal(T[:j, :j], 8)
        else:
            values, vectors = np.linalg.eigh(T[:j, :j])
            values, vectors = values[::-1], vectors[:, ::-1]
        top = max(float(values[0]), 0.0)
        if j >= size:
            return top, True, steps
        error = _top_value_error(values, np.abs(beta * vectors[j - 1]))
        target = max(2 * tol * top, floor)
        if error <= target:
            return top, True, steps
        # The next check where the error's recent geometric decay predicts convergence (a check
        # costs less than a product, but a dense one O(j^3)), at most steps / 8 later.
        decay = math.log(last_error / error) / (steps - last_step) if 0 < error < last_error else 0.0
        wait = math.log(error / target) / decay if decay > 0 and target > 0 else math.inf
        next_check = steps + max(1 if cheap else 2, int(min(0.8 * wait, max(2, steps // 8))))
        last_error, last_step = error, steps
        if steps >= limit:
            return top, False, steps
        if full:  # thick restart: the better half of the Ritz vectors, and the next vector
            keep = min(j - 1, max(8, j // 2))
            V[:keep], V[keep] = vectors[:, :keep].T @ V[:j], V[j].copy()
            T[:] = 0
            T[np.arange(keep), np.arange(keep)] = values[:keep]
            j = keep
            tridiagonal = partial = False  # an arrow now


def _flat_products(
    linear_map: LinearMap,
) -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray], int, int, type]:
    """``(forward, adjoint, columns, rows, dtype)``: the map's two products on flat vectors.

    A stride-1 zero-padded layer uses `_zero_padding_products` (channels-last vectors: the same
    singular values); anything else the map's own products.
    """
    layer = linear_map.layer
    products = _zero_padding_products(layer) if layer is not None else None
    if products is not None:
        assert layer is not None
        return (*products, _work_dtype(np.asarray(layer.kernel).dtype))
    dtype = _work_dtype(linear_map.dtype)
    rows, columns = linear_map.rows, linear_map.columns

    def forward(v: np.ndarray) -> np.ndarray:
        image = linear_map.forward(v.reshape(linear_map.input_shape))
        return np.asarray(image, dtype=dtype).reshape(rows)

    def adjoint(u: np.ndarray) -> np.ndarray:
        image = linear_map.adjoint(u.reshape(linear_map.output_shape))
        return np.asarray(image, dtype=dtype).reshape(columns)

    return forward, adjoint, columns, rows, dtype


def lanczos_norm(
    linear_map: LinearMap, *, tol: float = TOLERANCE, max_steps: int | None = None, seed: int = 0
) -> tuple[float, bool, int]:
    """Largest singular value (no vectors) by Lanczos on ``A^H A`` or ``A A^H``, whichever is smaller.

    The same Krylov spaces as Golub-Kahan-Lanczos (`lanczos_svds`) from the same start, but only one
    basis to keep orthogonal, and a stop on the value alone: its error is quadratic in the
    vectors' (`_top_value_error`), so it converges long before the vectors. A stride-1
    zero-padded convolution is applied through `_zero_padding_products` (one GEMM per direction),
    anything else through the map's own products. Returns ``(sigma, converged, steps)``, one
    product of the Gram operator per step.
    """
    forward, adjoint, columns, rows, dtype = _flat_products(linear_map)
    if columns <= rows:
        size, gram = columns, (lambda v: adjoint(forward(v)))
    else:
        size, gram = rows, (lambda u: forward(adjoint(u)))
    capacity = min(size, _krylov_capacity(size, np.dtype(dtype).itemsize, 48))
    capacity = capacity if max_steps is None else min(size, max(max_steps, 1))
    limit = 100 * capacity if max_steps is None else max_steps
    random_vector = _random_vectors(dtype, seed)
    start = random_vector(size)
    # The Gram products round at about eps * ||A||^2 (see `_rounding_floor`).
    bound = _norm_bound(linear_map) if max_steps is None else 0.0
    floor = _FLOOR_EPSILONS * float(np.finfo(dtype).eps) * bound**2
    value, converged, steps = _largest_eigenvalue(gram, start, tol, capacity, limit, random_vector, floor)
    return math.sqrt(value), converged, steps


def _rounding_floor(linear_map: LinearMap) -> float:
    """The products' rounding: `_FLOOR_EPSILONS` epsilons of the work dtype times `_norm_bound`.

    Rounding makes each product wrong by about ``eps * ||A||`` (for a sum, the norms of its
    parts: ``(A + B) - (B + A)`` is exactly zero but computes to 1e-14), so no singular value
    below that level can be resolved, however long the iteration.
    """
    return _FLOOR_EPSILONS * float(np.finfo(_work_dtype(linear_map.dtype)).eps) * _norm_bound(linear_map)


def _norm_bound(linear_map: LinearMap) -> float:
    """A proven bound of the spectral norm (`upper_bound`, or the map's own `upper`), else 0."""
    if linear_map.layer is not None:
        return upper_bound(linear_map.layer)
    return linear_map.upper() if linear_map.upper is not None else 0.0


# -- dense ---------------------------------------------------------------------------------------------
def _dense_matrix(linear_map: LinearMap, max_bytes: Any = None) -> np.ndarray:
    """The dense matrix, guarded like `materialize` (MemoryError before allocating)."""
    dtype = np.dtype(_work_dtype(linear_map.dtype))
    check_allocation((linear_map.rows, linear_map.columns), dtype, max_bytes)
    return np.asarray(linear_map.dense(max_bytes), dtype=dtype)


def _use_dense(linear_map: LinearMap, k: int | None) -> bool:
    side = min(linear_map.rows, linear_map.columns)
    return k is None or side <= _DENSE_MAX_SIDE or 2 * k >= side


def _check_k(k: Any, linear_map: LinearMap, allow_none: bool) -> int | None:
    if k is None and allow_none:
        return None
    side = min(linear_map.rows, linear_map.columns)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= side:
        allowed = "None or an int" if allow_none else "an int"
        raise ValueError(f"`k` must be {allowed} between 1 and min(rows, columns) = {side}, got {k!r}")
    return int(k)


def _check_method(method: str) -> None:
    if method not in ("auto", "dense", "lanczos"):
        raise ValueError(f"`method` must be 'auto', 'dense' or 'lanczos', got {method!r}")


# -- public entry points -------------------------------------------------------------------------------
def svdvals(linear_map: LinearMap, k: Any = None, *, method: str = "auto") -> np.ndarray:
    """Singular values, descending: all (`k` None) or the `k` largest. See `ConvOperator.svdvals`."""
    k = _check_k(k, linear_map, allow_none=True)
    _check_method(method)
    layer = linear_map.layer
    if method == "auto" and layer is not None and layer.mode == "circular":
        return circular_svdvals(layer, k)
    if method == "lanczos" and k is None:
        k = min(linear_map.rows, linear_map.columns)
    if method == "dense" or (method == "auto" and _use_dense(linear_map, k)):
        try:
            values = np.linalg.svd(_dense_matrix(linear_map), compute_uv=False)
        except MemoryError as error:
            if k is None:
                raise MemoryError(
                    f"{error}. For the largest singular values only, pass `k` (matrix-free Lanczos)"
                ) from None
        else:
            return values if k is None else values[:k]
    assert k is not None
    if k == 1:
        return np.array([lanczos_norm(linear_map)[0]])
    _, s, _, _ = lanczos_svds(linear_map, k)
    return s


def svds(
    linear_map: LinearMap, k: Any = 1, *, method: str = "auto"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(u, s, vh)``: ``u`` ``(k, *output_shape)``, ``vh`` ``(k, *input_shape)``, ``A vh[i] = s[i] u[i]``."""
    k = _check_k(k, linear_map, allow_none=False)
    assert k is not None
    _check_method(method)
    if method == "dense" or (method == "auto" and _use_dense(linear_map, k)):
        try:
            matrix = _dense_matrix(linear_map)
        except MemoryError:
            pass
        else:
            U, S, Vh = np.linalg.svd(matrix, full_matrices=False)
            u, s, v = U[:, :k].T, S[:k], Vh[:k].conj()
            return _shaped(linear_map, u, s, v)
    u, s, v, _ = lanczos_svds(linear_map, k)
    return _shaped(linear_map, u, s, v)


def _shaped(
    linear_map: LinearMap, u: np.ndarray, s: np.ndarray, v: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    k = len(s)
    return u.reshape(k, *linear_map.output_shape), s, v.reshape(k, *linear_map.input_shape)


def norm(linear_map: LinearMap, ord: Any = 2) -> float:
    """Spectral (``ord=2``) or Frobenius (``ord="fro"``) norm. See `ConvOperator.norm`."""
    if isinstance(ord, str) and ord == "fro":
        if linear_map.layer is not None:
            return frobenius_norm(linear_map.layer)
        return float(np.linalg.norm(_dense_matrix(linear_map)))  # a composed operator: guarded
    if isinstance(ord, bool) or ord != 2:
        raise ValueError(f"`ord` must be 2 (spectral norm) or 'fro' (Frobenius norm), got {ord!r}")
    layer = linear_map.layer
    if layer is not None and layer.mode == "circular":
        return circular_norm(layer)
    return float(svdvals(linear_map, 1)[0])


def _bound_axis(axis: Axis) -> Axis:
    """The axis of a circulant that the zero-padded `axis` is a restriction of (see `upper_bound`)."""
    m, s, lo = axis.size, axis.stride, axis.lo
    needed = max(lo + m, (axis.output - 1) * s + axis.extent - lo, axis.output * s)
    length = -(-needed // s) * s
    return Axis(length, axis.kernel, s, axis.dilation, 0, axis.extent - 1)  # length / s outputs


def upper_bound(layer: Layer) -> float:
    """A proven upper bound of the layer's spectral norm (see `norm_bounds` for the proofs)."""
    geometry = layer.geometry
    if layer.mode == "circular":
        return circular_norm(layer)
    axes = geometry.axes
    if layer.mode in ("reflect", "replicate"):
        # valid convolution on the padded grid, after the padding map P
        padded = tuple(Axis(a.size + a.lo + a.hi, a.kernel, a.stride, a.dilation) for a in axes)
        factor = padding_norm(geometry, layer.mode)
    else:
        padded, factor = axes, 1.0
    bound_axes = [_bound_axis(axis) for axis in padded]
    if math.prod(axis.size for axis in bound_axes) > 4 * (geometry.input_size + geometry.output_size):
        # A circulant much larger than the operator (a stride or padding far past the input):
        # the cheaper bound, whatever the sizes.
        return factor * _schur_bound(layer.kernel, geometry.groups)
    return factor * _largest_block_value(layer.kernel, bound_axes, geometry.groups)


def _schur_bound(kernel: np.ndarray, groups: int) -> float:
    """``sqrt(max row sum * max column sum)`` of ``|A|``, a bound of ``||A||_2`` (Schur's test).

    For a 'valid' or zero-padded convolution of the channels-last `kernel`: a row (output,
    filter) holds each of its filter's taps at most once, and a column (input entry, channel)
    meets each tap of each filter of its group at most once (one output per tap reads it).
    """
    magnitudes = np.abs(kernel).reshape(-1, kernel.shape[-2], groups, kernel.shape[-1] // groups)
    rows = magnitudes.sum(axis=(0, 1)).max()  # per filter: its taps and channels
    columns = magnitudes.sum(axis=(0, 3)).max()  # per channel: the taps and filters of its group
    return math.sqrt(float(rows) * float(columns))


def lower_bound(linear_map: LinearMap, steps: int = 12) -> float:
    """``norm(A v) / norm(v)`` for the Ritz vector of a few Lanczos steps (an explicit vector)."""
    _, _, v, _ = lanczos_svds(linear_map, 1, max_steps=min(steps, linear_map.columns, linear_map.rows))
    vector = v[0].reshape(linear_map.input_shape)
    image = np.asarray(linear_map.forward(vector))
    return float(np.linalg.norm(image) / np.linalg.norm(vector))


def norm_bounds(linear_map: LinearMap) -> tuple[float, float]:
    """``(lower, upper)`` with ``lower <= norm(2) <= upper``. See `ConvOperator.norm_bounds`."""
    if linear_map.layer is not None:
        upper = upper_bound(linear_map.layer)
    elif linear_map.upper is not None:
        upper = linear_map.upper()
    else:
        raise ValueError("no proven upper bound is known for this operator")
    margin = _rounding_margin(linear_map.dtype)
    upper *= 1 + margin
    lower = lower_bound(linear_map) * (1 - margin)
    return min(lower, upper), upper


def _rounding_margin(dtype: np.dtype) -> float:
    """Relative margin of the bounds: `_ROUNDING`, or 64 epsilons of a coarser floating dtype.

    A float32 operator's products, and the dense matrix its `norm` comes from, carry float32
    rounding: about 1e-8 relative on a 3-tap kernel, which 1e-12 did not cover.
    """
    dtype = np.dtype(dtype)
    if dtype.kind not in "fc":
        return _ROUNDING
    return max(_ROUNDING, 64 * float(np.finfo(dtype).eps))


def _canonical_vector(vector: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Move a channels-first ``(C, *m)`` vector to channels-last ``(*m, C)``."""
    if geometry.layout == "channels_first":
        return np.moveaxis(vector, 0, -1)
    return vector


def kernel_gradient(layer: Layer, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``G[r, c, f] = sum_o conj(u[o, f]) * P(v)[o * s + r * d, c]``: the correlation of ``u`` and ``v``.

    `u` ``(*o, F)`` and `v` ``(*m, C)`` channels-last; ``Re(sum K * G) = Re(u^H A v)``.
    """
    geometry = layer.geometry
    n = geometry.ndim
    pads = [(axis.lo, axis.hi) for axis in geometry.axes]
    padded = pad(v, [*pads, (0, 0)], geometry.mode)
    extents = [axis.extent for axis in geometry.axes]
    windows = np.lib.stride_tricks.sliding_window_view(padded, extents, axis=tuple(range(n)))
    windows = windows[tuple(slice(None, axis.output * axis.stride, axis.stride) for axis in geometry.axes)]
    windows = windows[(Ellipsis,) + tuple(slice(None, None, axis.dilation) for axis in geometry.axes)]
    # windows: (*o, C, *k); split channels and filters by group
    groups = geometry.groups
    windows = windows.reshape(*windows.shape[:n], groups, geometry.group_channels, *windows.shape[n + 1 :])
    u = u.reshape(*u.shape[:n], groups, geometry.group_filters)
    letters = "abcdefghijklmnopqrstuvw"
    o, r = letters[:n], letters[n : 2 * n]
    gradient = np.einsum(f"{o}xy{r},{o}xz->{r}yxz", windows, u.conj(), optimize=True)
    return gradient.reshape(*gradient.shape[:n], geometry.group_channels, geometry.filters)


def norm_grad(linear_map: LinearMap) -> np.ndarray:
    """Gradient of ``norm(2)`` with respect to the channels-last kernel (shape ``(*k, C // groups, F)``).

    With the top singular pair ``A v = sigma u``, ``d sigma = Re(u^H dA v)`` and ``A`` is linear in
    the kernel, so the gradient is the correlation `kernel_gradient` of ``u`` and ``v`` (its real
    part for a real kernel; its conjugate, ``d/dRe + i d/dIm``, for a complex one). It exists where
    the largest singular value is simple (or its multiplicity comes from the kernel's symmetry).
    """
    layer = linear_map.layer
    if layer is None:
        raise ValueError("`norm_grad` needs a single convolution")
    u, _, v = svds(linear_map, 1)
    geometry = layer.geometry
    gradient = kernel_gradient(layer, _canonical_vector(u[0], geometry), _canonical_vector(v[0], geometry))
    if np.asarray(layer.kernel).dtype.kind == "c":
        return gradient.conj()
    return gradient.real
