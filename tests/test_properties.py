"""Every path against the loop oracle, for every numeric dtype, and from many threads (issue 10).

The geometries drawn reach each internal strategy: stride 1 with few (<= 4) or many channels per
group (flat im2col, channels-last or channels-first; scatter or correlation adjoint), stride > 1
(strided im2col, tap-by-tap adjoint), and circular padding with kernels wider than the input
(folded taps). Values are small integers, so every dtype computes them exactly and the results
can be compared bit for bit.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from helpers import NUMERIC_DTYPES
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from oracles import loop_operator, pads_for

import stridedop

DTYPES = [*NUMERIC_DTYPES, ">i4", ">f8", ">c16"]  # and some big-endian ones


def small_values(rng, shape, dtype, wide=False):
    """Values whose sums of products stay exact and in range for every dtype, even int8.

    `wide` integers take their dtype's whole range instead: sums wrap around, and every path must
    wrap exactly as NumPy does (circular folding included: uint8 200 + 100 is 44).
    """
    dtype = np.dtype(dtype)
    if wide and dtype.kind in "iu":
        info = np.iinfo(dtype)
        native = dtype.newbyteorder("=")
        return rng.integers(info.min, info.max, shape, endpoint=True, dtype=native).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(dtype)
    low = 0 if dtype.kind == "u" else -1
    values = rng.integers(low, 2, shape)
    if dtype.kind == "c":
        values = values + 1j * rng.integers(-1, 2, shape)
    return values.astype(dtype)


@st.composite
def cases(draw):
    n = draw(st.integers(1, 2))
    k = draw(st.lists(st.integers(1, 3), min_size=n, max_size=n))
    m = draw(st.lists(st.integers(1, 5), min_size=n, max_size=n))
    stride = draw(st.lists(st.integers(1, 2), min_size=n, max_size=n))
    dilation = draw(st.lists(st.integers(1, 2), min_size=n, max_size=n))
    groups = draw(st.integers(1, 2))
    group_channels = draw(st.sampled_from([1, 2, 5, 6]))  # on both sides of the few-channels cut
    filters = groups * draw(st.integers(1, 2))
    padding = draw(st.sampled_from(["valid", "same", "full", "circular", 1]))
    layout = draw(st.sampled_from(["channels_last", "channels_first"]))
    batch = draw(st.sampled_from([(), (2,), (1, 2)]))
    dtype = draw(st.sampled_from(DTYPES))
    wide = draw(st.booleans())
    input_dtype = draw(st.sampled_from([dtype, np.float64, np.int64]))  # mixed dtypes promote
    seed = draw(st.integers(0, 2**16))
    geometry = (k, m, stride, dilation, groups, group_channels, filters, padding, layout)
    return geometry, batch, (dtype, input_dtype), wide, seed


def _build(case):
    """The operator, its oracle (public layout), an input and an output batch."""
    geometry, batch, (dtype, input_dtype), wide, seed = case
    # Wide inputs only in the kernel's own dtype, and no 64-bit integers beyond 2**53 promoted to
    # float64: those would compare only to rounding.
    same = np.dtype(input_dtype) == np.dtype(dtype)
    wide_kernel = wide and (np.dtype(dtype).itemsize < 8 or same)
    k, m, stride, dilation, groups, group_channels, filters, padding, layout = geometry
    n = len(k)
    pads = pads_for(padding, m, k, stride, dilation)
    if padding != "circular":
        assume(all((k[i] - 1) * dilation[i] + 1 <= m[i] + sum(pads[i]) for i in range(n)))
    rng = np.random.default_rng(seed)
    kernel = small_values(rng, (*k, group_channels, filters), dtype, wide_kernel)
    W = loop_operator(kernel, m, padding=padding, stride=stride, dilation=dilation, groups=groups)
    channels = group_channels * groups
    input_shape = (*m, channels)
    if layout == "channels_first":
        kernel = np.moveaxis(kernel, (-1, -2), (0, 1))
        W = np.moveaxis(np.moveaxis(W, n, 0), -1, n + 1)
        input_shape = (channels, *m)
    op = stridedop.ConvOperator(
        kernel, input_shape, padding=padding, stride=stride, dilation=dilation, groups=groups, layout=layout
    )
    x = small_values(rng, (*batch, *op.input_shape), input_dtype, wide and same)
    y = small_values(rng, (*batch, *op.output_shape), input_dtype, wide and same)
    return op, W, x, y


def adjoint_oracle(W, n_out):
    """The adjoint's dense operator ``(*input_shape, *output_shape)``: W's axes moved, conjugated."""
    moved = np.moveaxis(W, range(n_out), range(W.ndim - n_out, W.ndim))
    return moved.conj() if W.dtype.kind == "c" else moved


def batched_tensordot(W, x, axes):
    """``np.tensordot(W, item, axes)`` for each item of x's leading (batch) axes."""
    batch = x.shape[: x.ndim - axes]
    items = [np.tensordot(W, item, axes) for item in x.reshape(-1, *x.shape[x.ndim - axes :])]
    return np.stack(items).reshape(*batch, *W.shape[: W.ndim - axes])


