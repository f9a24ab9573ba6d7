"""The depthwise products (`stridedop._depthwise`) in both directions against the loop oracle."""

import tracemalloc

import numpy as np
import pytest
from test_methods import NUMPY_MODES, mode_dense

import stridedop
from stridedop import _apply, _depthwise

# (spatial input, spatial kernel, channels, options): the axis with a one-entry tap shift (the last
# one, dilation 1) splits into even and odd taps for 2 taps or more; other axes and dilations do not.
GEOMETRIES = {
    "2-D": ((6, 7), (3, 3), 3, {"padding": "same"}),
    "2-D, two taps along the last axis": ((5, 6), (3, 2), 4, {"padding": [(2, 0), (1, 1)]}),
    "2-D, four taps, full": ((4, 6), (2, 4), 2, {"padding": "full"}),
    "2-D, one tap along the last axis": ((6, 4), (3, 1), 3, {"padding": 1}),
    "2-D, dilation": ((8, 9), (3, 3), 2, {"padding": "same", "dilation": (2, 3)}),
    "2-D, dilation 1 then 2": ((7, 8), (2, 3), 3, {"dilation": (1, 2)}),
    "2-D, long rows": ((3, 44), (2, 3), 2, {"padding": "same"}),
    "1-D": ((11,), (3,), 5, {"padding": 2}),
    "1-D, dilation": ((12,), (4,), 2, {"padding": "same", "dilation": 2}),
    "3-D": ((4, 5, 6), (2, 3, 3), 2, {"padding": "same"}),
    "3-D, last axis one wide": ((5, 4, 1), (3, 2, 1), 2, {"padding": [(1, 1), (0, 1), (0, 0)]}),
}
LAYOUTS = ["channels_last", "channels_first"]


@pytest.fixture(autouse=True)
def rows_for_every_size(monkeypatch):
    """The planner leaves channels-first images with short rows to im2col; these tests want the rows."""
    monkeypatch.setattr(_depthwise, "_SHORT_ROWS", 1)


def operator(m, k, channels, options, layout, dtype, rng, mode="zeros", method="direct"):
    """A depthwise operator with small-integer taps (exact in every dtype) and its dense matrix."""
    kernel = rng.integers(-3, 4, (*k, 1, channels))
    if np.dtype(dtype).kind == "c":
        kernel = kernel + 1j * rng.integers(-3, 4, kernel.shape)
    kernel = kernel.astype(dtype)
    options = {"groups": channels, **options}
    dense = mode_dense(kernel.astype(np.complex128), m, channels, {"padding": "valid", **options}, mode)
    n = len(m)
    if layout == "channels_first":
        kernel = kernel.transpose(n + 1, n, *range(n))
        shape = (channels, *m)
    else:
        shape = (*m, channels)
    op = stridedop.ConvOperator(kernel, shape, layout=layout, padding_mode=mode, method=method, **options)
    return op, dense


def values(shape, dtype, rng):
    data = rng.integers(-3, 4, shape)
    return (data + 1j * rng.integers(-3, 4, shape) if np.dtype(dtype).kind == "c" else data).astype(dtype)


def to_last(array, layout, n):
    """A batch ``(B, C, *s)`` moved to ``(B, *s, C)``, or as it is for channels-last."""
    return np.moveaxis(array, 1, -1) if layout == "channels_first" else array


def check(op, dense, layout, dtype, rng, batch=2):
    """Both directions on a batch against the dense matrix; integers wrap as the dtype does."""
    n = len(op.input_shape) - 1
    x, y = values((batch, *op.input_shape), dtype, rng), values((batch, *op.output_shape), dtype, rng)
    flat_x = to_last(x, layout, n).astype(np.complex128).reshape(batch, -1)
    flat_y = to_last(y, layout, n).astype(np.complex128).reshape(batch, -1)
    expected, expected_adjoint = flat_x @ dense.T, flat_y @ dense.conj()
    if np.dtype(dtype).kind in "iu":
        expected = np.rint(expected.real).astype(np.int64).astype(dtype)
        expected_adjoint = np.rint(expected_adjoint.real).astype(np.int64).astype(dtype)
    got, got_adjoint = op @ x, op.H @ y
    assert got.dtype == got_adjoint.dtype == np.dtype(dtype)
    assert got.flags.c_contiguous and got_adjoint.flags.c_contiguous
    half = np.dtype(dtype) == np.float16
    tolerance = {"rtol": 1e-2, "atol": 1e-1} if half else {"rtol": 1e-6, "atol": 1e-5}
    got, got_adjoint = to_last(got, layout, n), to_last(got_adjoint, layout, n)
    np.testing.assert_allclose(got.reshape(batch, -1), expected, **tolerance)
    np.testing.assert_allclose(got_adjoint.reshape(batch, -1), expected_adjoint, **tolerance)


