"""2-D convolution (ONNX Conv / ConvTranspose, NCHW) with a fused bias + activation epilogue.

Paths: depthwise (group == C == M) runs a direct twin kernel; every other convolution is a
GEMM of its weights (packed once per backend) with the im2col columns, per image and group
(``conv_gemm``; 1x1 stride-1 unpadded ones read x in place). The Cython twin fuses im2col,
its own float32 GEMM micro-kernels and the epilogue per block of columns; the NumPy and
numba twins (and float64) use NumPy's BLAS (one BLAS thread; ``_gemm`` splits it over
edgedl's threads). ConvTranspose is a BLAS GEMM + col2im in every backend.
"""
import numbers

import numpy as np

from .. import _config
from .. import _validate as V
from ..errors import ShapeError, ValidationError
from . import _dispatch, _gemm
from .activation_table import EPILOGUE, FUSED

__all__ = ["conv2d", "conv2d_plan", "pointwise_depthwise_plan", "pointwise_depthwise_pays",
           "conv_transpose2d", "conv_output_shape", "resolve_pads", "ACTIVATIONS"]

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")
#: activation name -> number of parameters it takes (the activations of the table that fuse)
ACTIVATIONS = {None: 0, **{n: len(r.params) for n, r in FUSED.items()}}
_ACT_NONE, _ACT_PRELU = EPILOGUE["none"], EPILOGUE["prelu"]


