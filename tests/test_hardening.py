"""Regression tests for issue 10 (hardening) outside the command line and the memory guard."""

import pickle

import numpy as np
import pytest
from oracles import loop_operator

import stridedop

# -- item 10: masked kernels, max_bytes with out=, empty structured views, N >= 32, huge
#    circular dilations, cyclic .base chains ----------------------------------------------------


@pytest.mark.parametrize("make", [stridedop.conv_view, stridedop.ConvOperator])
def test_masked_kernel_with_masked_entries_is_refused(make):
    kernel = np.ma.array(np.ones((2, 1, 1)), mask=[[[True]], [[False]]])
    with pytest.raises(ValueError, match=r"`kernel` is a masked array with 1 masked entries; fill them"):
        make(kernel, (4,))


def test_masked_kernel_without_masked_entries_is_its_data():
    kernel = np.ma.array(np.arange(1.0, 3.0).reshape(2, 1, 1), mask=False)
    np.testing.assert_array_equal(stridedop.conv_view(kernel, (4,)), loop_operator(kernel.data, (4,)))


@pytest.mark.parametrize(
    "make",
    [
        lambda: stridedop.toeplitz([]),
        lambda: stridedop.toeplitz([1, 2], []),
        lambda: stridedop.toeplitz(np.zeros((0, 3))),
        lambda: stridedop.hankel([]),
        lambda: stridedop.circulant([]),
        lambda: stridedop.circulant(np.zeros((2, 0), complex)),
    ],
)
def test_empty_structured_matrices_cannot_be_made_writable(make):
    A = make()
    assert A.size == 0 and not A.flags.writeable
    with pytest.raises(ValueError, match="WRITEABLE"):
        A.setflags(write=True)


@pytest.mark.parametrize("n", [32, 40, 62])
def test_more_than_31_spatial_axes_get_a_clear_message(n):
    kernel = np.ones((1,) * n + (1, 1))
    for make in (stridedop.conv_view, stridedop.ConvOperator):
        with pytest.raises(ValueError, match=rf"`kernel` has {n} spatial axes .*at most 31 are supported"):
            make(kernel, (1,) * n)


@pytest.mark.parametrize("padding", ["valid", "full", "circular"])
@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
def test_31_spatial_axes_work_on_every_path(padding, layout):
    # 31 axes: the view has 64, NumPy's limit. The circular fold crashed the interpreter
    # (np.add.at on more than 32 axes), to_sparse and materialize raised NumPy errors.
    n = 31
    kernel = np.arange(1.0, 5.0).reshape((1,) * (n - 1) + (2, 1, 2))
    spatial = (1,) * (n - 1) + (3,)
    W = loop_operator(kernel, spatial, padding=padding)  # channels-last (*o, F, *m, C)
    x = np.arange(3.0).reshape((*spatial, 1))
    if layout == "channels_first":
        kernel = np.moveaxis(kernel, (-1, -2), (0, 1))
        x = np.moveaxis(x, -1, 0)
        W = np.moveaxis(np.moveaxis(W, n, 0), -1, n + 1)
    op = stridedop.ConvOperator(kernel, x.shape, padding=padding, layout=layout)
    np.testing.assert_array_equal(op.view, W)
    np.testing.assert_array_equal(op.to_matrix().reshape(W.shape), W)
    np.testing.assert_array_equal(op.to_sparse().toarray().reshape(W.shape), W)
    np.testing.assert_allclose(op @ x, np.tensordot(W, x, n + 1))


