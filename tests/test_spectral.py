"""Singular values and norms, compared with the dense SVD of independently built matrices."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracles import loop_operator

import stridedop
from stridedop import _spectral
from stridedop._geometry import make_geometry

MODES = ("zeros", "circular", "reflect", "replicate")
NP_PAD = {"zeros": "constant", "circular": "wrap", "reflect": "reflect", "replicate": "edge"}


def random_kernel(rng, shape, complex_=False):
    kernel = rng.standard_normal(shape)
    if complex_:
        kernel = kernel + 1j * rng.standard_normal(shape)
    return kernel


def padding_matrix(size, lo, hi, mode):
    """The 1-D padding map (lo + size + hi, size) of `mode`, from np.pad of the unit vectors."""
    if mode == "zeros":
        return np.pad(np.eye(size), ((lo, hi), (0, 0)))
    return np.pad(np.eye(size), ((lo, hi), (0, 0)), mode=NP_PAD[mode])


def dense_layer(kernel, m, pads, mode, stride, dilation, groups):
    """Dense matrix of any mode: the 'valid' loop oracle on the padded grid times the padding map."""
    n = kernel.ndim - 2
    padded = [m[i] + pads[i][0] + pads[i][1] for i in range(n)]
    valid = loop_operator(kernel, padded, stride=stride, dilation=dilation, groups=groups)
    channels = kernel.shape[n] * groups
    rows = math.prod(valid.shape[: n + 1])
    V = valid.reshape(rows, -1)
    P = np.eye(channels)
    for i in reversed(range(n)):
        P = np.kron(padding_matrix(m[i], *pads[i], mode), P)
    return V @ P


def layer_operator(kernel, m, pads, mode, stride=1, dilation=1, groups=1):
    channels = kernel.shape[-2] * groups
    return stridedop.ConvOperator(
        kernel,
        (*m, channels),
        padding=list(pads),
        padding_mode=mode,
        stride=stride,
        dilation=dilation,
        groups=groups,
    )


def layer_map(*arguments, **keywords):
    return _spectral.linear_map_of(layer_operator(*arguments, **keywords))


def relative_error(values, reference):
    return np.abs(np.asarray(values) - reference).max() / max(reference[0], 1e-300)


# -- circular: exact from the DFT ---------------------------------------------------------------------
def circular_case(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 4))
    sizes = {1: (1, 9), 2: (1, 6), 3: (1, 4)}[n]
    m = tuple(int(v) for v in rng.integers(*sizes, size=n))
    k = tuple(int(v) for v in rng.integers(1, 4 if n < 3 else 3, size=n))
    stride = tuple(int(v) for v in rng.integers(1, 4, size=n))
    dilation = tuple(int(v) for v in rng.integers(1, 3, size=n))
    groups = int(rng.choice([1, 1, 2, 3]))
    cg, fg = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    complex_ = bool(rng.random() < 0.3)
    kernel = random_kernel(rng, (*k, cg, fg * groups), complex_)
    return kernel, (*m, cg * groups), stride, dilation, groups


@pytest.mark.parametrize("seed", range(240))
def test_circular_svdvals_equal_dense_svd(seed):
    kernel, input_shape, stride, dilation, groups = circular_case(seed)
    op = stridedop.ConvOperator(
        kernel, input_shape, padding="circular", stride=stride, dilation=dilation, groups=groups
    )
    reference = np.linalg.svd(op.to_matrix(), compute_uv=False)
    values = op.svdvals()
    assert values.shape == reference.shape
    assert relative_error(values, reference) <= 1e-10
    assert abs(op.norm() - reference[0]) <= 1e-10 * reference[0]
    assert np.array_equal(
        op.svdvals(2 if reference.size > 1 else 1), values[: 2 if reference.size > 1 else 1]
    )


@pytest.mark.parametrize(
    "size, taps, options",
    [
        (5, 3, {"dilation": 2**62 + 1}),  # the taps' shifts past int64 (they wrapped around silently)
        (17, 2, {"dilation": 2**60 + 1}),  # ... their products with the frequencies
        (65, 2, {"dilation": 2**63}),
        (3, 2, {"stride": 2**63}),
        (6, 3, {"stride": 2**70 + 3, "dilation": 10**30}),
    ],
)
@pytest.mark.parametrize("complex_", [False, True])
def test_circular_svdvals_with_huge_strides_and_dilations(size, taps, options, complex_):
    kernel = random_kernel(np.random.default_rng(size), (taps, 1, 2), complex_)
    op = stridedop.ConvOperator(kernel, (size, 1), padding="circular", **options)
    reference = np.linalg.svd(op.to_sparse().toarray(), compute_uv=False)
    assert relative_error(op.svdvals(), reference) <= 1e-10
    assert abs(op.norm(2) - reference[0]) <= 1e-10 * reference[0]


def test_circular_kernel_wider_than_input_folds():
    rng = np.random.default_rng(5)
    kernel = rng.standard_normal((7, 5, 2, 3))
    op = stridedop.ConvOperator(kernel, (3, 2, 2), padding="circular")
    dense = loop_operator(kernel, (3, 2), padding="circular").reshape(op.to_matrix().shape)
    assert relative_error(op.svdvals(), np.linalg.svd(dense, compute_uv=False)) <= 1e-10


def test_circular_real_kernel_uses_half_the_frequencies():
    kernel = np.random.default_rng(0).standard_normal((3, 3, 2, 2))
    geometry = make_geometry(kernel.shape, (8, 6, 2), padding="circular")
    pieces = _spectral.circular_blocks(kernel, geometry.axes, 1)
    # the longest axis (8) is halved to 5 planes: 3 interior ones stand for two, and the
    # planes 0 and 4 keep 4 of their 6 blocks (0 and 3 are self-conjugate, 1 ~ 5 and 2 ~ 4)
    assert sum(len(blocks) for blocks, _ in pieces) == 3 * 6 + 2 * 4
    assert sum(len(blocks) * weight for blocks, weight in pieces) == 8 * 6
    complex_pieces = _spectral.circular_blocks(kernel + 0j, geometry.axes, 1)
    assert [(len(blocks), weight) for blocks, weight in complex_pieces] == [(48, 1.0)]


@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
def test_circular_never_builds_the_dense_matrix(layout, monkeypatch):
    kernel = np.random.default_rng(1).standard_normal((3, 3, 4, 4))
    if layout == "channels_first":
        kernel, shape = kernel.transpose(3, 2, 0, 1), (4, 10, 10)
    else:
        shape = (10, 10, 4)
    op = stridedop.ConvOperator(kernel, shape, padding="circular", layout=layout)
    reference = np.linalg.svd(op.to_matrix(), compute_uv=False)
    monkeypatch.setattr(stridedop.ConvOperator, "to_matrix", None)
    monkeypatch.setattr(stridedop.ConvOperator, "__matmul__", None)
    assert relative_error(op.svdvals(), reference) <= 1e-10
    assert abs(op.norm() - reference[0]) <= 1e-10 * reference[0]


# -- every mode on small layers ---------------------------------------------------------------------
GEOMETRIES = [
    # kernel spatial, input spatial, pads, stride, dilation, groups
    ((3,), (7,), ((1, 1),), (1,), (1,), 1),
    ((3,), (8,), ((2, 1),), (2,), (1,), 2),
    ((3, 2), (5, 4), ((1, 1), (1, 0)), (1, 1), (1, 1), 1),
    ((2, 3), (6, 5), ((1, 2), (2, 2)), (2, 1), (2, 1), 1),
    ((3, 3), (4, 6), ((2, 2), (2, 2)), (1, 2), (1, 1), 2),
    ((2, 2, 2), (3, 4, 3), ((1, 0), (1, 1), (0, 1)), (1, 2, 1), (1, 1, 2), 1),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", range(len(GEOMETRIES)))
@pytest.mark.parametrize("complex_", [False, True])
def test_every_mode_svdvals_fro_and_bounds(mode, case, complex_):
    k, m, pads, stride, dilation, groups = GEOMETRIES[case]
    rng = np.random.default_rng(case)
    kernel = random_kernel(rng, (*k, 2, 2 * groups), complex_)
    linear_map = layer_map(kernel, m, pads, mode, stride, dilation, groups)
    dense = dense_layer(kernel, m, pads, mode, stride, dilation, groups)
    reference = np.linalg.svd(dense, compute_uv=False)
    assert relative_error(_spectral.svdvals(linear_map), reference) <= 1e-10
    top = _spectral.svdvals(linear_map, 3, method="lanczos")
    assert relative_error(top, reference[:3]) <= 1e-10
    assert np.isclose(_spectral.norm(linear_map, "fro"), np.linalg.norm(dense), rtol=1e-12)
    lower, upper = _spectral.norm_bounds(linear_map)
    assert lower <= reference[0] <= upper


@pytest.mark.parametrize("padding", ["same", "valid", "full", ((2, 0), (1, 3))])
@pytest.mark.parametrize("stride", [1, 2])
def test_zero_padding_operator_against_loop_oracle(padding, stride):
    kernel = np.random.default_rng(3).standard_normal((3, 2, 2, 3))
    m = (6, 5)
    op = stridedop.ConvOperator(kernel, (*m, 2), padding=padding, stride=stride)
    dense = loop_operator(kernel, m, padding=padding, stride=stride).reshape(op.to_matrix().shape)
    reference = np.linalg.svd(dense, compute_uv=False)
    assert relative_error(op.svdvals(), reference) <= 1e-10
    assert abs(op.norm() - reference[0]) <= 1e-10 * reference[0]
    assert np.isclose(op.norm("fro"), np.linalg.norm(dense), rtol=1e-12)
    assert relative_error(op.T.svdvals(), reference) <= 1e-10


def test_lanczos_converges_on_a_larger_zero_padded_layer():
    kernel = np.random.default_rng(4).standard_normal((3, 3, 8, 8))
    op = stridedop.ConvOperator(kernel, (12, 12, 8), padding="same")
    reference = np.linalg.svd(op.to_matrix(), compute_uv=False)
    u, s, v, converged = _spectral.lanczos_svds(_spectral.linear_map_of(op), 4)
    assert converged
    assert relative_error(s, reference[:4]) <= 1e-10


# -- bounds -------------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    n=st.integers(1, 2),
    mode=st.sampled_from(MODES),
    channels=st.integers(1, 2),
    filters=st.integers(1, 3),
)
def test_bounds_contain_the_norm(data, n, mode, channels, filters):
    m = tuple(data.draw(st.integers(1, 6), label="m") for _ in range(n))
    k = tuple(data.draw(st.integers(1, 3), label="k") for _ in range(n))
    stride = tuple(data.draw(st.integers(1, 3), label="stride") for _ in range(n))
    dilation = tuple(data.draw(st.integers(1, 2), label="dilation") for _ in range(n))
    amounts = st.integers(0, 4)
    pads = [(data.draw(amounts, label="lo"), data.draw(amounts, label="hi")) for _ in range(n)]
    if any(m[i] + sum(pads[i]) < (k[i] - 1) * dilation[i] + 1 for i in range(n)):
        return
    seed = data.draw(st.integers(0, 2**16), label="seed")
    kernel = np.random.default_rng(seed).standard_normal((*k, channels, filters))
    linear_map = layer_map(kernel, m, tuple(pads), mode, stride, dilation)
    truth = np.linalg.norm(dense_layer(kernel, m, pads, mode, stride, dilation, 1), 2)
    lower, upper = _spectral.norm_bounds(linear_map)
    assert lower <= truth <= upper


@pytest.mark.parametrize("padding", ["same", "valid", "circular", 1])
def test_operator_bounds(padding):
    kernel = np.random.default_rng(6).standard_normal((3, 3, 3, 4))
    op = stridedop.ConvOperator(kernel, (7, 9, 3), padding=padding, stride=(1, 2))
    lower, upper = op.norm_bounds()
    truth = np.linalg.norm(op.to_matrix(), 2)
    assert lower <= truth <= upper
    assert upper / lower - 1 < 0.5


@pytest.mark.parametrize("mode", ["reflect", "zeros", "circular"])
def test_float32_bounds_contain_the_norm(mode):
    # float32 products round at about 1e-8 relative here: a margin of 1e-12 let both bounds cross
    # `norm` in 96 of 240 such cases
    for seed in range(12):
        kernel = np.random.default_rng(seed).standard_normal((3, 2, 2)).astype(np.float32)
        op = stridedop.ConvOperator(kernel, (8, 2), padding="same", padding_mode=mode)
        for operator in (op, op.H @ op):
            lower, upper = operator.norm_bounds()
            assert lower <= operator.norm() <= upper, (seed, operator)


def test_an_operator_that_is_zero_up_to_rounding_converges_at_once():
    # (A + B) - (B + A) computes to about 1e-14: relative convergence on such noise ran to the
    # step limit (1800 steps, 9 s for the norm; minutes for svdvals(k=2))
    rng = np.random.default_rng(0)
    a = stridedop.ConvOperator(
        rng.standard_normal((3, 3, 2, 2)), (30, 30, 2), padding="same", padding_mode="reflect"
    )
    b = stridedop.ConvOperator(rng.standard_normal((3, 3, 2, 2)), (30, 30, 2), padding="same")
    zero = (a + b) - (b + a)
    linear_map = _spectral.linear_map_of(zero)
    bound = zero.norm_bounds()[1]
    value, converged, steps = _spectral.lanczos_norm(linear_map)
    assert converged and steps < 50 and value < 1e-14 * bound
    _, values, _, converged = _spectral.lanczos_svds(linear_map, 2)
    assert converged and np.all(values < 1e-14 * bound)
    # a value well above the rounding still converges to relative 1e-10
    nearly = a + b - (1 - 1e-3) * (b + a)
    assert np.isclose(nearly.norm(), 1e-3 * (a + b).norm(), rtol=1e-9)


def test_padding_norm_is_exact():
    for mode in ("reflect", "replicate", "circular", "zeros"):
        geometry = make_geometry((3, 3, 1, 1), (5, 4, 1), padding=((2, 3), (1, 1)), padding_mode=mode)
        P = np.kron(padding_matrix(5, 2, 3, mode), padding_matrix(4, 1, 1, mode))
        assert np.isclose(_spectral.padding_norm(geometry, mode), np.linalg.norm(P, 2), rtol=1e-12)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular", "zeros"])
def test_padding_norm_in_closed_form_for_every_amount(mode):
    # Counted without listing the padded positions, so that any amount is served.
    for size in (1, 2, 3, 7):
        for lo in range(0, 3 * size + 2):
            for hi in (0, 1, size, 2 * size + 3):
                geometry = make_geometry((1, 1, 1), (size, 1), padding=[(lo, hi)], padding_mode=mode)
                expected = np.linalg.norm(padding_matrix(size, lo, hi, mode), 2)
                got = _spectral.padding_norm(geometry, mode)
                assert np.isclose(got, expected, rtol=1e-12), (size, lo, hi)


@pytest.mark.parametrize(
    "options",
    [
        {"stride": 2**63},  # (OverflowError)
        {"stride": 2**62},  # (ValueError: array is too big)
        {"padding": [(0, 2**40)], "stride": 2**40},  # a circulant of 2**41 entries
        {"padding": "same", "dilation": 2**62, "padding_mode": "replicate"},
        {"padding": [(2**62, 2**62)], "dilation": 2**62, "padding_mode": "replicate"},  # (IndexError)
        {"padding": [(2**26, 3)], "padding_mode": "reflect", "stride": 2**26},
        {"padding": [(10**30, 3)], "padding_mode": "reflect", "stride": 10**30},  # (OverflowError)
        {"padding": [(2**26, 0)], "stride": 2**26},  # (2.7 s and 1.1 GB for the Frobenius norm)
    ],
)
def test_norms_of_tiny_operators_with_huge_geometry(options):
    kernel = np.array([1.0, -2.0, 0.5]).reshape(3, 1, 1)
    op = stridedop.ConvOperator(kernel, (4, 1), **options)
    matrix = op.to_sparse().toarray()
    assert np.isclose(op.norm("fro"), np.linalg.norm(matrix), rtol=1e-12)
    upper = _spectral.upper_bound(_spectral.Layer(kernel, op._geometry))
    assert np.linalg.norm(matrix, 2) <= upper * (1 + 1e-12)


def test_norms_with_a_dilation_past_memory():
    # Both the view buffer and the padded input have 2**40 entries. A small operator's dense
    # matrix is built by index arithmetic; a larger one's Lanczos products go through the
    # operator, whose refusal is the descriptive MemoryError (they raised NumPy's bare 8 TiB one).
    kernel = np.array([1.0, 2.0, -1.0]).reshape(3, 1, 1)
    op = stridedop.ConvOperator(kernel, (3, 1), padding="same", dilation=2**40)
    assert np.isclose(op.norm(2), np.linalg.norm(op.to_sparse().toarray(), 2), rtol=1e-12)
    wide = stridedop.ConvOperator(kernel, (_spectral._DENSE_MAX_SIDE + 1, 1), padding="same", dilation=2**40)
    with pytest.raises(MemoryError, match="applying the operator"):
        wide.norm(2)


def test_schur_bound_holds_on_random_layers():
    rng = np.random.default_rng(4)
    for _ in range(40):
        groups = int(rng.choice([1, 2]))
        kernel = rng.standard_normal((int(rng.integers(1, 4)), 2, 2 * groups))
        op = stridedop.ConvOperator(
            kernel,
            (int(rng.integers(5, 9)), 2 * groups),
            padding=[(int(rng.integers(0, 3)), int(rng.integers(0, 3)))],
            stride=int(rng.integers(1, 4)),
            dilation=int(rng.integers(1, 3)),
            groups=groups,
        )
        bound = _spectral._schur_bound(kernel, groups)
        assert np.linalg.norm(op.to_matrix(), 2) <= bound * (1 + 1e-12)


# -- gradient -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "padding, stride, groups, complex_, layout, mode",
    [
        ("same", 1, 1, False, "channels_last", "zeros"),
        ("valid", 2, 1, False, "channels_last", "zeros"),
        ("same", 1, 2, False, "channels_first", "zeros"),
        ("same", (1, 2), 1, True, "channels_last", "zeros"),
        ("circular", 1, 1, False, "channels_last", "circular"),
        (((2, 1), (1, 2)), (2, 1), 1, False, "channels_first", "reflect"),
        ("same", 1, 2, True, "channels_last", "replicate"),
    ],
)
def test_norm_grad_against_finite_differences(padding, stride, groups, complex_, layout, mode):
    rng = np.random.default_rng(7)
    kernel = random_kernel(rng, (3, 2, 2, 2 * groups), complex_)
    m = (7, 6)

    def make(k):
        if layout == "channels_first":
            return stridedop.ConvOperator(
                k.transpose(3, 2, 0, 1),
                (2 * groups, *m),
                padding=padding,
                padding_mode=mode,
                stride=stride,
                groups=groups,
                layout=layout,
            )
        return stridedop.ConvOperator(
            k, (*m, 2 * groups), padding=padding, padding_mode=mode, stride=stride, groups=groups
        )

    gradient = make(kernel).norm_grad()
    if layout == "channels_first":
        gradient = gradient.transpose(2, 3, 1, 0)
    assert gradient.shape == kernel.shape and gradient.dtype == kernel.dtype
    h = 1e-6
    for index in [(0, 0, 0, 0), (1, 1, 1, 1), (2, 0, 1, 0), (2, 1, 0, 1)]:
        step = np.zeros_like(kernel)
        step[index] = h
        slope = (make(kernel + step).norm() - make(kernel - step).norm()) / (2 * h)
        assert np.isclose(gradient[index].real, slope, rtol=1e-5, atol=1e-7)
        if complex_:
            slope = (make(kernel + 1j * step).norm() - make(kernel - 1j * step).norm()) / (2 * h)
            assert np.isclose(gradient[index].imag, slope, rtol=1e-5, atol=1e-7)


# -- svds -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("padding", ["same", "circular", "valid"])
@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("method", ["dense", "lanczos"])
def test_svds_triplets(padding, complex_, method):
    kernel = random_kernel(np.random.default_rng(8), (3, 3, 2, 3), complex_)
    op = stridedop.ConvOperator(kernel, (6, 7, 2), padding=padding)
    u, s, vh = _spectral.svds(_spectral.linear_map_of(op), 3, method=method)
    assert u.shape == (3, *op.output_shape) and vh.shape == (3, *op.input_shape) and s.shape == (3,)
    reference = np.linalg.svd(op.to_matrix(), compute_uv=False)
    assert relative_error(s, reference[:3]) <= 1e-10
    for i in range(3):
        np.testing.assert_allclose(op @ vh[i], s[i] * u[i], atol=1e-9 * s[0])
        assert np.isclose(np.linalg.norm(u[i]), 1) and np.isclose(np.linalg.norm(vh[i]), 1)
    public = op.svds(2)
    assert public[0].shape == (2, *op.output_shape)


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("direction", ["op", "H"])
def test_lanczos_svds_of_wide_and_tall_operators(k, complex_, direction):
    # Started on the wide side, the right basis spanned only `rows` of its `columns` dimensions
    # when the run stopped at min(rows, columns) steps (0.75323 instead of 0.75515 here).
    kernel = random_kernel(np.random.default_rng(2), (3, 1, 1), complex_)
    op = stridedop.ConvOperator(kernel, (6, 1), padding="same", stride=2)  # 3 x 6
    op = op if direction == "op" else op.H
    matrix = op.to_matrix()
    reference = np.linalg.svd(matrix, compute_uv=False)
    u, s, vh = _spectral.svds(_spectral.linear_map_of(op), k, method="lanczos")
    assert relative_error(s, reference[:k]) <= 1e-10
    for i in range(k):
        np.testing.assert_allclose(op @ vh[i], s[i] * u[i], atol=1e-10 * s[0])


def test_lanczos_of_wide_operators_with_zero_values():
    # The adjoint's run leaves 0 right vectors where a value is 0: norm_bounds divided 0 by 0
    # (NaN), svds returned vectors of norm 0 (a regression of the wide operators' fix).
    zero = stridedop.ConvOperator(np.zeros((3, 2, 1)), (1300, 2), stride=2)  # 649 x 2600, Lanczos
    u, s, vh = zero.svds(2)
    np.testing.assert_array_equal(s, [0.0, 0.0])
    flat = vh.reshape(2, -1)
    np.testing.assert_allclose(flat @ flat.T, np.eye(2), atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(u.reshape(2, -1), axis=1), 1.0)
    assert zero.norm_bounds() == (0.0, 0.0)
    options = {"padding": [(91, 86)], "stride": 17, "dilation": 2}
    padding_only = stridedop.ConvOperator(np.ones((1, 1, 1)), (4, 1), **options)
    lower, upper = padding_only.H.norm_bounds()
    assert lower == 0.0 and upper >= 0.0


@pytest.mark.parametrize("direction", ["op", "H"])
def test_lanczos_with_repeated_values_and_k_past_the_rank(direction):
    # One tap: every non-zero singular value is |tap|. A v_j then falls in the span of U, and the
    # rounding left by the orthogonalization, normalized, broke U's orthogonality: values above
    # the norm (1.27399 for 1.27390839) and, past the rank, 5.6 for 1.
    kernel = np.zeros((1, 3, 2, 1))
    kernel[0, 1, 1, 0] = -1.2739083901165977
    op = stridedop.ConvOperator(kernel, (3, 4, 3), padding="same", layout="channels_first")  # 12 x 36
    op = op if direction == "op" else op.H
    reference = np.linalg.svd(op.to_matrix(), compute_uv=False)
    for k in (6, 11):  # below and past the rank (9)
        u, s, vh = _spectral.svds(_spectral.linear_map_of(op), k, method="lanczos")
        np.testing.assert_allclose(s, reference[:k], atol=1e-12)
        for vectors in (vh, u):  # orthonormal, also for the value 0 (its u was left 0)
            flat = vectors.reshape(k, -1)
            np.testing.assert_allclose(flat @ flat.conj().T, np.eye(k), atol=1e-12)
        for i in range(k):
            np.testing.assert_allclose(op @ vh[i], s[i] * u[i], atol=1e-12)


@pytest.mark.parametrize("complex_", [False, True])
def test_every_direction_has_the_same_values(complex_):
    kernel = random_kernel(np.random.default_rng(9), (3, 3, 2, 5), complex_)
    op = stridedop.ConvOperator(kernel, (6, 6, 2), padding="same", stride=2)
    for other in (op.H, op.transpose(), op.H.transpose()):
        reference = np.linalg.svd(other.to_matrix(), compute_uv=False)
        assert relative_error(other.svdvals(), reference) <= 1e-10
        assert np.isclose(other.norm("fro"), np.linalg.norm(reference), rtol=1e-12)
        u, s, vh = other.svds(1)
        np.testing.assert_allclose(other @ vh[0], s[0] * u[0], atol=1e-10 * s[0])
        np.testing.assert_allclose(other.norm_grad(), op.norm_grad(), atol=1e-8)


@pytest.mark.parametrize("padding_mode", MODES)
def test_composed_and_summed_operators(padding_mode):
    rng = np.random.default_rng(10)
    first = stridedop.ConvOperator(
        rng.standard_normal((3, 3, 2, 3)), (6, 5, 2), padding="same", padding_mode=padding_mode, stride=(1, 2)
    )
    second = stridedop.ConvOperator(rng.standard_normal((2, 2, 3, 2)), first.output_shape, padding="valid")
    third = stridedop.ConvOperator(
        rng.standard_normal((1, 3, 2, 3)), (6, 5, 2), padding="same", stride=(1, 2)
    )
    for operator in (second @ first, first.H @ first, 2 * first - 0.5 * third, second @ (first + third)):
        dense = operator.to_matrix()
        reference = np.linalg.svd(dense, compute_uv=False)
        assert relative_error(operator.svdvals(), reference) <= 1e-10
        assert (
            relative_error(
                _spectral.svdvals(_spectral.linear_map_of(operator), 2, method="lanczos"), reference[:2]
            )
            <= 1e-10
        )
        assert abs(operator.norm() - reference[0]) <= 1e-10 * reference[0]
        assert np.isclose(operator.norm("fro"), np.linalg.norm(dense), rtol=1e-12)
        lower, upper = operator.norm_bounds()
        assert lower <= reference[0] <= upper
    product = second @ first
    assert np.isclose(product.norm_bounds()[1], second.norm_bounds()[1] * first.norm_bounds()[1], rtol=1e-9)


# -- errors -------------------------------------------------------------------------------------------
def test_errors_name_the_argument():
    op = stridedop.ConvOperator(np.ones((3, 1, 1)), (6, 1), padding="same")
    with pytest.raises(ValueError, match="`k` must be None or an int between 1 and"):
        op.svdvals(0)
    with pytest.raises(ValueError, match="`k` must be an int between 1 and min"):
        op.svds(7)
    with pytest.raises(ValueError, match="`ord` must be 2"):
        op.norm(1)
    with pytest.raises(ValueError, match="`method` must be"):
        _spectral.svdvals(_spectral.linear_map_of(op), method="qr")


def test_all_values_of_a_huge_zero_padded_layer_need_k():
    op = stridedop.ConvOperator(np.ones((3, 1, 1)), (2**21, 1), padding="same")  # 32 TiB dense
    with pytest.raises(MemoryError, match="pass `k`"):
        op.svdvals()


@pytest.mark.parametrize("k", [1, 3])
def test_lanczos_restarts_thick(k, monkeypatch):
    monkeypatch.setattr(_spectral, "_LANCZOS_ENTRIES", 1)  # the smallest bases: 2k + 40 vectors
    kernel = np.random.default_rng(11).standard_normal((3, 3, 8, 8))
    op = stridedop.ConvOperator(kernel, (12, 12, 8), padding="same")
    reference = np.linalg.svd(op.to_matrix(), compute_uv=False)
    u, s, v, converged = _spectral.lanczos_svds(_spectral.linear_map_of(op), k)
    assert converged
    assert relative_error(s, reference[:k]) <= 1e-10
    for i in range(k):
        np.testing.assert_allclose((op @ v[i].reshape(op.input_shape)).ravel(), s[i] * u[i], atol=1e-8 * s[0])


# -- the value-only Lanczos of norm(2) -----------------------------------------------------------------
def channels_last_matrix(op):
    """The operator's dense matrix on channels-last vectors (input and output permuted if needed)."""
    dense = op.to_matrix()
    if op._geometry.layout == "channels_last":
        return dense
    inputs = np.moveaxis(np.arange(dense.shape[1]).reshape(op.input_shape), 0, -1).ravel()
    outputs = np.moveaxis(np.arange(dense.shape[0]).reshape(op.output_shape), 0, -1).ravel()
    return dense[np.ix_(outputs, inputs)]