# ----------------------------------------------------------------------------- geometry
def resolve_pads(in_hw, kernel_hw, strides=(1, 1), dilations=(1, 1), auto_pad="NOTSET",
                 pads=(0, 0, 0, 0)):
    """ONNX Conv padding -> explicit pads (top, left, bottom, right).

    ``auto_pad`` SAME_UPPER/SAME_LOWER pad so that out = ceil(in / stride) (the odd pixel at
    the end / beginning), VALID means no padding, NOTSET uses ``pads``.
    """
    V.choice(auto_pad, "auto_pad", AUTO_PADS)
    if auto_pad == "NOTSET":
        return tuple(int(p) for p in pads)
    if auto_pad == "VALID":
        return (0, 0, 0, 0)
    begin, end = [], []
    for n, k, s, d in zip(in_hw, kernel_hw, strides, dilations):
        out = -(-n // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - n)
        small, big = total // 2, total - total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else big)
        end.append(big if auto_pad == "SAME_UPPER" else small)
    return (begin[0], begin[1], end[0], end[1])


def conv_output_shape(in_hw, kernel_hw, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1),
                      auto_pad="NOTSET"):
    """Output (OH, OW) of a 2-D convolution; ``pads`` are resolved first if auto_pad is set."""
    pads = resolve_pads(in_hw, kernel_hw, strides, dilations, auto_pad, pads)
    res = []
    for a in range(2):
        span = (kernel_hw[a] - 1) * dilations[a] + 1
        res.append((in_hw[a] + pads[a] + pads[a + 2] - span) // strides[a] + 1)
    return tuple(res)


def _geometry(strides, pads, dilations, auto_pad):
    strides = V.geometry(strides, "strides", 2, lo=1)
    dilations = V.geometry(dilations, "dilations", 2, lo=1)
    pads = V.geometry(pads, "pads", 4, lo=0)
    V.choice(auto_pad, "auto_pad", AUTO_PADS)
    return strides, pads, dilations


def _fused(activation):
    """The table's record of a fusable activation name (any case), or None for None."""
    if activation is not None and not isinstance(activation, str):
        raise ValidationError(f"activation must be a string or None, got {activation!r}")
    act = activation.lower() if activation else None
    if act not in ACTIVATIONS:
        raise ValidationError(f"activation must be one of {sorted(k for k in ACTIVATIONS if k)} "
                              f"or None, got {activation!r}")
    return FUSED.get(act)


def _channel_slopes(s, m, slopes):
    """prelu's slope: a scalar, or one value per output channel."""
    if isinstance(s, numbers.Real) and not isinstance(s, bool):
        slopes[:] = float(s)
        return
    s = np.asarray(s)
    if s.dtype.kind not in "fiu" or s.size not in (1, m):
        raise ValidationError(f"prelu slope must be a scalar or hold {m} per-channel "
                              f"values (one per output channel), got shape {s.shape}")
    slopes[:] = s.reshape(-1)


def _epilogue(activation, params, m, dtype):
    """Public activation name + params -> (act code, p0, p1, slopes array of length m), as
    the table says: its epilogue code, fixed (p0, p1) or the parameters (defaults when none
    are given and every parameter has one), slopes from the one parameter of a PReLU-like."""
    rec = _fused(activation)
    params = tuple(params) if params is not None else ()
    slopes = np.zeros(m, dtype=dtype)
    if rec is None:
        need = 0
    else:
        need = len(rec.params)
        if not params and all(p.default is not None for p in rec.params):
            params = tuple(p.default for p in rec.params)
    if len(params) != need:
        raise ValidationError(f"activation {rec and rec.name!r} takes {need} parameter(s) in "
                              f"activation_params, got {len(params)}: {params!r}")
    if rec is None:
        return _ACT_NONE, 0.0, 0.0, slopes
    names = [f"activation_params[{i}] ({rec.name} {p.name})" for i, p in enumerate(rec.params)]
    p0 = p1 = 0.0
    if rec.fuse_code == _ACT_PRELU:
        if rec.kind == "channel":
            _channel_slopes(params[0], m, slopes)
        else:
            slopes[:] = V.real(params[0], names[0])
    elif rec.fuse_fixed is not None:
        p0, p1 = rec.fuse_fixed
    elif params:
        p0, p1 = (V.real(p, n) for p, n in zip(params, names))
    return rec.fuse_code, float(p0), float(p1), slopes


def _bias(bias, m, dtype, name="bias"):
    if bias is None:
        return np.zeros(m, dtype=dtype)
    bias = V.float_array(bias, name)
    V.check_shape(bias, (m,), name)
    return np.ascontiguousarray(bias, dtype=dtype)


def _target(out, shape, dtype, x):
    """(out as validated, buffer to compute into): a fresh contiguous buffer when ``out``
    is non-contiguous or overlaps ``x`` (the kernels read x while writing)."""
    out = V.output(out, shape, dtype)
    if not out.flags.c_contiguous or np.may_share_memory(out, x):
        return out, np.empty(shape, dtype=dtype)
    return out, out


# ----------------------------------------------------------------------------- conv2d
# A model calls the same convolutions again and again: the validated geometry and epilogue
# of a call signature are cached, so a repeated call costs a few dict lookups (~10 us of
# Python in total) instead of ~60 us of argument checks.
_GEOM_CACHE = {}
_EPI_CACHE = {}
_CACHE_MAX = 1024


def _hashable(*vals):
    """A hashable key for attribute values (lists -> tuples), or None if there is none."""
    key = tuple(tuple(v) if type(v) is list else v for v in vals)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _remember(cache, key, value):
    if key is not None:
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        cache[key] = value
    return value


def _conv_geometry(xshape, wshape, strides, pads, dilations, group, auto_pad):
    """Validated geometry: (group, (sh, sw), (dh, dw), pads, (oh, ow))."""
    group = V.integer(group, "group", lo=1)
    n, c, h, wd = xshape
    m, cg, kh, kw = wshape
    if c % group:
        raise ValidationError(f"group={group} must divide the input channels C={c}")
    if m % group:
        raise ValidationError(f"group={group} must divide the output channels M={m} "
                              f"(w.shape[0])")
    if cg != c // group:
        raise ShapeError(f"w must have shape (M, C/group, kH, kW) = ({m}, {c // group}, kH, kW)"
                         f" for x with C={c} and group={group}, got {wshape}")
    if kh < 1 or kw < 1:
        raise ShapeError(f"w must have a non-empty kernel, got shape {wshape}")
    st, pads, dil = _geometry(strides, pads, dilations, auto_pad)
    pads = resolve_pads((h, wd), (kh, kw), st, dil, auto_pad, pads)
    oh, ow = conv_output_shape((h, wd), (kh, kw), st, pads, dil)
    if oh < 1 or ow < 1:
        raise ShapeError(f"conv2d output would be empty: input {h}x{wd}, pads {pads}, kernel "
                         f"{kh}x{kw}, dilations {dil} give {oh}x{ow}")
    st, dil = V.effective_strides(st, (oh, ow), (kh, kw), dil)
    for a, (i_n, o_n, k) in enumerate(((h, oh, kh), (wd, ow, kw))):
        V.check_extent(("height", "width")[a], i_n, o_n, k, st[a], dil[a], pads[a], pads[a + 2])
    return group, st, dil, pads, (oh, ow)


def _direct_depthwise(geo, kernel_hw, in_hw):
    """Whether the direct depthwise kernels fit this geometry: they copy each plane into a
    zero-bordered buffer of the padded extent the outputs read, which huge pads / dilations
    (a hostile model) would blow up to gigabytes for a tiny output. The GEMM path's buffers
    scale with the output instead."""
    _, (sh, sw), (dh, dw), _, (oh, ow) = geo
    hp = (oh - 1) * sh + (kernel_hw[0] - 1) * dh + 1
    wp = (ow - 1) * sw + (kernel_hw[1] - 1) * dw + 1
    return hp * wp <= 4 * (in_hw[0] * in_hw[1] + oh * ow) + 4096


def conv2d(x, w, bias=None, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), group=1,
           auto_pad="NOTSET", activation=None, activation_params=(), out=None, backend=None):
    """ONNX Conv on NCHW input, then ``activation`` fused (after the bias).

    x (N, C, H, W), w (M, C/group, kH, kW), bias (M,) or None. ``pads`` is (top, left, bottom,
    right). ``activation``: None, "relu", "relu6", "clip" (lo, hi), "leaky_relu" (alpha,),
    "prelu" (slope: scalar or M values,), "hard_sigmoid" (alpha, beta), "hard_swish",
    "sigmoid", "silu", "tanh". Returns (N, M, OH, OW) of x's dtype.
    """
    x = V.float_array(x, "x", ndim=4)
    w = V.float_array(w, "w", ndim=4)
    dtype = x.dtype
    key = _hashable(x.shape, w.shape, strides, pads, dilations, group, auto_pad)
    geo = _GEOM_CACHE.get(key) if key is not None else None
    if geo is None:
        geo = _remember(_GEOM_CACHE, key, _conv_geometry(x.shape, w.shape, strides, pads,
                                                         dilations, group, auto_pad))
    m = w.shape[0]
    ekey = _hashable(activation, activation_params, m, dtype)
    epi = _EPI_CACHE.get(ekey) if ekey is not None else None
    if epi is None:   # the cached slopes array is only ever read
        epi = _remember(_EPI_CACHE, ekey, _epilogue(activation, activation_params, m, dtype))
    code, slopes = epi[0], epi[3]
    if w.dtype != dtype or not w.flags.c_contiguous:
        w = np.ascontiguousarray(w, dtype=dtype)
    if bias is not None:
        b = _bias(bias, m, dtype)
    else:   # zeros: the (cached, read-only) slopes of every activation but prelu are zeros
        b = np.zeros(m, dtype) if code == _ACT_PRELU else slopes
    out, y = _target(out, (x.shape[0], m) + geo[4], dtype, x)
    if y.size:
        _bind(w, b, geo, epi, x.shape[0], x.shape[2:], backend)(np.ascontiguousarray(x), y)
    if y is not out:
        out[...] = y
    return out


