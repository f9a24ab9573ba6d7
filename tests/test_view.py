"""OperatorView: the view knows its operator (issue 9).

The oracle of every contraction is NumPy's own result on a dense copy of the view; the view's
values themselves are checked against loop oracles in test_conv_view.py.
"""

import copy
import html.parser
import pickle
import tracemalloc

import numpy as np
import pytest

import stridedop
from stridedop._dense import _buffer_of
from stridedop._view import _einsum, _tensordot

GEOMETRIES = [
    ((2, 3), (5, 6), 2, 3, {}),
    ((3, 2), (6, 5), 2, 4, {"padding": "same", "stride": 2}),
    ((2, 2), (5, 4), 2, 2, {"padding": "full", "dilation": (2, 1)}),
    ((3, 1), (4, 3), 4, 2, {"padding": [(2, 0), (1, 1)], "groups": 2}),
    ((3, 2), (4, 3), 2, 3, {"padding": "circular"}),
    ((5, 2), (3, 4), 2, 2, {"padding": "same", "padding_mode": "circular", "stride": (2, 1)}),
    ((3,), (7,), 1, 2, {"padding": "valid", "stride": 2}),
    ((2, 1, 2), (3, 2, 3), 2, 1, {"padding": "same"}),
]
IDS = [f"{k}-{m}-{kw}" for k, m, _, _, kw in GEOMETRIES]


