import math

import numpy as np
import pytest
from helpers import (
    NUMERIC_DTYPES,
    byte_bounds,
    to_channels_first_kernel,
    to_channels_first_operator,
)
from oracles import direct_convolution, index_operator, loop_operator

import stridedop


def buffer_under(W):
    """The memory a `conv_view` reads: its base, an immutable `bytes`, seen as an array of bytes."""
    assert type(W.base) is bytes
    return np.frombuffer(W.base, np.uint8)


# Sizes include 1 and sizes that differ on every axis, so that swapped axes cannot hide.
SHAPES = [
    ((1,), (1,), 1, 1),
    ((3,), (7,), 2, 3),
    ((2, 3), (5, 4), 3, 2),
    ((1, 2), (1, 6), 1, 4),
    ((2, 1), (4, 1), 2, 1),
    ((3, 3), (3, 3), 2, 2),
    ((2, 1, 3), (3, 2, 5), 2, 3),
    ((1, 1, 1), (1, 1, 1), 1, 1),
    ((2, 2, 2, 2), (3, 2, 4, 3), 1, 2),
]


@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
@pytest.mark.parametrize(("k", "m", "channels", "filters"), SHAPES)
def test_view_equals_loop_oracle(k, m, channels, filters, layout):
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((*k, channels, filters))
    expected = loop_operator(kernel, m)
    if layout == "channels_last":
        W = stridedop.conv_view(kernel, (*m, channels))
    else:
        W = stridedop.conv_view(to_channels_first_kernel(kernel), (channels, *m), layout="channels_first")
        expected = to_channels_first_operator(expected, len(k))
    assert W.shape == expected.shape
    np.testing.assert_array_equal(W, expected)


@pytest.mark.parametrize(("k", "m", "channels", "filters"), SHAPES)
def test_view_equals_advanced_index_oracle(k, m, channels, filters):
    kernel = np.random.default_rng(1).integers(-9, 9, (*k, channels, filters))
    np.testing.assert_array_equal(stridedop.conv_view(kernel, m), index_operator(kernel, m))


def test_worked_example_matches_direct_convolution():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((5, 5, 3))
    K = rng.standard_normal((2, 2, 3, 2))
    W = stridedop.conv_view(K, A.shape)
    assert W.shape == (4, 4, 2, 5, 5, 3)
    np.testing.assert_allclose(np.tensordot(W, A, 3), direct_convolution(A, K), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("k", "m", "channels", "filters"), SHAPES[1:7])
def test_tensordot_matches_scipy_correlate(k, m, channels, filters):
    signal = pytest.importorskip("scipy.signal")
    rng = np.random.default_rng(2)
    kernel = rng.standard_normal((*k, channels, filters))
    x = rng.standard_normal((*m, channels))
    expected = np.stack(
        [
            sum(signal.correlate(x[..., c], kernel[..., c, f], mode="valid") for c in range(channels))
            for f in range(filters)
        ],
        axis=-1,
    )
    W = stridedop.conv_view(kernel, x.shape)
    np.testing.assert_allclose(np.tensordot(W, x, x.ndim), expected, rtol=1e-10, atol=1e-10)


def test_view_is_read_only():
    W = stridedop.conv_view(np.ones((2, 2, 1, 1)), (4, 4, 1))
    assert not W.flags.writeable
    assert not W.flags.owndata
    with pytest.raises(ValueError, match="read-only"):
        W[0, 0, 0, 0, 0, 0] = 5
    with pytest.raises(ValueError, match="WRITEABLE"):
        W.setflags(write=True)
    # The buffer under the view cannot be made writable either.
    with pytest.raises(ValueError, match="WRITEABLE"):
        buffer_under(W).setflags(write=True)


def test_slices_and_transposes_stay_read_only():
    W = stridedop.conv_view(np.ones((2, 2, 1, 3)), (4, 4, 1))
    for derived in (W[1:], W.T, W[..., 0], W[:, :, ::2]):
        with pytest.raises(ValueError):
            derived.setflags(write=True)


def test_later_changes_to_the_kernel_do_not_show():
    kernel = np.ones((2, 2, 1, 1))
    W = stridedop.conv_view(kernel, (3, 3, 1))
    before = np.array(W)
    kernel[...] = 7
    np.testing.assert_array_equal(W, before)


