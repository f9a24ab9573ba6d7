import math
import tracemalloc

import numpy as np
import pytest
from helpers import byte_bounds, to_channels_first_kernel, to_channels_first_operator
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from oracles import direct_convolution, loop_operator, pads_for
from test_conv_view import buffer_under

import stridedop
from stridedop import _geometry
from stridedop._geometry import make_geometry


def footprint_bound(itemsize, m, pads, channels, filters, circular):
    sizes = [2 * v for v in m] if circular else [v + lo + hi for v, (lo, hi) in zip(m, pads)]
    return itemsize * channels * (filters + 1) * math.prod(sizes)


@st.composite
def geometries(draw):
    n = draw(st.integers(1, 3))
    k = draw(st.lists(st.integers(1, 3), min_size=n, max_size=n))
    m = draw(st.lists(st.integers(1, 6), min_size=n, max_size=n))
    stride = draw(st.lists(st.integers(1, 3), min_size=n, max_size=n))
    dilation = draw(st.lists(st.integers(1, 2), min_size=n, max_size=n))
    groups = draw(st.integers(1, 3))
    group_channels = draw(st.integers(1, 2))
    filters = groups * draw(st.integers(1, 2))
    kind = draw(st.sampled_from(["valid", "same", "full", "circular", "int", "ints", "pairs"]))
    if kind == "int":
        padding = draw(st.integers(0, 2))
    elif kind == "ints":
        padding = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    elif kind == "pairs":
        padding = [tuple(draw(st.lists(st.integers(0, 2), min_size=2, max_size=2))) for _ in range(n)]
    else:
        padding = kind
    layout = draw(st.sampled_from(["channels_last", "channels_first"]))
    return k, m, stride, dilation, groups, group_channels, filters, padding, layout


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(geometries())
def test_fuzzed_geometry_matches_loop_oracle_and_footprint(geometry):
    k, m, stride, dilation, groups, group_channels, filters, padding, layout = geometry
    n = len(k)
    pads = pads_for(padding, m, k, stride, dilation)
    extents = [(k[i] - 1) * dilation[i] + 1 for i in range(n)]
    if padding != "circular":
        assume(all(extents[i] <= m[i] + pads[i][0] + pads[i][1] for i in range(n)))
    kernel = (
        np.random.default_rng(sum(k) + sum(m))
        .integers(1, 100, (*k, group_channels, filters))
        .astype(np.float64)
    )
    expected = loop_operator(kernel, m, padding=padding, stride=stride, dilation=dilation, groups=groups)
    channels = group_channels * groups
    if layout == "channels_last":
        W = stridedop.conv_view(
            kernel, (*m, channels), padding=padding, stride=stride, dilation=dilation, groups=groups
        )
    else:
        W = stridedop.conv_view(
            to_channels_first_kernel(kernel),
            (channels, *m),
            padding=padding,
            stride=stride,
            dilation=dilation,
            groups=groups,
            layout=layout,
        )
        expected = to_channels_first_operator(expected, n)
    assert W.shape == expected.shape
    np.testing.assert_array_equal(W, expected)
    assert not W.flags.writeable
    # Inside its buffer, and within the footprint bound.
    low, high = byte_bounds(W)
    buffer_low, buffer_high = byte_bounds(buffer_under(W))
    assert buffer_low <= low and high <= buffer_high
    bound = footprint_bound(8, m, pads, channels, filters, padding == "circular")
    assert high - low <= bound
    assert buffer_under(W).nbytes <= bound


@pytest.mark.parametrize(
    ("m", "k", "stride", "dilation", "padding", "expected"),
    [
        # 'same': ceil(m / stride) whatever the kernel
        (10, 3, 1, 1, "same", 10),
        (10, 3, 2, 1, "same", 5),
        (11, 3, 2, 1, "same", 6),
        (7, 4, 3, 1, "same", 3),
        (7, 3, 3, 2, "same", 3),
        (1, 5, 1, 1, "same", 1),
        (5, 8, 2, 1, "circular", 3),
        # 'full': m + ke - 1 at stride 1
        (5, 3, 1, 1, "full", 7),
        (5, 3, 1, 2, "full", 9),
        (5, 3, 2, 1, "full", 4),
        # explicit pairs and ints: (m + lo + hi - ke) // s + 1
        (5, 3, 1, 1, [(1, 0)], 4),
        (5, 3, 2, 1, [(0, 2)], 3),
        (5, 3, 1, 1, 2, 7),
        (6, 2, 4, 1, "valid", 2),
    ],
)
def test_output_size_table(m, k, stride, dilation, padding, expected):
    W = stridedop.conv_view(np.ones((k, 1, 1)), (m, 1), padding=padding, stride=stride, dilation=dilation)
    assert W.shape[0] == expected


