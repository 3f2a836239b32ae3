"""Pooling on NCHW arrays with ONNX MaxPool / AveragePool / GlobalAveragePool / GlobalMaxPool
semantics, shapes as onnxruntime computes them.

``pool_output_shape`` and ``pool_pads`` are the shape helpers the ONNX runtime also uses.
"""
import numpy as np

from .. import _config
from .. import _validate as V
from ..errors import ShapeError, ValidationError
from . import _dispatch

__all__ = ["max_pool2d", "avg_pool2d", "global_avg_pool2d", "global_max_pool2d",
           "pool2d_plan", "pool_output_shape", "pool_pads", "AUTO_PADS"]

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


# ----------------------------------------------------------------------------- geometry
def _cdiv_trunc(a, b):
    """C integer division (truncates toward zero), as onnxruntime computes its shapes."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def pool_pads(in_hw, kernel_shape, strides=(1, 1), auto_pad="NOTSET", pads=(0, 0, 0, 0)):
    """Explicit pads (top, left, bottom, right) of a pooling op, as onnxruntime resolves them.

    SAME_UPPER / SAME_LOWER pad ``(ceil(in / s) - 1) * s + k - in`` in total, the odd one at
    the end / the beginning. Like onnxruntime, the *undilated* kernel is used there and the
    total may be negative when the kernel is smaller than the stride; explicit ``pads`` are
    ignored when ``auto_pad`` is set.
    """
    if auto_pad == "NOTSET":
        return tuple(int(p) for p in pads)
    if auto_pad == "VALID":
        return (0, 0, 0, 0)
    begin, end = [], []
    for n, k, s in zip(in_hw, kernel_shape, strides):
        need = (_cdiv_trunc(n + s - 1, s) - 1) * s + k - n
        head = _cdiv_trunc(need, 2) if auto_pad == "SAME_UPPER" else _cdiv_trunc(need + 1, 2)
        begin.append(head)
        end.append(need - head)
    return (begin[0], begin[1], end[0], end[1])


def _out_size(n, k, s, pb, pe, d, ceil_mode):
    num = n + pb + pe - d * (k - 1) - 1
    if not ceil_mode:
        return _cdiv_trunc(num, s) + 1
    out = -(-num // s) + 1
    if (out - 1) * s >= n + pb:    # the last window would start in the end padding: drop it
        out -= 1
    return out


def pool_output_shape(in_hw, kernel_shape, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1),
                      ceil_mode=False, auto_pad="NOTSET"):
    """Output (OH, OW) of a 2-D MaxPool/AveragePool; ``pads`` resolved first for ``auto_pad``.

    floor((in + pads - span) / s) + 1, or with ``ceil_mode`` ceil(...) + 1 minus the last
    window when it would start inside the bottom/right padding (onnxruntime's rule, from
    onnx/onnx#5741). A result < 1 is possible; the kernels refuse it.
    """
    p = pool_pads(in_hw, kernel_shape, strides, auto_pad, pads)
    return tuple(_out_size(in_hw[a], kernel_shape[a], strides[a], p[a], p[a + 2], dilations[a],
                           bool(ceil_mode)) for a in range(2))


def _flag(v, name):
    if not isinstance(v, (bool, int, np.integer)) or int(v) not in (0, 1):
        raise ValidationError(f"{name} must be a bool (or 0/1), got {v!r}")
    return bool(v)


def _geometry(shape, kernel_shape, strides, pads, dilations, ceil_mode, auto_pad):
    """Validate the attributes for an input of ``shape`` (N, C, H, W) -> (kernel, strides,
    resolved pads, dilations, (OH, OW))."""
    kernel_shape = V.geometry(kernel_shape, "kernel_shape", 2, lo=1)
    strides = V.geometry(1 if strides is None else strides, "strides", 2, lo=1)
    dilations = V.geometry(1 if dilations is None else dilations, "dilations", 2, lo=1)
    pads = V.geometry(0 if pads is None else pads, "pads", 4, lo=0)
    if not isinstance(auto_pad, str):
        raise ValidationError(f"auto_pad must be a string, got {auto_pad!r}")
    auto_pad = V.choice(auto_pad.upper(), "auto_pad", AUTO_PADS)
    ceil_mode = _flag(ceil_mode, "ceil_mode")
    for a, name in enumerate(("top", "left")):
        for p, side in ((pads[a], name), (pads[a + 2], ("bottom", "right")[a])):
            if p >= kernel_shape[a]:
                raise ValidationError(
                    f"pads must be smaller than kernel_shape (as onnxruntime requires): pad "
                    f"{side}={p} >= kernel_shape[{a}]={kernel_shape[a]} (pads={pads}, "
                    f"kernel_shape={kernel_shape})")
    hw = shape[2:]
    if min(hw) == 0:
        raise ShapeError(f"x must have a non-empty spatial size (only N or C may be 0), got "
                         f"shape {tuple(shape)}")
    pads = pool_pads(hw, kernel_shape, strides, auto_pad, pads)
    out_hw = pool_output_shape(hw, kernel_shape, strides, pads, dilations, ceil_mode)
    if min(out_hw) < 1:
        raise ShapeError(
            f"pooling output would be empty: input spatial size {tuple(hw)} with "
            f"kernel_shape={kernel_shape}, strides={strides}, pads={pads}, "
            f"dilations={dilations}, ceil_mode={bool(ceil_mode)} gives output {out_hw}")
    strides, dilations = V.effective_strides(strides, out_hw, kernel_shape, dilations)
    for a in range(2):
        V.check_extent(("height", "width")[a], hw[a], out_hw[a], kernel_shape[a], strides[a],
                       dilations[a], abs(pads[a]), abs(pads[a + 2]))
    return kernel_shape, strides, pads, dilations, out_hw


def _target(out, shape, x):
    """(validated out, buffer the kernel writes): a fresh contiguous buffer when ``out`` is
    not C-contiguous or overlaps ``x`` (the kernels read x while writing), copied back after."""
    out = V.output(out, shape, x.dtype)
    if out.size and (not out.flags.c_contiguous or np.may_share_memory(out, x)):
        return out, np.empty(shape, dtype=x.dtype)
    return out, out


def _input(x, backend):
    """(x as the kernels take it, concrete backend). The compiled kernels walk rows as
    contiguous memory: strided views are copied once. numba would compile a second
    specialisation of every kernel for read-only arrays: those are copied for it."""
    x = np.ascontiguousarray(V.float_array(x, "x", ndim=4))
    backend = _config.resolve_backend(backend)
    if backend == "numba" and not x.flags.writeable:
        x = x.copy()
    return x, backend


def _trim_axis(n, k, s, pb, d, o):
    """Taps [i0, i1] of a k-tap axis that can read one of the n inputs for some of the o
    outputs (tap i of output j reads j*s - pb + i*d); (i0, i1) with i1 = i0 if none can."""
    i0 = max(0, -((-(pb - (o - 1) * s)) // d))      # ceil((pb - (o-1)*s) / d)
    i1 = min(k - 1, (n - 1 + pb) // d)
    return i0, max(i0, i1)


def axis_windows(n, k, s, pb, pe, d, o):
    """Per output of one axis (n inputs, k taps, stride s, pads pb / pe, dilation d, o
    outputs): (its first tap inside the image, the taps inside the image, the taps inside
    the padded extent [-pb, n + pe)), int64 arrays. Tap i of output j reads j*s - pb + i*d."""
    j = np.arange(o, dtype=np.int64) * s
    lo = np.clip(-((-(pb - j)) // d), 0, k)                # first tap at or after row 0
    hi = np.clip((n - 1 + pb - j) // d + 1, 0, k)          # one past the last tap before n
    padded = np.clip(-((-(n + pb + pe - j)) // d), 0, k)   # taps before n + pe
    return lo, np.maximum(hi - lo, 0), padded


def _axis_counts(n, k, s, pb, pe, d, o):
    """Per output: taps inside the image, and inside the padded extent [-pb, n + pe)."""
    return axis_windows(n, k, s, pb, pe, d, o)[1:]


def _trim_taps(hw, ks, st, pd, dl, out_hw, count_include_pad=False):
    """The windows cut down to the taps that can read the image: a hostile kernel_shape
    (up to 2**31 - 1 with SAME padding) would otherwise cost every backend a loop (and numba
    a buffer) over all its taps, nearly all of them in the padding. MaxPool and an
    AveragePool that divides by the in-image count are unchanged by dropping taps that
    never read the image; with count_include_pad the divisor counts padded taps too, so the
    trimmed pool divides by the in-image count and ``scale`` (in-image / padded count per
    output, or None) corrects it. -> (((start, stop) of H, of W) of x to read, kernel,
    pads, scale or None). Ordinary pools (every tap reads the image) come back unchanged."""
    crop, kernel, pads, trimmed = [], [], list(pd), False
    for a in range(2):
        n, k, s, d, o = hw[a], ks[a], st[a], dl[a], out_hw[a]
        i0, i1 = _trim_axis(n, k, s, pd[a], d, o)
        if i0 == 0 and i1 == k - 1:
            crop.append((0, n)), kernel.append(k)
            continue
        trimmed = True
        pb = pd[a] - i0 * d          # the trimmed window's first tap
        start = max(0, -pb)          # a first tap inside the image: read from there
        pb, kt = max(0, pb), i1 - i0 + 1
        crop.append((start, n)), kernel.append(kt)
        pads[a] = pb
        pads[a + 2] = max(0, (o - 1) * s + (kt - 1) * d + 1 - (n - start) - pb)
    if not trimmed:
        return tuple(crop), ks, pd, None
    scale = None
    if count_include_pad:
        (vh, ph), (vw, pw) = (_axis_counts(hw[a], ks[a], st[a], pd[a], pd[a + 2], dl[a],
                                           out_hw[a]) for a in range(2))
        with np.errstate(divide="ignore", invalid="ignore"):
            fh = np.where(vh > 0, vh / np.maximum(ph, 1), 0.0)
            fw = np.where(vw > 0, vw / np.maximum(pw, 1), 0.0)
        scale = fh[:, None] * fw[None, :]      # float64; multiplied into x's dtype
    return tuple(crop), tuple(kernel), tuple(pads), scale


def _crop(x, crop):
    """x's (H, W) window ((start, stop), (start, stop)); the kernels read rows contiguously."""
    (r0, r1), (c0, c1) = crop
    if (r0, r1, c0, c1) == (0, x.shape[2], 0, x.shape[3]):
        return x
    return x[:, :, r0:r1, c0:c1]


def _finish(out, buf):
    if buf is not out:
        out[...] = buf
    return out


def _avg_extent(hw, pads):
    """SAME_* with kernel < stride can give a negative end pad; onnxruntime's AveragePool then
    ignores the last -pad rows/columns of the image (its MaxPool does not): -> (the (H, W)
    the kernel reads, pads with those ends at 0)."""
    h, w = hw[0] + min(pads[2], 0), hw[1] + min(pads[3], 0)
    return (max(h, 0), max(w, 0)), pads[:2] + (max(pads[2], 0), max(pads[3], 0))


def _prepare(x_shape, kind, kernel_shape, strides, pads, dilations, ceil_mode, auto_pad,
             count_include_pad):
    """Everything a pool of input shape ``x_shape`` needs, validated: (output shape, crop of x,
    (kernel, strides, pads, dilations) for the kernel, its extra arguments, scale or None)."""
    ks, st, pd, dl, out_hw = _geometry(x_shape, kernel_shape, strides, pads, dilations,
                                       ceil_mode, auto_pad)
    hw, extra = x_shape[2:], ()
    cip = kind == "avg" and _flag(count_include_pad, "count_include_pad")
    if kind == "avg" and (pd[2] < 0 or pd[3] < 0):
        hw, pd = _avg_extent(hw, pd)
    crop, ks, pd, scale = _trim_taps(hw, ks, st, pd, dl, out_hw, cip)
    if kind == "avg":
        extra = (cip and scale is None,)
    return tuple(x_shape[:2]) + out_hw, crop, (ks, st, pd, dl), extra, scale


# _prepare's results by argument (public calls repeat the same few pools: validating the
# attributes again costs ~20 us a call, as much as the kernel on a small input)
_PREPARED = {}
_PREPARED_MAX = 256


def _plain_key(args):
    """A key equal only for arguments that validate alike: each is an int, bool, str or None
    (tagged with its type: True == 1) or a tuple / list of ints; None when one is not."""
    key = []
    for a in args:
        t = type(a)
        if t is tuple or t is list:
            for e in a:
                if type(e) is not int:
                    return None
            a = tuple(a)
        elif t is not int and t is not bool and t is not str and a is not None:
            return None
        key.append((t, a))
    return tuple(key)


def _prepared(*args):
    """_prepare(*args), remembered for plain arguments (only results: errors are raised anew)."""
    key = _plain_key(args)
    hit = _PREPARED.get(key) if key is not None else None
    if hit is None:
        hit = _prepare(*args)
        if key is not None:
            if len(_PREPARED) >= _PREPARED_MAX:
                _PREPARED.clear()
            _PREPARED[key] = hit
    return hit


# ----------------------------------------------------------------------------- kernels
def max_pool2d(x, kernel_shape, strides=None, pads=(0, 0, 0, 0), dilations=(1, 1),
               ceil_mode=False, auto_pad="NOTSET", out=None, backend=None):
    """ONNX MaxPool on NCHW ``x``: returns (N, C, OH, OW) of x's dtype.

    ``kernel_shape`` (kh, kw); ``strides`` default 1; ``pads`` (top, left, bottom, right), each
    smaller than the kernel; ``auto_pad`` "NOTSET", "SAME_UPPER", "SAME_LOWER" or "VALID".
    A window holding a NaN gives NaN.
    """
    x, backend = _input(x, backend)
    oshape, crop, geo, _, _ = _prepared(x.shape, "max", kernel_shape, strides, pads, dilations,
                                        ceil_mode, auto_pad, False)
    out, buf = _target(out, oshape, x)
    if buf.size:
        x = np.ascontiguousarray(_crop(x, crop))
        _dispatch.impl("pooling", "max_pool2d", backend)(x, *geo, buf)
    return _finish(out, buf)


def avg_pool2d(x, kernel_shape, strides=None, pads=(0, 0, 0, 0), dilations=(1, 1),
               ceil_mode=False, auto_pad="NOTSET", count_include_pad=False, out=None,
               backend=None):
    """ONNX AveragePool on NCHW ``x``: returns (N, C, OH, OW) of x's dtype.

    Arguments as :func:`max_pool2d`. ``count_include_pad`` False divides by the number of
    in-image elements of the window, True by the number of its taps inside the padded extent.
    """
    x, backend = _input(x, backend)
    oshape, crop, geo, extra, scale = _prepared(x.shape, "avg", kernel_shape, strides, pads,
                                                dilations, ceil_mode, auto_pad,
                                                count_include_pad)
    out, buf = _target(out, oshape, x)
    if buf.size:
        x = np.ascontiguousarray(_crop(x, crop))
        _dispatch.impl("pooling", "avg_pool2d", backend)(x, *geo, *extra, buf)
        if scale is not None:
            buf *= scale
    return _finish(out, buf)


def _whole_plane(x_shape, oshape, crop, geo, scale):
    """Whether each output is its whole input plane (a 7x7 pool on 7x7 maps closing
    Inception and ResNet-style backbones): the global kernels' one pass per plane then, not
    the window folds (4x onnxruntime's time on 1024 planes of 7x7)."""
    ks, _, pd, dl = geo
    return (oshape[2:] == (1, 1) and tuple(ks) == tuple(x_shape[2:]) and not any(pd)
            and tuple(dl) == (1, 1) and scale is None
            and crop == ((0, x_shape[2]), (0, x_shape[3])))


def pool2d_plan(x_shape, kind, kernel_shape, strides=None, pads=(0, 0, 0, 0),
                dilations=(1, 1), ceil_mode=False, auto_pad="NOTSET", count_include_pad=False,
                dtype=np.float32, backend=None):
    """max_pool2d (``kind`` "max") or avg_pool2d ("avg") prepared once for a fixed input shape
    (the ONNX runtime's planner), float32 / float64, and for "max" also uint8 / int8
    (quantized tensors, exact): validates everything now and returns ``run(x, out=None)``,
    which only checks x's shape and dtype. ``out``, when given, must be a C-contiguous array
    of ``run.out_shape`` and x's dtype not overlapping x (not checked: this is the fast path;
    the public functions' per-call validation cost ~25 us).
    """
    if kind not in ("max", "avg"):
        raise ValidationError(f"kind must be 'max' or 'avg', got {kind!r}")
    if kind == "max" and np.dtype(dtype) in (np.uint8, np.int8):
        return _int8_max_plan(x_shape, np.dtype(dtype), kernel_shape, strides, pads,
                              dilations, ceil_mode, auto_pad, backend)
    x_shape, dtype = V.plan_input(x_shape, dtype)
    oshape, crop, geo, extra, scale = _prepare(x_shape, kind, kernel_shape, strides, pads,
                                               dilations, ceil_mode, auto_pad,
                                               count_include_pad)
    name = "max_pool2d" if kind == "max" else "avg_pool2d"
    if _whole_plane(x_shape, oshape, crop, geo, scale):
        name, geo, extra = "global_" + name, (), ()

    def run(x, out=None):
        V.check_planned(x, x_shape, dtype)
        y = np.empty(oshape, dtype) if out is None else out
        if y.size:
            bk = _config.resolve_backend(backend)
            x = _crop(x, crop)
            if not x.flags.c_contiguous or (bk == "numba" and not x.flags.writeable):
                x = np.array(x, order="C")      # see _input
            _dispatch.impl("pooling", name, bk)(x, *geo, *extra, y)
            if scale is not None:
                y *= scale
        return y
    run.out_shape = oshape
    run.bound = _bound_pool(x_shape, oshape, crop, geo, extra, scale, name, dtype, backend)
    return run


def _bound_pool(x_shape, oshape, crop, geo, extra, scale, name, dtype, backend):
    """The Cython PoolF32 of a planned float32 window pool (``bound(x, out, nthreads)``, see
    there), or None: other dtypes or backends, global pools, cropped inputs and rescaled
    averages keep run's path."""
    if (dtype != np.float32 or _config.resolve_backend(backend) != "cython" or
            name.startswith("global_") or scale is not None or
            crop != ((0, x_shape[2]), (0, x_shape[3]))):
        return None
    ks, st, pd, dl = (tuple(int(v) for v in g) for g in geo)
    cip = bool(extra[0]) if extra else False
    return _dispatch.twin_module("pooling", "cython").PoolF32(
        tuple(x_shape), tuple(oshape), ks, st, pd, dl, cip, name == "max_pool2d")


def _int8_max_plan(x_shape, dtype, kernel_shape, strides, pads, dilations, ceil_mode, auto_pad,
                   backend):
    """pool2d_plan's max of uint8 / int8 (quantized) tensors, exact (max commutes with the
    monotonic quantization): the Cython kernel max_pool2d_int8, else the float32 kernels on
    the values cast (every int8 is a float32) and cast back. Small planes (< 32 x 32) take
    the float32 route too: their planes-at-once float kernels beat the integer one's per-row
    passes there 3-6x even with both casts (YOLOX's SPP pools, 5x5 / 9x9 / 13x13 on
    256 x 13 x 13: 392 / 678 / 562 us against 79 / 114 / 120 us; 5x5 on 128 x 20 x 20:
    257 against 50 us), while from 40 x 40 up they are level or the integer kernel wins.
    2x2 stride-2 pools keep the integer kernel at every size (its whole-plane passes:
    64 x 20 x 20 9 against 15 us)."""
    x_shape = V.int_tuple(x_shape, "x_shape", 4, lo=0)
    oshape, crop, geo, _, _ = _prepare(x_shape, "max", kernel_shape, strides, pads, dilations,
                                       ceil_mode, auto_pad, False)
    pairs = tuple(kernel_shape) == (2, 2) and tuple(strides or (1, 1)) == (2, 2)
    small = x_shape[2] * x_shape[3] < 32 * 32 and not pairs
    as_float = pool2d_plan(x_shape, "max", kernel_shape, strides, pads, dilations, ceil_mode,
                           auto_pad, dtype=np.float32, backend=backend)
    kernels = {}    # resolved backend -> the Cython kernel (None: the float32 route)

    def run(x, out=None):
        V.check_planned(x, x_shape, dtype)
        y = np.empty(oshape, dtype) if out is None else out
        if y.size:
            bk = _config.resolve_backend(backend)
            if bk not in kernels:
                kernels[bk] = (_dispatch.twin_module("pooling", "cython").max_pool2d_int8
                               if bk == "cython" and not small else None)
            kernel = kernels[bk]
            if kernel is not None:
                xc = _crop(x, crop)
                kernel(xc if xc.flags.c_contiguous else np.ascontiguousarray(xc), *geo, y)
            else:
                y[...] = as_float(x.astype(np.float32))
        return y
    run.out_shape = oshape
    return run


def _global(x, out, backend, name):
    x, backend = _input(x, backend)
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise ShapeError(f"{name} needs a non-empty spatial size, got x of shape {x.shape}")
    out, buf = _target(out, x.shape[:2] + (1, 1), x)
    if buf.size:
        _dispatch.impl("pooling", name, backend)(x, buf)
    return _finish(out, buf)


def global_avg_pool2d(x, out=None, backend=None):
    """ONNX GlobalAveragePool: the mean of each (H, W) plane of NCHW ``x``, shape (N, C, 1, 1)."""
    return _global(x, out, backend, "global_avg_pool2d")


def global_max_pool2d(x, out=None, backend=None):
    """ONNX GlobalMaxPool: the max of each (H, W) plane of NCHW ``x`` (NaN propagates)."""
    return _global(x, out, backend, "global_max_pool2d")


def _warmup(backend):
    """Compile / load every pooling kernel of ``backend`` for float32."""
    x = np.zeros((1, 1, 4, 4), dtype=np.float32)
    max_pool2d(x, (2, 2), backend=backend)
    avg_pool2d(x, (2, 2), backend=backend)
    global_avg_pool2d(x, backend=backend)
    global_max_pool2d(x, backend=backend)