ZERO_PADDED = [
    # kernel spatial, input spatial, pads, dilation, groups, layout
    ((3,), (7,), ((1, 1),), (1,), 1, "channels_last"),
    ((3,), (8,), ((2, 0),), (2,), 2, "channels_first"),
    ((3, 2), (5, 4), ((1, 1), (1, 0)), (1, 1), 1, "channels_last"),
    ((2, 3), (6, 5), ((1, 0), (2, 2)), (2, 1), 1, "channels_first"),
    ((3, 3), (4, 6), ((2, 2), (0, 0)), (1, 1), 2, "channels_last"),
    ((2, 2, 2), (3, 4, 3), ((1, 0), (1, 1), (0, 1)), (1, 1, 2), 1, "channels_last"),
    ((1,), (1,), ((0, 0),), (1,), 1, "channels_last"),  # sizes 1: a plain matrix
    ((1, 2), (1, 3), ((0, 0), (1, 0)), (1, 3), 3, "channels_first"),
]


@pytest.mark.parametrize("case", range(len(ZERO_PADDED)))
@pytest.mark.parametrize("complex_", [False, True])
def test_zero_padding_products_equal_the_dense_matrix(case, complex_):
    k, m, pads, dilation, groups, layout = ZERO_PADDED[case]
    rng = np.random.default_rng(case)
    kernel = random_kernel(rng, (*k, 2, 3 * groups), complex_)
    channels = 2 * groups
    shape = (*m, channels) if layout == "channels_last" else (channels, *m)
    if layout == "channels_first":  # (*k, Cg, F) -> (F, Cg, *k)
        kernel = np.moveaxis(kernel, (-1, -2), (0, 1))
    op = stridedop.ConvOperator(
        kernel, shape, padding=list(pads), dilation=dilation, groups=groups, layout=layout
    )
    forward, adjoint, columns, rows = _spectral._zero_padding_products(op._spectral_layer())
    dense = channels_last_matrix(op)
    assert dense.shape == (rows, columns)
    x = random_kernel(rng, (columns,), complex_)
    y = random_kernel(rng, (rows,), complex_)
    np.testing.assert_allclose(forward(x), dense @ x, atol=1e-12 * np.abs(dense).sum())
    np.testing.assert_allclose(adjoint(y), dense.conj().T @ y, atol=1e-12 * np.abs(dense).sum())