def make_operator(k, m, channels, filters, kwargs, layout="channels_last", dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    groups = kwargs.get("groups", 1)
    kernel = rng.standard_normal((*k, channels // groups, filters))
    if np.dtype(dtype).kind == "c":
        kernel = kernel + 1j * rng.standard_normal(kernel.shape)
    kernel = kernel.astype(dtype)
    if layout == "channels_first":
        n = len(k)
        kernel = kernel.transpose(n + 1, n, *range(n))
        input_shape = (channels, *m)
    else:
        input_shape = (*m, channels)
    return stridedop.ConvOperator(kernel, input_shape, layout=layout, **kwargs)


def random_like(shape, dtype, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        x = x + 1j * rng.standard_normal(shape)
    return x.astype(dtype)


def assert_same_result(got, expected):
    assert type(got) is np.ndarray
    assert got.shape == expected.shape
    assert got.dtype == expected.dtype
    single = np.finfo(got.dtype).eps > 1e-10 if got.dtype.kind in "fc" else False
    scale = max(1.0, float(np.abs(expected).max(initial=0)))
    tolerance = 1e-4 if single else 1e-10
    np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance * scale)


# -- what the view is --------------------------------------------------------------------------
def test_conv_view_returns_a_read_only_operator_view():
    kernel = np.random.default_rng(0).standard_normal((2, 3, 2, 3))
    W = stridedop.conv_view(kernel, (5, 6, 2))
    assert isinstance(W, stridedop.OperatorView) and isinstance(W, np.ndarray)
    assert not W.flags.writeable and not W.flags.owndata
    with pytest.raises(ValueError, match="WRITEABLE"):
        W.setflags(write=True)
    op = W.operator
    assert isinstance(op, stridedop.ConvOperator)
    assert op.shape == W.shape and op.input_shape == (5, 6, 2)
    assert W.operator is op  # built once
    np.testing.assert_array_equal(op.view, W)
    assert _buffer_of(op.view)[0] is _buffer_of(W)[0]  # the operator shares the view's buffer


@pytest.mark.parametrize("kwargs", [{}, {"padding": "circular"}, {"groups": 2}, {"layout": "channels_first"}])
def test_conv_view_reads_immutable_bytes_that_its_operator_shares(kwargs):
    # conv_view's view reads the buffer's `bytes` directly; the operator, built on first use,
    # reads the same object; plain views and slices of the view still lead to it.
    from stridedop._view import find_operator_view

    kernel = np.arange(1.0, 17.0).reshape(2, 2, 2, 2)
    channels = 2 * kwargs.get("groups", 1)
    input_shape = (4, 5, channels) if "layout" not in kwargs else (channels, 4, 5)
    W = stridedop.conv_view(kernel, input_shape, **kwargs)
    assert type(W.base) is bytes
    for derived in (np.ndarray.view(W, np.ndarray), W[1:], W[..., 0], W.T):
        assert find_operator_view(derived) is W
    buffer = _buffer_of(W)[0]
    assert buffer.base is W.base and not buffer.flags.writeable
    np.testing.assert_array_equal(W.operator.view, W)


def test_conv_view_keeps_the_kernel_it_was_given():
    kernel = np.random.default_rng(0).standard_normal((2, 2, 1, 2))
    W = stridedop.conv_view(kernel, (4, 4, 1))
    expected = np.array(W)
    kernel[...] = 7
    np.testing.assert_array_equal(W.operator.to_matrix(), expected.reshape(W.operator.matrix_shape))


@pytest.mark.parametrize("direction", ["", "H", "T"])
def test_op_views_know_the_operator_of_their_direction(direction):
    op = make_operator((2, 3), (5, 4), 2, 3, {"padding": "same"}, dtype=np.complex128)
    oriented = {"": op, "H": op.H, "T": op.transpose()}[direction]
    W = oriented.view
    assert type(W) is stridedop.OperatorView
    assert W.operator is oriented
    assert W.shape == (*oriented.output_shape, *oriented.input_shape)
    dense, n_in, n_out = np.array(W), len(oriented.input_shape), len(oriented.output_shape)
    x = random_like((*oriented.input_shape, 2), W.dtype)
    y = random_like((2, *oriented.output_shape), W.dtype)
    assert_same_result(np.tensordot(W, x, n_in), np.tensordot(dense, x, n_in))
    assert_same_result(np.tensordot(y, W, n_out), np.tensordot(y, dense, n_out))


@pytest.mark.parametrize(("k", "m", "channels", "filters", "kwargs"), GEOMETRIES, ids=IDS)
def test_circular_operator_of_conv_view_equals_the_view(k, m, channels, filters, kwargs):
    # A circular buffer holds the kernel folded: the operator rebuilt from it must equal the view.
    op = make_operator(k, m, channels, filters, kwargs)
    W = stridedop.conv_view(op._kernel, op.input_shape, **kwargs)
    dense = np.array(W)
    np.testing.assert_array_equal(W.operator.to_matrix(), dense.reshape(op.matrix_shape))
    x = random_like(op.input_shape, W.dtype)
    np.testing.assert_allclose(W.operator @ x, np.tensordot(dense, x, x.ndim), atol=1e-12)


# -- contractions through the operator ---------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.complex128, np.float32])
@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
@pytest.mark.parametrize(("k", "m", "channels", "filters", "kwargs"), GEOMETRIES, ids=IDS)
def test_tensordot_both_directions_equal_numpy_dense(k, m, channels, filters, kwargs, layout, dtype):
    op = make_operator(k, m, channels, filters, kwargs, layout, dtype)
    W = op.view
    dense = np.array(W)
    n_in, n_out = len(op.input_shape), len(op.output_shape)
    x = random_like(op.input_shape, dtype)
    assert_same_result(np.tensordot(W, x, n_in), np.tensordot(dense, x, n_in))
    assert _tensordot(W, x, n_in) is not NotImplemented and _tensordot(x, W, 0) is NotImplemented
    xb = random_like((*op.input_shape, 2, 3), dtype)  # trailing batch axes
    assert_same_result(np.tensordot(W, xb, n_in), np.tensordot(dense, xb, n_in))
    y = random_like(op.output_shape, dtype)
    assert_same_result(np.tensordot(y, W, n_out), np.tensordot(y, dense, n_out))
    yb = random_like((3, *op.output_shape), dtype)  # leading batch axes
    assert_same_result(np.tensordot(yb, W, n_out), np.tensordot(yb, dense, n_out))


@pytest.mark.parametrize(("k", "m", "channels", "filters", "kwargs"), GEOMETRIES[:5], ids=IDS[:5])
def test_einsum_of_the_two_contractions_equals_numpy_dense(k, m, channels, filters, kwargs):
    op = make_operator(k, m, channels, filters, kwargs, dtype=np.complex128)
    W, dense = op.view, np.array(op.view)
    n_out, n_in = len(op.output_shape), len(op.input_shape)
    rows, cols = "abcdefg"[:n_out], "hijklmn"[:n_in]
    xb = random_like((*op.input_shape, 2), W.dtype)
    yb = random_like((2, *op.output_shape), W.dtype)
    for spec, other, view_first in [
        (f"{rows}{cols},{cols}z->{rows}z", xb, True),
        (f"{rows}{cols},{cols}z->z{rows[::-1]}", xb, True),
        (f"{cols}z,{rows}{cols}", xb, False),  # the view second, implicit output
        (f"z{rows},{rows}{cols}->z{cols}", yb, False),
        (f"{rows}{cols},z{rows}->{cols}z", yb, True),
    ]:
        args = (W, other) if view_first else (other, W)
        dense_args = (dense, other) if view_first else (other, dense)
        assert _einsum(spec, *args) is not NotImplemented  # through the operator
        assert_same_result(np.einsum(spec, *args), np.einsum(spec, *dense_args))


def test_explicit_axes_in_any_order_are_the_same_contraction():
    op = make_operator((2, 3), (5, 6), 2, 3, {"padding": "same"})
    W, dense = op.view, np.array(op.view)
    x = random_like((6, 5, 4, 2), W.dtype)  # the input's axes permuted, a batch axis between
    axes = ([4, 3, 5], [0, 1, 3])
    assert_same_result(np.tensordot(W, x, axes), np.tensordot(dense, x, axes))
    y = random_like((3, 5, 6), W.dtype)
    axes = ([1, 2, 0], [0, 1, 2])  # y's axes against W's output axes: the transpose
    assert_same_result(np.tensordot(y, W, axes), np.tensordot(y, dense, axes))
    assert_same_result(np.tensordot(W, y, (axes[1], axes[0])), np.tensordot(dense, y, (axes[1], axes[0])))


@pytest.mark.parametrize("dtype", [np.int64, np.int8, np.bool_, np.float16])
def test_integer_and_boolean_contractions_keep_numpys_dtype_and_values(dtype):
    rng = np.random.default_rng(3)
    kernel = rng.integers(0, 3, (2, 2, 2, 3)).astype(dtype)
    W = stridedop.conv_view(kernel, (4, 5, 2), padding="same")
    dense = np.array(W)
    x = rng.integers(0, 3, (4, 5, 2, 2)).astype(dtype)
    got, expected = np.tensordot(W, x, 3), np.tensordot(dense, x, 3)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    if dtype == np.float16:
        np.testing.assert_allclose(got, expected, rtol=1e-2)
    else:
        np.testing.assert_array_equal(got, expected)
    mixed = np.tensordot(W, x.astype(np.float64), 3)
    assert mixed.dtype == np.result_type(dtype, np.float64)


def test_contractions_do_not_build_the_dense_tensor():
    kernel = np.random.default_rng(0).standard_normal((3, 3, 4, 4))
    x = np.random.default_rng(1).standard_normal((24, 24, 4))
    W = stridedop.conv_view(kernel, x.shape)  # dense: 36 MB
    W.operator  # noqa: B018 (built before measuring)
    y = np.ones(W.operator.output_shape)
    for contraction in (
        lambda: np.tensordot(W, x, 3),
        lambda: np.tensordot(y, W, 3),
        lambda: np.einsum("abcdef,def->abc", W, x),
    ):
        tracemalloc.start()
        contraction()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < W.nbytes // 8


def test_other_operations_keep_numpys_meaning():
    op = make_operator((2, 2), (3, 4), 2, 2, {})
    W, dense = op.view, np.array(op.view)
    v = random_like((2, 5), W.dtype)
    assert_same_result(W @ v, dense @ v)  # the 6-D view: NumPy's batched matmul
    assert_same_result(np.dot(W, v), np.dot(dense, v))
    assert_same_result(np.tensordot(W, v, 1), np.tensordot(dense, v, 1))
    assert_same_result(np.einsum("abcdef->af", W), np.einsum("abcdef->af", dense))
    spec, ones = "abcdef,f->abcde", np.ones(2)
    assert_same_result(np.einsum(spec, W, ones), np.einsum(spec, dense, ones))
    with pytest.raises(ValueError):
        np.tensordot(W, np.ones((3, 4, 3)), 3)  # wrong sizes: NumPy's own error


def derived(W):
    return {
        "W[0]": W[0],
        "W[1:]": W[1:],
        "W[...]": W[...],
        "W[:, ::2]": W[:, ::2],
        "W.T": W.T,
        "W.mT": W.mT,
        "transpose": W.transpose(),
        "np.transpose": np.transpose(W),
        "reshape": W.reshape(W.shape[0], -1),
        "np.reshape": np.reshape(W, -1),
        "ravel": W.ravel(),
        "copy": W.copy(),
        "copy.copy": copy.copy(W),
        "np.array": np.array(W),
        "np.asarray": np.asarray(W),
        "view()": W.view(),
        "view(ndarray)": W.view(np.ndarray),
        "astype": W.astype(np.float32),
        "2 * W": 2 * W,
        "W + W": W + W,
        "abs": abs(W),
        "np.sqrt": np.sqrt(abs(W)),
        "sum axis": W.sum(axis=0),
        "np.max axis": np.max(W, axis=1),
        "cumsum": W.cumsum(axis=0),
        "real": W.real,
        "conj": W.conj(),
        "flat": W.flat[:3],
        "iter": next(iter(W)),
        "squeeze": W.squeeze(),
        "swapaxes": W.swapaxes(0, 1),
        "concatenate": np.concatenate([W, W]),
        "stack": np.stack([W, W]),
        "where": np.where(W > 0, W, 0),
        "moveaxis": np.moveaxis(W, 0, -1),
        "broadcast_to": np.broadcast_to(W, W.shape),
        "as_strided": np.lib.stride_tricks.as_strided(W, W.shape, W.strides),
        "atleast_3d": np.atleast_3d(W),
        "round": W.round(2),
        "clip": W.clip(0, 1),
        "argmax axis": W.argmax(axis=0),
        "W @ v": W @ np.ones((W.shape[-1], 2)),
    }


@pytest.mark.parametrize("name", list(derived(np.zeros((2, 2, 2, 2)))))
def test_derived_arrays_are_plain_ndarrays(name):
    op = make_operator((2, 2), (3, 4), 2, 2, {"padding": "same"})
    W = op.view
    result = derived(W)[name]
    assert type(result) is np.ndarray
    np.testing.assert_array_equal(result, derived(np.array(W))[name])


def test_an_orphan_operator_view_behaves_as_a_plain_array():
    W = stridedop.conv_view(np.ones((2, 1, 1)), (3, 1))
    for orphan in (W.view(stridedop.OperatorView), stridedop.OperatorView((2, 3))):
        with pytest.raises(AttributeError, match="no operator"):
            orphan.operator  # noqa: B018
        assert repr(orphan) == repr(np.asarray(orphan))
        assert orphan._repr_html_() is None
        assert type(pickle.loads(pickle.dumps(orphan))) is np.ndarray
        assert type(copy.deepcopy(orphan)) is np.ndarray
        np.testing.assert_array_equal(copy.deepcopy(orphan), orphan)
    orphan = W.view(stridedop.OperatorView)
    ones = np.ones((3, 1))
    np.testing.assert_array_equal(np.tensordot(orphan, ones, 2), np.tensordot(np.array(W), ones, 2))


# -- pickling ----------------------------------------------------------------------------------
@pytest.mark.parametrize("direction", ["", "H", "T"])
@pytest.mark.parametrize("dtype", [np.float32, np.complex128])
def test_pickle_and_deepcopy_store_kernel_and_geometry(direction, dtype):
    op = make_operator((3, 3), (16, 16), 8, 8, {"padding": "same", "stride": 2}, dtype=dtype)
    oriented = {"": op, "H": op.H, "T": op.transpose()}[direction]
    W = oriented.view
    for loaded in (pickle.loads(pickle.dumps(W)), copy.deepcopy(W)):
        assert type(loaded) is stridedop.OperatorView
        assert not loaded.flags.writeable
        assert loaded.shape == W.shape and loaded.dtype == W.dtype
        np.testing.assert_array_equal(loaded, W)
        assert loaded.operator.input_shape == oriented.input_shape
    assert len(pickle.dumps(W)) <= op._kernel.nbytes + 4096 < W.nbytes


def test_pickle_of_a_conv_view_and_of_a_structured_matrix():
    kernel = np.random.default_rng(0).standard_normal((3, 3, 4, 4))
    W = stridedop.conv_view(kernel, (20, 20, 4), padding="circular")
    assert len(pickle.dumps(W)) <= kernel.nbytes + 4096
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(W)), W)
    T = stridedop.hankel(np.arange(300.0), np.arange(200.0))
    loaded = pickle.loads(pickle.dumps(T))
    assert type(loaded) is stridedop.OperatorView and len(pickle.dumps(T)) <= 500 * 8 + 4096
    np.testing.assert_array_equal(loaded, T)


# -- display -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make",
    [
        lambda: stridedop.conv_view(np.ones((3, 3, 16, 16)), (32, 32, 16)),
        lambda: stridedop.conv_view(np.ones((5, 16, 16, 3, 3, 3)), (16, 10, 10, 10), layout="channels_first"),
        lambda: stridedop.toeplitz(np.arange(10000.0)),
        lambda: stridedop.ConvOperator(np.ones((3, 2, 2)) + 1j, (40, 2), padding="full").H.view,
        lambda: stridedop.circulant(np.arange(7)),
    ],
)
def test_repr_and_str_are_short_for_any_size(make):
    W = make()
    for text in (repr(W), str(W)):
        assert len(text) <= 2000
        assert str(W.shape) in text or "OperatorView([[" in text
        assert "operator=" in text and str(W.dtype) in text