def _bind(w, b, geo, epi, n, x_hw, backend, packed=None):
    """The kernel calls of one convolution as ``call(x, y)`` with everything else bound:
    x (n, C, H, W) and w C-contiguous, y C-contiguous and not overlapping x; geo / epi as
    _conv_geometry / _epilogue return them; ``packed`` a dict that keeps the packed weights
    of each backend (conv2d_plan), or None (pack now). A model runs each conv once per
    inference, ~60 of them: conv2d_plan binds once, which saves the per-call dispatch and
    slicing (~1.4 us a conv)."""
    group, (sh, sw), (dh, dw), pads, _ = geo
    code, p0, p1, slopes = epi
    m, cg, kh, kw = w.shape
    pt, pl = pads[0], pads[1]
    c = cg * group
    if group == c and m == c and _direct_depthwise(geo, (kh, kw), x_hw):   # depthwise
        fn = _dispatch.impl("conv", "depthwise_conv2d", backend)
        args = (w.reshape(c, kh, kw), b, sh, sw, pt, pl, dh, dw, code, p0, p1, slopes)
        return lambda x, y: fn(x, *args, y)
    fn = _dispatch.impl("conv", "conv_gemm", backend)
    wp = _packed_weights(w, group, backend, packed)
    if n == 1 and group == 1:
        args = (wp[0], b, kh, kw, sh, sw, pt, pl, dh, dw, code, p0, p1, slopes)
        return lambda x, y: fn(x[0], *args, y[0])
    mg = m // group

    def call(x, y):
        for i in range(n):
            for g in range(group):
                fn(x[i, g * cg:(g + 1) * cg], wp[g], b[g * mg:(g + 1) * mg], kh, kw, sh, sw,
                   pt, pl, dh, dw, code, p0, p1, slopes[g * mg:(g + 1) * mg],
                   y[i, g * mg:(g + 1) * mg])
    return call


