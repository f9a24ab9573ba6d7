"""SciPy's conventions (.H, .T, adjoint(), matvec, ...), the operator algebra, dottest and PyLops."""

import pickle
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest

import stridedop
from stridedop._algebra import ProductOperator, SumOperator


def _op(seed=0, shape=(3, 3, 2, 4), m=(6, 5, 2), dtype=float, **kwargs):
    rng = np.random.default_rng(seed)
    kernel = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        kernel = kernel + 1j * rng.standard_normal(shape)
    return stridedop.ConvOperator(kernel.astype(dtype), m, **kwargs)


# -- conventions -------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_h_is_the_conjugate_transpose_and_t_the_plain_one(dtype):
    op = _op(dtype=dtype, padding="same")
    dense = op.to_matrix()
    np.testing.assert_allclose(op.H.to_matrix(), dense.conj().T, rtol=1e-13)
    np.testing.assert_allclose(op.transpose().to_matrix(), dense.T, rtol=1e-13)
    np.testing.assert_array_equal(op.transpose().view, np.asarray(op.view).transpose(3, 4, 5, 0, 1, 2))
    np.testing.assert_array_equal(op.H.view, np.conj(op.view).transpose(3, 4, 5, 0, 1, 2))
    y = np.random.default_rng(1).standard_normal(op.output_shape)
    np.testing.assert_allclose((op.transpose() @ y).ravel(), dense.T @ y.ravel(), rtol=1e-12)
    assert op.H.H is op and op.transpose().transpose() is op
    np.testing.assert_allclose(op.H.transpose().to_matrix(), dense.conj(), rtol=1e-13)
    if dtype is np.float64:
        assert op.T is op.H  # no warning: real kernels mean the same in 0.1 and 0.2
    else:
        assert repr(op.transpose()).startswith("<ConvOperator.T ")
        assert repr(op.H).startswith("<ConvOperator.H ")


def test_t_of_a_complex_operator_warns_during_0_2():
    op = _op(dtype=np.complex128)
    with pytest.warns(FutureWarning, match=r"`op.T` is the plain transpose since stridedop 0.2.*op.H"):
        transpose = op.T
    assert transpose is op.transpose()


def test_adjoint_returns_h_and_the_old_call_warns():
    op = _op(dtype=np.complex128)
    assert op.adjoint() is op.H
    y = np.ones(op.output_shape)
    with pytest.warns(DeprecationWarning, match=r"op.adjoint\(y\)` is deprecated.*op.H @ y"):
        old = op.adjoint(y)
    np.testing.assert_array_equal(old, op.H @ y)