def test_repr_of_each_direction_names_its_own_shapes():
    op = stridedop.ConvOperator(np.ones((3, 3, 2, 4)) + 1j, (8, 7, 2))
    for oriented in (op, op.transpose(), op.H):
        assert f"{oriented.input_shape} -> {oriented.output_shape}" in repr(oriented)
        assert f"{oriented.input_shape} -> {oriented.output_shape}" in repr(oriented.view)
    assert "ConvOperator.T " in repr(op.transpose()) and "ConvOperator.H " in repr(op.H)


class TagChecker(html.parser.HTMLParser):
    """Collects tags and checks that every opened tag is closed in order."""

    VOID = {"br", "img", "hr", "meta", "input", "col"}

    def __init__(self):
        super().__init__()
        self.stack, self.seen = [], []

    def handle_starttag(self, tag, attrs):
        self.seen.append(tag)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.seen.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()


def check_html(text):
    checker = TagChecker()
    checker.feed(text)
    checker.close()
    assert not checker.stack, f"unclosed tags {checker.stack}"
    return checker.seen


@pytest.mark.parametrize(
    "make",
    [
        lambda: stridedop.conv_view(np.ones((3, 3, 16, 16)), (32, 32, 16), padding="same", stride=2),
        lambda: stridedop.ConvOperator(np.ones((3, 3, 2, 4)), (9, 9, 4), padding="circular", groups=2).T.view,
        lambda: stridedop.ConvOperator(np.ones((4, 2, 3)), (2, 50), layout="channels_first").view,
        lambda: stridedop.hankel(np.arange(30.0)),
        lambda: stridedop.ConvOperator(np.ones((3, 3, 2, 2)), (8, 8, 2), padding=1, padding_mode="reflect"),
        lambda: stridedop.ConvOperator(np.ones((3, 3, 2, 2)), (8, 8, 2), padding="same").H,
        lambda: (
            stridedop.ConvOperator(np.ones((3, 3, 2, 2)), (8, 8, 2), stride=2)
            + stridedop.ConvOperator(np.ones((3, 3, 2, 2)), (8, 8, 2), stride=2, dilation=1, padding=0).T.T
        ),
    ],
)
def test_html_display_is_a_table_and_a_picture(make):
    shown = make()
    text = shown._repr_html_()
    tags = check_html(text)
    assert "table" in tags and "caption" in tags
    if not hasattr(shown, "terms"):
        assert "svg" in tags and tags.count("rect") <= 1 + 600  # a few hundred cells at most
    assert len(text) < 200_000