@pytest.mark.parametrize("padding_mode", ["reflect", "replicate"])
def test_31_spatial_axes_without_a_view(padding_mode):
    # The adjoint's fold of the padding crashed the interpreter (np.add.at on 33 axes).
    n = 31
    kernel = np.arange(1.0, 5.0).reshape((1,) * (n - 1) + (2, 1, 2))
    x = np.arange(3.0).reshape((1,) * (n - 1) + (3, 1))
    pads = [(0, 0)] * (n - 1) + [(1, 1)]
    op = stridedop.ConvOperator(kernel, x.shape, padding=pads, padding_mode=padding_mode)
    M = op.to_matrix()
    y = op @ x
    np.testing.assert_array_equal(op.to_sparse().toarray(), M)
    np.testing.assert_allclose(y.reshape(-1), M @ x.reshape(-1))
    np.testing.assert_allclose((op.H @ y).reshape(-1), M.T @ y.reshape(-1))


@pytest.mark.parametrize("dilation", [10**8, 2**62 + 1, 2**63 + 5, 10**30])
@pytest.mark.parametrize("stride", [1, 10**30 + 1])
def test_huge_circular_dilations_and_strides(dilation, stride):
    # The fold and the sparse export computed tap positions in int64: OverflowError, or wrong
    # entries, beyond 2**63.
    pytest.importorskip("scipy")
    kernel = np.arange(1.0, 4.0).reshape(3, 1, 1)
    kwargs = {"padding": "circular", "dilation": dilation, "stride": stride}
    expected = loop_operator(kernel, (5,), **kwargs)
    op = stridedop.ConvOperator(kernel, (5, 1), **kwargs)
    np.testing.assert_array_equal(op.view, expected)
    np.testing.assert_array_equal(stridedop.materialize(op.view), expected)
    np.testing.assert_array_equal(op.to_sparse().toarray().reshape(expected.shape), expected)
    # @ and .H @ fold the taps first: no padding wider than the input (this raised "array is too
    # big" or "`pad_width` must be of integral type").
    x = np.arange(5.0).reshape(5, 1)
    np.testing.assert_array_equal(op @ x, np.tensordot(expected, x, 2))
    np.testing.assert_array_equal(op.H @ (op @ x), np.tensordot(op @ x, expected, 2))


@pytest.mark.parametrize("method", ["direct", "fft"])
@pytest.mark.parametrize("padding", ["valid", "same", "circular", "full"])
@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
@pytest.mark.parametrize("one_tap_axis", [0, 1])
@pytest.mark.parametrize("dilation", [2**62, 2**63, 10**30])
def test_huge_dilations_of_one_tap_axes(dilation, one_tap_axis, layout, padding, method):
    # A one-tap axis's dilation changes nothing, whatever its size; the strided windows over it
    # took it as a byte step (OverflowError past C's long) and the FFT laid taps in int64.
    rng = np.random.default_rng(0)
    k, dilations = [3, 3], [1, 1]
    k[one_tap_axis], dilations[one_tap_axis] = 1, dilation
    kernel = rng.standard_normal((*k, 4, 16))  # enough channels for the GEMM strategies
    expected = loop_operator(kernel, (6, 7), padding=padding).reshape(-1, 6 * 7 * 4)  # dilation 1
    if layout == "channels_first":
        kernel, shape = kernel.transpose(3, 2, 0, 1), (4, 6, 7)
    else:
        shape = (6, 7, 4)
    options = {"padding": padding, "dilation": dilations, "layout": layout, "method": method}
    op = stridedop.ConvOperator(kernel, shape, **options)
    matrix = op.to_matrix()
    if layout == "channels_last":
        np.testing.assert_array_equal(matrix, expected)
    np.testing.assert_array_equal(op.to_sparse().toarray(), matrix)  # (it raised OverflowError past 2**63)
    x = rng.standard_normal((2, *shape))
    y = op @ x
    np.testing.assert_allclose(y.reshape(2, -1), x.reshape(2, -1) @ matrix.T, atol=1e-10)
    np.testing.assert_allclose((op.H @ y).reshape(2, -1), y.reshape(2, -1) @ matrix, atol=1e-10)