@pytest.mark.parametrize("dtype", [np.float32, np.complex128])
def test_matrix_shape_matvec_rmatvec_dot(dtype):
    op = _op(dtype=dtype, padding="same", stride=2)
    rows, columns = op.matrix_shape
    assert (rows, columns) == (int(np.prod(op.output_shape)), int(np.prod(op.input_shape)))
    dense = op.to_matrix()
    rng = np.random.default_rng(2)
    v = rng.standard_normal(columns).astype(dtype)
    u = rng.standard_normal(rows).astype(dtype)
    tolerance = 1e-5 if dtype is np.float32 else 1e-12
    np.testing.assert_allclose(op.matvec(v), dense @ v, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(op.rmatvec(u), dense.conj().T @ u, rtol=tolerance, atol=tolerance)
    assert op.matvec(v[:, None]).shape == (rows, 1)
    np.testing.assert_array_equal(op.dot(v.reshape(op.input_shape)), op @ v.reshape(op.input_shape))
    with pytest.raises(ValueError, match=rf"`v` must have shape \({columns},\) or \({columns}, 1\)"):
        op.matvec(np.ones(columns + 1))


# -- the algebra -------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
@pytest.mark.parametrize("padding_mode", ["zeros", "circular", "reflect"])
def test_scalars_give_a_convolution(dtype, padding_mode):
    op = _op(dtype=dtype, padding="same", padding_mode=padding_mode)
    dense = op.to_matrix()
    for scaled, expected in [
        (2.5 * op, 2.5 * dense),
        (
            op * (1 - 2j) if dtype is np.complex128 else op * 3,
            dense * (1 - 2j if dtype is np.complex128 else 3),
        ),
        (op / 4, dense / 4),
        (-op, -dense),
        (np.float64(2) * op, 2 * dense),
        (
            (2j * op).H if dtype is np.complex128 else (2 * op).H,
            (2j * dense).conj().T if dtype is np.complex128 else 2 * dense.T,
        ),
        (3 * op.H, 3 * dense.conj().T),
    ]:
        assert isinstance(scaled, stridedop.ConvOperator)
        np.testing.assert_allclose(scaled.to_matrix(), expected, rtol=1e-12, atol=1e-12)
        assert stridedop.dottest(scaled)


def test_scaling_keeps_the_view_and_the_dtype():
    op = _op(dtype=np.float32, padding="same")
    doubled = 2 * op
    assert doubled.dtype == np.float32
    np.testing.assert_array_equal(doubled.view, 2 * np.asarray(op.view))


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_sums_and_differences_with_one_geometry_give_a_convolution(dtype):
    a, b = _op(1, dtype=dtype, padding="same"), _op(2, dtype=dtype, padding="same")
    for combined, expected in [
        (a + b, a.to_matrix() + b.to_matrix()),
        (a - b, a.to_matrix() - b.to_matrix()),
        (a.H + b.H, (a.to_matrix() + b.to_matrix()).conj().T),
        (a.H - 2 * b.transpose(), a.to_matrix().conj().T - 2 * b.to_matrix().T),
    ]:
        assert isinstance(combined, stridedop.ConvOperator)
        np.testing.assert_allclose(combined.to_matrix(), expected, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(
            stridedop.materialize(combined.view).reshape(expected.shape), expected, rtol=1e-12
        )


def test_sums_of_different_geometries_are_lazy():
    a = _op(1, padding="same")
    b = _op(2, shape=(1, 1, 2, 4), padding="valid")  # same shapes, another geometry
    c = _op(3, padding="same", padding_mode="reflect")
    total = a + b - 0.5 * c
    assert isinstance(total, SumOperator)
    expected = a.to_matrix() + b.to_matrix() - 0.5 * c.to_matrix()
    np.testing.assert_allclose(total.to_matrix(), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(total.to_sparse().toarray(), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(total.H.to_matrix(), expected.T, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(total.T.to_matrix(), expected.T, rtol=1e-12, atol=1e-12)
    x = np.random.default_rng(0).standard_normal((2, *a.input_shape))
    np.testing.assert_allclose((total @ x).reshape(2, -1), x.reshape(2, -1) @ expected.T, rtol=1e-12)
    assert total.matrix_shape == expected.shape
    assert stridedop.dottest(total)


@pytest.mark.parametrize("dtype", [np.float32, np.complex64, np.int8])
def test_lazy_sums_and_their_adjoints_keep_the_dtype(dtype):
    a = _op(1, padding="same", dtype=dtype)
    b = _op(2, padding="same", padding_mode="reflect", dtype=dtype)
    for total in (a + b, a - b, 3 * (a + b), -(a + b)):
        assert isinstance(total, SumOperator)
        expected = total.to_matrix().astype(np.complex128)
        for operator, matrix in ((total, expected), (total.H, expected.conj().T), (total.T, expected.T)):
            assert operator.dtype == dtype, (operator, operator.dtype)
            y = np.ones(operator.input_shape, dtype)
            result = operator @ y
            assert result.dtype == dtype
            np.testing.assert_allclose(result.reshape(-1), matrix @ y.reshape(-1), rtol=1e-5)
    assert "np.int64" not in repr((a + b).H)


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
def test_negation_follows_numpys_unary_minus(padding_mode):
    kernel = np.array([1, 2, 200], np.uint8).reshape(3, 1, 1)
    u = stridedop.ConvOperator(kernel, (6, 1), padding="same", padding_mode=padding_mode)
    v = stridedop.ConvOperator(kernel[::-1].copy(), (6, 1), padding="same")
    x = np.arange(6, dtype=np.uint8).reshape(6, 1)
    for operator, parts in ((u, [u]), (u + v, [u, v]) if padding_mode != "zeros" else (u + 2 * v, [u, v, v])):
        negated = -operator
        assert negated.dtype == np.uint8
        expected = np.zeros((6, 1), np.uint8)
        for part in parts:
            expected -= part @ x  # NumPy's uint8 arithmetic wraps around
        np.testing.assert_array_equal(negated @ x, expected)
    np.testing.assert_array_equal((u - u) @ x, np.zeros((6, 1), np.uint8))
    product = u @ v
    np.testing.assert_array_equal((-product) @ x, np.negative(product @ x))
    boolean = stridedop.ConvOperator(np.ones((3, 1, 1), bool), (6, 1), padding="same")
    with pytest.raises(TypeError, match="boolean negative"):  # as NumPy's -bool_array
        boolean.__neg__()


@pytest.mark.parametrize("scalar", [Fraction(1, 2), Decimal(2)])
def test_numbers_that_are_not_numpy_scalars_do_not_scale(scalar):
    a, b = _op(1, padding="same"), _op(2, padding="same", padding_mode="reflect")
    for operator in (a, a + b):
        with pytest.raises(TypeError, match="unsupported operand"):
            operator * scalar
        with pytest.raises(TypeError, match="unsupported operand"):
            scalar * operator


def test_a_lazy_sum_of_bool_operators_applies_its_matrix():
    a = stridedop.ConvOperator(np.array([1, 1, 0], bool).reshape(3, 1, 1), (6, 1), padding="same")
    b = stridedop.ConvOperator(np.ones((2, 1, 1), bool), (6, 1), padding="same", padding_mode="reflect")
    total = a + b
    assert isinstance(total, SumOperator)
    x = np.array([1, 1, 0, 1, 1, 1], bool).reshape(6, 1)
    result = total @ x
    assert result.dtype == total.dtype
    np.testing.assert_array_equal(result.reshape(-1), total.to_matrix() @ x.reshape(-1))
    np.testing.assert_array_equal((total.H @ result).reshape(-1), total.to_matrix().T @ result.reshape(-1))


def test_scipy_operands_of_matmul_get_a_hint():
    scipy_sparse = pytest.importorskip("scipy.sparse")
    from scipy.sparse.linalg import aslinearoperator

    op = _op(1, padding="same")
    identity = np.eye(op.matrix_shape[1])
    for other in (aslinearoperator(identity), scipy_sparse.csr_array(identity)):
        with pytest.raises(TypeError, match=r"op.aslinearoperator\(\) @ other"):
            op @ other
    composed = op.aslinearoperator() @ aslinearoperator(identity)
    x = np.ones(op.matrix_shape[1])
    np.testing.assert_allclose(composed @ x, op.matvec(x))


def test_float16_sums_and_products_export_to_sparse_as_float32():
    a = stridedop.ConvOperator(np.ones((3, 1, 1), np.float16), (6, 1), padding="same")
    for operator in (a + a.H, a @ a, a.H @ a + a):
        sparse = operator.to_sparse()
        assert sparse.dtype == np.float32
        np.testing.assert_array_equal(sparse.toarray(), operator.to_matrix().astype(np.float32))


def test_materialize_a_lazy_sum_or_product_gives_its_dense_tensor():
    a, b = _op(1, padding="same"), _op(2, padding="same", padding_mode="reflect")
    for operator in (a + b, a.H @ a):
        dense = stridedop.materialize(operator)
        assert dense.shape == (*operator.output_shape, *operator.input_shape)
        np.testing.assert_array_equal(dense.reshape(operator.matrix_shape), operator.to_matrix())
        out = np.empty_like(dense)
        assert stridedop.materialize(operator, out=out) is out
        np.testing.assert_array_equal(out, dense)
    with pytest.raises(TypeError, match="`a` has dtype object"):
        stridedop.materialize(object())


def test_the_conjugate_direction_is_named_as_it_is_written():
    op = _op(1, dtype=np.complex128, padding="same")
    conjugate = op.H.transpose()
    assert ".H.T" in repr(conjugate) and "conj" not in repr(conjugate)


@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
@pytest.mark.parametrize("dilations", [(1, 1), (2, 2), (1, 2)])
def test_composing_valid_stride_1_convolutions_convolves_the_kernels(layout, dilations):
    rng = np.random.default_rng(7)
    first_kernel, second_kernel = rng.standard_normal((3, 2, 2, 3)), rng.standard_normal((2, 2, 3, 4))
    m = (9, 8, 2)
    if layout == "channels_first":
        first_kernel, second_kernel = first_kernel.transpose(3, 2, 0, 1), second_kernel.transpose(3, 2, 0, 1)
        m = (2, 9, 8)
    first = stridedop.ConvOperator(first_kernel, m, dilation=dilations[0], layout=layout)
    second = stridedop.ConvOperator(second_kernel, first.output_shape, dilation=dilations[1], layout=layout)
    product = second @ first
    assert isinstance(product, stridedop.ConvOperator)
    expected = second.to_matrix() @ first.to_matrix()
    np.testing.assert_allclose(product.to_matrix(), expected, rtol=1e-12, atol=1e-12)
    assert product.view.shape == (*second.output_shape, *first.input_shape)
    assert stridedop.dottest(product)


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_composing_circular_convolutions_on_one_grid_gives_a_circular_convolution(dtype):
    first = _op(1, shape=(3, 4, 2, 3), m=(5, 6, 2), dtype=dtype, padding="circular")
    second = _op(2, shape=(4, 3, 3, 2), m=(5, 6, 3), dtype=dtype, padding="circular", dilation=(1, 2))
    product = second @ first
    assert isinstance(product, stridedop.ConvOperator)
    assert product._geometry.circular
    expected = second.to_matrix() @ first.to_matrix()
    np.testing.assert_allclose(product.to_matrix(), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(product.H.to_matrix(), expected.conj().T, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("padding", ["circular", "valid"])
def test_compositions_with_very_different_dilations_stay_lazy(padding):
    # Fusing would spell 2**40 zeros between the taps (a MemoryError of 8 TiB).
    size = 5 if padding == "circular" else 2**40 + 5
    kernel, other = np.array([1.0, 2.0]).reshape(2, 1, 1), np.array([1.0, 3.0]).reshape(2, 1, 1)
    first = stridedop.ConvOperator(kernel, (size, 1), padding=padding, dilation=2**40)
    second = stridedop.ConvOperator(other, first.output_shape, padding=padding)
    product = second @ first
    assert isinstance(product, ProductOperator)
    if padding == "circular":
        expected = second.to_matrix() @ first.to_matrix()
        np.testing.assert_allclose(product.to_matrix(), expected, rtol=1e-12, atol=1e-12)


def test_other_compositions_are_lazy_and_exact():
    pytest.importorskip("scipy")
    first = _op(1, padding="same", stride=2)  # strided: not one convolution with the next
    second = _op(2, shape=(3, 3, 4, 2), m=first.output_shape, padding="same", padding_mode="replicate")
    third = _op(3, shape=(1, 1, 1, 2), m=second.output_shape, groups=2)
    product = third @ second @ first
    assert isinstance(product, ProductOperator) and len(product.factors) == 3
    expected = third.to_matrix() @ second.to_matrix() @ first.to_matrix()
    np.testing.assert_allclose(product.to_matrix(), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(product.to_sparse("csc").toarray(), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(product.H.to_matrix(), expected.T, rtol=1e-12, atol=1e-12)
    x = np.random.default_rng(0).standard_normal(first.input_shape)
    np.testing.assert_allclose((product @ x).ravel(), expected @ x.ravel(), rtol=1e-12)
    linear = product.aslinearoperator()
    np.testing.assert_allclose(
        linear.rmatvec(np.ones(expected.shape[0])), expected.T @ np.ones(expected.shape[0])
    )
    assert stridedop.dottest(product) and stridedop.dottest(2 * product - product)


def test_shape_mismatches_name_both_shapes():
    a, b = _op(1), _op(2, m=(7, 7, 2))
    with pytest.raises(
        ValueError, match=r"output_shape \(5, 5, 4\) differs from the left operator's input_shape \(4, 3, 4\)"
    ):
        _op(3, shape=(1, 1, 4, 4), m=(4, 3, 4)) @ b
    with pytest.raises(
        ValueError, match=r"different shapes: \(6, 5, 2\) -> \(4, 3, 4\) and \(7, 7, 2\) -> \(5, 5, 4\)"
    ):
        a + b
    with pytest.raises(TypeError):
        a * np.ones(3)
    with pytest.raises(TypeError):
        a + 1


# -- dottest -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "dtype", [np.float16, np.float32, np.float64, np.complex64, np.complex128, np.int32, np.uint8, np.bool_]
)
@pytest.mark.parametrize("padding_mode", ["zeros", "circular", "reflect", "replicate"])
def test_dottest_passes_on_every_mode_and_dtype(dtype, padding_mode):
    rng = np.random.default_rng(9)
    kernel = rng.integers(0, 3, size=(3, 2, 2, 3)).astype(dtype)
    op = stridedop.ConvOperator(kernel, (5, 6, 2), padding="same", padding_mode=padding_mode, stride=(1, 2))
    assert stridedop.dottest(op)
    assert stridedop.dottest(op.H, seed=3)


class _WrongAdjoint:
    """An operator whose adjoint is deliberately the plain transpose of a complex matrix."""

    def __init__(self, matrix):
        self.matrix, self.input_shape, self.output_shape = matrix, (matrix.shape[1],), (matrix.shape[0],)
        self.dtype = matrix.dtype

    def __matmul__(self, x):
        return self.matrix @ x

    @property
    def H(self):  # noqa: N802
        return _Matrix(self.matrix.T)


class _Matrix(_WrongAdjoint):
    pass


def test_dottest_fails_on_nan_and_checks_rtol():
    kernel = np.ones((3, 1, 1))
    kernel[1] = np.nan
    with pytest.raises(AssertionError, match="dot test failed"):
        stridedop.dottest(stridedop.ConvOperator(kernel, (6, 1), padding="same"))
    wrong = 5 * _op(1, padding="same").H
    for rtol in (np.nan, -1, np.inf, True, "1e-3"):
        with pytest.raises(ValueError, match="`rtol` must be a finite number >= 0"):
            stridedop.dottest(_op(1, padding="same"), rtol=rtol)
    with pytest.raises(AssertionError):
        stridedop.dottest(_WrongScale(_op(1, padding="same"), wrong))


class _WrongScale:
    """An operator whose `H` is a multiple of its adjoint."""

    def __init__(self, operator, adjoint):
        self.input_shape, self.output_shape = operator.input_shape, operator.output_shape
        self.dtype, self._operator, self.H = operator.dtype, operator, adjoint

    def __matmul__(self, x):
        return self._operator @ x


def test_dottest_fails_loudly_on_a_wrong_adjoint():
    matrix = np.arange(6.0).reshape(2, 3) * (1 + 1j)
    with pytest.raises(AssertionError, match=r"dot test failed: <op @ x, y> = .* but <x, op.H @ y> = "):
        stridedop.dottest(_WrongAdjoint(matrix))
    assert stridedop.dottest(_WrongAdjoint(matrix.real))  # real: the transpose is the adjoint


# -- PyLops ------------------------------------------------------------------------------------------
def test_topylops_passes_pylops_dottest_and_inverts_with_lsqr():
    pylops = pytest.importorskip("pylops")
    from pylops.optimization.basic import lsqr

    op = _op(4, padding="same", padding_mode="reflect")
    linear = op.topylops()
    assert tuple(linear.dims) == op.input_shape and tuple(linear.dimsd) == op.output_shape
    assert pylops.utils.dottest(linear, *linear.shape, rtol=1e-10)
    x = np.random.default_rng(1).standard_normal(op.input_shape)
    y = op @ x
    estimate = lsqr(linear, y.ravel(), niter=400, atol=1e-14, btol=1e-14)[0]
    np.testing.assert_allclose(estimate.reshape(op.input_shape), x, rtol=1e-6, atol=1e-6)


def test_topylops_without_pylops_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def refuse(name, *args, **kwargs):
        if name == "pylops":
            raise ImportError("no pylops here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", refuse)
    with pytest.raises(ImportError, match=r"pip install stridedop\[pylops\]"):
        _op().topylops()


# -- pickling keeps the direction and the mode ----------------------------------------------------------
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
def test_pickles_keep_direction_mode_and_method(padding_mode):
    op = _op(5, dtype=np.complex128, padding="same", padding_mode=padding_mode)
    for direction in (op, op.H, op.transpose(), op.H.transpose()):
        loaded = pickle.loads(pickle.dumps(direction))
        np.testing.assert_array_equal(loaded.to_matrix(), direction.to_matrix())
        assert repr(loaded) == repr(direction) and loaded.method == direction.method


# -- layout hints and short messages -------------------------------------------------------------------
def test_a_pytorch_kernel_with_the_default_layout_gets_a_layout_hint():
    kernel = np.ones((16, 3, 3, 3))  # PyTorch (F, C, kh, kw)
    with pytest.raises(
        ValueError, match=r"expects C = 3; with layout='channels_first' .* 16 filters of 3 channels"
    ):
        stridedop.ConvOperator(kernel, (3, 32, 32))
    with pytest.raises(ValueError, match=r"pass layout='channels_last'"):
        stridedop.conv_view(np.ones((3, 3, 2, 8)), (32, 32, 2), layout="channels_first")


def test_passing_the_image_instead_of_its_shape_says_pass_x_shape():
    image = np.zeros((32, 32, 3))
    with pytest.raises(ValueError, match=r"pass x.shape") as raised:
        stridedop.conv_view(np.ones((3, 3, 3, 4)), image)
    assert len(str(raised.value)) < 200
    with pytest.raises(ValueError) as raised:
        stridedop.ConvOperator(np.ones((3, 3, 3, 4)), (32, 32, 3), padding=np.zeros((2, 5, 5)))
    assert len(str(raised.value)) < 300