def test_picture_counts_the_structural_non_zeros_exactly():
    from stridedop._display import _pattern_of

    op = stridedop.ConvOperator(np.ones((3, 2, 2, 4)), (7, 5, 4), padding="same", stride=(2, 1), groups=2)
    for oriented in (op, op.T):
        matrix = oriented.to_matrix() != 0  # all-ones kernel: every structural non-zero is non-zero
        rows, cols = np.arange(0, matrix.shape[0] + 1, 7), np.arange(0, matrix.shape[1] + 1, 5)
        expected = np.array([[matrix[:r, :c].sum() for c in cols] for r in rows])
        np.testing.assert_array_equal(_pattern_of(oriented).corner(rows, cols), expected)


def test_picture_of_many_axes_counts_exactly_in_one_inner_count_per_axis(monkeypatch):
    # The picture's counts recurse over the Kronecker factors (one per spatial axis, then the
    # channels): one inner count per factor, where four per factor took 4**N calls (3.4 s for
    # a one-entry kernel on 8 axes, past 20 s on 10).
    from stridedop import _display

    op = stridedop.ConvOperator(np.ones((2, 1, 3, 2, 2, 4)), (3, 2, 4, 2, 4), padding="same", groups=2)
    calls = []
    count = _display._Kronecker.corner
    monkeypatch.setattr(
        _display._Kronecker, "corner", lambda self, *args: calls.append(1) or count(self, *args)
    )
    for oriented in (op, op.T):
        calls.clear()
        matrix = oriented.to_matrix() != 0
        rows, cols = np.arange(0, matrix.shape[0] + 1, 11), np.arange(0, matrix.shape[1] + 1, 7)
        expected = np.array([[matrix[:r, :c].sum() for c in cols] for r in rows])
        np.testing.assert_array_equal(_display._pattern_of(oriented).corner(rows, cols), expected)
        assert len(calls) == 4 + 1  # the four spatial axes and the channels
    W = stridedop.conv_view(np.ones((1,) * 31 + (2, 1)), (2,) + (1,) * 30)
    assert "svg" in check_html(W._repr_html_())


