import numpy as np
import pytest
from helpers import byte_bounds

import stridedop

linalg = pytest.importorskip("scipy.linalg")

SIZES = [1, 2, 9]


def values(size, kind, seed):
    rng = np.random.default_rng(seed)
    v = rng.integers(-9, 10, size).astype(float)
    if kind == "complex":
        v = v + 1j * rng.integers(-9, 10, size)
    return v


def reachable_entries(view):
    low, high = byte_bounds(view)
    return (high - low) // view.itemsize


def check_view(view, expected, rows, columns):
    np.testing.assert_array_equal(view, expected)
    assert view.dtype == expected.dtype
    assert not view.flags.writeable
    with pytest.raises(ValueError):
        view.setflags(write=True)
    # One buffer of rows + cols - 1 entries per matrix: the view reaches no more.
    assert reachable_entries(view) <= rows + columns - 1


@pytest.mark.parametrize("kind", ["real", "complex"])
@pytest.mark.parametrize("m", SIZES)
@pytest.mark.parametrize("n", SIZES)
def test_toeplitz(m, n, kind):
    c, r = values(m, kind, 0), values(n, kind, 1)
    check_view(stridedop.toeplitz(c, r), linalg.toeplitz(c, r), m, n)


@pytest.mark.parametrize("kind", ["real", "complex"])
@pytest.mark.parametrize("m", SIZES)
def test_toeplitz_without_r_is_hermitian(m, kind):
    c = values(m, kind, 2)
    c[0] = c[0].real
    T = stridedop.toeplitz(c)
    check_view(T, linalg.toeplitz(c), m, m)
    np.testing.assert_array_equal(T, np.conj(T).T)


@pytest.mark.parametrize("kind", ["real", "complex"])
@pytest.mark.parametrize("m", SIZES)
@pytest.mark.parametrize("n", SIZES)
def test_hankel(m, n, kind):
    c, r = values(m, kind, 3), values(n, kind, 4)
    check_view(stridedop.hankel(c, r), linalg.hankel(c, r), m, n)


@pytest.mark.parametrize("m", SIZES)
def test_hankel_pads_with_zeros(m):
    c = values(m, "real", 5)
    check_view(stridedop.hankel(c), linalg.hankel(c), m, m)


@pytest.mark.parametrize("kind", ["real", "complex"])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 9])
def test_circulant(n, kind):
    c = values(n, kind, 6)
    check_view(stridedop.circulant(c), linalg.circulant(c), n, n)


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("k", [1, 2, 3, 9])
@pytest.mark.parametrize("n", [1, 2, 4, 9])
@pytest.mark.parametrize("kind", ["real", "complex"])
def test_convolution_matrix(k, n, mode, kind):
    a = values(k, kind, 7)
    expected = linalg.convolution_matrix(a, n, mode)
    A = stridedop.convolution_matrix(a, n, mode)
    check_view(A, expected, expected.shape[0], n)
    v = values(n, kind, 8)
    np.testing.assert_allclose(A @ v, np.convolve(a, v, mode))


def test_integer_dtypes_follow_scipy():
    check_view(stridedop.toeplitz([1, 2, 3], [1, 4, 5, 6]), linalg.toeplitz([1, 2, 3], [1, 4, 5, 6]), 3, 4)
    c, r = np.array([1, 2], np.int8), np.array([1.5, 2.5, 3.5], np.float32)
    assert stridedop.toeplitz(c, r).dtype == linalg.toeplitz(c, r).dtype


# Batches are compared slice by slice: SciPy before 1.17 flattens multidimensional toeplitz input.
def test_batched_toeplitz_equals_looped():
    rng = np.random.default_rng(9)
    c, r = rng.standard_normal((2, 3, 4)), rng.standard_normal((3, 5))  # r broadcasts over the batch
    T = stridedop.toeplitz(c, r)
    assert T.shape == (2, 3, 4, 5) and not T.flags.writeable
    for i in range(2):
        for j in range(3):
            np.testing.assert_array_equal(T[i, j], linalg.toeplitz(c[i, j], r[j]))


def test_batched_circulant_and_convolution_matrix_equal_looped():
    rng = np.random.default_rng(10)
    c = rng.standard_normal((3, 5))
    C = stridedop.circulant(c)
    for i in range(3):
        np.testing.assert_array_equal(C[i], linalg.circulant(c[i]))
    a = rng.standard_normal((2, 3))
    A = stridedop.convolution_matrix(a, 6, "same")
    for i in range(2):
        np.testing.assert_array_equal(A[i], linalg.convolution_matrix(a[i], 6, "same"))


def test_batched_hankel_is_a_batch():
    # SciPy < 1.19 flattens multidimensional input for hankel; stridedop treats it as a batch,
    # as SciPy will from 1.19 on.
    rng = np.random.default_rng(11)
    c, r = rng.standard_normal((3, 4)), rng.standard_normal((3, 2))
    H = stridedop.hankel(c, r)
    assert H.shape == (3, 4, 2)
    for i in range(3):
        np.testing.assert_array_equal(H[i], linalg.hankel(c[i], r[i]))


def test_a_batch_axis_is_one_more_stride():
    T = stridedop.toeplitz(np.arange(12.0).reshape(3, 4))
    base = T
    while isinstance(base.base, np.ndarray):
        base = base.base
    assert base.size == 3 * (4 + 4 - 1)
    assert not T.flags.owndata


def test_materialize_gives_scipys_dense_copy():
    c, r = values(4, "complex", 12), values(6, "complex", 13)
    dense = stridedop.materialize(stridedop.toeplitz(c, r))
    assert dense.flags.writeable and dense.flags.owndata and dense.flags.c_contiguous
    np.testing.assert_array_equal(dense, linalg.toeplitz(c, r))


def test_empty_inputs_give_empty_matrices_like_scipy():
    assert stridedop.toeplitz([]).shape == linalg.toeplitz([]).shape == (0, 0)
    assert stridedop.toeplitz([], [1, 2]).shape == (0, 2)
    assert stridedop.circulant(np.zeros((2, 0))).shape == (2, 0, 0)


@pytest.mark.parametrize(
    ("arguments", "match", "scipy_raises"),
    [
        (([1, 2], 0), r"`n` must be a positive integer, got 0", True),
        (([1, 2], -3), r"`n` must be a positive integer, got -3", True),
        (([], 3), r"`a` must have at least one element", True),
        (([1, 2], 3, "circular"), r"`mode` must be one of 'full', 'valid', 'same', got 'circular'", True),
        (([1, 2], 2.5), r"`n` must be an integer, got the fractional value 2.5", False),
    ],
)
def test_convolution_matrix_errors(arguments, match, scipy_raises):
    with pytest.raises(ValueError, match=match):
        stridedop.convolution_matrix(*arguments)
    if scipy_raises:
        with pytest.raises(ValueError):
            linalg.convolution_matrix(*arguments)


def test_non_numeric_inputs_raise_type_error():
    with pytest.raises(TypeError, match="`c` has dtype <U1"):
        stridedop.toeplitz(["a", "b"])
    with pytest.raises(TypeError, match="`r` has dtype object"):
        stridedop.hankel([1.0], np.array([None], dtype=object))
    with pytest.raises(TypeError, match="`a` has dtype <U1"):
        stridedop.convolution_matrix(["a"], 3)