def assert_same(actual, expected):
    """Equal values and dtype (byte order aside)."""
    assert actual.shape == expected.shape
    assert actual.dtype.newbyteorder("=") == expected.dtype.newbyteorder("="), (actual.dtype, expected.dtype)
    np.testing.assert_array_equal(actual, expected)


_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow]
)


@_SETTINGS
@given(cases())
def test_apply_equals_the_oracle(case):
    with np.errstate(over="ignore"):  # wide integers wrap, as in NumPy
        op, W, x, _ = _build(case)
        expected = batched_tensordot(W, x, len(op.input_shape))
        assert_same(op @ x, expected)
        assert_same(batched_tensordot(op.view, x, len(op.input_shape)), expected)  # through W.operator


@_SETTINGS
@given(cases())
def test_adjoint_equals_the_oracle(case):
    with np.errstate(over="ignore"):  # wide integers wrap, as in NumPy
        op, W, _, y = _build(case)
        n_out = len(op.output_shape)
        assert_same(op.H @ y, batched_tensordot(adjoint_oracle(W, n_out), y, n_out))


@_SETTINGS
@given(cases())
def test_materialize_and_to_matrix_equal_the_oracle(case):
    with np.errstate(over="ignore"):  # wide integers wrap, as in NumPy
        op, W, _, _ = _build(case)
        assert_same(stridedop.materialize(op.view), W)
        assert_same(stridedop.materialize(op.H.view), adjoint_oracle(W, len(op.output_shape)))
        rows = int(np.prod(op.output_shape))
        assert_same(op.to_matrix(), W.reshape(rows, -1))


@_SETTINGS
@given(cases())
def test_to_sparse_equals_the_oracle(case):
    with np.errstate(over="ignore"):  # wide integers wrap, as in NumPy
        pytest.importorskip("scipy")
        op, W, _, _ = _build(case)
        matrix = W.reshape(int(np.prod(op.output_shape)), -1)
        held = np.dtype(np.float32) if W.dtype == np.float16 else W.dtype.newbyteorder("=")
        sparse = op.to_sparse()
        assert sparse.dtype == held
        np.testing.assert_array_equal(sparse.toarray(), matrix)
        adjoint = op.H.to_sparse("csc")
        np.testing.assert_array_equal(adjoint.toarray(), matrix.conj().T if W.dtype.kind == "c" else matrix.T)


THREAD_GEOMETRIES = [
    {"kernel": (3, 3, 2, 4), "input_shape": (9, 8, 2), "padding": "same"},
    {"kernel": (3, 3, 6, 4), "input_shape": (9, 8, 12), "stride": 2, "groups": 2},
    {"kernel": (2, 5, 1, 3), "input_shape": (4, 3, 1), "padding": "circular", "dilation": (1, 2)},
    {"kernel": (3, 6, 2, 3), "input_shape": (6, 4, 7), "layout": "channels_first", "padding": 1},
    {"kernel": (5, 2, 3), "input_shape": (3, 2), "padding": "circular", "dtype": np.uint8},
    {"kernel": (3, 1, 2), "input_shape": (5, 1), "padding": 2, "padding_mode": "reflect"},
]


def _operator(case):
    rng = np.random.default_rng(len(case["input_shape"]) + sum(case["kernel"]))
    kernel = rng.integers(0, 256, case["kernel"]).astype(case.get("dtype", np.float64))
    arguments = {key: value for key, value in case.items() if key not in ("kernel", "dtype")}
    return stridedop.ConvOperator(kernel, **arguments)


def _every_path(op, has_view=True):
    """The view, materialize, @, adjoint @ and to_sparse of `op`, as plain arrays."""
    rng = np.random.default_rng(0)
    x = rng.integers(-3, 4, (3, *op.input_shape)).astype(np.float64)
    y = rng.integers(-3, 4, (3, *op.output_shape)).astype(np.float64)
    with np.errstate(over="ignore"):  # uint8 taps that fold wrap
        dense = [np.array(op.view), stridedop.materialize(op.view)] if has_view else []
        return [*dense, op.materialize(), op @ x, op.H @ y, op.to_sparse().toarray()]


def test_eight_threads_agree_with_one():
    # Each geometry from every thread, interleaved: fresh operators in each thread, and operators
    # shared by all threads whose buffers and folded kernels are built by whichever comes first.
    pytest.importorskip("scipy")
    views = [case.get("padding_mode", "zeros") != "reflect" for case in THREAD_GEOMETRIES]
    expected = [_every_path(_operator(case), view) for case, view in zip(THREAD_GEOMETRIES, views)]
    shared = [_operator(case) for case in THREAD_GEOMETRIES]
    jobs = [(i, op) for _ in range(4) for i, op in enumerate(shared)]
    jobs += [(i, None) for _ in range(4) for i in range(len(THREAD_GEOMETRIES))]

    def run(job):
        index, op = job
        return _every_path(op or _operator(THREAD_GEOMETRIES[index]), views[index])

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(run, jobs))
    for (index, _), result in zip(jobs, results):
        for actual, wanted in zip(result, expected[index], strict=True):
            assert actual.dtype == wanted.dtype
            np.testing.assert_array_equal(actual, wanted)
