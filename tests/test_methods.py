"""Every method and every internal strategy of `op @ x` and `op.H @ y` against the loop oracle."""

import itertools
import math
import pickle
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oracles import loop_operator, pads_for
from test_operator import random_like as random

import stridedop
from stridedop import _apply, _depthwise
from stridedop._geometry import Axis, flat_grid

# (spatial input, spatial kernel, C, F, geometry): each reaches one strategy of the direct method
# (tap GEMM needs >= 8 channels per group; few channels go channels-first; depthwise; strides take
# the strided im2col forward and the polyphase adjoint; circular kernels wider than the input fold).
CASES = {
    "tap GEMM": ((6, 5), (3, 2), 8, 4, {"padding": "same"}),
    "tap GEMM, groups, dilation": (
        (7, 6),
        (2, 2),
        16,
        8,
        {"groups": 2, "dilation": (2, 1), "padding": "full"},
    ),
    "few channels, scatter adjoint": ((6, 7), (3, 3), 2, 5, {"padding": [(2, 0), (1, 3)]}),
    "depthwise": ((6, 5), (3, 2), 3, 3, {"groups": 3, "padding": "same"}),
    "many channels im2col": ((5, 6), (2, 3), 6, 3, {}),
    "padding wider than the kernel": ((5, 6), (2, 3), 3, 4, {"padding": [(3, 0), (4, 5)]}),
    "padding along a one-tap axis": ((4, 6), (1, 3), 2, 3, {"padding": [(1, 2), (0, 0)]}),
    "stride": ((7, 8), (3, 2), 2, 3, {"stride": (2, 3), "padding": "same"}),
    "stride, few channels": ((8, 7), (3, 4), 2, 3, {"stride": (2, 3), "padding": "same"}),
    "stride and dilation": (
        (9, 7),
        (3, 2),
        4,
        4,
        {"stride": 2, "dilation": (3, 2), "groups": 2, "padding": 1},
    ),
    "stride, many channels": ((7, 6), (2, 3), 8, 8, {"stride": (3, 2), "dilation": 2, "padding": "full"}),
    "circular": ((5, 6), (3, 2), 2, 3, {"padding": "circular"}),
    "circular, wide kernel": ((3, 4), (4, 3), 2, 2, {"padding": "circular", "dilation": (5, 7)}),
    "circular, wide kernel, stride": (
        (4, 3),
        (3, 5),
        1,
        2,
        {"padding": "circular", "stride": 2, "dilation": 3},
    ),
    "1-D": ((9,), (4,), 8, 8, {"padding": "full", "dilation": 2}),
    "1-D, valid": ((11,), (3,), 8, 8, {"dilation": 2}),
    "1-D, groups": ((10,), (3,), 16, 6, {"groups": 2, "padding": "same"}),
    "valid, groups, dilation": ((8, 7), (3, 2), 4, 6, {"groups": 2, "dilation": (2, 1)}),
    "1x1": ((5, 4), (1, 1), 3, 4, {"padding": 1}),
    "1x1, images of two blocks of pixels": ((13, 11), (1, 1), 3, 4, {}),
    "3-D": ((4, 3, 5), (2, 2, 3), 2, 3, {"padding": "same", "stride": (1, 2, 1)}),
}