def test_same_puts_the_odd_padding_entry_on_the_high_side():
    # m = 4, k = 2: total padding 1, lo = 0 and hi = 1, so output 0 sees inputs 0 and 1.
    W = stridedop.conv_view(np.array([1.0, 2.0]).reshape(2, 1, 1), (4, 1), padding="same")
    np.testing.assert_array_equal(W[0, 0, :, 0], [1, 2, 0, 0])
    np.testing.assert_array_equal(W[3, 0, :, 0], [0, 0, 0, 1])


def test_circular_folds_a_kernel_wider_than_the_input():
    # A 5-tap kernel on 2 inputs: taps land on positions that coincide and add up.
    kernel = np.array([1.0, 10.0, 100.0, 1000.0, 10000.0]).reshape(5, 1, 1)
    W = stridedop.conv_view(kernel, (2, 1), padding="circular")
    x = np.array([3.0, 7.0])
    xp = np.pad(x, pads_for("circular", (2,), (5,), [1], [1])[0], mode="wrap")
    expected = [sum(kernel[r, 0, 0] * xp[o + r] for r in range(5)) for o in range(2)]
    np.testing.assert_allclose(np.tensordot(W, x[:, None], 2)[:, 0], expected)


def test_padding_adds_only_exact_zeros():
    kernel = np.arange(1, 7, dtype=float).reshape(3, 2, 1)
    W = np.array(stridedop.conv_view(kernel, (4, 2), padding=3, dilation=2))
    values = set(np.unique(W).tolist())
    assert values <= {0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0}


def test_grouped_filters_see_only_their_channels():
    kernel = np.ones((1, 2, 6))  # groups=3: C = 6, each filter sees 2 channels
    W = stridedop.conv_view(kernel, (3, 6), groups=3)
    for f in range(6):
        group = f // 2
        seen = np.nonzero(W[0, f, 0])[0]
        np.testing.assert_array_equal(seen, [2 * group, 2 * group + 1])


def test_depthwise_convolution():
    rng = np.random.default_rng(5)
    kernel = rng.standard_normal((3, 3, 1, 4))
    x = rng.standard_normal((6, 5, 4))
    W = stridedop.conv_view(kernel, x.shape, groups=4, padding="same")
    np.testing.assert_allclose(np.tensordot(W, x, 3), direct_convolution(x, kernel, padding="same", groups=4))


# -- PyTorch as an oracle -------------------------------------------------------------------------

TORCH_CASES = [
    (n, padding, stride, dilation, groups, layout)
    for n in (1, 2, 3)
    for padding in ("valid", "same", "full", "circular", 1, "pairs")
    for stride, dilation in ((1, 1), (2, 1), (1, 2), (2, 3))
    for groups in (1, 2)
    for layout in ("channels_last", "channels_first")
    if not (n == 3 and (stride, dilation) == (2, 3))
]


@pytest.mark.parametrize(("n", "padding", "stride", "dilation", "groups", "layout"), TORCH_CASES)
def test_tensordot_matches_torch(n, padding, stride, dilation, groups, layout):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(hash((n, str(padding), stride, dilation, groups, layout)) % 2**32)
    m = [7, 6, 5][:n]
    k = [3, 2, 2][:n]
    if padding == "pairs":
        padding = [(1, 0), (0, 2), (2, 1)][:n]
    group_channels, filters = 2, 2 * groups
    kernel = rng.standard_normal((*k, group_channels, filters))
    x = rng.standard_normal((*m, group_channels * groups))
    pads = pads_for(padding, m, k, [stride] * n, [dilation] * n)
    mode = "wrap" if padding == "circular" else "constant"
    xp = np.pad(x, [*pads, (0, 0)], mode=mode)
    conv = getattr(torch.nn.functional, f"conv{n}d")
    expected = conv(
        torch.from_numpy(np.moveaxis(xp, -1, 0)[None]),
        torch.from_numpy(np.ascontiguousarray(to_channels_first_kernel(kernel))),
        stride=stride,
        dilation=dilation,
        groups=groups,
    ).numpy()[0]  # (F, *o)
    if layout == "channels_last":
        W = stridedop.conv_view(
            kernel, x.shape, padding=padding, stride=stride, dilation=dilation, groups=groups
        )
        got = np.moveaxis(np.tensordot(W, x, n + 1), -1, 0)
    else:
        x_cf = np.moveaxis(x, -1, 0)
        W = stridedop.conv_view(
            to_channels_first_kernel(kernel),
            x_cf.shape,
            padding=padding,
            stride=stride,
            dilation=dilation,
            groups=groups,
            layout=layout,
        )
        got = np.tensordot(W, x_cf, n + 1)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