@pytest.mark.parametrize("padding_mode", ["zeros", "circular", "reflect", "replicate"])
@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
@pytest.mark.parametrize("stride", [5, 2**33, 2**70])
def test_to_sparse_column_arithmetic_in_every_dtype(stride, layout, padding_mode):
    # A stride past the input leaves one output; to_sparse's column parts then need int32, int64
    # or Python ints, while the columns themselves stay small (past 2**63 it raised OverflowError).
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((3, 2, 3, 4))
    shape = (5, 6, 3)
    if layout == "channels_first":
        kernel, shape = kernel.transpose(3, 2, 0, 1), (3, 5, 6)
    options = {"padding": [(1, 1), (0, 2)], "padding_mode": padding_mode, "layout": layout}
    op = stridedop.ConvOperator(kernel, shape, stride=[stride, 2], **options)
    expected = stridedop.ConvOperator(kernel, shape, stride=[5, 2], **options).to_matrix()
    # (Replicate adds the taps that read one entry, in another order than `to_matrix`.)
    np.testing.assert_allclose(op.to_sparse().toarray(), expected, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(op.H.to_sparse().toarray(), expected.T, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("method", ["direct", "fft"])
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate"])
@pytest.mark.parametrize("lo", [2**40, 2**70])
def test_padding_past_memory(lo, padding_mode, method):
    # One output whose windows lie in a huge padding. Zero padding: that output is zero and the
    # other computed on the input alone (the whole padding was laid out). Reflect and replicate
    # read the input through it: the padded batch cannot be allocated, and past int64 NumPy could
    # not even take the pad widths (TypeError, ValueError): the descriptive MemoryError.
    options = {"padding": [(lo, 0), (0, 2)], "padding_mode": padding_mode, "method": method}
    op = stridedop.ConvOperator(np.ones((3, 2, 3, 4)), (5, 6, 3), stride=[2 * lo, 2], **options)
    x, y = np.ones((5, 6, 3)), np.ones(op.output_shape)
    if padding_mode == "zeros":
        matrix = op.to_sparse().toarray()
        np.testing.assert_allclose((op @ x).ravel(), matrix @ x.ravel())
        np.testing.assert_allclose((op.H @ y).ravel(), matrix.T @ y.ravel())
        return
    with pytest.raises(MemoryError, match="applying the operator"):
        op @ x
    with pytest.raises(MemoryError, match="applying the operator"):
        op.H @ y


@pytest.mark.parametrize("method", ["direct", "fft"])
@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
@pytest.mark.parametrize("amount", [7, 2**40, 2**62, 2**70])
def test_circular_padding_and_stride_of_any_size(amount, layout, method):
    # Whole periods of circular padding, or of the stride, change nothing: the direct method
    # takes both modulo the input (it padded them out: ValueError, TypeError), the FFT the stride
    # (OverflowError past int64).
    rng = np.random.default_rng(1)
    kernel, shape = rng.standard_normal((2, 3, 4)), (3, 3)
    if layout == "channels_first":
        kernel, shape = kernel.transpose(2, 1, 0), (3, 3)
    options = {"padding": [(amount + 1, amount)], "stride": amount, "layout": layout, "method": method}
    op = stridedop.ConvOperator(kernel, shape, padding_mode="circular", **options)
    matrix = op.to_sparse().toarray()
    x, y = rng.standard_normal((2, *op.input_shape)), rng.standard_normal((2, *op.output_shape))
    np.testing.assert_allclose((op @ x).reshape(2, -1), x.reshape(2, -1) @ matrix.T, atol=1e-12)
    np.testing.assert_allclose((op.H @ y).reshape(2, -1), y.reshape(2, -1) @ matrix, atol=1e-12)


def test_to_sparse_with_more_rows_than_numpy_can_address():
    # (It raised NumPy's "array is too big" from the per-axis arrays.)
    op = stridedop.ConvOperator(np.ones((1, 1, 1)), (1, 1), padding=[(2**62, 0)])
    with pytest.raises(MemoryError, match="rows"):
        op.to_sparse()


@pytest.mark.parametrize("stride", [2**63, 2**70])
def test_notebook_display_and_dask_blocks_with_a_stride_past_int64(stride):
    pytest.importorskip("dask")
    op = stridedop.ConvOperator(np.arange(1.0, 3.0).reshape(2, 1, 1), (3, 1), stride=stride)
    assert "<table" in op._repr_html_() and "<table" in op.view._repr_html_()  # (OverflowError)
    np.testing.assert_array_equal(op.to_dask().compute().ravel(), [1.0, 2.0, 0.0])  # (OverflowError)


@pytest.mark.parametrize("padding_mode", ["zeros", "circular", "reflect", "replicate"])
@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
@pytest.mark.parametrize("lo", [2**26, 2**40])
def test_materialize_a_tiny_operator_with_a_huge_padding(lo, layout, padding_mode):
    # The view's buffer or the padded 'valid' operator would dwarf the 2 x 4 matrix (1 GiB at
    # 2**26, "too large for a view" at 2**40): its entries are written where the taps land.
    kernel, shape = np.array([1.0, -2.0, 3.0]).reshape(3, 1, 1), (4, 1)
    if layout == "channels_first":
        kernel, shape = kernel.transpose(2, 1, 0), (1, 4)
    options = {"padding": [(lo, 0)], "stride": lo, "padding_mode": padding_mode, "layout": layout}
    op = stridedop.ConvOperator(kernel, shape, **options)
    expected = op.to_sparse().toarray()
    np.testing.assert_array_equal(op.to_matrix(), expected)
    np.testing.assert_array_equal(op.H.to_matrix(), expected.T)
    out = np.full(op.shape, np.nan)
    assert op.materialize(out=out) is out
    np.testing.assert_array_equal(out.reshape(expected.shape), expected)
    with pytest.raises(MemoryError):
        op.materialize(max_bytes=8)


def test_materialize_ends_on_a_cyclic_base_chain():
    class Cyclic:
        """An object exposing an array, whose `.base` is itself."""

        def __init__(self):
            self._data = np.arange(3.0)
            self.__array_interface__ = self._data.__array_interface__

        @property
        def base(self):
            return self

    np.testing.assert_array_equal(stridedop.materialize(Cyclic()), np.arange(3.0))


# -- item 5: materialize of a reinterpreted view copies bits --------------------------------------


@pytest.mark.parametrize("dtype", [np.int64, np.uint64, ">f8", np.uint8, np.complex64])
@pytest.mark.parametrize("transpose", [False, True])
def test_materialize_of_a_reinterpreted_view_copies_its_bits(dtype, transpose):
    W = stridedop.conv_view(np.arange(1.0, 9.0).reshape(2, 2, 2), (4, 2), padding="same")
    W = W.T if transpose else W
    if np.dtype(dtype).itemsize != W.itemsize:
        W = W[..., :1]  # another item size needs a last axis of length 1 (or contiguous)
    v = W.view(dtype)
    dense = stridedop.materialize(v)
    assert dense.dtype == v.dtype and dense.shape == v.shape
    assert dense.tobytes() == np.array(v).tobytes()


# -- item 6: to_sparse for byte-swapped and float16 kernels ---------------------------------------


@pytest.mark.parametrize("format", ["csr", "csc", "coo", "bsr", "dia", "dok", "lil"])
@pytest.mark.parametrize(("dtype", "held_as"), [(">f8", "<f8"), (">i2", "<i2"), (">c8", "<c8"), ("f2", "f4")])
@pytest.mark.parametrize("padding", ["valid", "circular"])
def test_to_sparse_of_byte_swapped_and_float16_kernels(format, dtype, held_as, padding):
    pytest.importorskip("scipy")
    kernel = (np.arange(1, 9) * (1 - 1j if dtype == ">c8" else 1)).reshape(2, 2, 2).astype(dtype)
    op = stridedop.ConvOperator(kernel, (5, 2), padding=padding)
    for operator in (op, op.H, op.transpose()):
        S = operator.to_sparse(format)
        assert S.dtype == np.dtype(held_as).newbyteorder("=")
        np.testing.assert_array_equal(S.toarray(), operator.to_matrix())


# -- item 1: nothing reachable from a view can write or free its memory ---------------------------


def _reachable(array):
    """Every object reachable from `array` through `.base` and memoryview `.obj` links."""
    seen, stack = [], [array]
    while stack:
        item = stack.pop()
        if any(item is other for other in seen):
            continue
        seen.append(item)
        for name in ("base", "obj"):
            linked = getattr(item, name, None)
            if linked is not None:
                stack.append(linked)
    return seen


@pytest.mark.parametrize(
    "make",
    [
        lambda: stridedop.conv_view(np.arange(1.0, 9.0).reshape(2, 2, 2), (5, 2), padding="same"),
        lambda: stridedop.conv_view(np.arange(1.0, 9.0).reshape(2, 2, 2), (3, 2), padding="circular"),
        lambda: stridedop.ConvOperator(np.arange(8).reshape(2, 2, 2), (5, 2)).H.view,
        lambda: stridedop.toeplitz([1.0, 2.0, 3.0], [1.0, 4.0]),
        lambda: stridedop.toeplitz([]),
    ],
)
def test_no_object_reachable_from_a_view_gives_write_access_or_can_be_released(make):
    W = make()
    expected = np.array(W)
    for item in _reachable(W):
        if isinstance(item, np.ndarray):
            with pytest.raises(ValueError, match="WRITEABLE"):
                item.setflags(write=True)
            continue
        if isinstance(item, memoryview):
            with pytest.raises(BufferError):  # exported to NumPy: cannot be released
                item.release()
        try:
            exposed = memoryview(item)
        except TypeError:
            continue
        assert exposed.readonly
        with pytest.raises(ValueError, match="read-only"):
            np.frombuffer(item, np.uint8)[:] = 7
    # The two attacks, spelled out: the view is unchanged and still readable.
    owner = W
    while isinstance(owner, np.ndarray) and owner.base is not None:
        owner = owner.base
    assert not hasattr(owner, "release") and not hasattr(owner, "obj")
    np.testing.assert_array_equal(W, expected)


# -- item 4: every path agrees with the view, in values and dtype, when circular taps fold ---------


@pytest.mark.parametrize(
    ("kernel", "folded"),
    [
        (np.array([200, 100], np.uint8), 44),
        (np.array([100, 100], np.int8), -56),
        (np.array([60000, 6000], np.uint16), 464),
        (np.array([True, True]), True),
        (np.array([2**63, 2**63], np.uint64), 0),
    ],
)
@pytest.mark.parametrize("input_dtype", [None, np.float64, np.int64, np.complex128])
def test_folded_circular_taps_sum_in_the_kernel_dtype_on_every_path(kernel, folded, input_dtype):
    op = stridedop.ConvOperator(kernel.reshape(2, 1, 1), (1, 1), padding="circular")
    W = np.array(op.view)
    assert W.dtype == kernel.dtype and W[0, 0, 0, 0] == folded
    dtype = kernel.dtype if input_dtype is None else np.dtype(input_dtype)
    x = np.full((3, 1, 1), 3, dtype=dtype)
    expected = np.stack([np.tensordot(W, item, 2) for item in x])
    for name, result in [
        ("@", op @ x),
        (".H @", op.H @ x),
        (".T @", op.T @ x),
        ("tensordot", np.stack([np.tensordot(op.view, item, 2) for item in x])),
    ]:
        assert result.dtype == expected.dtype, name
        np.testing.assert_array_equal(result, expected, err_msg=name)
    for name, dense in [("materialize", stridedop.materialize(op)), ("to_matrix", op.to_matrix())]:
        assert dense.dtype == kernel.dtype
        np.testing.assert_array_equal(dense.reshape(W.shape), W, err_msg=name)
    sparse = op.to_sparse().toarray()
    np.testing.assert_array_equal(sparse.reshape(W.shape), W)


# -- item 9: tampered pickles are checked like the arguments of __init__ ---------------------------


def _tampered_pickles():
    op = stridedop.ConvOperator(np.ones((2, 1, 1)), (4, 1))
    state = op.__getstate__()
    cases = {f"missing {key}": {k: v for k, v in state.items() if k != key} for key in state}
    kernels = {
        "list": [[[1.0]], [[2.0]]],
        "None": None,
        "datetime": np.array(["2020-01-01", "2020-01-02"], "datetime64[D]").reshape(2, 1, 1),
        "structured": np.zeros((2, 1, 1), "i4,f4"),
        "string": "abc",
        "object": np.array([1, None], object).reshape(2, 1, 1),
        "0-d": np.array(1.0),
        "2-d": np.ones((2, 2)),
        "empty": np.ones((0, 1, 1)),
        "too many channels": np.ones((2, 3, 1)),
    }
    cases |= {f"kernel {name}": {**state, "kernel": kernel} for name, kernel in kernels.items()}
    cases |= {
        "not a dict": [("kernel", state["kernel"])],
        "extra key": {**state, "evil": 1},
        "input_shape string": {**state, "input_shape": "abc"},
        "input_shape too short": {**state, "input_shape": ()},
        "input_shape too small": {**state, "input_shape": (1, 1)},
        "transposed string": {**state, "transposed": "yes"},
        "conjugated array": {**state, "conjugated": np.array([1, 2])},
        "method": {**state, "method": 3},
        "padding": {**state, "padding": object()},
        "padding_mode": {**state, "padding_mode": "mirror"},
        "stride": {**state, "stride": (-1,)},
        "dilation": {**state, "dilation": (0,)},
        "groups": {**state, "groups": 2},
        "layout": {**state, "layout": "NHWC"},
    }
    return cases


@pytest.mark.parametrize(("name", "state"), list(_tampered_pickles().items()), ids=list(_tampered_pickles()))
def test_tampered_pickles_are_refused_with_a_clear_error(name, state):
    op = stridedop.ConvOperator(np.ones((2, 1, 1)), (4, 1))
    op.__getstate__ = lambda: state  # what a tampered payload would carry
    payload = pickle.dumps(op)
    with pytest.raises((ValueError, TypeError), match="`|pickled"):
        pickle.loads(payload)


def test_an_untampered_pickle_loads_every_direction():
    op = stridedop.ConvOperator(np.arange(1, 5).reshape(2, 1, 2) * (1 + 1j), (4, 1), padding="circular")
    for direction in (op, op.H, op.transpose()):
        loaded = pickle.loads(pickle.dumps(direction))
        assert repr(loaded) == repr(direction)
        x = np.arange(1.0, 1.0 + np.prod(direction.input_shape)).reshape(direction.input_shape)
        np.testing.assert_array_equal(loaded @ x, direction @ x)


@pytest.mark.parametrize("padding_mode", ["reflect", "replicate"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.bool_, np.uint16])
@pytest.mark.parametrize("input_dtype", [np.float64, np.int64, np.complex64])
def test_padding_modes_without_a_view_apply_their_matrix(padding_mode, dtype, input_dtype):
    # Reflect and replicate padding fold taps only near the borders; the matrix holds those sums
    # in the kernel's dtype (uint8 200 + 100 + 250 wraps), and @ and .H @ must agree with it.
    kernel = np.array([200, 100, 250, 7, 99, 180]).astype(dtype).reshape(3, 1, 2)
    op = stridedop.ConvOperator(kernel, (3, 1), padding=[(2, 2)], padding_mode=padding_mode)
    M = op.to_matrix()
    x = np.arange(1, 7).reshape(2, 3, 1).astype(input_dtype)
    y = np.arange(1, 1 + 2 * M.shape[0]).reshape(2, *op.output_shape).astype(input_dtype)
    forward, adjoint = op @ x, op.H @ y
    assert forward.dtype == adjoint.dtype == np.result_type(kernel, x)
    np.testing.assert_array_equal(forward.reshape(2, -1), x.reshape(2, -1) @ M.T)
    np.testing.assert_array_equal(adjoint.reshape(2, -1), y.reshape(2, -1) @ M)


@pytest.mark.parametrize("payload", [None, 3, "view", np.ones((2, 2))])
def test_a_tampered_view_pickle_is_refused(payload):
    from stridedop._view import _operator_view

    with pytest.raises(TypeError, match="a pickled OperatorView must hold a stridedop operator with a view"):
        _pickled_call(_operator_view, payload)


def _pickled_call(function, argument):
    """Unpickle a payload that calls `function(argument)`, as a tampered view pickle would."""

    class Payload:
        def __reduce__(self):
            return (function, (argument,))

    return pickle.loads(pickle.dumps(Payload()))


def test_a_refused_apply_gets_the_descriptive_message(monkeypatch):
    # Issue 10 item 15: the system may refuse an allocation that the guards allowed.
    from stridedop._operator import ConvOperator

    def refuse(self, batch):
        raise MemoryError("Unable to allocate 9 EiB")

    monkeypatch.setattr(ConvOperator, "_product", refuse)
    op = stridedop.ConvOperator(np.ones((3, 3, 2, 4)), (8, 8, 2), padding="same")
    with pytest.raises(MemoryError, match=r"applying the operator to a batch of 1 inputs .*dask.array"):
        op @ np.ones(op.input_shape)


def test_a_refused_sparse_export_gets_the_descriptive_message(monkeypatch):
    pytest.importorskip("scipy")
    real_empty = np.empty

    def refuse(shape, *args, **kwargs):
        if isinstance(shape, int) and shape > 100:  # the index and value arrays
            raise MemoryError("Unable to allocate")
        return real_empty(shape, *args, **kwargs)

    op = stridedop.ConvOperator(np.ones((3, 3, 2, 4)), (8, 8, 2), padding="circular")
    monkeypatch.setattr("stridedop._sparse.np.empty", refuse)
    with pytest.raises(MemoryError, match=r"the sparse operator has 4608 structural non-zeros.*op @ x"):
        op.to_sparse()


def test_a_view_beyond_what_numpy_can_address_names_op_at_x():
    # Issue 10 item 11: the operator constructs; only .view refuses, naming `op @ x`.
    op = stridedop.ConvOperator(np.ones((3, 3, 64, 64), np.float32), (2**17, 2**17, 64), padding="same")
    assert op.nbytes == (2**17) ** 4 * 64 * 64 * 4
    # Every tap of every (filter, channel) pair lands inside on 3m - 2 (output, tap) pairs per axis.
    assert op.norm("fro") == pytest.approx(64 * (3 * 2**17 - 2))
    with pytest.raises(MemoryError, match=r"`op @ x`"):
        op.view  # noqa: B018


def test_threads_asking_for_a_new_views_operator_at_once_get_the_same_one():
    # A view builds its operator on first use; four threads asking at once each built their own
    # (10 of 200 trials before the lock), so `W.operator is W.operator` did not hold across them.
    import sys
    import threading

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(200):
            W = stridedop.conv_view(np.ones((3, 3, 2, 3)), (6, 5, 2))
            barrier, operators = threading.Barrier(4), []

            def ask(W=W, barrier=barrier, operators=operators):
                barrier.wait()
                operators.append(W.operator)

            threads = [threading.Thread(target=ask) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert len(operators) == 4 and all(operator is W.operator for operator in operators)
    finally:
        sys.setswitchinterval(interval)