def make_case(name, dtype, layout, method, seed=0):
    m, k, channels, filters, options = CASES[name]
    rng = np.random.default_rng(seed)
    groups = options.get("groups", 1)
    kernel = rng.standard_normal((*k, channels // groups, filters))
    if np.dtype(dtype).kind == "c":
        kernel = kernel + 1j * rng.standard_normal(kernel.shape)
    kernel = kernel.astype(dtype)
    dense = loop_operator(kernel, m, **options)  # (*o, F, *m, C)
    n = len(m)
    if layout == "channels_first":
        dense = np.moveaxis(np.moveaxis(dense, n, 0), -1, n + 1)  # (F, *o, C, *m)
        kernel = kernel.transpose(n + 1, n, *range(n))
        op = stridedop.ConvOperator(kernel, (channels, *m), layout=layout, method=method, **options)
    else:
        op = stridedop.ConvOperator(kernel, (*m, channels), method=method, **options)
    return op, dense


@pytest.mark.parametrize("method", ["direct", "fft"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex128])
@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
@pytest.mark.parametrize("name", list(CASES))
def test_both_directions_equal_the_loop_oracle(name, layout, dtype, method):
    op, dense = make_case(name, dtype, layout, method)
    assert op.method == method
    n_in, n_out = len(op.input_shape), len(op.output_shape)
    x = random((2, *op.input_shape), dtype, 1)
    y = random((2, *op.output_shape), dtype, 2)
    expected = np.stack([np.tensordot(dense, v, n_in) for v in x])
    expected_adjoint = np.stack([np.tensordot(v, dense.conj(), n_out) for v in y])
    tolerance = 1e-4 if np.dtype(dtype) == np.float32 else 1e-10
    got, got_adjoint = op @ x, op.H @ y
    assert got.dtype == expected.dtype and got_adjoint.dtype == expected_adjoint.dtype
    assert got.flags.c_contiguous and got_adjoint.flags.c_contiguous  # whatever the strategy
    np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(got_adjoint, expected_adjoint, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
@pytest.mark.parametrize("name", ["tap GEMM", "few channels, scatter adjoint", "stride and dilation"])
def test_without_scipy_blas_the_numpy_products_agree(monkeypatch, name, layout):
    op, dense = make_case(name, np.float64, layout, "direct")
    monkeypatch.setattr(_apply, "_blas", lambda: None)
    x = random(op.input_shape, np.float64, 3)
    y = random(op.output_shape, np.float64, 4)
    np.testing.assert_allclose(op @ x, np.tensordot(dense, x, len(op.input_shape)), atol=1e-10)
    np.testing.assert_allclose(op.H @ y, np.tensordot(y, dense, len(op.output_shape)), atol=1e-10)


@pytest.mark.parametrize("ndim", [1, 2, 4, 6])
def test_moveaxis_is_numpys(ndim):
    array = np.empty(tuple(range(2, 2 + ndim)))
    for source, destination in itertools.product(range(-ndim, ndim), repeat=2):
        moved = _apply._moveaxis(array, source, destination)
        expected = np.moveaxis(array, source, destination)
        assert (moved.shape, moved.strides) == (expected.shape, expected.strides), (source, destination)
        assert np.shares_memory(moved, array)


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.bool_, np.float16])
def test_direct_serves_every_numeric_dtype(dtype):
    rng = np.random.default_rng(5)
    kernel = (rng.integers(0, 3, (3, 2, 8, 8)) > 0).astype(dtype)
    op = stridedop.ConvOperator(kernel, (5, 4, 8), padding="same")
    assert op.method == "direct"
    x = (rng.integers(0, 3, op.input_shape) > 0).astype(dtype)
    dense = loop_operator(kernel.astype(np.float64), (5, 4), padding="same")
    expected = np.tensordot(dense, x.astype(np.float64), 3)
    got = op @ x
    assert got.dtype == np.result_type(kernel, x)
    if dtype is np.bool_:
        np.testing.assert_array_equal(got, expected > 0)
    else:
        np.testing.assert_allclose(got.astype(np.float64), expected, rtol=1e-2)


def test_method_is_validated():
    kernel = np.ones((3, 3, 1, 1))
    with pytest.raises(ValueError, match=r"`method` must be one of 'auto', 'direct', 'fft', got 'FFT2'"):
        stridedop.ConvOperator(kernel, (8, 8, 1), method="FFT2")
    with pytest.raises(
        ValueError, match=r"`method`='fft' needs a floating or complex kernel, got dtype int64"
    ):
        stridedop.ConvOperator(kernel.astype(np.int64), (8, 8, 1), method="fft")


@pytest.mark.parametrize(
    ("kernel_shape", "input_shape", "expected"),
    [
        ((31, 31, 1, 1), (256, 256, 1), "fft"),  # a large single-channel kernel
        ((3, 3, 16, 16), (32, 32, 16), "direct"),  # a small multi-channel layer
    ],
)
def test_auto_picks_fft_for_large_kernels_only(kernel_shape, input_shape, expected):
    op = stridedop.ConvOperator(np.ones(kernel_shape), input_shape, padding="same")
    assert op.method == expected
    assert op.H.method == expected
    assert stridedop.ConvOperator(np.ones(kernel_shape, dtype=np.int32), input_shape).method == "direct"
    # The operator of a view names the algorithm in use too (it said "auto", and planned every call).
    W = stridedop.conv_view(np.ones(kernel_shape), input_shape, padding="same")
    loaded = pickle.loads(pickle.dumps(W))
    assert W.operator.method == W.operator.H.method == loaded.operator.method == expected


@pytest.mark.parametrize("method", ["direct", "fft"])
@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
@pytest.mark.parametrize("name", ["few channels, scatter adjoint", "tap GEMM", "stride"])
def test_empty_batches_give_empty_results(name, layout, method):
    op, _ = make_case(name, np.float64, layout, method)
    assert (op @ np.ones((0, *op.input_shape))).shape == (0, *op.output_shape)
    assert (op.H @ np.ones((0, 3, *op.output_shape))).shape == (0, 3, *op.input_shape)


def test_adjoint_memory_is_bounded_by_input_and_output():
    # Issue 10 item 13, scaled down: 256^2 x 4 channels, 7x7 (the scatter adjoint's case).
    rng = np.random.default_rng(6)
    op = stridedop.ConvOperator(rng.standard_normal((7, 7, 4, 4)), (256, 256, 4), padding="same")
    y = rng.standard_normal(op.output_shape)
    tracemalloc.start()
    op.H @ y
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 4 * 2 * y.nbytes + 8 * 2**20, peak


def test_circular_memory_does_not_grow_with_the_dilation():
    # Issue 10 item 14: a wide dilated kernel on 5 entries folds onto them.
    op = stridedop.ConvOperator(
        np.arange(1.0, 3.0)[:, None, None], (5, 1), padding="circular", dilation=10**8
    )
    x = np.arange(5.0)[:, None]
    tracemalloc.start()
    y = op @ x
    z = op.H @ y
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2**16, peak
    dense = loop_operator(np.arange(1.0, 3.0)[:, None, None], (5,), padding="circular", dilation=10**8)
    np.testing.assert_allclose(y, np.tensordot(dense, x, 2))
    np.testing.assert_allclose(z, np.tensordot(y, dense, 2))


@pytest.mark.parametrize("form", ["first", "last"])
@pytest.mark.parametrize("dtype", [np.float32, np.complex128])
@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
@pytest.mark.parametrize("name", ["tap GEMM", "tap GEMM, groups, dilation", "stride, many channels", "1-D"])
@pytest.mark.parametrize("gap", [False, True])
def test_tap_gemm_in_both_forms(monkeypatch, name, layout, dtype, form, gap):
    # The planner takes these forms for large layers only; force them on small ones.
    monkeypatch.setattr(_apply, "_tap_gemm_layout", lambda *args: form)
    if gap:  # every channel row "a multiple of 4 KiB": zeros after each
        monkeypatch.setattr(_apply, "_SET_BYTES", 1)
    test_both_directions_equal_the_loop_oracle(name, layout, dtype, "direct")


@pytest.mark.parametrize("form", ["first", "last", None])
@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
@pytest.mark.parametrize(
    "name", ["many channels im2col", "valid, groups, dilation", "1-D, valid", "circular"]
)
@pytest.mark.parametrize("gap", [False, True])
def test_correlation_adjoint_looking_back(monkeypatch, name, layout, form, gap):
    # The adjoint by correlation on the padded input's own grid (`_looking_back`), through every
    # product that reads past the batch (tap GEMMs in both forms, im2col in both layouts).
    monkeypatch.setattr(_apply, "_tap_gemm_layout", lambda *args: form)
    monkeypatch.setattr(_apply, "_SET_BYTES", 1 if gap else _apply._SET_BYTES)
    calls = force_adjoint(monkeypatch, "correlation")
    looked_back = []
    original = _apply._stride1_extended
    monkeypatch.setattr(
        _apply, "_stride1_extended", lambda *args: looked_back.append(args[3].shape) or original(*args)
    )
    test_both_directions_equal_the_loop_oracle(name, layout, np.float64, "direct")
    assert all(calls) and looked_back


@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
@pytest.mark.parametrize("name", ["tap GEMM", "tap GEMM, groups, dilation", "1-D"])
def test_images_too_large_for_channels_first_tap_gemms(monkeypatch, name, layout):
    # Past `_TAP_IMAGE_BYTES` a channels-first image takes the blocked im2col instead (1-D images
    # too large for `_row_taps`, which comes first).
    monkeypatch.setattr(_apply, "_TAP_IMAGE_BYTES", 1)
    monkeypatch.setattr(_apply, "_row_taps_suit", lambda *args: False)
    monkeypatch.setattr(_apply, "_tap_gemm_layout", lambda *args: "last")
    calls: list[str] = []
    for strategy in ("_tap_gemm_first", "_flat_im2col"):
        original = getattr(_apply, strategy)
        monkeypatch.setattr(
            _apply, strategy, lambda *args, f=original, s=strategy, **kw: calls.append(s) or f(*args, **kw)
        )
    test_both_directions_equal_the_loop_oracle(name, layout, np.float64, "direct")
    assert "_tap_gemm_first" not in calls
    assert ("_flat_im2col" in calls) == (layout == "channels_first")


def test_the_channels_first_tap_gemm_form_needs_an_image_that_fits():
    pytest.importorskip("scipy")
    fits = _apply._TAP_IMAGE_BYTES // (2 * 8 * 4)  # pixels of 8 + 8 float32 channels that fit
    assert _apply._tap_gemm_layout(np.dtype(np.float32), 8, 8, fits) == "first"
    assert _apply._tap_gemm_layout(np.dtype(np.float32), 8, 8, fits + 1) is None


SPARSE_CASES = [
    ((9,), (4,), 2, 2, {"padding": 5, "dilation": 2}),  # outputs that read no input at all
    ((7, 6), (3, 4), 2, 4, {"padding": [(4, 1), (0, 5)], "stride": (2, 3), "groups": 2}),
    ((8, 5), (3, 2), 1, 1, {"padding": "same", "dilation": (3, 2)}),
    ((5, 4), (7, 6), 1, 2, {"padding": "full"}),  # kernel wider than the input
    ((4, 3, 5), (2, 3, 2), 2, 3, {"padding": "same", "stride": (1, 2, 1)}),
    ((4, 5), (3, 7), 2, 2, {"padding": "circular", "dilation": (1, 2)}),  # wide circular kernel folds
]


@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
@pytest.mark.parametrize("case", SPARSE_CASES)
def test_sparse_from_index_arithmetic(case, layout):
    m, k, channels, filters, options = case
    groups = options.get("groups", 1)
    rng = np.random.default_rng(7)
    kernel = rng.standard_normal((*k, channels // groups, filters)) + 1  # no zero taps
    n = len(m)
    dense = loop_operator(kernel, m, **options)  # (*o, F, *m, C)
    if layout == "channels_first":
        dense = np.moveaxis(np.moveaxis(dense, n, 0), -1, n + 1)
        op = stridedop.ConvOperator(
            kernel.transpose(n + 1, n, *range(n)), (channels, *m), layout=layout, **options
        )
    else:
        op = stridedop.ConvOperator(kernel, (*m, channels), **options)
    matrix = op.to_sparse()
    expected = dense.reshape(matrix.shape)
    np.testing.assert_allclose(matrix.toarray(), expected, atol=1e-12)
    assert matrix.has_canonical_format
    if options.get("padding") != "circular":
        assert matrix.nnz == np.count_nonzero(expected)


NUMPY_MODES = {"zeros": "constant", "circular": "wrap", "reflect": "reflect", "replicate": "edge"}
MODE_CASES = [
    ((6, 5), (3, 2), 2, 3, {"padding": "same"}),
    ((7, 6), (2, 3), 4, 4, {"padding": [(2, 1), (0, 3)], "stride": (2, 1), "dilation": (1, 2), "groups": 2}),
    ((5,), (3,), 1, 2, {"padding": 4, "dilation": 3}),  # padding wider than the input
    ((4, 3), (2, 2), 8, 4, {"padding": [(9, 6), (1, 7)], "stride": 2}),  # wrap by several periods
    ((2,), (2,), 1, 2, {"padding": [(0, 3)], "dilation": 2}),  # circular: folds to a kernel as wide
]


def mode_dense(kernel, m, channels, options, mode):
    """The operator's matrix: the 'valid' loop oracle on the padded grid times np.pad's matrix."""
    n = len(m)
    k = kernel.shape[:n]
    stride, dilation = options.get("stride", 1), options.get("dilation", 1)
    strides = [stride] * n if isinstance(stride, int) else list(stride)
    dilations = [dilation] * n if isinstance(dilation, int) else list(dilation)
    pads = pads_for(options["padding"], m, k, strides, dilations)
    padded = [size + lo + hi for size, (lo, hi) in zip(m, pads)]
    size = int(np.prod(m)) * channels
    units = np.eye(size).reshape(size, *m, channels)
    columns = np.pad(units, [(0, 0), *pads, (0, 0)], mode=NUMPY_MODES[mode]).reshape(size, -1)
    valid = loop_operator(kernel, padded, stride=stride, dilation=dilation, groups=options.get("groups", 1))
    return valid.reshape(-1, columns.shape[1]) @ columns.T


@pytest.mark.parametrize("method", ["direct", "fft"])
@pytest.mark.parametrize("mode", list(NUMPY_MODES))
@pytest.mark.parametrize("case", MODE_CASES)
def test_every_padding_mode_with_every_method(case, mode, method):
    m, k, channels, filters, options = case
    groups = options.get("groups", 1)
    rng = np.random.default_rng(9)
    kernel = rng.standard_normal((*k, channels // groups, filters))
    op = stridedop.ConvOperator(kernel, (*m, channels), padding_mode=mode, method=method, **options)
    dense = check_both_directions(op, mode_dense(kernel, m, channels, options, mode), rng)
    np.testing.assert_allclose(op.to_sparse().toarray(), dense, atol=1e-12)


def check_both_directions(op, dense, rng):
    """`op @ x` and `op.H @ y` on a batch of two against the dense matrix; returns `dense`."""
    x = rng.standard_normal((2, *op.input_shape))
    y = rng.standard_normal((2, *op.output_shape))
    np.testing.assert_allclose((op @ x).reshape(2, -1), x.reshape(2, -1) @ dense.T, atol=1e-9)
    np.testing.assert_allclose((op.H @ y).reshape(2, -1), y.reshape(2, -1) @ dense, atol=1e-9)
    return dense


@pytest.mark.parametrize("name", ["few channels, scatter adjoint", "circular, wide kernel"])
def test_taps_moved_into_channels(monkeypatch, name):
    # The planner does this for few channels and wide kernels on large inputs only; force it.
    calls = []
    original = _apply._taps_as_channels

    def spy(*args):
        calls.append(args[0].shape)
        return original(*args)

    monkeypatch.setattr(_apply, "_taps_as_channels", spy)
    monkeypatch.setattr(
        _apply, "_tap_gemm_layout", lambda dtype, cg, fg, pixels: "first" if cg >= 5 else None
    )
    test_both_directions_equal_the_loop_oracle(name, "channels_last", np.float64, "direct")
    assert calls


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex128])
@pytest.mark.parametrize("name", ["1-D", "1-D, valid", "1-D, groups"])
def test_row_taps_over_blocks_of_images(monkeypatch, name, dtype):
    # Channels-first 1-D batches with 8 channels a group or more: one product per tap, group and
    # block of images. Blocks of two images, so that a batch of 3 ends on a short block.
    op, dense = make_case(name, dtype, "channels_first", "direct")
    fg = op.output_shape[0] // op._geometry.groups
    monkeypatch.setattr(_apply, "_BLOCK_BYTES", 2 * fg * op.output_shape[-1] * np.dtype(dtype).itemsize)
    calls = spy(monkeypatch, "_row_taps")
    x = random((3, *op.input_shape), dtype, 1)
    expected = np.stack([np.tensordot(dense, v, 2) for v in x])
    tolerance = 1e-4 if np.dtype(dtype) == np.float32 else 1e-10
    np.testing.assert_allclose(op @ x, expected, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(op @ x[0], expected[0], rtol=tolerance, atol=tolerance)
    assert len(calls) == 2


@pytest.mark.parametrize("method", ["direct", "fft"])
@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
@pytest.mark.parametrize("seed", range(12))
def test_zero_padding_wider_than_the_kernel(seed, layout, method):
    # Outputs whose windows lie in the padding alone are zero; the others are computed on the
    # input entries they read (`_trimmed`), whatever the padding's size.
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 3))
    k = tuple(int(v) for v in rng.integers(1, 4, n))
    dilation = tuple(int(v) for v in rng.integers(1, 3, n))
    m = tuple(int(v) for v in rng.integers(1, 7, n))
    extents = [(size - 1) * d + 1 for size, d in zip(k, dilation)]
    pads = [(int(rng.integers(0, 4 * e + 3)), int(rng.integers(0, 4 * e + 3))) for e in extents]
    pads = [(lo, max(hi, e - size - lo)) for (lo, hi), e, size in zip(pads, extents, m)]
    pads[0] = (pads[0][0] + extents[0], pads[0][1])  # at least one axis wider than the kernel
    stride = tuple(int(v) for v in rng.integers(1, 5, n))
    options = {"padding": pads, "stride": stride, "dilation": dilation, "groups": 2}
    kernel = rng.standard_normal((*k, 2, 4))
    dense = loop_operator(kernel, m, **options)  # (*o, F, *m, C)
    calls = []
    original = _apply._on_trimmed
    spied = lambda *args, **kw: calls.append(1) or original(*args, **kw)  # noqa: E731
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_apply, "_on_trimmed", spied)
        if layout == "channels_first":
            dense = np.moveaxis(np.moveaxis(dense, n, 0), -1, n + 1)
            op = stridedop.ConvOperator(
                kernel.transpose(n + 1, n, *range(n)), (4, *m), layout=layout, method=method, **options
            )
        else:
            op = stridedop.ConvOperator(kernel, (*m, 4), method=method, **options)
        x, y = rng.standard_normal((2, *op.input_shape)), rng.standard_normal((2, *op.output_shape))
        expected = np.stack([np.tensordot(dense, v, n + 1) for v in x])
        expected_adjoint = np.stack([np.tensordot(v, dense, n + 1) for v in y])
        np.testing.assert_allclose(op @ x, expected, atol=1e-10)
        np.testing.assert_allclose(op.H @ y, expected_adjoint, atol=1e-10)
    assert calls


def test_folded_circular_taps_add_up_in_the_kernel_dtype():
    # As the view's buffer does: uint8 taps 200 and 100 that land on one input entry give 44.
    kernel = np.array([200, 100], dtype=np.uint8)[:, None, None]
    op = stridedop.ConvOperator(kernel, (1, 1), padding="circular", dilation=3)
    x = np.ones((1, 1), dtype=np.uint8)
    dense = np.array(op.view)
    assert dense.ravel().tolist() == [44]
    np.testing.assert_array_equal(op @ x, np.tensordot(dense, x, 2))
    np.testing.assert_array_equal(op @ x.astype(np.int64), np.tensordot(dense, x.astype(np.int64), 2))


@st.composite
def geometries(draw):
    n = draw(st.integers(1, 3))
    m = tuple(draw(st.integers(1, 7)) for _ in range(n))
    k = tuple(draw(st.integers(1, 4)) for _ in range(n))
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    # Fewer channels on 3-D grids: the dense oracle (np.eye of the input size, then the loop) of a
    # 7x7x7 grid with 27 channels alone took a second.
    channels = groups * draw(st.integers(1, 9 if n < 3 else 3))
    filters = groups * draw(st.integers(1, 4))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(n))
    dilation = tuple(draw(st.integers(1, 3)) for _ in range(n))
    mode = draw(st.sampled_from(list(NUMPY_MODES)))
    extents = [(size - 1) * d + 1 for size, d in zip(k, dilation)]
    pads = []
    for size, extent in zip(m, extents):
        lo = draw(st.integers(0, extent + 2))
        hi = draw(st.integers(max(0, extent - size - lo), extent + 2))
        pads.append((lo, hi))
    options = {"padding": pads, "stride": stride, "dilation": dilation, "groups": groups}
    return m, k, channels, filters, options, mode