def _reads(mode, offset, m):
    """The input entry a tap at `offset` from the input's start reads, or None (a zero)."""
    if mode == "zeros":
        return offset if 0 <= offset < m else None
    if mode == "circular":
        return offset % m
    if mode == "replicate":
        return min(max(offset, 0), m - 1)
    if m == 1:  # reflect
        return 0
    phase = offset % (2 * (m - 1))
    return phase if phase < m else 2 * (m - 1) - phase


@settings(max_examples=400, deadline=None)
@given(
    m=st.integers(1, 40),
    k=st.integers(1, 9),
    stride=st.integers(1, 6),
    dilation=st.integers(1, 7),
    pads=st.tuples(st.integers(0, 30), st.integers(0, 30)),
    mode=st.sampled_from(["zeros", "circular", "reflect", "replicate"]),
)
def test_nonzero_count_is_the_count_of_entries_each_output_reads(m, k, stride, dilation, pads, mode):
    # Issue 10, item 12: the count is closed-form now; compare it with counting by loops.
    assume((k - 1) * dilation + 1 <= m + sum(pads))
    geometry = make_geometry(
        (k, 2, 3), (m,), padding=[pads], padding_mode=mode, stride=stride, dilation=dilation
    )
    (axis,) = geometry.axes
    places = [
        {_reads(mode, o * stride + r * dilation - axis.lo, m) for r in range(k)} - {None}
        for o in range(axis.output)
    ]
    assert geometry.nonzero_count == 2 * 3 * sum(len(p) for p in places)


@settings(max_examples=300, deadline=None)
@given(
    m=st.integers(2, 30),
    k=st.integers(1, 70),
    stride=st.integers(1, 7),
    pads=st.tuples(st.integers(0, 80), st.integers(0, 80)),
)
def test_reflect_count_by_runs_matches_the_entries_each_output_reads(m, k, stride, pads):
    # Issue 10, item 12: reflect at dilation 1 is summed by runs; kernels up to twice the input
    # and wide padding reach every case (windows holding no, one, or two turning points).
    assume(k <= m + sum(pads))
    geometry = make_geometry((k, 1, 1), (m,), padding=[pads], padding_mode="reflect", stride=stride)
    (axis,) = geometry.axes
    expected = sum(
        len({_reads("reflect", o * stride + r - axis.lo, m) for r in range(k)}) for o in range(axis.output)
    )
    assert geometry.nonzero_count == expected