def _packed_weights(w, group, backend, cache):
    """Per group, the (M/group, C/group*kh*kw) weights in the layout the backend's conv_gemm
    reads; kept in ``cache`` (a dict per backend) when one is given."""
    backend = _config.resolve_backend(backend)
    wp = cache.get(backend) if cache is not None else None
    if wp is None:
        pack = _dispatch.impl("conv", "pack_conv_weights", backend)
        wg = w.reshape(group, w.shape[0] // group, -1)
        wp = [pack(wg[g]) for g in range(group)]
        if cache is not None:
            cache[backend] = wp
    return wp


def _activate(y, epi, backend):
    """The epilogue activation ``epi`` (as _epilogue returns it) in place on y (N, M, ...),
    C-contiguous, without a bias."""
    if epi[0] != _ACT_NONE:
        m = y.shape[1]
        _dispatch.impl("conv", "bias_act", backend)(y.reshape(y.shape[0], m, -1),
                                                   np.zeros(m, y.dtype), *epi)


def add_and_activate(y, res, activation=None, activation_params=(), backend=None):
    """act(y + res) for a conv's output y (N, M, ...) and a residual that broadcasts to it
    (what a fused Conv -> Add -> activation computes when its planned path does not apply):
    a new array, or y itself when res has y's shape. ``activation`` as conv2d's."""
    y = np.add(y, res, out=y if np.shape(res) == y.shape and y.flags.writeable else None)
    y = np.ascontiguousarray(y)
    _activate(y, _epilogue(activation, activation_params, y.shape[1], y.dtype),
              _config.resolve_backend(backend))
    return y


def _fast_conv(w, b, geo, epi, x_shape, backend, packed, residual=False):
    """conv2d_plan's one-call path, edgedl._cy.conv.ConvF32 (float32, one image, dense,
    grouped or depthwise, on the Cython backend named explicitly, as the ONNX runtime does),
    or None.
    It checks x and out itself and declines anything else; the plan's general path then
    runs."""
    group, (sh, sw), (dh, dw), pads, (oh, ow) = geo
    m, cg, kh, kw = w.shape
    c = cg * group
    depthwise = group == c and m == c
    if depthwise and not _direct_depthwise(geo, (kh, kw), x_shape[2:]):
        return None
    grouped = group > 1 and not depthwise
    if (backend is None or _config.resolve_backend(backend) != "cython" or x_shape[0] != 1
            or (grouped and residual) or min(x_shape) < 1):
        return None
    code, p0, p1, slopes = epi
    cy = _dispatch.twin_module("conv", "cython")
    direct = None
    if (group == 1 and not depthwise and cy.direct_ok()
            and _direct_dense(c * kh * kw, kh * kw, (dh, dw), ow, cy.direct_deep())):
        if residual:      # ConvF32 adds a residual on its GEMM path only
            return None
        direct = cy.pack_direct_weights(w.reshape(m, -1))
    if residual and depthwise:
        return None
    if depthwise:
        wp = w.reshape(-1)
    else:       # every group's packed weights in turn
        wp = np.concatenate(_packed_weights(w, group, "cython", packed))
    return cy.ConvF32(depthwise, wp, b, slopes, c, x_shape[2], x_shape[3], m, oh, ow, kh, kw,
                      sh, sw, pads[0], pads[1], dh, dw, code, p0, p1, direct,
                      residual == "after", 1 if depthwise else group)


def _direct_dense(taps, window, dilations, ow, deep):
    """Whether a dense conv takes ConvF32's direct path (no im2col, no GEMM): a window of >= 9,
    dilation 1, and either few taps (C * kh * kw <= 64: stem convs on RGB) on output rows of
    >= 16, or, where its kernels keep up on many taps (``deep``: AVX-512's 16-pixel blocks,
    AVX2's 4 x 24; cy.direct_deep), <= 320 taps on rows of >= 64.
    Measured against the GEMM path on one AVX-512 core (1 thread): 3x3 stems 3 -> 16 / 24 /
    32 channels 0.66-0.9x; 12 -> 16 at 208x208 0.78x, 7x7 s2 3 -> 64 0.8x, 3x3 16 -> 32 / 64
    at 80x80 0.82x, 32 -> 32 at 160x160 0.84x; but 64 -> 64 at 40x40 1.07x, 128 -> 128 at
    20x20 1.5x (blocks of 16 on short rows), 1x1 convs 1.4x, rows of 10 1.2x."""
    if window < 9 or dilations != (1, 1):
        return False
    return (taps <= 64 and ow >= 16) or (deep and taps <= 320 and ow >= 64)


def conv2d_plan(x_shape, w, bias=None, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1),
                group=1, auto_pad="NOTSET", activation=None, activation_params=(),
                dtype=np.float32, backend=None, residual=False):
    """conv2d prepared once for a fixed input shape (e.g. by the ONNX runtime's planner).

    Validates everything and lays out the weights now; returns ``run(x, out=None)``, which
    only checks x's shape / dtype and runs the kernels (the same paths as conv2d). ``out``,
    when given, must be a C-contiguous array of the output shape and dtype not overlapping
    x (not checked: this is the fast path). ``run.out_shape`` is (N, M, OH, OW).

    ``residual=True``: the conv fused with the Add after it (ResNet-style blocks), ``run(x,
    out, res)`` gives act(conv(x) + bias + res) for ``res`` of the output's shape and dtype,
    not overlapping ``out``; the activation comes after the add. ``residual="after"``:
    act(conv(x) + bias) + res (YOLO's CSP shortcuts add after the SiLU). Rounded as the
    unfused graph (the conv's output, then the sum). The Cython backend adds ``res`` in the
    GEMM's per-block epilogue while the block is in cache (dense convs); every other path
    adds it in one more pass.
    """
    x_shape, dtype = V.plan_input(x_shape, dtype)
    w = np.ascontiguousarray(V.float_array(w, "w", ndim=4), dtype=dtype)
    geo = _conv_geometry(x_shape, w.shape, strides, pads, dilations, group, auto_pad)
    m = w.shape[0]
    epi = _epilogue(activation, activation_params, m, dtype)
    post = None
    if residual not in (False, True, "after"):
        raise ValidationError(f"residual must be False, True or 'after', got {residual!r}")
    if residual is True:    # the general path: the conv without its activation, then add + act
        post, epi = epi, _epilogue(None, (), m, dtype)
    b = _bias(bias, m, dtype) if bias is not None else np.zeros(m, dtype)
    packed = {}
    oshape = (x_shape[0], m) + geo[4]
    calls = {}      # resolved backend -> call(x, y), everything else bound
    fast = None
    if dtype == np.float32:
        fast = _fast_conv(w, b, geo, post or epi, x_shape, backend, packed, residual)

    def run(x, out=None, res=None):
        y = np.empty(oshape, dtype) if out is None else out
        if fast is not None and fast(x, y, _config.get_num_threads(), res):
            return y
        V.check_planned(x, x_shape, dtype)
        if residual:
            if res is None or res.shape != oshape or res.dtype != dtype:
                raise ValidationError(f"the residual of a fused conv must be a {dtype} "
                                      f"array of shape {oshape}, got "
                                      f"{None if res is None else (res.dtype, res.shape)}")
            if np.may_share_memory(res, y):     # the conv would overwrite it first
                res = res.copy()
        if y.size:
            bk = _config.resolve_backend(backend)
            call = calls.get(bk)
            if call is None:
                call = calls[bk] = _bind(w, b, geo, epi, x_shape[0], x_shape[2:], bk,
                                             packed)
            _config.apply_threads(bk)
            call(x if x.flags.c_contiguous else np.ascontiguousarray(x), y)
            if residual:
                np.add(y, res, out=y)
                if post is not None:
                    _activate(y, post, bk)
        return y
    run.out_shape = oshape
    run._fast = fast
    return run