DTYPES = NUMERIC_DTYPES


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_numeric_dtype_is_kept(dtype):
    rng = np.random.default_rng(3)
    kernel = (rng.integers(0, 3, (2, 3, 2, 2)) + (1j if np.dtype(dtype).kind == "c" else 0)).astype(dtype)
    W = stridedop.conv_view(kernel, (4, 5, 2))
    assert W.dtype == kernel.dtype
    np.testing.assert_array_equal(W, loop_operator(kernel, (4, 5)))


@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
@pytest.mark.parametrize("padding", ["valid", "same", "circular"])
def test_one_geometry_with_kernels_of_every_itemsize_in_turn(layout, padding):
    # The buffer plan holds byte strides and is cached per itemsize: alternating itemsizes on one
    # geometry (and coming back to the first) must give each kernel its own strides.
    kernel = np.arange(1, 2 * 3 * 2 * 4 + 1).reshape(2, 3, 2, 4)
    expected = loop_operator(kernel, (4, 5), padding=padding, stride=(1, 2), groups=2)
    for dtype in (np.float64, np.int8, np.complex128, np.float32, np.int16, np.float64):
        given = kernel.astype(dtype)
        if layout == "channels_first":
            given = to_channels_first_kernel(given)
        W = stridedop.conv_view(given, (4, 5), padding=padding, stride=(1, 2), groups=2, layout=layout)
        assert W.dtype == dtype and W.strides[-1] % np.dtype(dtype).itemsize == 0
        low, high = byte_bounds(W)
        buffer_low, buffer_high = byte_bounds(buffer_under(W))
        assert buffer_low <= low and high <= buffer_high
        dense = expected if layout == "channels_last" else to_channels_first_operator(expected, 2)
        np.testing.assert_array_equal(W, dense.astype(dtype))


def test_non_finite_values_are_carried_exactly():
    kernel = np.array([np.nan, np.inf, -np.inf, -0.0]).reshape(4, 1, 1)
    W = stridedop.conv_view(kernel, (5, 1))
    dense = np.array(W)
    np.testing.assert_array_equal(dense[:, 0, 0:4, 0].diagonal(), [np.nan, np.nan])
    assert np.isnan(dense[0, 0, 0, 0]) and dense[0, 0, 1, 0] == np.inf and dense[0, 0, 2, 0] == -np.inf
    assert np.signbit(dense[0, 0, 3, 0])
    # Everything that is not a kernel entry is an exact (positive) zero.
    mask = np.zeros(dense.shape, bool)
    for o in range(2):
        mask[o, 0, o : o + 4, 0] = True
    assert np.all(dense[~mask] == 0) and not np.any(np.signbit(dense[~mask]))


@pytest.mark.parametrize(
    "make",
    [
        lambda a: np.asfortranarray(a),
        lambda a: a[::-1, :, ::-1, :].copy()[::-1, :, ::-1, :],
        lambda a: np.broadcast_to(a[:1], a.shape),
        lambda a: np.repeat(a, 2, axis=3)[..., ::2],
    ],
    ids=["fortran", "negative-strides", "broadcast", "step-slice"],
)
def test_non_contiguous_kernels(make):
    kernel = make(np.random.default_rng(4).standard_normal((3, 2, 2, 3)))
    np.testing.assert_array_equal(
        stridedop.conv_view(kernel, (5, 4, 2)), loop_operator(np.array(kernel), (5, 4))
    )


def test_input_shape_may_omit_the_channels():
    kernel = np.ones((2, 3, 4, 5))
    np.testing.assert_array_equal(stridedop.conv_view(kernel, (6, 7)), stridedop.conv_view(kernel, (6, 7, 4)))
    cf = to_channels_first_kernel(kernel)
    assert stridedop.conv_view(cf, (6, 7), layout="channels_first").shape == (5, 5, 5, 4, 6, 7)


def test_footprint_is_about_f_plus_one_images():
    kernel = np.ones((3, 3, 16, 16))
    W = stridedop.conv_view(kernel, (32, 32, 16))
    low, high = byte_bounds(W)
    bound = 8 * 16 * (16 + 1) * 32 * 32
    assert high - low <= bound
    assert buffer_under(W).nbytes <= bound
    assert W.nbytes == 30 * 30 * 16 * 32 * 32 * 16 * 8