@pytest.mark.parametrize("stride", [1, 3])
def test_reflect_count_never_counts_per_output(monkeypatch, stride):
    # Issue 10, item 12: `info --kernel 100000000x1x1 --input 100000000 --padding same
    # --padding-mode reflect` took 17 s counting border outputs one by one. With the per-output
    # count disabled, 10^12-tap axes are still counted, and agree with a size it can count.
    def per_output(*arguments):
        raise AssertionError("counted per output")

    def count(size):
        geometry = make_geometry((size, 1, 1), (size,), padding="same", padding_mode="reflect", stride=stride)
        return geometry.nonzero_count

    with monkeypatch.context() as patch:
        patch.setattr(_geometry, "_reflect_chunk_sum", per_output)
        counts = {size: count(size) for size in (10**4, 10**12)}
    monkeypatch.setattr(_geometry, "_reflect_run_sum", lambda *arguments: None)
    assert count(10**4) == counts[10**4]  # the per-output count agrees where it is affordable
    if stride == 1:  # windows of N taps from -N/2 on: 3N^2/4 + 1 entries for an even N
        assert counts == {size: 3 * size * size // 4 + 1 for size in counts}


@pytest.mark.parametrize(("taps", "stride"), [(3, 1), (5, 4)])
def test_reflect_count_by_taps_never_counts_per_output(monkeypatch, taps, stride):
    # Issue 10, item 12: a few taps with a dilation of half the input meet the reflection at
    # every border output; they are counted by residue classes, one per tap, for any size.
    def per_output(*arguments):
        raise AssertionError("counted per output")

    def count(size):
        geometry = make_geometry(
            (taps, 1, 1), (size,), padding="same", padding_mode="reflect", stride=stride, dilation=size // 2
        )
        return geometry.nonzero_count

    with monkeypatch.context() as patch:
        patch.setattr(_geometry, "_reflect_chunk_sum", per_output)
        counts = {size: count(size) for size in (10**3, 10**12)}
    assert all(0 < counts[size] <= taps * size for size in counts)
    monkeypatch.setattr(_geometry, "_reflect_tap_sum", lambda *arguments: None)
    assert count(10**3) == counts[10**3]  # the per-output count agrees where it is affordable
    m, dilation = 10**3, 10**3 // 2
    geometry = make_geometry(
        (taps, 1, 1), (m,), padding="same", padding_mode="reflect", stride=stride, dilation=dilation
    )
    lo = geometry.axes[0].lo
    expected = sum(
        len({_reads("reflect", o * stride + r * dilation - lo, m) for r in range(taps)})
        for o in range(geometry.axes[0].output)
    )
    assert counts[10**3] == expected  # and both the entries each output reads


@pytest.mark.parametrize(
    ("padding", "mode"),
    [("valid", "zeros"), ("same", "zeros"), ("full", "zeros"), ("circular", "zeros")]
    + [("valid", "replicate"), ("same", "replicate"), ("full", "replicate")],
)
def test_nonzero_count_costs_nothing_proportional_to_the_kernel(padding, mode):
    # Issue 10, item 12: a 10^8-tap axis (and 10^15 for circular folding) is counted without any
    # allocation or loop over the taps.
    tracemalloc.start()
    try:
        for size in (10**8, 10**15):
            dilation = 3 if padding == "circular" else 1
            geometry = make_geometry(
                (size, 1, 1), (size,), padding=padding, padding_mode=mode, dilation=dilation
            )
            count = geometry.nonzero_count
            _, peak = tracemalloc.get_traced_memory()
            assert peak < 2**20
            # gcd(3, 10**k) == 1: every circular tap reaches its own position; 'valid' has one
            # output; 'same' loses lo(lo+1)/2 pairs below the input and hi(hi+1)/2 above it.
            # Replicate reads the same entries: each output's taps are contiguous and reach inside.
            lo = (size - 1) // 2
            hi = size - 1 - lo
            expected = {"valid": size, "same": size * size - lo * (lo + 1) // 2 - hi * (hi + 1) // 2}
            expected |= {"full": size * size, "circular": size * size}
            assert count == expected[padding]
    finally:
        tracemalloc.stop()


# -- conv_view's plan: checked arguments and buffer plan without a Geometry ---------------------


def _outcome(function, *arguments, **options):
    """`function`'s result, or the type and message of what it raised."""
    try:
        return function(*arguments, **options)
    except (ValueError, TypeError, MemoryError) as error:
        return type(error), str(error)


def _shapes(taps, sizes, channels, group_channels, filters, layout, spatial):
    """The kernel shape and `input_shape` in `layout` (the spatial sizes alone if `spatial`)."""
    if layout == "channels_last":
        kernel_shape, input_shape = (*taps, group_channels, filters), (*sizes, channels)
    else:
        kernel_shape, input_shape = (filters, group_channels, *taps), (channels, *sizes)
    return kernel_shape, tuple(sizes) if spatial else input_shape


@settings(max_examples=300, deadline=None)
@given(
    geometries(),
    st.sampled_from(["zeros", "circular", "reflect", "ZEROS", "nonsense"]),
    st.sampled_from([1, 2, 4, 8, 16]),
    st.booleans(),
    st.booleans(),
)
def test_conv_view_plan_equals_the_geometry_path_including_refusals(geometry, mode, itemsize, spatial, plain):
    # conv_view checks its arguments into plain values (`check_geometry`) and plans the buffer
    # from them (`plan_layout`); the Geometry is built later, with the operator. Both must equal
    # what `make_geometry` and `plan_buffer` give, and refuse the same arguments with the same
    # error; so must the cached path (plain arguments) and the uncached one (lists, NumPy ints).
    from stridedop._buffer import plan_buffer
    from stridedop._conv import _plan, _planned

    k, m, stride, dilation, groups, group_channels, filters, padding, layout = geometry
    n = len(k)
    channels = group_channels * groups
    kernel_shape, input_shape = _shapes(k, m, channels, group_channels, filters, layout, spatial)
    if plain:
        as_given = (
            tuple(input_shape), padding if not isinstance(padding, list) else tuple(padding), mode,
            tuple(stride), tuple(dilation), groups, layout,
        )  # fmt: skip
    else:
        as_given = (list(input_shape), padding, mode, [np.int64(s) for s in stride], dilation, groups, layout)
    options = dict(zip(("padding", "padding_mode", "stride", "dilation", "groups", "layout"), as_given[1:]))
    expected = _outcome(make_geometry, kernel_shape, as_given[0], **options)
    planned = _outcome(_plan, kernel_shape, itemsize, *as_given)
    if isinstance(expected, tuple):
        assert planned == expected  # refused alike
        assert _outcome(_planned, kernel_shape, itemsize, as_given) == expected
        return
    assert _planned(kernel_shape, itemsize, as_given).checked == planned.checked
    geometry_built = planned.geometry
    assert geometry_built == expected and repr(geometry_built) == repr(expected)
    assert geometry_built.view_shape == expected.view_shape and geometry_built.padding == expected.padding
    if not expected.mode.has_view:
        assert planned.buffer_plan is None
        return
    plan = planned.buffer_plan
    assert plan == plan_buffer(expected, itemsize)
    assert plan.view_shape == expected.view_shape and len(plan.view_strides) == 2 * n + 2
    assert planned.view_nbytes == expected.dense_size * itemsize
    assert planned.layout == expected.layout and planned.circular == expected.circular


_DEFAULT_GEOMETRY = ("valid", "zeros", 1, 1, 1)  # padding, padding_mode, stride, dilation, groups


def _general_and_closed_form(kernel_shape, input_shape, layout, itemsize):
    """The plan of the default geometry by the general path (`_plan`) and the cached one (`_plain_plan`)."""
    from stridedop._conv import _plain_plan, _plan

    arguments = (kernel_shape, itemsize, input_shape, *_DEFAULT_GEOMETRY, layout)
    return _outcome(_plan, *arguments), _outcome(_plain_plan, *arguments)


@settings(max_examples=400, deadline=None)
@given(
    st.integers(1, 5),
    st.data(),
    st.sampled_from(["channels_last", "channels_first"]),
    st.sampled_from([1, 2, 4, 8, 16]),
    st.booleans(),
)
def test_the_default_geometry_in_closed_form_equals_the_general_plan(n, data, layout, itemsize, spatial):
    # conv_view's defaults (no padding, stride, dilation or groups) are planned by `plan_unpadded`;
    # the plan, the checked arguments and the geometry must be the general path's, from kernels as
    # large as the input (one output) to a single entry, and sizes past what NumPy addresses.
    from stridedop._buffer import plan_unpadded

    sizes = data.draw(st.lists(st.integers(1, 7) | st.sampled_from([2**31, 2**62]), min_size=n, max_size=n))
    taps = [data.draw(st.integers(1, min(size, 4)) | st.just(size)) for size in sizes]
    channels, filters = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    kernel_shape, input_shape = _shapes(taps, sizes, channels, channels, filters, layout, spatial)
    assert plan_unpadded(kernel_shape, input_shape, layout, itemsize) is not None  # the closed form is taken
    general, closed_form = _general_and_closed_form(kernel_shape, input_shape, layout, itemsize)
    assert closed_form.buffer_plan == general.buffer_plan
    assert closed_form.view_nbytes == general.view_nbytes
    assert (closed_form.layout, closed_form.circular) == (general.layout, general.circular)
    assert closed_form.checked == general.checked
    assert closed_form.geometry == general.geometry


@pytest.mark.parametrize(
    "kernel_shape, input_shape, layout",
    [
        ((3, 3, 2, 4), (2, 5, 2), "channels_last"),  # a kernel larger than the input
        ((3, 2, 4), (5, 3), "channels_last"),  # the wrong number of channels
        ((3, 2, 4), (5, 2, 1), "channels_last"),  # too many entries
        ((3, 2, 4), (5, 2, 1, 1), "channels_last"),
        ((3, 2, 4), (), "channels_last"),
        ((3, 2, 4), (0, 2), "channels_last"),  # an empty input
        ((4, 2, 3), (3, 5), "channels_first"),  # channels-first with the channel axis last
        ((2, 4), (5, 2), "channels_last"),  # no spatial axis
        ((3, 0, 4), (5, 0), "channels_last"),  # an empty kernel
        ((3, 2, 0), (5, 2), "channels_last"),
        ((3, 2, 4), (5, 2), "CHANNELS_LAST"),  # not planned in closed form, but accepted
        ((3, 2, 4), (5, 2), "rows"),
        ((1,) * 32 + (2, 4), (5,) * 32 + (2,), "channels_last"),  # too many spatial axes
    ],
)
def test_the_closed_form_leaves_every_refusal_to_the_general_path(kernel_shape, input_shape, layout):
    from stridedop._buffer import plan_unpadded

    assert plan_unpadded(kernel_shape, input_shape, layout, 8) is None
    general, closed_form = _general_and_closed_form(kernel_shape, input_shape, layout, 8)
    if isinstance(general, tuple):
        assert closed_form == general  # the same error and message
    else:
        assert closed_form.buffer_plan == general.buffer_plan and closed_form.checked == general.checked