# ----------------------------------------------------------------------------- conv -> max pool
def conv_maxpool_plan(x_shape, w, bias=None, strides=(1, 1), pads=(0, 0, 0, 0),
                      dilations=(1, 1), group=1, auto_pad="NOTSET", activation=None,
                      activation_params=(), pool=((2, 2), (2, 2)), dtype=np.float32,
                      backend=None):
    """A conv (conv2d_plan's arguments) whose output goes only to a max pool, ``pool`` =
    (kernel_shape, strides[, pads, dilations, ceil_mode, auto_pad]) as pool2d_plan's:
    conv2d_plan's contract for the pair (``run(x, out=None)``, ``run.out_shape``).

    Where the conv takes ConvF32's direct path (stem convs) and the pool is 3x3 at stride 2
    (pads <= 1) or 2x2 at stride 2 without padding, it runs as one kernel band by band of
    rows (ConvMaxPoolF32: the conv's rows stay in L2 for the pool instead of going through
    memory; FastestDet's stem and its pool); so does a 3x3 'same' depthwise conv (rows of
    >= 18) and a 2x2 stride-2 pool (each channel's rows pooled while in L1: YuNet's units);
    elsewhere as the two planned steps. The same values either way; ``run._fast`` is the one
    kernel or None."""
    from .pooling import _prepare, pool2d_plan
    conv = conv2d_plan(x_shape, w, bias, strides, pads, dilations, group, auto_pad,
                       activation, activation_params, dtype=dtype, backend=backend)
    pool = tuple(pool) + ((0, 0, 0, 0), (1, 1), False, "NOTSET")[len(pool) - 2:]
    mp = pool2d_plan(conv.out_shape, "max", *pool, dtype=dtype, backend=backend)
    oshape, cs = mp.out_shape, conv.out_shape
    fast = None
    if conv._fast is not None and (conv._fast.direct or conv._fast.depthwise) \
            and min(oshape) >= 1:
        _, crop, (ks, st, pd, dl), _, _ = _prepare(cs, "max", *pool, False)
        if (tuple(crop) == ((0, cs[2]), (0, cs[3])) and tuple(st) == (2, 2)
                and tuple(dl) == (1, 1) and tuple(ks) in ((3, 3), (2, 2))):
            try:
                fast = _dispatch.twin_module("conv", "cython").ConvMaxPoolF32(
                    conv._fast, ks[0], pd[0], pd[1], oshape[2], oshape[3])
            except ValueError:      # padding or windows it does not take
                fast = None

    def run(x, out=None):
        y = np.empty(oshape, dtype) if out is None else out
        if fast is not None and fast(x, y, _config.get_num_threads()):
            return y
        return mp(conv(x), y)
    run.out_shape = oshape
    run._fast = fast
    return run