# -- materialize -------------------------------------------------------------------------------
def test_materialize_takes_the_operator_path_for_views_and_their_permutations(monkeypatch):
    import stridedop._dense as dense_module

    op = make_operator((2, 3), (5, 6), 2, 3, {"padding": "same"})
    calls = []
    original = dense_module._write_kernel_entries
    monkeypatch.setattr(dense_module, "_write_kernel_entries", lambda *a: calls.append(1) or original(*a))
    W = stridedop.conv_view(op._kernel, op.input_shape, padding="same")
    for array in (W, W.T, W[...], np.transpose(W, (3, 4, 5, 0, 1, 2)), op.H.view):
        result = stridedop.materialize(array)
        np.testing.assert_array_equal(result, np.array(array))
        assert result.flags.writeable and result.flags.owndata and result.flags.c_contiguous
    assert len(calls) == 5
    for array in (W[1:], W[:, :, 0], W[..., ::2]):  # slices: a plain copy, equal
        np.testing.assert_array_equal(stridedop.materialize(array), np.array(array))
    assert len(calls) == 5


def test_the_global_buffer_registry_is_gone():
    import stridedop._buffer as buffer_module

    assert not hasattr(buffer_module, "register_buffer")
    assert not hasattr(buffer_module, "lookup_buffer")
    assert not hasattr(buffer_module, "_REGISTRY")