def test_view_stays_inside_its_buffer():
    W = stridedop.conv_view(np.ones((2, 3, 2, 3)), (4, 6, 2), padding="full", stride=(2, 1))
    low, high = byte_bounds(W)
    buffer_low, buffer_high = byte_bounds(buffer_under(W))
    assert buffer_low <= low and high <= buffer_high


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kernel_shape", "input_shape", "kwargs", "error", "match"),
    [
        ((3, 3), (5, 5), {}, ValueError, r"`kernel` must have at least 3 axes.*\(3, 3\)"),
        ((0, 3, 1, 1), (5, 5), {}, ValueError, r"`kernel` must not be empty"),
        ((3, 3, 2, 1), (5, 5, 3), {}, ValueError, r"`input_shape` \(5, 5, 3\) has 3 channels.*C = 2"),
        (
            (3, 3, 2, 1),
            (5, 5, 5, 2),
            {},
            ValueError,
            r"`input_shape` must have 3 entries.*got \(5, 5, 5, 2\)",
        ),
        (
            (3, 3, 1, 1),
            (2, 5, 1),
            {},
            ValueError,
            r"larger than the padded input \(2 \+ 0 \+ 0\) along spatial axis 0",
        ),
        ((3, 3, 1, 1), (5, 5, 1), {"dilation": 3}, ValueError, r"effective size 7"),
        ((1, 1, 1), (0, 1), {}, ValueError, r"`input_shape` sizes must be >= 1, got \(0, 1\)"),
        ((1, 1, 1), (-3, 1), {}, ValueError, r"`input_shape` sizes must be >= 1"),
        (
            (1, 1, 1),
            (2.5, 1),
            {},
            ValueError,
            r"`input_shape` must be an integer, got the fractional value 2.5",
        ),
        (
            (1, 1, 1),
            "5x1",
            {},
            ValueError,
            r"`input_shape` must be a sequence of integers, got the string '5x1'",
        ),
        ((1, 1, 1), (True, 1), {}, ValueError, r"`input_shape` must be an integer, got the bool True"),
        (
            (1, 1, 1),
            (4, 1),
            {"padding": "sam"},
            ValueError,
            r"`padding` must be one of 'valid', 'same'.*got 'sam'",
        ),
        (
            (1, 1, 1),
            (4, 1),
            {"layout": "NCHW"},
            ValueError,
            r"`layout` must be 'channels_last' or 'channels_first', got 'NCHW'",
        ),
        ((1, 1, 1), (4, 1), {"padding": -1}, ValueError, r"`padding` must be non-negative, got -1"),
        (
            (1, 1, 1, 1),
            (4, 4, 1),
            {"padding": (1, 2, 3)},
            ValueError,
            r"`padding` must give one entry per spatial axis \(2\), got 3",
        ),
        (
            (1, 1, 1, 1),
            (4, 4, 1),
            {"padding": [(1, 2, 3), (0, 0)]},
            ValueError,
            r"`padding` pairs must have two entries",
        ),
        (
            (1, 1, 1, 1),
            (4, 4, 1),
            {"stride": (1, 2, 3)},
            ValueError,
            r"`stride` must be one integer or 2 integers.*got 3",
        ),
        ((1, 1, 1), (4, 1), {"stride": 0}, ValueError, r"`stride` must be >= 1 on every axis, got 0"),
        (
            (1, 1, 1),
            (4, 1),
            {"stride": 1.5},
            ValueError,
            r"`stride` must be an integer, got the fractional value 1.5",
        ),
        ((1, 1, 1), (4, 1), {"dilation": 0}, ValueError, r"`dilation` must be >= 1 on every axis, got 0"),
        (
            (1, 1, 1),
            (4, 1),
            {"dilation": 2.0},
            ValueError,
            r"`dilation` must be an integer, got the fractional value 2.0",
        ),
        ((1, 2, 3), (4, 4), {"groups": 2}, ValueError, r"`groups`=2 must divide the number of filters F=3"),
        (
            (1, 2, 4),
            (4, 5),
            {"groups": 2},
            ValueError,
            r"`input_shape` \(4, 5\) has 5 channels.*C = 4 = 2 x groups=2",
        ),
        ((1, 1, 1), (4, 1), {"groups": 0}, ValueError, r"`groups` must be >= 1, got 0"),
    ],
)
def test_bad_arguments_are_refused_with_a_message(kernel_shape, input_shape, kwargs, error, match):
    with pytest.raises(error, match=match):
        stridedop.conv_view(np.ones(kernel_shape), input_shape, **kwargs)