@settings(max_examples=60, deadline=None)
@given(case=geometries(), method=st.sampled_from(["auto", "direct", "fft"]), data=st.data())
def test_random_geometries_against_np_pad_and_the_loop_oracle(case, method, data):
    m, k, channels, filters, options, mode = case
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    kernel = rng.standard_normal((*k, channels // options["groups"], filters))
    op = stridedop.ConvOperator(kernel, (*m, channels), padding_mode=mode, method=method, **options)
    check_both_directions(op, mode_dense(kernel, m, channels, options, mode), rng)


@pytest.mark.parametrize("block_bytes", [None, 200])
@pytest.mark.parametrize("dtype", [np.float32, np.complex128, np.int16, np.uint8])
@pytest.mark.parametrize("mode", list(NUMPY_MODES))
def test_depthwise_taps_in_every_mode_and_dtype(monkeypatch, mode, dtype, block_bytes):
    # Channels-last depthwise layers take the tap multiply-adds in both directions; a small block
    # makes many blocks and a shorter last one. Integers wrap as the dtype does.
    calls, adjoint_calls = spy(monkeypatch, "_depthwise_taps"), spy(monkeypatch, "_depthwise_adjoint")
    if block_bytes is not None:
        monkeypatch.setattr(_depthwise, "_TILE_ENTRIES", block_bytes)
    m, k, channels = (7, 5), (3, 2), 3
    options = {"padding": [(2, 1), (0, 2)], "dilation": (1, 2), "groups": 3}
    rng = np.random.default_rng(11)

    def integers(shape):
        values = rng.integers(-3, 4, shape)
        return values + 1j * rng.integers(-3, 4, shape) if np.dtype(dtype).kind == "c" else values

    kernel = integers((*k, 1, channels)).astype(dtype)
    op = stridedop.ConvOperator(kernel, (*m, channels), padding_mode=mode, method="direct", **options)
    x, y = integers((2, *op.input_shape)).astype(dtype), integers((2, *op.output_shape)).astype(dtype)
    dense = mode_dense(kernel.astype(np.complex128), m, channels, options, mode)
    expected = x.astype(np.complex128).reshape(2, -1) @ dense.T
    expected_adjoint = y.astype(np.complex128).reshape(2, -1) @ dense.conj()
    if np.dtype(dtype).kind in "iu":  # exact in float64, then wrapped to the dtype
        expected = np.rint(expected.real).astype(np.int64).astype(dtype)
        expected_adjoint = np.rint(expected_adjoint.real).astype(np.int64).astype(dtype)
    got, got_adjoint = op @ x, op.H @ y
    assert got.dtype == got_adjoint.dtype == dtype
    np.testing.assert_allclose(got.reshape(2, -1), expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(got_adjoint.reshape(2, -1), expected_adjoint, rtol=1e-5, atol=1e-4)
    assert len(calls) == len(adjoint_calls) == 1


ADJOINT_STRATEGIES = ["tap gemm", "taps as channels", "scatter", "polyphase", "correlation"]


def force_adjoint(monkeypatch, strategy):
    """Make `_adjoint_onto_padded` run `strategy` wherever it applies (the planner's choice elsewhere).

    The tap GEMMs need no groups and BLAS dtypes; polyphase needs strides (its phases are stride-1
    problems, planned as usual); the correlation needs stride 1. Returns the calls of the strategy.
    """
    original = _apply._adjoint_strategy

    def forced(kernel, axes, groups, dtype, channels_first, nbytes):
        strided = any(axis.stride > 1 for axis in axes)
        blas = groups == 1 and np.dtype(dtype) in _apply.BLAS_DTYPES and _apply._blas() is not None
        applies = {
            "tap gemm": blas,
            "taps as channels": blas and axes[-1].stride == 1,
            "scatter": True,
            "polyphase": strided,
            "correlation": not strided,
        }[strategy]
        chosen = strategy if applies else original(kernel, axes, groups, dtype, channels_first, nbytes)
        calls.append(chosen == strategy)
        return chosen

    calls = []
    monkeypatch.setattr(_apply, "_adjoint_strategy", forced)
    return calls


@pytest.mark.parametrize("strategy", ADJOINT_STRATEGIES)
@pytest.mark.parametrize("dtype", [np.float32, np.complex128])
@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
@pytest.mark.parametrize("name", list(CASES))
def test_every_adjoint_strategy_equals_the_loop_oracle(monkeypatch, name, layout, dtype, strategy):
    calls = force_adjoint(monkeypatch, strategy)
    test_both_directions_equal_the_loop_oracle(name, layout, dtype, "direct")
    assert calls


@pytest.mark.parametrize("options", [{}, {"padding": "same"}, {"stride": 2, "padding": 1}])
@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
@pytest.mark.parametrize("strategy", ["tap gemm", "taps as channels"])
def test_tap_gemm_adjoints_over_many_blocks(monkeypatch, strategy, layout, options):
    # Images of several blocks of the smallest size: the blocks' order and where each GEMM
    # overwrites or adds matter only then (the table's layers have such images, CASES do not).
    calls = force_adjoint(monkeypatch, strategy)
    monkeypatch.setattr(_apply, "_TAP_BLOCK_BYTES", 1)
    m, k, channels, filters = (23, 19), (3, 2), 3, 4
    rng = np.random.default_rng(5)
    kernel = rng.standard_normal((*k, channels, filters))
    dense = loop_operator(kernel, m, **options)  # (*o, F, *m, C)
    op = stridedop.ConvOperator(kernel, (*m, channels), method="direct", **options)
    y = rng.standard_normal((2, *op.output_shape))
    expected = np.stack([np.tensordot(v, dense, 3) for v in y])
    if layout == "channels_first":
        kernel_first = kernel.transpose(3, 2, 0, 1)
        op = stridedop.ConvOperator(kernel_first, (channels, *m), layout=layout, method="direct", **options)
        y, expected = np.moveaxis(y, -1, 1), np.moveaxis(expected, -1, 1)
    np.testing.assert_allclose(op.H @ y, expected, rtol=1e-10, atol=1e-10)
    assert calls[-1] == (strategy == "tap gemm" or options.get("stride", 1) == 1)


@pytest.mark.parametrize(
    ("kernel_shape", "input_shape", "options", "layout", "expected"),
    [
        ((3, 3, 16, 32), (32, 32, 16), {"stride": 2}, "channels_first", "tap gemm"),
        ((3, 3, 16, 32), (32, 32, 16), {"stride": 2}, "channels_last", "tap gemm"),
        ((3, 3, 16, 16), (32, 32, 16), {}, "channels_last", "tap gemm"),
        ((3, 3, 16, 16), (32, 32, 16), {}, "channels_first", "tap gemm"),
        ((5, 16, 16), (1024, 16), {}, "channels_first", "correlation"),
        ((7, 7, 3, 32), (64, 64, 3), {"stride": 2, "padding": 3}, "channels_last", "scatter"),
        ((7, 7, 3, 16), (128, 128, 3), {}, "channels_first", "scatter"),
        ((3, 3, 3, 8, 8), (16, 16, 16, 8), {}, "channels_first", "correlation"),
        ((3, 3, 3, 8, 8), (16, 16, 16, 8), {}, "channels_last", "taps as channels"),
        ((7, 7, 3, 16), (128, 128, 3), {}, "channels_last", "taps as channels"),
        ((3, 3, 8, 32), (32, 32, 32), {"groups": 4}, "channels_last", "correlation"),
        ((1, 1, 64, 64), (32, 32, 64), {}, "channels_last", "correlation"),
        ((3, 3, 1, 4), (9, 9, 4), {"groups": 4, "stride": 2}, "channels_first", "polyphase"),
    ],
)
def test_the_planner_picks_each_adjoint_strategy(
    monkeypatch, kernel_shape, input_shape, options, layout, expected
):
    # The layers of benchmarks/layers.py that reach each strategy (float32).
    pytest.importorskip("scipy")  # the tap GEMMs accumulate through SciPy's BLAS
    kernel = np.ones(kernel_shape, np.float32)
    if layout == "channels_first":
        n = len(kernel_shape) - 2
        kernel, input_shape = kernel.transpose(n + 1, n, *range(n)), (input_shape[-1], *input_shape[:-1])
    op = stridedop.ConvOperator(kernel, input_shape, layout=layout, **options)
    chosen, original = [], _apply._adjoint_strategy
    monkeypatch.setattr(
        _apply, "_adjoint_strategy", lambda *args: chosen.append(original(*args)) or chosen[-1]
    )
    op.H @ np.zeros((1, *op.output_shape), np.float32)
    assert chosen[0] == expected


def spy(monkeypatch, name):
    """Replace `_apply.<name>` by a wrapper that records its calls; returns the list of calls."""
    calls, original = [], getattr(_apply, name)
    monkeypatch.setattr(_apply, name, lambda *args: calls.append(1) or original(*args))
    return calls


@pytest.mark.parametrize("strategy", ["scatter", "polyphase"])
@pytest.mark.parametrize("mode", list(NUMPY_MODES))
@pytest.mark.parametrize("dtype", [np.int16, np.uint8])
def test_strided_adjoints_with_integers_and_every_mode(monkeypatch, dtype, mode, strategy):
    force_adjoint(monkeypatch, strategy)
    rng = np.random.default_rng(12)
    m, options = (7, 6), {"padding": [(2, 1), (0, 3)], "stride": (2, 3)}  # kernel (3, 4)
    kernel = rng.integers(-3, 4, (3, 4, 2, 3))
    op = stridedop.ConvOperator(kernel.astype(dtype), (*m, 2), padding_mode=mode, method="direct", **options)
    x, y = rng.integers(-3, 4, (2, *op.input_shape)), rng.integers(-3, 4, (2, *op.output_shape))
    dense = mode_dense(kernel.astype(np.float64), m, 2, options, mode)
    expected = np.rint(x.reshape(2, -1) @ dense.T).astype(np.int64).astype(dtype)
    expected_adjoint = np.rint(y.reshape(2, -1) @ dense).astype(np.int64).astype(dtype)
    np.testing.assert_array_equal((op @ x.astype(dtype)).reshape(2, -1), expected)
    np.testing.assert_array_equal((op.H @ y.astype(dtype)).reshape(2, -1), expected_adjoint)


@settings(max_examples=50, deadline=None)
@given(
    case=geometries(),
    strategy=st.sampled_from(ADJOINT_STRATEGIES),
    layout=st.sampled_from(["channels_last", "channels_first"]),
    data=st.data(),
)
def test_random_geometries_with_every_adjoint_strategy(case, strategy, layout, data):
    m, k, channels, filters, options, mode = case
    with pytest.MonkeyPatch.context() as monkeypatch:
        force_adjoint(monkeypatch, strategy)
        rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
        kernel = rng.standard_normal((*k, channels // options["groups"], filters))
        dense = mode_dense(kernel, m, channels, options, mode)  # rows (*o, F), columns (*m, C)
        op = stridedop.ConvOperator(kernel, (*m, channels), padding_mode=mode, method="direct", **options)
        y = rng.standard_normal((2, *op.output_shape))
        expected = (y.reshape(2, -1) @ dense).reshape(2, *op.input_shape)
        if layout == "channels_first":
            n = len(m)
            first = kernel.transpose(n + 1, n, *range(n))
            op = stridedop.ConvOperator(
                first, (channels, *m), layout=layout, padding_mode=mode, method="direct", **options
            )
            y, expected = np.moveaxis(y, -1, 1), np.moveaxis(expected, -1, 1)
        np.testing.assert_allclose(op.H @ y, expected, atol=1e-9)


@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
@pytest.mark.parametrize("name", ["stride", "stride, many channels", "3-D"])
@pytest.mark.parametrize("images", [1, 2])
def test_strided_im2col_blocks_of_rows_and_of_images(monkeypatch, name, layout, images):
    # One image row per block, or whole images two to a block with a last block of one (batch 3).
    op, dense = make_case(name, np.float64, layout, "direct")
    calls = []
    original = _apply._strided_blocks

    def blocks(outputs, pixel_bytes):
        row_bytes = math.prod(outputs[1:]) * pixel_bytes
        monkeypatch.setattr(_apply, "_COLUMNS_BYTES", row_bytes * (outputs[0] if images > 1 else 1))
        monkeypatch.setattr(_apply, "_IMAGES_BYTES", row_bytes * outputs[0] * images)
        calls.append(original(outputs, pixel_bytes))
        return calls[-1]

    monkeypatch.setattr(_apply, "_strided_blocks", blocks)
    x = random((3, *op.input_shape), np.float64, 5)
    expected = np.stack([np.tensordot(dense, v, len(op.input_shape)) for v in x])
    np.testing.assert_allclose(op @ x, expected, atol=1e-10)
    assert calls and all(got == ((images, calls[0][1]) if images > 1 else (1, 1)) for got in calls)


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize(
    "m, k, stride, dilation, padding, groups",
    [
        ((9, 11), (3, 4), (2, 2), (1, 1), [(1, 2), (3, 0)], 1),
        ((8, 13), (2, 5), (1, 3), (2, 2), 0, 2),  # entries two apart in a phase: gcd(3, 2) = 1
        ((7, 12), (3, 3), (2, 4), (1, 2), [(0, 1), (2, 3)], 1),  # stride past the kernel: not split
        ((7, 12), (3, 5), (2, 4), (1, 2), [(0, 1), (2, 3)], 1),  # taps of even residues only
        ((14,), (4,), (2,), (2,), [(1, 1)], 1),  # one phase receives every tap
        ((5, 6, 9), (2, 2, 3), (1, 2, 3), (1, 1, 2), 1, 3),
        ((6, 5), (3, 5), (2, 2), (1, 1), [(1, 1), (0, 0)], 1),  # one output along the last axis
    ],
)
def test_channels_first_strided_windows_by_phases_of_the_last_axis(
    monkeypatch, m, k, stride, dilation, padding, groups, split
):
    # The input split by residues of its last axis (with or without padding), or read as it is.
    monkeypatch.setattr(_apply, "_SPLIT_TAPS", 0 if split else 10**9)
    calls = []
    original = _apply._split_last_axis
    monkeypatch.setattr(_apply, "_split_last_axis", lambda *a: calls.append(a[2]) or original(*a))
    channels, filters = 2 * groups, 3 * groups
    options = {"padding": padding, "stride": stride, "dilation": dilation, "groups": groups}
    rng = np.random.default_rng(3)
    kernel = rng.standard_normal((*k, channels // groups, filters))
    dense = mode_dense(kernel, m, channels, options, "zeros")  # rows (*o, F), columns (*m, C)
    n = len(m)
    first = kernel.transpose(n + 1, n, *range(n))
    op = stridedop.ConvOperator(first, (channels, *m), layout="channels_first", method="direct", **options)
    x = rng.standard_normal((3, *m, channels))
    expected = np.moveaxis((x.reshape(3, -1) @ dense.T).reshape(3, *op.output_shape[1:], filters), -1, 1)
    x = np.moveaxis(x, -1, 1)
    x.flags.writeable = False
    np.testing.assert_allclose(op @ x, expected, atol=1e-10)
    padded = any(np.ravel(padding))
    last = stride[-1] if op.output_shape[-1] > 1 else 1
    assert calls == [last if (split or padded) and last <= k[-1] else 1]  # (not past the kernel's width)


@settings(max_examples=200, deadline=None)
@given(
    batch=st.integers(1, 5),
    sizes=st.lists(
        st.tuples(st.integers(1, 9), st.integers(1, 4), st.integers(1, 3)),
        min_size=1,
        max_size=3,
    ),
    block=st.integers(1, 300),
)
def test_output_blocks_cover_every_output_once(batch, sizes, block):
    axes = tuple(Axis(m + (k - 1) * d, k, 1, d) for m, k, d in sizes)  # 'valid' on the padded grid
    padded = tuple(axis.size for axis in axes)
    steps, reach = flat_grid(padded, axes)
    length = batch * math.prod(padded) - reach
    stretches = _apply._output_blocks(batch, padded, axes, length, block)
    covered = np.zeros(batch * math.prod(padded), int)
    for start, stop in stretches:
        assert 0 <= start < stop <= length and stop - start <= max(block, 1)
        covered[start:stop] += 1
    outputs = [
        b * math.prod(padded) + sum(o * step for o, step in zip(index, steps))
        for b in range(batch)
        for index in itertools.product(*(range(axis.output) for axis in axes))
    ]
    assert covered.max() == 1 and covered[outputs].all()


@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
def test_tap_gemm_blocks_that_cut_images(monkeypatch, layout):
    # A 'valid' dilated layer on images longer than a block: stretches end before each image's
    # last rows, and long images are cut into several blocks.
    monkeypatch.setattr(_apply, "_tap_gemm_layout", lambda *args: "last")
    monkeypatch.setattr(_apply, "_TAP_BLOCK_BYTES", 1)  # blocks of 256 pixels
    rng = np.random.default_rng(14)
    kernel = rng.standard_normal((3, 3, 2, 3))
    options = {"dilation": 2}
    dense = loop_operator(kernel, (17, 19), **options)
    op = stridedop.ConvOperator(kernel, (17, 19, 2), method="direct", **options)
    x = rng.standard_normal((3, 17, 19, 2))
    if layout == "channels_first":
        op = stridedop.ConvOperator(kernel.transpose(3, 2, 0, 1), (2, 17, 19), layout=layout, **options)
        np.testing.assert_allclose(
            op @ np.moveaxis(x, -1, 1), np.moveaxis(np.stack([np.tensordot(dense, v, 3) for v in x]), -1, 1)
        )
    else:
        np.testing.assert_allclose(op @ x, np.stack([np.tensordot(dense, v, 3) for v in x]))


@pytest.mark.parametrize("axis", [1, 2])
@pytest.mark.parametrize(
    ("shape", "moved"), [((5, 7, 6, 3), (0, 3, 1, 2)), ((4, 3, 9, 2), (0, 2, 3, 1)), ((6, 11, 4), (0, 2, 1))]
)
def test_copy_tiled_equals_one_copy(monkeypatch, shape, moved, axis):
    # Tiles of one row along `axis` for every batch: the copy moves the channels, so it tiles.
    monkeypatch.setattr(_apply, "_TILE_BYTES", 1)
    source = np.arange(math.prod(shape), dtype=np.float32).reshape(shape).transpose(moved)
    target = np.zeros(source.shape, np.float32)
    writes = []
    original = np.ndarray.__setitem__

    class Recording(np.ndarray):
        def __setitem__(self, index, value):
            writes.append(index)
            original(self, index, value)

    _apply._copy_tiled(target.view(Recording), source, axis)
    np.testing.assert_array_equal(target, source)
    assert len(writes) == source.shape[axis]  # one tile per row


@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
def test_every_transposing_copy_in_tiles(monkeypatch, layout):
    # Tiles of one row even for batches of one image, through every case and adjoint strategy.
    monkeypatch.setattr(_apply, "_TILE_BYTES", 1)
    monkeypatch.setattr(_apply, "_TILE_BATCH", 1)
    tiled, original = [], _apply._copy_tiled

    def recording(target, source, axis):
        tiled.append(source.strides[-1] != source.itemsize and source.shape[axis] > 1)
        original(target, source, axis)

    monkeypatch.setattr(_apply, "_copy_tiled", recording)
    for strategy in ADJOINT_STRATEGIES:
        with monkeypatch.context() as forcing:
            force_adjoint(forcing, strategy)
            for name in CASES:
                test_both_directions_equal_the_loop_oracle(name, layout, np.float32, "direct")
    assert sum(tiled) >= 10