@pytest.mark.parametrize(
    "keywords",
    [
        {"stride": 2},
        {"padding_mode": "reflect"},
        {"padding": [(3, 0), (0, 0)]},  # padding beyond the kernel's reach
        {"padding": [(0, 0), (0, 3)]},
    ],
)
def test_zero_padding_products_only_for_stride_1_zeros_within_reach(keywords):
    arguments = {"padding": "same", **keywords}
    op = stridedop.ConvOperator(np.ones((3, 3, 2, 2)), (6, 6, 2), **arguments)
    assert _spectral._zero_padding_products(op._spectral_layer()) is None


def test_zero_padding_products_fall_back_above_the_unfolded_size(monkeypatch):
    op = stridedop.ConvOperator(np.ones((3, 3, 2, 2)), (6, 6, 2), padding="same")
    monkeypatch.setattr(_spectral, "_UNFOLDED_BYTES", 36 * 9 * 2 * 8 - 1)  # one byte short
    assert _spectral._zero_padding_products(op._spectral_layer()) is None
    monkeypatch.setattr(_spectral, "_UNFOLDED_BYTES", 36 * 9 * 2 * 8)
    assert _spectral._zero_padding_products(op._spectral_layer()) is not None


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", range(len(GEOMETRIES)))
@pytest.mark.parametrize("complex_", [False, True])
def test_lanczos_norm_equals_dense_svd(mode, case, complex_):
    k, m, pads, stride, dilation, groups = GEOMETRIES[case]
    kernel = random_kernel(np.random.default_rng(case), (*k, 2, 3 * groups), complex_)
    linear_map = layer_map(kernel, m, pads, mode, stride, dilation, groups)
    truth = np.linalg.norm(dense_layer(kernel, m, pads, mode, stride, dilation, groups), 2)
    value, converged, _ = _spectral.lanczos_norm(linear_map)
    assert converged
    assert abs(value - truth) <= 1e-10 * truth