@pytest.mark.parametrize(
    "kernel",
    [
        np.array([["a"]], dtype=object).reshape(1, 1, 1),
        np.array(["x"]).reshape(1, 1, 1),
        np.array([b"x"]).reshape(1, 1, 1),
        np.array(["2020-01-01"], dtype="datetime64[D]").reshape(1, 1, 1),
        np.array([1], dtype="timedelta64[s]").reshape(1, 1, 1),
        np.zeros((1, 1, 1), dtype="V8"),
    ],
    ids=["object", "str", "bytes", "datetime", "timedelta", "void"],
)
def test_non_numeric_kernels_raise_type_error(kernel):
    with pytest.raises(TypeError, match=r"`kernel` has dtype .*not numeric; expected a bool, integer"):
        stridedop.conv_view(kernel, (3, 1))


@pytest.mark.parametrize("kwargs", [{"stride": 10**20}, {"stride": (10**20,), "padding": "same"}])
def test_huge_strides_on_a_single_output_are_fine(kwargs):
    W = stridedop.conv_view(np.arange(1.0, 3.0).reshape(2, 1, 1), (5, 1), **kwargs)
    assert W.shape[0] == 1
    np.testing.assert_array_equal(W, loop_operator(np.arange(1.0, 3.0).reshape(2, 1, 1), (5,), **kwargs))


def test_huge_geometry_raises_memory_error_before_allocating():
    kernel = np.broadcast_to(np.float64(1.0), (3, 3, 65536, 65536))
    with pytest.raises(MemoryError, match="more than NumPy can address"):
        stridedop.conv_view(kernel, (2**20, 2**20, 65536))


def test_buffer_larger_than_available_memory_raises_memory_error(monkeypatch):
    # Pretend 100 MiB are available: a 256 MiB buffer must be refused before it is allocated.
    monkeypatch.setattr("stridedop._buffer.available_memory", lambda: 100 * 2**20)
    kernel = np.broadcast_to(np.float64(1.0), (1, 2**10, 1))
    needs = r"the operator.s buffer needs 256 MiB \(268427264 bytes, twice that while it is built\)"
    with pytest.raises(MemoryError, match=needs + " but only 100 MiB"):
        stridedop.conv_view(kernel, (2**14, 2**10))
    # Issue 10, item 1: the buffer is frozen into an immutable copy, so twice its size must fit.
    monkeypatch.setattr("stridedop._buffer.available_memory", lambda: 400 * 2**20)
    with pytest.raises(MemoryError, match="twice that while it is built"):
        stridedop.conv_view(kernel, (2**14, 2**10))


def test_reachable_bytes_match_formula_on_a_large_input():
    # 3x3x16x16 on 32x32x16: the view's reach against the dense size and the bound.
    W = stridedop.conv_view(np.ones((3, 3, 16, 16), np.float32), (32, 32, 16))
    low, high = byte_bounds(W)
    assert (high - low) / W.nbytes < 0.002
    assert math.prod(W.shape) * 4 == W.nbytes


@pytest.mark.parametrize(
    ("name", "plain", "equal", "message"),
    [
        ("input_shape", (5, 5, 2), (5.0, 5, 2), "`input_shape` must be an integer, got the fractional"),
        ("stride", 1, True, "`stride` must be an integer, got the bool True"),
        ("stride", (1, 1), (1, 1.0), "`stride` must be an integer, got the fractional value 1.0"),
        ("dilation", 1, 1.0, "`dilation` must be an integer, got the fractional value 1.0"),
        ("padding", ((1, 1), (1, 1)), ((1, 1), (1, 1.0)), "`padding` must be an integer, got the fractional"),
        ("groups", 1, True, "`groups` must be an integer, got the bool True"),
    ],
)
def test_a_value_equal_to_a_cached_plain_one_is_still_checked(name, plain, equal, message):
    # Geometry and buffer plan are cached for plain ints, strs and int tuples only: 1.0 == True == 1
    # hash alike, and must not find the cached plan of 1.
    kernel = np.ones((3, 3, 2, 2))
    arguments = {"input_shape": (5, 5, 2), name: plain}
    expected = np.array(stridedop.conv_view(kernel, **arguments))  # now cached
    assert equal == plain and hash(equal) == hash(plain)
    with pytest.raises(ValueError, match=message):
        stridedop.conv_view(kernel, **{**arguments, name: equal})
    np.testing.assert_array_equal(stridedop.conv_view(kernel, **arguments), expected)