# ----------------------------------------------------------------------------- 1x1 -> depthwise
def pointwise_depthwise_pays(x_shape, m, dtype=np.float32, backend=None):
    """Whether pointwise_depthwise_plan runs as one banded kernel for this input shape (the
    Cython backend named, float32, one image, rows of >= 18) and that saves a round trip
    through memory: the 1x1's output (``m`` channels) is at least half of the last-level
    cache, so written whole it would go out to memory before the depthwise conv reads it.
    Smaller, the separate steps (their intermediate cached) ran as fast or faster: in
    YuNet on a 32 MB L3 (its 64 x 80 x 80 units, 1.6 MB) 0.97x the fused model's time."""
    return (np.dtype(dtype) == np.float32 and len(x_shape) == 4 and x_shape[0] == 1
            and x_shape[3] >= 18 and backend is not None
            and _config.resolve_backend(backend) == "cython"
            and m * x_shape[2] * x_shape[3] * 4 >= _config.last_level_cache_bytes() // 2)


def pointwise_depthwise_plan(x_shape, w1, b1, w2, b2, activations=(None, None),
                             activation_params=((), ()), pool=False, dtype=np.float32,
                             backend=None):
    """A 1x1 conv (``w1`` (M, C, 1, 1), stride 1, no padding) whose output goes only to a 3x3
    depthwise conv (``w2`` (M, 1, 3, 3), stride 1, padding 1 on every side), then with
    ``pool`` a 2x2 stride-2 max pool (no padding, floor): conv2d_plan's contract for the
    chain (``run(x, out=None)``, ``run.out_shape``). ``activations`` / ``activation_params``:
    each conv's fused activation, as conv2d's.

    On the Cython backend (float32, one image, rows of >= 18) it runs as one kernel, band
    by band of rows (PwDwF32: the 1x1's output stays in L2 for the depthwise conv instead of
    going through memory; YuNet's units at 80x80 and 160x160, inputs out of cache: 0.5-0.9
    of the separate steps' time, benchmarks/bench_conv.py); elsewhere as the planned steps
    one after another. The same values either way."""
    x_shape, dtype = V.plan_input(x_shape, dtype)
    w1 = np.ascontiguousarray(V.float_array(w1, "w1", ndim=4), dtype=dtype)
    w2 = np.ascontiguousarray(V.float_array(w2, "w2", ndim=4), dtype=dtype)
    m = w1.shape[0]
    if w1.shape[2:] != (1, 1) or w2.shape != (m, 1, 3, 3):
        raise ShapeError(f"pointwise_depthwise_plan needs (M, C, 1, 1) and (M, 1, 3, 3) "
                         f"weights, got {w1.shape} and {w2.shape}")
    pw = conv2d_plan(x_shape, w1, b1, activation=activations[0],
                     activation_params=activation_params[0], dtype=dtype, backend=backend)
    dw = conv2d_plan(pw.out_shape, w2, b2, pads=(1, 1, 1, 1), group=m,
                     activation=activations[1], activation_params=activation_params[1],
                     dtype=dtype, backend=backend)
    mp = None
    if pool:
        from .pooling import pool2d_plan
        mp = pool2d_plan(dw.out_shape, "max", (2, 2), (2, 2), dtype=dtype, backend=backend)
    oshape = (mp or dw).out_shape
    fast = None
    if pw._fast is not None and dw._fast is not None and x_shape[3] >= 18 and \
            min(oshape) >= 1:
        cy = _dispatch.twin_module("conv", "cython")
        e1 = _epilogue(activations[0], activation_params[0], m, dtype)
        e2 = _epilogue(activations[1], activation_params[1], m, dtype)
        fast = cy.PwDwF32(_packed_weights(w1, 1, "cython", None)[0], _bias(b1, m, dtype),
                          e1[3], *e1[:3], w2.reshape(-1), _bias(b2, m, dtype), e2[3], *e2[:3],
                          x_shape[1], x_shape[2], x_shape[3], m, bool(pool))

    def run(x, out=None):
        y = np.empty(oshape, dtype) if out is None else out
        if fast is not None and fast(x, y, _config.get_num_threads()):
            return y
        t = dw(pw(x), None if pool else y)
        return mp(t, y) if pool else t
    run.out_shape = oshape
    run._fast = fast
    return run


# ----------------------------------------------------------------------------- transpose
def conv_transpose_geometry(in_hw, kernel_hw, strides=(1, 1), pads=(0, 0, 0, 0),
                            dilations=(1, 1), output_padding=(0, 0), output_shape=None,
                            auto_pad="NOTSET"):
    """ONNX ConvTranspose: -> (pads (top, left, bottom, right), (OH, OW)).

    "full" = stride*(in-1) + output_padding + (k-1)*dilation + 1. With ``output_shape`` (or
    auto_pad SAME_*, target in * stride) the pads come from total = full - target as the ONNX
    spec says: SAME_UPPER takes total // 2 at the start, otherwise the start takes the larger
    half. Like onnxruntime: an explicit output_shape may exceed full by up to stride - 1
    (the extra pixels get only the bias); SAME_* with total < 0 gives the full output.
    """
    full = [strides[a] * (in_hw[a] - 1) + output_padding[a] + (kernel_hw[a] - 1) * dilations[a]
            + 1 for a in range(2)]
    explicit = output_shape is not None
    if not explicit and auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        output_shape = (in_hw[0] * strides[0], in_hw[1] * strides[1])
    if auto_pad == "VALID":
        pads = (0, 0, 0, 0)
    if output_shape is None:
        return tuple(pads), (full[0] - pads[0] - pads[2], full[1] - pads[1] - pads[3])
    begin, end, out_hw = [], [], []
    for a in range(2):
        total = full[a] - output_shape[a]
        if explicit and total <= -strides[a]:
            raise ValidationError(
                f"output_shape[{a}]={output_shape[a]} is inconsistent with the input size "
                f"{in_hw[a]}: at most {full[a] + strides[a] - 1} for this ConvTranspose "
                f"(use output_padding for larger outputs)")
        total = max(total, 0)
        small, big = total // 2, total - total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else big)
        end.append(big if auto_pad == "SAME_UPPER" else small)
        out_hw.append(output_shape[a] if explicit else full[a] - total)
    return (begin[0], begin[1], end[0], end[1]), tuple(out_hw)


def conv_transpose2d(x, w, bias=None, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1),
                     group=1, output_padding=(0, 0), output_shape=None, auto_pad="NOTSET",
                     out=None, backend=None):
    """ONNX ConvTranspose on NCHW input: x (N, C, H, W), w (C, M/group, kH, kW) -> (N, M, OH, OW).

    ``output_shape`` (OH, OW), when given, overrides ``pads`` as the ONNX spec says.
    """
    x = V.float_array(x, "x", ndim=4)
    w = V.float_array(w, "w", ndim=4)
    group = V.integer(group, "group", lo=1)
    n, c, h, wd = x.shape
    cw, mg, kh, kw = w.shape
    if c % group:
        raise ValidationError(f"group={group} must divide the input channels C={c}")
    if cw != c:
        raise ShapeError(f"w must have shape (C, M/group, kH, kW) with C={c} (x.shape[1]), "
                         f"got {w.shape}")
    if kh < 1 or kw < 1 or mg < 1:
        raise ShapeError(f"w must have a non-empty kernel and M/group >= 1, got {w.shape}")
    (sh, sw), pads, (dh, dw) = _geometry(strides, pads, dilations, auto_pad)
    opad = V.geometry(output_padding, "output_padding", 2, lo=0)
    if output_shape is not None:
        output_shape = V.geometry(output_shape, "output_shape", 2, lo=1)
    pads, (oh, ow) = conv_transpose_geometry((h, wd), (kh, kw), (sh, sw), pads, (dh, dw), opad,
                                             output_shape, auto_pad)
    if oh < 1 or ow < 1:
        raise ShapeError(f"conv_transpose2d output would be empty ({oh}x{ow}); pads {pads} "
                         f"are too large")
    for a, (i_n, o_n, k, s, d) in enumerate(((h, oh, kh, sh, dh), (wd, ow, kw, sw, dw))):
        # col2im walks the input with the output's roles swapped
        V.check_extent(("height", "width")[a], o_n, i_n, k, s, d, pads[a], pads[a + 2])
    m = mg * group
    dtype = x.dtype
    w = np.ascontiguousarray(w, dtype=dtype)
    b = _bias(bias, m, dtype)
    out, y = _target(out, (n, m, oh, ow), dtype, x)
    if y.size == 0:
        return out
    x = np.ascontiguousarray(x)
    cg, L, K = c // group, h * wd, mg * kh * kw
    # cols[g] = w_g^T @ x_g : (Mg*kh*kw, H*W); col2im scatters it onto the output
    wt = w.reshape(group, cg, K).transpose(0, 2, 1)
    col2im = _dispatch.impl("conv", "col2im", backend)
    cols = np.empty((K, L), dtype=dtype)
    y[...] = b[:, None, None]     # col2im accumulates onto the bias (one pass fewer)
    for i in range(n):
        for g in range(group):
            _gemm.matmul_into(wt[g], x[i, g * cg:(g + 1) * cg].reshape(cg, L), cols)
            col2im(cols, kh, kw, sh, sw, pads[0], pads[1], dh, dw, h, wd,
                   y[i, g * mg:(g + 1) * mg])
    if y is not out:
        out[...] = y
    return out