# -- structured matrices -----------------------------------------------------------------------
STRUCTURED = [
    lambda: stridedop.toeplitz(np.arange(1.0, 8.0), np.arange(10.0, 15.0)),
    lambda: stridedop.toeplitz(np.arange(1.0, 6.0) + 1j),
    lambda: stridedop.hankel(np.arange(1.0, 8.0), np.arange(10.0, 15.0)),
    lambda: stridedop.hankel(np.arange(4)),
    lambda: stridedop.circulant(np.arange(1.0, 7.0) - 2j),
    lambda: stridedop.convolution_matrix(np.arange(1.0, 4.0), 6, mode="full"),
    lambda: stridedop.convolution_matrix(np.arange(1.0, 9.0), 5, mode="same"),
    lambda: stridedop.convolution_matrix(np.arange(1, 4), 7, mode="valid"),
    # large enough for the FFT products
    lambda: stridedop.hankel(np.linspace(-1, 1, 600) + 0.5j, np.cos(np.arange(500.0))),
    lambda: stridedop.circulant(np.sin(np.arange(700.0))),
    lambda: stridedop.convolution_matrix(np.cos(np.arange(300.0)), 900, mode="same"),
]


@pytest.mark.parametrize("make", STRUCTURED)
def test_structured_products_go_through_the_operator_and_equal_numpy(make):
    T = make()
    dense = np.array(T)
    assert type(T) is stridedop.OperatorView and T.operator.shape == T.shape
    v = random_like(T.shape[1], T.dtype)
    V = random_like((T.shape[1], 3), T.dtype)
    u = random_like(T.shape[0], T.dtype)
    U = random_like((2, T.shape[0]), T.dtype)
    for got, expected in [
        (T @ v, dense @ v),
        (T @ V, dense @ V),
        (np.dot(T, v), np.dot(dense, v)),
        (T.dot(V), dense.dot(V)),
        (u @ T, u @ dense),
        (U @ T, U @ dense),
        (np.dot(U, T), np.dot(U, dense)),
        (T.operator @ v, dense @ v),
        (T.operator.H @ u, dense.conj().T @ u),
    ]:
        assert_same_result(got, expected)
    np.testing.assert_array_equal(T.operator.to_matrix(), dense)
    np.testing.assert_array_equal(T.operator.view, T)