@pytest.mark.parametrize(
    ("kernel", "input_shape", "kwargs", "error", "match"),
    [
        (np.ones((3, 3, 1, 1)), (5, 5, 1), {"padding_mode": "reflect", "padding": 1}, ValueError, "shift"),
        (np.broadcast_to(1.0, (3, 3, 65536, 65536)), (2**20, 2**20, 65536), {}, MemoryError, "address"),
    ],
)
def test_refusals_of_a_view_hold_on_a_cached_plan_and_a_fresh_one(kernel, input_shape, kwargs, error, match):
    # The plan of these arguments is cached by the first call (it is valid for `ConvOperator`);
    # the view is refused every time, from the cache or not.
    from stridedop._conv import _cached_plan

    for clear in (True, False, False):
        if clear:
            _cached_plan.cache_clear()
        with pytest.raises(error, match=match):
            stridedop.conv_view(kernel, input_shape, **kwargs)


@pytest.mark.parametrize(
    "values",
    [
        ((5, 5, 3), "valid", "zeros", 1, 1, 1, "channels_last"),
        ((5, 5), "same", "circular", 2, 3, 1, "channels_first"),
        ((5, 5, 3), ((1, 0), (0, 2)), "zeros", (1, 2), (2, 1), 1, "channels_last"),
        ((5, 5, 3), 1, "zeros", 1, 1, 1, "channels_last"),
        ((5.0, 5, 3), "valid", "zeros", 1, 1, 1, "channels_last"),
        ((True, 5, 3), "valid", "zeros", 1, 1, 1, "channels_last"),
        ((np.int64(5), 5, 3), "valid", "zeros", 1, 1, 1, "channels_last"),
        (((5,), 5, 3), "valid", "zeros", 1, 1, 1, "channels_last"),
        ([5, 5, 3], "valid", "zeros", 1, 1, 1, "channels_last"),
        ((5, 5, 3), "valid", "zeros", 1.0, 1, 1, "channels_last"),
        ((5, 5, 3), "valid", "zeros", 1, True, 1, "channels_last"),
        ((5, 5, 3), "valid", "zeros", 1, 1, np.int64(1), "channels_last"),
        ((5, 5, 3), np.str_("valid"), "zeros", 1, 1, 1, "channels_last"),
        ((5, 5, 3), ((1, 0.5), (0, 2)), "zeros", 1, 1, 1, "channels_last"),
        ((5, 5, 3), "valid", "zeros", (1, 2.0), 1, 1, "channels_last"),
        ((5, 5, 3), "valid", None, 1, 1, 1, "channels_last"),
    ],
)
def test_only_plain_arguments_are_cached(values):
    # The cache tells arguments apart by hash and equality: 5.0, True and np.int64(5) equal 5, so
    # only ints, strs and tuples of them (or of int tuples) may reach it; `_all_plain` decides,
    # the common case in one condition. Its answer is the rule written out.
    from stridedop._conv import _all_plain

    def plain(value, depth=0):
        if type(value) is tuple and depth < 2:
            return all(type(item) is int or (depth == 0 and plain(item, 1)) for item in value)
        return type(value) in (int, str) and depth == 0

    assert _all_plain(values) == all(plain(value) for value in values)


def test_first_use_and_repeated_builds_are_equal_and_independent():
    from stridedop._conv import _cached_plan

    kernel = np.random.default_rng(1).standard_normal((2, 2, 3, 2))
    _cached_plan.cache_clear()
    first = stridedop.conv_view(kernel, (5, 5, 3))
    kernel[0, 0, 0, 0] = 100.0
    again = stridedop.conv_view(kernel, (5, 5, 3))
    assert again.base is not first.base and first[0, 0, 0, 0, 0, 0] != 100.0 == again[0, 0, 0, 0, 0, 0]
    np.testing.assert_array_equal(first.operator.view, first)
    np.testing.assert_array_equal(again, loop_operator(kernel, (5, 5)))


def test_a_plan_reaching_outside_its_buffer_is_an_internal_error():
    # The views and the kernel's target are made with NumPy's constructor, which checks their
    # reach against the buffer: a wrong plan (here, a buffer too short) is reported, never read.
    from stridedop._buffer import fill_buffer, forward_view, plan_buffer
    from stridedop._geometry import make_geometry

    kernel = np.ones((2, 2, 3, 2))
    plan = plan_buffer(make_geometry(kernel.shape, (5, 5, 3)), kernel.itemsize)
    short = plan._replace(size=plan.size - 1)
    with pytest.raises(RuntimeError, match="internal error: an array of shape"):
        forward_view(bytes(short.size * 8), short, kernel.dtype, None)
    with pytest.raises(RuntimeError, match="internal error: an array of shape"):
        fill_buffer(kernel, short._replace(kernel_origin=short.size))