def nearly_double_top_layer():
    """A zero-padded layer (576 columns) whose two largest singular values differ by 4.6e-6 (relative)."""
    kernel = np.random.default_rng(4).standard_normal((3, 3, 4, 4))
    return stridedop.ConvOperator(kernel, (12, 12, 4), padding="same")


@pytest.mark.parametrize("solver", ["tridiagonal", "dense"])
@pytest.mark.parametrize("capacity", [None, 16])
def test_lanczos_norm_on_a_larger_layer_with_and_without_scipy_and_restarts(solver, capacity, monkeypatch):
    if solver == "dense":
        monkeypatch.setattr(_spectral, "_tridiagonal_solver", lambda: None)
    if capacity is not None:  # about 46 steps on 16 vectors: thick restarts
        monkeypatch.setattr(_spectral, "_krylov_capacity", lambda size, itemsize, least: capacity)
    op = nearly_double_top_layer()
    reference = np.linalg.svd(op.to_matrix(), compute_uv=False)
    assert reference[0] - reference[1] <= 1e-5 * reference[0]
    value, converged, _ = _spectral.lanczos_norm(_spectral.linear_map_of(op))
    assert converged
    assert abs(value - reference[0]) <= 1e-10 * reference[0]
    assert abs(op.norm() - reference[0]) <= 1e-10 * reference[0]