def test_structured_product_reads_no_dense_matrix():
    c = np.random.default_rng(0).standard_normal(3000)
    T = stridedop.toeplitz(c)
    v = np.ones(3000)
    T @ v  # noqa: B018 (warm up: the operator is built on first use)
    tracemalloc.start()
    result = T @ v
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < T.nbytes // 20
    np.testing.assert_allclose(result, np.asarray(T) @ v)


def test_batched_structured_matrices_keep_numpys_matmul():
    c = np.arange(12.0).reshape(2, 6)
    T = stridedop.toeplitz(c)
    assert type(T) is np.ndarray and not T.flags.writeable
    v = np.ones((2, 6, 3))
    np.testing.assert_allclose(T @ v, np.array(T) @ v)


# -- the notebook ------------------------------------------------------------------------------
def test_the_tour_notebook_runs(tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("ipykernel")
    import os
    import pathlib

    root = pathlib.Path(__file__).parent.parent
    path = root / "examples" / "tour.ipynb"
    # The kernel (and the command line it starts) import this checkout's stridedop.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    resources = {"metadata": {"path": str(tmp_path)}}
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3", resources=resources).execute()
    shown = [output for cell in notebook.cells for output in cell.get("outputs", [])]
    assert any(
        "image/svg" in output.get("data", {}).get("text/html", "")
        or "<svg" in output.get("data", {}).get("text/html", "")
        for output in shown
    )


# -- a property over random geometry -------------------------------------------------------------
hypothesis = pytest.importorskip("hypothesis")
strategies = hypothesis.strategies


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(
    data=strategies.data(),
    ndim=strategies.integers(1, 2),
    groups=strategies.sampled_from([1, 2]),
    padding=strategies.sampled_from(["valid", "same", "full", "circular", 1]),
    layout=strategies.sampled_from(["channels_last", "channels_first"]),
    complex_=strategies.booleans(),
)
def test_tensordot_equals_numpy_dense_on_random_geometry(data, ndim, groups, padding, layout, complex_):
    sizes = data.draw(strategies.lists(strategies.integers(1, 6), min_size=ndim, max_size=ndim))
    kernel = [data.draw(strategies.integers(1, size + (padding != "valid") * 2)) for size in sizes]
    if padding == "valid":
        kernel = [min(k, m) for k, m in zip(kernel, sizes)]
    stride = data.draw(strategies.integers(1, 2))
    geometry = {"padding": padding, "groups": groups, "stride": stride}
    dtype = np.complex128 if complex_ else np.float64
    op = make_operator(tuple(kernel), tuple(sizes), 2 * groups, 2 * groups, geometry, layout, dtype)
    W, dense = op.view, np.array(op.view)
    x = random_like((*op.input_shape, 2), W.dtype)
    y = random_like((2, *op.output_shape), W.dtype)
    assert_same_result(np.tensordot(W, x, ndim + 1), np.tensordot(dense, x, ndim + 1))
    assert_same_result(np.tensordot(y, W, ndim + 1), np.tensordot(y, dense, ndim + 1))