def spies(monkeypatch):
    """Record the calls of the depthwise forward and adjoint the planner makes."""
    calls = {"forward": [], "adjoint": []}
    for name, key in (("_depthwise_taps", "forward"), ("_depthwise_adjoint", "adjoint")):
        original = getattr(_apply, name)

        def recorder(*args, original=original, key=key):
            calls[key].append(args[-1])  # the layout flag
            return original(*args)

        monkeypatch.setattr(_apply, name, recorder)
    return calls


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex128, np.int16, np.uint8, np.float16])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_both_directions_equal_the_loop_oracle(monkeypatch, name, layout, dtype):
    calls = spies(monkeypatch)
    m, k, channels, options = GEOMETRIES[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    op, dense = operator(m, k, channels, options, layout, dtype, rng)
    check(op, dense, layout, dtype, rng)
    first = layout == "channels_first"
    assert calls == {"forward": [first], "adjoint": [first]}


@pytest.mark.parametrize("dtype", [np.float64, np.int32])  # channels-first: row GEMMs, einsum
@pytest.mark.parametrize("block_bytes", [1, 7, 100])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", ["2-D", "2-D, four taps, full", "2-D, long rows", "3-D"])
def test_small_blocks_and_a_shorter_last_one(monkeypatch, name, layout, block_bytes, dtype):
    # One row (channels-first) or one pixel (channels-last) per block, or a few with a last short one.
    monkeypatch.setattr(_depthwise, "_BLOCK_BYTES", block_bytes * 2**10)
    monkeypatch.setattr(_depthwise, "_TILE_ENTRIES", block_bytes)
    m, k, channels, options = GEOMETRIES[name]
    rng = np.random.default_rng(3)
    op, dense = operator(m, k, channels, options, layout, dtype, rng)
    check(op, dense, layout, dtype, rng, batch=3)


@pytest.mark.parametrize("dtype", [np.float32, np.complex128])
@pytest.mark.parametrize("rows", [1, 2, 6, 100])
@pytest.mark.parametrize("name", ["2-D", "2-D, four taps, full", "2-D, dilation", "1-D", "3-D"])
def test_row_gemms_in_blocks_of_rows(monkeypatch, name, rows, dtype):
    # Channels-first BLAS dtypes, 3 images: blocks of one row, of channels of one image with a
    # shorter last one (3 or 5 channels), of two images with a shorter last one, or the batch.
    original = _depthwise._block
    monkeypatch.setattr(_depthwise, "_block", lambda batch, channels, _: original(batch, channels, rows))
    used = []
    gemms = _depthwise._by_row_gemms
    monkeypatch.setattr(_depthwise, "_by_row_gemms", lambda *args: used.append(1) or gemms(*args))
    m, k, channels, options = GEOMETRIES[name]
    rng = np.random.default_rng(10)
    op, dense = operator(m, k, channels, options, "channels_first", dtype, rng)
    check(op, dense, "channels_first", dtype, rng, batch=3)
    assert len(used) == 2


@pytest.mark.parametrize(
    ("m", "k", "forward_axis", "adjoint_axis"),
    [
        ((6, 9), (1, 3), 1, 1),
        ((9, 6), (3, 1), 0, 0),
        ((6, 7), (3, 2), 0, 1),
        ((4, 5, 6), (1, 3, 3), 1, 2),
        ((5, 4, 6), (3, 1, 1), 0, 0),
        ((5, 4, 3), (2, 3, 1), 0, 1),
        ((4, 5), (1, 1), 1, 1),
    ],
)
def test_row_gemms_take_an_axis_of_several_taps(monkeypatch, m, k, forward_axis, adjoint_axis):
    # The forward takes the first axis with more than one tap, the adjoint the last (one tap would
    # make each GEMM a product of inner dimension 1, which NumPy runs without BLAS).
    axes = []
    gemms = _depthwise._by_row_gemms
    monkeypatch.setattr(_depthwise, "_by_row_gemms", lambda *args: axes.append(args[-1]) or gemms(*args))
    rng = np.random.default_rng(12)
    op, dense = operator(m, k, 3, {"padding": "same"}, "channels_first", np.float64, rng)
    check(op, dense, "channels_first", np.float64, rng)
    assert axes == [forward_axis, adjoint_axis]


@pytest.mark.parametrize("mode", list(NUMPY_MODES))
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_padding_mode(monkeypatch, mode, layout):
    calls = spies(monkeypatch)
    rng = np.random.default_rng(4)
    options = {"padding": [(2, 1), (1, 2)], "dilation": (1, 2)}
    op, dense = operator((6, 7), (3, 3), 3, options, layout, np.float64, rng, mode=mode)
    check(op, dense, layout, np.float64, rng)
    assert len(calls["forward"]) == len(calls["adjoint"]) == 1


@pytest.mark.parametrize("layout", LAYOUTS)
def test_strides_reach_the_depthwise_adjoint_phase_by_phase(monkeypatch, layout):
    # With strides the forward is the strided im2col; the polyphase adjoint's stride-1 pieces are
    # depthwise ones.
    calls = spies(monkeypatch)
    rng = np.random.default_rng(5)
    op, dense = operator((7, 8), (3, 3), 3, {"padding": "same", "stride": 2}, layout, np.float64, rng)
    check(op, dense, layout, np.float64, rng)
    assert calls["adjoint"] and not calls["forward"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_planner_takes_it_on_the_benchmark_layer(monkeypatch, layout):
    # benchmarks/layers.py "depthwise 32": 8 x 32 x 32, 32 channels, 3x3, float32.
    calls = spies(monkeypatch)
    rng = np.random.default_rng(6)
    kernel = rng.standard_normal((3, 3, 1, 32)).astype(np.float32)
    if layout == "channels_first":
        op = stridedop.ConvOperator(kernel.transpose(3, 2, 0, 1), (32, 32, 32), layout=layout, groups=32)
    else:
        op = stridedop.ConvOperator(kernel, (32, 32, 32), groups=32)
    assert op.method == op.H.method == "direct"
    x = rng.standard_normal((8, *op.input_shape)).astype(np.float32)
    y = op @ x
    adjoint = op.H @ y
    first = layout == "channels_first"
    assert calls == {"forward": [first], "adjoint": [first]}
    # <A x, y> == <x, A^H y> in float64 from the float32 results.
    z = rng.standard_normal(y.shape).astype(np.float32)
    lhs = np.vdot(y.astype(np.float64), z)
    rhs = np.vdot(x.astype(np.float64), (op.H @ z).astype(np.float64))
    assert abs(lhs - rhs) <= 1e-4 * abs(lhs)
    assert adjoint.shape == x.shape


@pytest.mark.parametrize("layout", LAYOUTS)
def test_against_pytorch(layout):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    kernel_cf = rng.standard_normal((6, 1, 3, 2))  # (F, C // groups, *k)
    x = rng.standard_normal((2, 6, 9, 8))
    options = {"padding": (1, 2), "dilation": (2, 1), "groups": 6}
    expected = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(kernel_cf), **options)
    y = rng.standard_normal(tuple(expected.shape))
    expected_adjoint = torch.nn.functional.conv_transpose2d(
        torch.from_numpy(y), torch.from_numpy(kernel_cf), **options
    )
    geometry = {"padding": [(1, 1), (2, 2)], "dilation": (2, 1), "groups": 6}
    if layout == "channels_first":
        op = stridedop.ConvOperator(kernel_cf, (6, 9, 8), layout=layout, **geometry)
        got, got_adjoint = op @ x, op.H @ y
    else:
        kernel = kernel_cf.transpose(2, 3, 1, 0)
        op = stridedop.ConvOperator(kernel, (9, 8, 6), **geometry)
        got = np.moveaxis(op @ np.moveaxis(x, 1, -1), -1, 1)
        got_adjoint = np.moveaxis(op.H @ np.moveaxis(y, 1, -1), -1, 1)
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-12)
    np.testing.assert_allclose(got_adjoint, expected_adjoint.numpy(), atol=1e-12)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_memory_stays_within_a_few_inputs_and_outputs(layout):
    rng = np.random.default_rng(8)
    kernel = rng.standard_normal((5, 5, 1, 8))
    shape = (8, 256, 256) if layout == "channels_first" else (256, 256, 8)
    if layout == "channels_first":
        kernel = kernel.transpose(3, 2, 0, 1)
    op = stridedop.ConvOperator(kernel, shape, layout=layout, groups=8, padding="same")
    x = rng.standard_normal(op.input_shape)
    y = rng.standard_normal(op.output_shape)
    for function, data in ((op.apply, x), (op.H.apply, y)):
        tracemalloc.start()
        function(data)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < 3 * (x.nbytes + y.nbytes) + 4 * 2**20, peak


@pytest.mark.parametrize(
    ("size", "dtype", "rows"), [(12, np.int32, False), (32, np.int32, True), (4, np.float64, True)]
)
def test_channels_first_short_rows_go_to_im2col(monkeypatch, size, dtype, rows):
    # 3x3 'valid' on size^2: (size - 2) * (size + 1) outputs per row on the grid, against 384, for
    # the einsum products; the BLAS dtypes' row GEMMs take every size.
    monkeypatch.setattr(_depthwise, "_SHORT_ROWS", 384)
    calls = spies(monkeypatch)
    rng = np.random.default_rng(9)
    op, dense = operator((size, size), (3, 3), 2, {}, "channels_first", dtype, rng)
    check(op, dense, "channels_first", dtype, rng, batch=1)
    assert calls == ({"forward": [True], "adjoint": [True]} if rows else {"forward": [], "adjoint": []})