def test_lanczos_norm_of_a_product_uses_the_smaller_gram():
    kernel = np.random.default_rng(2).standard_normal((3, 3, 4, 8))
    first = stridedop.ConvOperator(kernel, (7, 7, 4), padding="same")
    wide = stridedop.ConvOperator(np.random.default_rng(3).standard_normal((2, 2, 8, 2)), (7, 7, 8), stride=2)
    product = wide @ first  # 36 * 2 rows, 196 * 4 columns
    truth = np.linalg.norm(product.to_matrix(), 2)
    value, converged, _ = _spectral.lanczos_norm(_spectral.linear_map_of(product))
    assert converged
    assert abs(value - truth) <= 1e-10 * truth


def test_lanczos_norm_stops_unconverged_at_max_steps():
    op = nearly_double_top_layer()
    value, converged, _ = _spectral.lanczos_norm(_spectral.linear_map_of(op), max_steps=5)
    assert not converged
    assert value <= np.linalg.norm(op.to_matrix(), 2) * (1 + 1e-12)  # Ritz values are lower bounds


def test_top_value_error_bounds_a_nearly_double_top_eigenvalue():
    # G = diag(eigenvalues); the 'Krylov' basis mixes the top pair and leaks into the third
    eigenvalues = np.array([10.0, 10.0 - 1e-4, 9.0, 1.0])
    rng = np.random.default_rng(0)
    Q = np.linalg.qr(np.eye(4)[:, :3] + 1e-3 * rng.standard_normal((4, 3)))[0]
    G = np.diag(eigenvalues)
    values, vectors = np.linalg.eigh(Q.T @ G @ Q)
    values, vectors = values[::-1], vectors[:, ::-1]
    ritz = Q @ vectors
    residuals = np.linalg.norm(G @ ritz - ritz * values, axis=0)
    error = _spectral._top_value_error(values, residuals)
    assert 0 <= eigenvalues[0] - values[0] <= error < residuals[0]