def single_threaded_blas():
    """Keep NumPy's BLAS on one thread: the conv GEMMs are split over edgedl's own threads
    (an InferenceSession calls this once)."""
    _gemm.single_threaded_blas()


def _warmup(backend):
    """Compile/load every conv (and resize) kernel for float32 (numba: serial and parallel
    variants, by lowering their work threshold for a moment)."""
    if backend == "numba":
        _warmup_calls(backend)
        saved = _config.NUMBA_PAR_WORK
        _config.NUMBA_PAR_WORK = 0
        try:
            _warmup_calls(backend)
        finally:
            _config.NUMBA_PAR_WORK = saved
    else:
        _warmup_calls(backend)


def _example_params(rec):
    """Parameters to warm an epilogue up with (a channel slope per warm-up channel)."""
    if rec.kind == "channel":
        return (np.full(2, 0.25, np.float32),)
    return tuple(0.5 if p.default is None else p.default for p in rec.params)


# Every epilogue the ONNX planner can fuse, with example parameters.
_WARMUP_EPILOGUES = [(None, ())] + [(n, _example_params(r)) for n, r in FUSED.items()]


def _warmup_calls(backend):
    # Every path a model may take (a missed one costs seconds of JIT at the first inference
    # on a Pi): each epilogue, depthwise 3x3/5x5 at stride 1/2, dense 1x1 and 3x3 at stride 1/2.
    x = np.zeros((1, 2, 9, 9), np.float32)
    b = np.zeros(2, np.float32)
    for act, params in _WARMUP_EPILOGUES:
        conv2d(x, np.zeros((2, 1, 3, 3), np.float32), b, group=2, pads=(1, 1, 1, 1),
               activation=act, activation_params=params, backend=backend)
    for k in (3, 5):
        for s in (1, 2):
            p = k // 2
            conv2d(x, np.zeros((2, 1, k, k), np.float32), b, strides=(s, s), pads=(p,) * 4,
                   group=2, activation="relu", backend=backend)
    for k, s in ((1, 1), (3, 1), (3, 2)):
        conv2d(x, np.zeros((2, 2, k, k), np.float32), b, strides=(s, s), activation="relu",
               backend=backend)
    conv_transpose2d(x, np.zeros((2, 2, 2, 2), np.float32), strides=(2, 2), backend=backend)
    from . import resize
    resize._warmup(backend)
