import pickle
import tracemalloc

import numpy as np
import pytest
from oracles import direct_convolution, pads_for

import stridedop

GEOMETRIES = [
    {},
    {"padding": "same"},
    {"padding": "full"},
    {"padding": "circular"},
    {"padding": [(2, 0), (1, 3)]},
    {"stride": 2, "padding": "same"},
    {"stride": (1, 3), "dilation": (2, 1)},
    {"dilation": 2, "padding": "full"},
    {"groups": 2, "padding": "same"},
    {"groups": 4, "stride": 2},
    {"padding": "circular", "stride": 2, "dilation": 2},
]


def make_operator(kwargs, layout="channels_last", dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    groups = kwargs.get("groups", 1)
    kernel = rng.standard_normal((3, 2, 4 // groups if groups == 4 else 2, 4))
    if np.dtype(dtype).kind == "c":
        kernel = kernel + 1j * rng.standard_normal(kernel.shape)
    kernel = kernel.astype(dtype)
    channels = kernel.shape[2] * groups
    m = (7, 6)
    if layout == "channels_first":
        kernel = kernel.transpose(3, 2, 0, 1)
        return stridedop.ConvOperator(kernel, (channels, *m), layout=layout, **kwargs)
    return stridedop.ConvOperator(kernel, (*m, channels), **kwargs)


def random_like(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        x = x + 1j * rng.standard_normal(shape)
    return x.astype(dtype)


@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
@pytest.mark.parametrize("kwargs", GEOMETRIES)
def test_apply_matches_tensordot_on_the_view(kwargs, layout):
    op = make_operator(kwargs, layout)
    x = random_like(op.input_shape, np.float64, 1)
    expected = np.tensordot(op.view, x, len(op.input_shape))
    np.testing.assert_allclose(op @ x, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(op.apply(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
@pytest.mark.parametrize("kwargs", GEOMETRIES)
def test_adjoint_matches_tensordot_on_the_conjugate_view(kwargs, layout):
    op = make_operator(kwargs, layout, dtype=np.complex128)
    y = random_like(op.output_shape, np.complex128, 2)
    k = len(op.output_shape)
    expected = np.tensordot(np.conj(op.view), y, (tuple(range(k)), tuple(range(k))))
    np.testing.assert_allclose(op.H @ y, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(op.H @ y, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128])
@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
@pytest.mark.parametrize("kwargs", GEOMETRIES)
def test_dot_test(kwargs, layout, dtype):
    op = make_operator(kwargs, layout, dtype=dtype)
    x = random_like(op.input_shape, dtype, 3)
    y = random_like(op.output_shape, dtype, 4)
    left = np.vdot(op @ x, y)  # <A x, y>
    right = np.vdot(x, op.H @ y)  # <x, A^H y>
    tolerance = 1e-4 if np.dtype(dtype).itemsize <= 8 and dtype != np.float64 else 1e-11
    assert abs(left - right) <= tolerance * max(abs(left), 1.0)


@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
@pytest.mark.parametrize("padding", ["valid", "same", "circular"])
@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("batch", [(), (1,), (2,)])
@pytest.mark.parametrize(
    "arrange",
    [
        np.asfortranarray,
        lambda a: a[..., ::-1][..., ::-1],
        lambda a: np.moveaxis(np.moveaxis(a, -1, 0).copy(), 0, -1),
    ],
    ids=["fortran", "negative-strides", "moved-axes"],
)
def test_inputs_in_any_memory_order(arrange, batch, n, padding, layout):
    rng = np.random.default_rng(13)
    kernel = rng.standard_normal((*[3, 2, 2][:n], 2, 3))
    if layout == "channels_first":
        kernel = kernel.transpose(n + 1, n, *range(n))
        op = stridedop.ConvOperator(kernel, (2, *[5, 4, 3][:n]), padding=padding, layout=layout)
    else:
        op = stridedop.ConvOperator(kernel, (*[5, 4, 3][:n], 2), padding=padding)
    x = rng.standard_normal((*batch, *op.input_shape))
    y = rng.standard_normal((*batch, *op.output_shape))
    k = len(op.input_shape)
    np.testing.assert_allclose(op @ arrange(x), op @ np.ascontiguousarray(x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(op.H @ arrange(y), op.H @ np.ascontiguousarray(y), rtol=1e-12, atol=1e-12)
    expected = np.tensordot(
        x, op.view, (tuple(range(x.ndim - k, x.ndim)), tuple(range(op.ndim - k, op.ndim)))
    )
    np.testing.assert_allclose(op @ arrange(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kwargs", GEOMETRIES)
def test_batched_equals_looped(kwargs):
    op = make_operator(kwargs)
    xs = random_like((2, 3, *op.input_shape), np.float64, 5)
    batched = op @ xs
    assert batched.shape == (2, 3, *op.output_shape)
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(batched[i, j], op @ xs[i, j], rtol=1e-12, atol=1e-12)
    ys = random_like((4, *op.output_shape), np.float64, 6)
    adjoint = op.H @ ys
    for i in range(4):
        np.testing.assert_allclose(adjoint[i], op.H @ ys[i], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
@pytest.mark.parametrize("kwargs", [{}, {"padding": "same", "dilation": 2}, {"groups": 2, "padding": "full"}])
def test_many_channels_and_filters_per_group(kwargs, layout):
    # More than 16 filters per group: the channels-last product puts the pixels on its long side;
    # more than 4 channels per group: the adjoint is a correlation rather than a scatter.
    rng = np.random.default_rng(12)
    kernel = rng.standard_normal((3, 3, 6, 40))
    channels = 6 * kwargs.get("groups", 1)
    if layout == "channels_first":
        op = stridedop.ConvOperator(kernel.transpose(3, 2, 0, 1), (channels, 9, 8), layout=layout, **kwargs)
    else:
        op = stridedop.ConvOperator(kernel, (9, 8, channels), **kwargs)
    x = rng.standard_normal((2, *op.input_shape))
    y = rng.standard_normal((2, *op.output_shape))
    k = len(op.input_shape)
    np.testing.assert_allclose(
        op @ x, np.stack([np.tensordot(op.view, v, k) for v in x]), rtol=1e-12, atol=1e-12
    )
    adjoint = np.stack([np.tensordot(op.view, v, (tuple(range(k)), tuple(range(k)))) for v in y])
    np.testing.assert_allclose(op.H @ y, adjoint, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kwargs", GEOMETRIES)
def test_apply_matches_direct_convolution(kwargs):
    rng = np.random.default_rng(7)
    groups = kwargs.get("groups", 1)
    kernel = rng.standard_normal((3, 2, 2, 4)) if groups != 4 else rng.standard_normal((3, 2, 1, 4))
    x = rng.standard_normal((7, 6, kernel.shape[2] * groups))
    op = stridedop.ConvOperator(kernel, x.shape, **kwargs)
    np.testing.assert_allclose(op @ x, direct_convolution(x, kernel, **kwargs), rtol=1e-12, atol=1e-12)


TORCH_APPLY = [
    (n, padding, stride, dilation, groups, layout)
    for n in (1, 2, 3)
    for padding in ("valid", "same", "circular", "pairs")
    for stride, dilation in ((1, 1), (2, 1), (1, 2))
    for groups in (1, 2)
    for layout in ("channels_last", "channels_first")
]


@pytest.mark.parametrize(("n", "padding", "stride", "dilation", "groups", "layout"), TORCH_APPLY)
def test_apply_and_adjoint_match_torch(n, padding, stride, dilation, groups, layout):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(n * 100 + stride * 10 + dilation)
    m, k = [7, 6, 5][:n], [3, 2, 2][:n]
    if padding == "pairs":
        padding = [(1, 0), (0, 2), (2, 1)][:n]
    kernel_cf = rng.standard_normal((2 * groups, 2, *k))  # (F, C // groups, *k)
    x_cf = rng.standard_normal((3, 2 * groups, *m))  # a batch of 3, (C, *m)
    pads = pads_for(padding, m, k, [stride] * n, [dilation] * n)
    mode = "wrap" if padding == "circular" else "constant"
    xp = np.pad(x_cf, [(0, 0), (0, 0), *pads], mode=mode)
    conv = getattr(torch.nn.functional, f"conv{n}d")
    kernel_t = torch.from_numpy(kernel_cf)
    expected = conv(torch.from_numpy(xp), kernel_t, stride=stride, dilation=dilation, groups=groups).numpy()
    if layout == "channels_first":
        op = stridedop.ConvOperator(
            kernel_cf,
            x_cf.shape[1:],
            padding=padding,
            stride=stride,
            dilation=dilation,
            groups=groups,
            layout=layout,
        )
        got = op @ x_cf
    else:
        kernel = kernel_cf.transpose(*range(2, n + 2), 1, 0)
        x = np.moveaxis(x_cf, 1, -1)
        op = stridedop.ConvOperator(
            kernel, x.shape[1:], padding=padding, stride=stride, dilation=dilation, groups=groups
        )
        got = np.moveaxis(op @ x, -1, 1)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)
    if padding != "circular":
        # The adjoint is the gradient of <conv(x), y> with respect to x: torch's conv_transpose.
        y = rng.standard_normal(expected.shape)
        xt = torch.from_numpy(xp).requires_grad_(True)
        (
            conv(xt, kernel_t, stride=stride, dilation=dilation, groups=groups) * torch.from_numpy(y)
        ).sum().backward()
        grad = xt.grad.numpy()[
            (slice(None), slice(None), *[slice(lo, lo + size) for (lo, _), size in zip(pads, m)])
        ]
        if layout == "channels_first":
            np.testing.assert_allclose(op.H @ y, grad, rtol=1e-10, atol=1e-10)
        else:
            np.testing.assert_allclose(
                np.moveaxis(op.H @ np.moveaxis(y, 1, -1), -1, 1), grad, rtol=1e-10, atol=1e-10
            )


def test_apply_never_builds_the_dense_operator():
    # 3x3x16x16 on 64x64x16: the dense float64 operator would take about 4 GB.
    rng = np.random.default_rng(8)
    op = stridedop.ConvOperator(rng.standard_normal((3, 3, 16, 16)), (64, 64, 16), padding="same")
    assert op.nbytes > 4 * 10**9
    x = rng.standard_normal(op.input_shape)
    tracemalloc.start()
    y = op @ x
    _, peak_apply = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    op.H @ y
    _, peak_adjoint = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # Of the order of the input times the taps (9 * 512 KiB), far from the 4 GB operator.
    limit = 2 * x.nbytes * 9 + 2**20
    assert peak_apply < limit and peak_adjoint < limit, (peak_apply, peak_adjoint)


def test_shapes_and_sizes():
    op = stridedop.ConvOperator(np.ones((3, 3, 2, 5)), (8, 7, 2), padding="same", stride=2)
    assert op.input_shape == (8, 7, 2) and op.output_shape == (4, 4, 5)
    assert op.shape == op.view.shape == (4, 4, 5, 8, 7, 2) and op.ndim == 6
    assert op.dtype == np.float64 and op.nbytes == op.view.nbytes
    assert 0 < op.buffer_nbytes < op.nbytes
    assert op.H.input_shape == (4, 4, 5) and op.H.output_shape == (8, 7, 2)
    assert op.H.view.shape == (8, 7, 2, 4, 4, 5) and not op.H.view.flags.writeable
    assert op.H.H is op


def test_adjoint_view_is_the_conjugate_transpose():
    kernel = np.arange(8).reshape(2, 2, 2) * (1 + 2j)
    op = stridedop.ConvOperator(kernel, (5, 2), padding="same")
    np.testing.assert_array_equal(op.H.view, np.conj(op.view).transpose(2, 3, 0, 1))


def test_shape_errors_name_what_was_expected():
    op = stridedop.ConvOperator(np.ones((3, 2, 4)), (6, 2))
    with pytest.raises(
        ValueError, match=r"`x` must have shape \(6, 2\) or \(\*batch, \*\(6, 2\)\), got \(6, 3\)"
    ):
        op @ np.ones((6, 3))
    with pytest.raises(
        ValueError, match=r"`x` must have shape \(4, 4\) or \(\*batch, \*\(4, 4\)\), got \(5,\)"
    ):
        op.H @ np.ones(5)
    with pytest.raises(TypeError, match="`x` has dtype <U1, which is not numeric"):
        op @ np.array(["a"] * 12).reshape(6, 2)


def test_to_matrix_is_the_dense_operator_as_a_matrix():
    op = make_operator({"padding": "same", "stride": 2})
    matrix = op.to_matrix()
    assert matrix.shape == (np.prod(op.output_shape), np.prod(op.input_shape))
    assert matrix.flags.writeable and matrix.flags.c_contiguous
    np.testing.assert_array_equal(matrix, np.asarray(op.view).reshape(matrix.shape))
    with pytest.raises(MemoryError, match="max_bytes"):
        op.to_matrix(max_bytes=100)


@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
@pytest.mark.parametrize("kwargs", GEOMETRIES)
def test_sparse_equals_dense_with_exactly_the_structural_nonzeros(kwargs, layout):
    pytest.importorskip("scipy")
    op = make_operator(kwargs, layout)
    sparse = op.to_sparse()
    dense = op.to_matrix()
    assert sparse.format == "csr" and sparse.shape == dense.shape
    np.testing.assert_array_equal(sparse.toarray(), dense)
    # Structural non-zeros: where a tap lands, counted from the view with an all-ones kernel.
    ones = stridedop.ConvOperator(np.ones(op._kernel.shape), op.input_shape, **{**kwargs, "layout": layout})
    assert sparse.nnz == np.count_nonzero(ones.to_matrix())
    assert sparse.has_canonical_format
    np.testing.assert_array_equal(op.H.to_sparse().toarray(), dense.T)


@pytest.mark.filterwarnings("ignore:Constructing a DIA matrix")  # scipy's own efficiency hint
@pytest.mark.parametrize("fmt", ["csr", "csc", "coo", "bsr", "lil", "dok", "dia"])
def test_sparse_formats(fmt):
    pytest.importorskip("scipy")
    op = make_operator({"padding": "same"})
    sparse = op.to_sparse(fmt)
    assert sparse.format == fmt
    np.testing.assert_array_equal(sparse.toarray(), op.to_matrix())


def test_sparse_uses_32_bit_indices_where_they_fit():
    pytest.importorskip("scipy")
    sparse = stridedop.ConvOperator(np.ones((3, 3, 8, 8)), (32, 32, 8)).to_sparse()
    assert sparse.indices.dtype == np.int32 and sparse.indptr.dtype == np.int32


def test_sparse_rejects_unknown_formats():
    pytest.importorskip("scipy")
    with pytest.raises(ValueError, match="`format` must be one of 'csr', .* got 'xyz'"):
        make_operator({}).to_sparse("xyz")


def test_complex_sparse_adjoint_is_conjugated():
    pytest.importorskip("scipy")
    op = make_operator({"padding": "same"}, dtype=np.complex128)
    np.testing.assert_array_equal(op.H.to_sparse().toarray(), op.to_matrix().conj().T)


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_linear_operator(dtype):
    pytest.importorskip("scipy")
    op = make_operator({"padding": "same", "groups": 2}, dtype=dtype)
    linear = op.aslinearoperator()
    dense = op.to_matrix()
    assert linear.shape == dense.shape and linear.dtype == np.dtype(dtype)
    v = random_like(dense.shape[1], dtype, 9)
    w = random_like(dense.shape[0], dtype, 10)
    V = random_like((dense.shape[1], 3), dtype, 11)
    np.testing.assert_allclose(linear.matvec(v), dense @ v, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(linear.rmatvec(w), dense.conj().T @ w, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(linear.matmat(V), dense @ V, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(linear.H @ w, dense.conj().T @ w, rtol=1e-12, atol=1e-12)


def test_largest_singular_value_with_svds():
    linalg = pytest.importorskip("scipy.sparse.linalg")
    op = make_operator({"padding": "same"})
    sigma = linalg.svds(op.aslinearoperator(), k=1, return_singular_vectors=False, random_state=0)[0]
    np.testing.assert_allclose(sigma, np.linalg.norm(op.to_matrix(), 2), rtol=1e-8)


def test_pickle_stores_kernel_and_geometry_only():
    op = stridedop.ConvOperator(
        np.random.default_rng(0).standard_normal((3, 3, 16, 16)), (32, 32, 16), padding="same", stride=2
    )
    payload = pickle.dumps(op)
    assert len(payload) <= op._kernel.nbytes + 4096
    clone = pickle.loads(payload)
    np.testing.assert_array_equal(clone.view, op.view)
    assert clone.output_shape == op.output_shape
    x = np.random.default_rng(1).standard_normal(op.input_shape)
    np.testing.assert_array_equal(clone @ x, op @ x)
    adjoint = pickle.loads(pickle.dumps(op.H))
    assert adjoint.input_shape == op.output_shape


def test_a_pickled_geometry_leaves_out_what_the_products_cached():
    # The products keep values derived from a geometry in its instance dict (`_per_geometry`); a
    # pickle of the geometry (a dask graph ships them) must not carry them or name their types.
    op = stridedop.ConvOperator(np.ones((3, 3, 1, 4)), (8, 8, 4), groups=4, padding="same")
    op.H @ (op @ np.ones((2, 8, 8, 4)))
    geometry = op._state.geometry
    assert any(name.startswith("_cached") for name in vars(geometry))
    payload = pickle.dumps(geometry)
    assert b"_cached" not in payload and b"_BatchPads" not in payload
    clone = pickle.loads(payload)
    assert clone == geometry and hash(clone) == hash(geometry)
    assert not any(name.startswith("_cached") for name in vars(clone))


def test_repr_names_class_geometry_and_byte_counts():
    op = stridedop.ConvOperator(np.ones((3, 3, 16, 16)), (32, 32, 16), padding="same")
    text = repr(op)
    assert text.startswith("<ConvOperator (32, 32, 16) -> (32, 32, 16)")
    assert "padding='same'" in text and "dense 2 GiB" in text and "buffer" in text and "MiB" in text
    assert repr(op.H).startswith("<ConvOperator.H (32, 32, 16) -> (32, 32, 16)")
    html = op._repr_html_()
    assert "<table>" in html and "dense operator" in html


def test_missing_scipy_gives_a_clear_message(monkeypatch):
    def no_scipy(name):
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr("stridedop._sparse.importlib.import_module", no_scipy)
    op = make_operator({})
    message = r"needs SciPy, an optional dependency of stridedop; install it with `pip install scipy`"
    for export in (op.to_sparse, op.aslinearoperator):
        with pytest.raises(ImportError, match=message):
            export()