@pytest.mark.parametrize("threshold", [0.0, 1e-12])
def test_lanczos_norm_with_frequent_partial_reorthogonalization(threshold, monkeypatch):
    # 0: every vector reorthogonalized; 1e-12: pairs of reorthogonalizations every few steps
    monkeypatch.setattr(_spectral, "_SEMI_ORTHOGONAL", threshold)
    op = nearly_double_top_layer()
    truth = np.linalg.norm(op.to_matrix(), 2)
    value, converged, _ = _spectral.lanczos_norm(_spectral.linear_map_of(op))
    assert converged
    assert abs(value - truth) <= 1e-10 * truth


def test_orthogonality_estimate_follows_plain_lanczos():
    # Lanczos without any reorthogonalization on a diagonal matrix with a well separated top:
    # orthogonality is lost as the top converges, and the estimate sees it coming.
    rng = np.random.default_rng(0)
    eigenvalues = np.concatenate([[10.0], np.linspace(0, 5, 199)])
    V = np.zeros((41, 200))
    T = np.zeros((42, 42))
    V[0] = rng.standard_normal(200)
    V[0] /= np.linalg.norm(V[0])
    omega, omega_prev = np.zeros(43), np.zeros(43)
    omega[0] = 1.0
    worst = 0.0
    for j in range(40):
        w = eigenvalues * V[j] - (T[j, j - 1] * V[j - 1] if j else 0)
        T[j, j] = V[j] @ w
        w -= T[j, j] * V[j]
        beta = np.linalg.norm(w)
        noise = np.finfo(float).eps * math.sqrt(200) * 10
        omega_prev, omega = omega, _spectral._orthogonality_estimate(omega, omega_prev, T, j, beta, noise)
        V[j + 1] = w / beta
        T[j + 1, j] = T[j, j + 1] = beta
        actual = np.abs(V[: j + 1] @ V[j + 1]).max()
        assert actual <= 100 * np.abs(omega[: j + 1]).max()  # the estimate is conservative
        worst = max(worst, actual)
    assert worst > _spectral._SEMI_ORTHOGONAL  # orthogonality really was lost
