"""Tensor-manipulation ops on NumPy: shape ops return views where NumPy can (Reshape,
Squeeze, Slice, Split; Transpose where the shape is not planned), the rest are single NumPy
calls (a planned Transpose: kernels.layout)."""
import math

import numpy as np

from ...kernels import layout as _layout
from ... import _config
from . import Unfuse, ints, op, takes_out

_INT64_MAX = np.iinfo(np.int64).max


def _axes_input_or_attr(ctx, input_index, attr_opset):
    """Axes as an attribute before ``attr_opset``, as input ``input_index`` from it on.
    Returns ('const', list or None) or ('input', None) when computed at run time."""
    if ctx.opset < attr_opset:
        a = ctx.attr("axes")
        return None if a is None else ints(a), False
    if not ctx.has(input_index):
        return None, False
    if ctx.is_const(input_index):
        return ints(ctx.consts[input_index]), False
    return None, True


def _norm(axes, nd):
    return [a + nd if a < 0 else a for a in axes]


@op("Concat")
def concat(ctx):
    axis = int(ctx.attr("axis", 0 if ctx.opset < 4 else None))
    if ctx.static and ctx.shapes and all(len(sh) == len(ctx.shapes[0]) for sh in ctx.shapes):
        nd = len(ctx.shapes[0])
        ax = axis + nd if axis < 0 else axis
        widths = [int(sh[-1]) for sh in ctx.shapes] if nd >= 2 and ax == nd - 1 else []
        if widths and all(w * np.dtype(dt).itemsize in _WIDE for w, dt in
                          zip(widths, ctx.dtypes)) and int(np.prod(ctx.shapes[0][:-1])) > 1:
            return _concat_rows(np.cumsum([0] + widths))
    return takes_out(lambda *xs, out=None: np.concatenate(xs, axis=axis, out=out))


@op("ConcatTransposed")   # internal: fuse.fuse_transposed_concat
def concat_transposed(ctx):
    """Transpose(Concat(xs, axis), perm) as each x transposed (kernels.layout) straight into
    its slice of the output along the permuted axis, where every axis before that one is 1
    (the slices are then contiguous); else the Concat and the Transpose as steps (which
    also report bad input)."""
    shapes, dts = ctx.shapes, ctx.dtypes
    axis, perm = _concat_transposed_geometry(ctx)
    ax = perm.index(axis)
    parts = [tuple(sh[a] for a in perm) for sh in shapes]
    oshape = parts[0][:ax] + (sum(p[ax] for p in parts),) + parts[0][ax + 1:]
    if int(np.prod(oshape[:ax])) != 1:
        raise Unfuse()
    runs = [_layout.transpose_plan(sh, perm, dts[0], ctx.backend) for sh in shapes]
    ends = np.cumsum([0] + [int(np.prod(p)) for p in parts]).tolist()

    @takes_out
    def f(*xs, out=None):
        y = np.empty(oshape, dts[0]) if out is None else out
        flat, nt = y.reshape(-1), _config.get_num_threads()
        for x, run, p, a, b in zip(xs, runs, parts, ends, ends[1:]):
            part = flat[a:b].reshape(p)
            if run.bound is None or not run.bound(x, part, nt):
                run(x, part)
        return y
    return f


def _concat_transposed_geometry(ctx):
    """ConcatTransposed's (concat axis, perm), both checked, or Unfuse: shapes not fixed,
    types that differ, inputs that do not concatenate (the parts then report it)."""
    shapes, dts = ctx.shapes, ctx.dtypes
    if not ctx.static or not shapes or any(d is None or d != dts[0] for d in dts):
        raise Unfuse()
    nd = len(shapes[0])
    axis = int(ctx.attr("axis"))
    axis += nd if axis < 0 else 0
    perm = ctx.attr("perm")
    perm = tuple(range(nd - 1, -1, -1)) if perm is None else tuple(int(a) for a in perm)
    if not 0 <= axis < nd or sorted(perm) != list(range(nd)) or any(
            len(sh) != nd or any(sh[i] != shapes[0][i] for i in range(nd) if i != axis)
            for sh in shapes):
        raise Unfuse()
    return axis, perm


def _concat_rows(bounds):
    """Concat on the last axis of inputs of short rows (boxes and scores of a detector head,
    [..., 2] + [..., 2]): each input copied into its columns by copy_rows, where
    np.concatenate ran an inner loop per row."""
    def f(*xs, out=None):
        if out is None:
            out = np.empty(xs[0].shape[:-1] + (int(bounds[-1]),),
                           np.result_type(*xs))
        for x, a, b in zip(xs, bounds[:-1], bounds[1:]):
            copy_rows(out[..., a:b], x)
        return out
    return takes_out(f)


def reshape_target(xshape, shape, allowzero):
    out = list(shape)
    if not allowzero:
        for i, d in enumerate(out):
            if d == 0:
                out[i] = xshape[i]
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1], dtype=np.int64))
        total = int(np.prod(xshape, dtype=np.int64))
        out[out.index(-1)] = total // known if known else 0
    return out


@op("Reshape")
def reshape(ctx):
    allowzero = int(ctx.attr("allowzero", 0))
    if ctx.opset < 5:
        shape = ints(ctx.attr("shape"))
        return lambda x: x.reshape(reshape_target(x.shape, shape, 0))
    if ctx.is_const(1):
        shape = ints(ctx.consts[1])
        if ctx.static:
            target = tuple(reshape_target(ctx.shapes[0], shape, allowzero))
            return lambda x, _: x.reshape(target)
        return lambda x, _: x.reshape(reshape_target(x.shape, shape, allowzero))
    return lambda x, s: x.reshape(reshape_target(x.shape, ints(s), allowzero))


@op("Transpose")
def transpose(ctx):
    """Planned (a static shape), the permuted values written into the planner's buffer by
    kernels.layout's transpose, as onnxruntime's Transpose does: the consumers read one
    contiguous array and a graph output is handed over as it is (YuNet's heads, Transpose ->
    Reshape -> Sigmoid; YOLOX's (1, 85, 3549) -> (1, 3549, 85) output: 210 us as NumPy's
    strided copy of a view). One that moves only axes of length 1 is a reshape (a view), and
    so is any transpose of a shape that is not planned, or one marked ``_view`` (a channel
    shuffle whose halves are read in place: fuse.shuffle_as_views)."""
    perm = ctx.attr("perm")
    perm = None if perm is None else ints(perm)
    if not ctx.static or ctx.dtypes[0] is None or ctx.attr("_view"):
        return lambda x: np.transpose(x, perm)
    shape = ctx.shapes[0]
    p = tuple(range(len(shape) - 1, -1, -1)) if perm is None else tuple(perm)
    if sorted(p) == list(range(len(shape))) and _layout.moves_no_data(shape, p):
        oshape = tuple(shape[a] for a in p)
        return lambda x: x.reshape(oshape)        # only axes of 1 move: a view
    try:
        run = _layout.transpose_plan(ctx.shapes[0], perm, ctx.dtypes[0], ctx.backend)
    except ValueError as e:
        raise ctx.fail(str(e)) from e
    return takes_out(lambda x, out=None: run(x, out), run.bound)


def _block_size(ctx):
    b = ctx.attr("blocksize")
    if b is None or int(b) < 1:
        raise ctx.fail(f"blocksize must be a positive integer, got {b!r}")
    return int(b)


def _rank4(ctx, x):
    if x.ndim != 4:
        raise ctx.fail(f"input must be 4-D (N, C, H, W), got shape {x.shape}")


def _mode(ctx):
    mode = ctx.attr("mode", "DCR")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode not in ("DCR", "CRD"):
        raise ctx.fail(f"mode must be 'DCR' or 'CRD', got {mode!r}")
    return mode


@op("SpaceToDepth")
def space_to_depth(ctx):
    """(N, C, H, W) -> (N, C*b*b, H/b, W/b). DCR (the default): output channel (i*b + j)*C + c
    holds x[:, c, i::b, j::b] (TF's order; YOLOv5's Focus concat is the same up to the order
    of the four phases); CRD (opset 28): channel c*b*b + i*b + j."""
    b = _block_size(ctx)
    perm = (0, 3, 5, 1, 2, 4) if _mode(ctx) == "DCR" else (0, 1, 3, 5, 2, 4)

    def f(x):
        _rank4(ctx, x)
        n, c, h, w = x.shape
        if h % b or w % b:
            raise ctx.fail(f"H and W ({h}, {w}) must be multiples of blocksize {b}")
        y = x.reshape(n, c, h // b, b, w // b, b).transpose(perm)
        return y.reshape(n, c * b * b, h // b, w // b)
    return f


@op("DepthToSpace")
def depth_to_space(ctx):
    """(N, C, H, W) -> (N, C/(b*b), H*b, W*b). DCR (the default): input channel
    (i*b + j)*C' + c goes to out[:, c, y*b + i, x*b + j]; CRD (opset 11+, PixelShuffle's):
    channel c*b*b + i*b + j."""
    b = _block_size(ctx)
    mode = _mode(ctx)

    def f(x):
        _rank4(ctx, x)
        n, c, h, w = x.shape
        if c % (b * b):
            raise ctx.fail(f"C ({c}) must be a multiple of blocksize**2 ({b * b})")
        if mode == "DCR":
            y = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
        else:
            y = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
        return y.reshape(n, c // (b * b), h * b, w * b)
    return f


@op("Flatten")
def flatten(ctx):
    axis = int(ctx.attr("axis", 1))

    def f(x):
        # math.prod of Python ints: np.prod cost 2.5 us a call, most of a Flatten's time
        a = axis + x.ndim if axis < 0 else axis
        return x.reshape(math.prod(x.shape[:a]), math.prod(x.shape[a:]))
    return f


@op("Split")
def split(ctx):
    axis = int(ctx.attr("axis", 0))
    n_out = len(ctx.node.outputs)
    sizes = ctx.attr("split") if ctx.opset < 13 else None
    sizes = None if sizes is None else ints(sizes)
    num = ctx.attr("num_outputs")

    def f(x, split_in=None):
        dim = x.shape[axis]
        s = sizes
        if s is None and split_in is not None:
            s = ints(split_in)
        if s is None:
            if num is not None:          # opset 18: last chunk may be smaller
                step = -(-dim // int(num))
                s = [min(step, dim - i * step) for i in range(int(num))]
            else:
                s = [dim // n_out] * n_out
        idx = np.cumsum(s)[:-1]
        return tuple(np.split(x, idx, axis=axis))
    return f


@op("Slice")
def slice_(ctx):
    if ctx.opset < 10:
        starts, ends = ints(ctx.attr("starts")), ints(ctx.attr("ends"))
        axes = ctx.attr("axes")
        axes = None if axes is None else ints(axes)
        return lambda x: x[_slices(x.ndim, starts, ends, axes, None)]
    if all(ctx.is_const(i) or not ctx.has(i) for i in range(1, 5)):
        c = [None if not ctx.has(i) else ints(ctx.consts[i]) for i in range(1, 5)]
        key = _slices(len(ctx.shapes[0]), *c) if ctx.static else None
        if key is not None and _narrow_rows(ctx.shapes[0], ctx.dtypes[0], key):
            return takes_out(lambda x, *_, out=None: copy_rows(out, x[key]))
        return lambda x, *_: x[_slices(x.ndim, *c)]

    def f(x, starts, ends, axes=None, steps=None):
        return x[_slices(x.ndim, ints(starts), ints(ends), None if axes is None else ints(axes),
                         None if steps is None else ints(steps))]
    return f


def _narrow_rows(shape, dtype, key):
    """Whether x[key] (x C-contiguous of ``shape``) is a view of many short rows: its last
    axis contiguous and at most 8 bytes, the view not contiguous (a box decoder's
    boxes[..., :2]). NumPy copies or computes on such a view a few values per inner loop
    (a uint8 (1, 4420, 2) slice of (1, 4420, 4): 19 us to copy, 2 us as one uint16 a row),
    so the planned Slice writes it out once, contiguous, by ``copy_rows``."""
    shape = tuple(int(d) for d in shape)
    if not shape or min(shape) == 0:
        return False
    item = np.dtype(dtype).itemsize
    strides = [item] * len(shape)
    for a in range(len(shape) - 2, -1, -1):
        strides[a] = strides[a + 1] * shape[a + 1]
    fake = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), shape,   # never read
                                           [st // item for st in strides])
    v = fake[key]
    return (v.size > 1 and not v.flags.c_contiguous and v.ndim >= 2
            and (v.shape[-1] == 1 or v.strides[-1] == 1) and v.shape[-1] * item <= 8)


_WIDE = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def copy_rows(dst, src):
    """dst[...] = src (same shape), where either is a view of short contiguous rows: each
    row as one 2/4/8-byte value (one strided loop over the rows instead of a NumPy inner
    loop per row); a new array when dst is None. Returns dst."""
    if dst is None:
        dst = np.empty(src.shape, src.dtype)
    if src.ndim and dst.dtype == src.dtype:
        wide = _WIDE.get(src.shape[-1] * src.itemsize)
        if wide is not None and (src.shape[-1] == 1 or (
                src.strides[-1] == src.itemsize and dst.strides[-1] == dst.itemsize)):
            try:
                np.copyto(dst.view(wide), src.view(wide))
                return dst
            except (ValueError, TypeError):      # a layout NumPy will not view: plain copy
                pass
    np.copyto(dst, src)
    return dst


def _slices(nd, starts, ends, axes, steps):
    sl = [slice(None)] * nd
    if axes is None:
        axes = list(range(len(starts)))
    for i, a in enumerate(axes):
        a = a + nd if a < 0 else a
        step = 1 if steps is None else steps[i]
        sl[a] = slice(starts[i], ends[i], step)
    return tuple(sl)


@op("Gather")
def gather(ctx):
    axis = int(ctx.attr("axis", 0))
    if ctx.is_const(1) and ctx.consts[1].ndim == 0 and ctx.static:
        # a scalar index is basic indexing: a view, not a copy (channel shuffles use it)
        nd = len(ctx.shapes[0])
        a = axis + nd if axis < 0 else axis
        i = int(ctx.consts[1])
        i = i + ctx.shapes[0][a] if i < 0 else i
        key = (slice(None),) * a + (i,)
        return lambda x, _: x[key]
    return lambda x, idx: _take(x, idx, axis)


def _take(x, idx, axis):
    """np.take with ONNX's indices (negative from the end). A 32-bit NumPy takes intp indices
    only: int64 ones are range-checked there before narrowing (a wrapped index would pick a
    wrong element silently)."""
    idx = idx.astype(np.int64, copy=False)
    if np.dtype(np.intp).itemsize < 8:
        n = x.shape[axis]
        if idx.size and (int(idx.min()) < -n or int(idx.max()) >= n):
            raise IndexError(f"Gather index out of range [{-n}, {n - 1}] for axis {axis}")
        idx = idx.astype(np.intp)
    return np.take(x, idx, axis=axis)


@op("GatherElements")
def gather_elements(ctx):
    axis = int(ctx.attr("axis", 0))

    def f(x, idx):
        idx = idx.astype(np.int64)
        idx = np.where(idx < 0, idx + x.shape[axis], idx)
        return np.take_along_axis(x, idx, axis=axis)
    return f


def _reduction(ctx):
    r = ctx.attr("reduction", "none")
    r = r.decode() if isinstance(r, bytes) else r
    ufunc = {"none": None, "add": np.add, "mul": np.multiply, "max": np.maximum,
             "min": np.minimum}
    if r not in ufunc:
        raise ctx.fail(f"reduction must be one of {sorted(ufunc)}, got {r!r}")
    return ufunc[r]


def _checked_index(ctx, idx, dims, what):
    """int64 indices in [-d, d) (ONNX allows negative ones) -> non-negative intp; an index
    out of range is a ModelError naming the node (numpy would wrap or raise a bare error)."""
    idx = np.asarray(idx).astype(np.int64)
    dims = np.asarray(dims, np.int64)
    if idx.size and ((idx < -dims).any() or (idx >= dims).any()):
        raise ctx.fail(f"{what} index out of range for dimension(s) {dims.tolist()}")
    return np.where(idx < 0, idx + dims, idx).astype(np.intp)


@op("ScatterND")
def scatter_nd(ctx):
    """out = data with out[indices[i]] (reduced) by updates[i]; the index tuples run over
    data's leading axes (YOLOv5's older exports write their decoded boxes with it)."""
    red = _reduction(ctx)

    def f(data, indices, updates):
        k = indices.shape[-1]
        if k > data.ndim or updates.shape != indices.shape[:-1] + data.shape[k:]:
            raise ctx.fail(f"updates {updates.shape} do not match indices {indices.shape} "
                           f"into data {data.shape}")
        idx = _checked_index(ctx, indices, data.shape[:k], "indices").reshape(-1, k)
        upd = updates.reshape((-1,) + data.shape[k:])
        out = data.copy()
        if red is None:
            out[tuple(idx.T)] = upd      # duplicates: the last one wins (ONNX: undefined)
        else:
            red.at(out, tuple(idx.T), upd)
        return out
    return f


@op("ScatterElements", "Scatter")
def scatter_elements(ctx):
    axis = int(ctx.attr("axis", 0))
    red = _reduction(ctx)

    def f(data, indices, updates):
        a = axis + data.ndim if axis < 0 else axis
        if indices.shape != updates.shape or indices.ndim != data.ndim:
            raise ctx.fail(f"indices {indices.shape} and updates {updates.shape} must have "
                           f"data's rank ({data.ndim}) and one shape")
        idx = _checked_index(ctx, indices, data.shape[a], "indices")
        grid = list(np.indices(idx.shape, sparse=True))
        grid[a] = idx
        out = data.copy()
        if red is None:
            out[tuple(grid)] = updates
        else:
            red.at(out, tuple(grid), updates)
        return out
    return f


@op("GatherND")
def gather_nd(ctx):
    b = int(ctx.attr("batch_dims", 0))

    def f(data, indices):
        k = indices.shape[-1]
        if b + k > data.ndim or data.shape[:b] != indices.shape[:b]:
            raise ctx.fail(f"indices {indices.shape} (batch_dims {b}) do not fit data "
                           f"{data.shape}")
        idx = _checked_index(ctx, indices, data.shape[b:b + k], "indices")
        nb = int(np.prod(data.shape[:b], dtype=np.int64))
        d = data.reshape((nb,) + data.shape[b:])
        ix = idx.reshape(nb, -1, k)
        batch = np.arange(nb)[:, None]
        got = d[(batch,) + tuple(ix[..., j] for j in range(k))]
        return got.reshape(indices.shape[:-1] + data.shape[b + k:])
    return f


@op("CumSum")
def cumsum(ctx):
    exclusive, reverse = int(ctx.attr("exclusive", 0)), int(ctx.attr("reverse", 0))

    def f(x, axis):
        a = int(np.asarray(axis).reshape(-1)[0])
        if not -x.ndim <= a < x.ndim:
            raise ctx.fail(f"axis {a} out of range for rank {x.ndim}")
        y = np.flip(x, a) if reverse else x
        c = np.cumsum(y, axis=a, dtype=x.dtype)
        if exclusive:
            c = np.concatenate([np.zeros_like(np.take(c, [0], axis=a)),
                                np.take(c, np.arange(c.shape[a] - 1), axis=a)], axis=a)
        return np.ascontiguousarray(np.flip(c, a) if reverse else c)
    return f


@op("OneHot")
def one_hot(ctx):
    axis = int(ctx.attr("axis", -1))

    def f(indices, depth, values):
        d = int(np.asarray(depth).reshape(-1)[0])
        if d < 1:
            raise ctx.fail(f"depth must be positive, got {d}")
        nd = indices.ndim + 1
        a = axis + nd if axis < 0 else axis
        if not 0 <= a < nd:
            raise ctx.fail(f"axis {axis} out of range for output rank {nd}")
        idx = np.asarray(indices).astype(np.int64)
        idx = np.where(idx < 0, idx + d, idx)
        hot = np.expand_dims(idx, a) == np.arange(d).reshape([-1 if i == a else 1
                                                             for i in range(nd)])
        return np.where(hot, values[1], values[0]).astype(values.dtype)
    return f


@op("Trilu")
def trilu(ctx):
    upper = int(ctx.attr("upper", 1))

    def f(x, k=None):
        kk = 0 if k is None else int(np.asarray(k).reshape(-1)[0])
        return np.triu(x, kk) if upper else np.tril(x, kk)
    return f


@op("Einsum")
def einsum(ctx):
    eq = ctx.attr("equation")
    eq = (eq.decode() if isinstance(eq, bytes) else str(eq)).replace(" ", "")
    return lambda *xs: np.asarray(np.einsum(eq, *xs))


@op("IsNaN")
def is_nan(ctx):
    return lambda x: np.isnan(x)


@op("IsInf")
def is_inf(ctx):
    pos, neg = int(ctx.attr("detect_positive", 1)), int(ctx.attr("detect_negative", 1))

    def f(x):
        if pos and neg:
            return np.isinf(x)
        return x == (np.inf if pos else -np.inf) if pos or neg else np.zeros(x.shape, bool)
    return f


@op("Squeeze")
def squeeze(ctx):
    axes, dynamic = _axes_input_or_attr(ctx, 1, 13)

    def f(x, ax=None):
        a = ints(ax) if dynamic else axes
        if a is None:
            return np.squeeze(x)
        return np.squeeze(x, axis=tuple(_norm(a, x.ndim)))
    return f


@op("Unsqueeze")
def unsqueeze(ctx):
    axes, dynamic = _axes_input_or_attr(ctx, 1, 13)

    def f(x, ax=None):
        a = ints(ax) if dynamic else axes
        nd = x.ndim + len(a)
        shape = list(x.shape)
        for i in sorted(_norm(a, nd)):
            shape.insert(i, 1)
        return x.reshape(shape)
    return f


@op("Shape")
def shape(ctx):
    start = int(ctx.attr("start", 0))
    end = ctx.attr("end")

    def f(x):
        s = np.array(x.shape, dtype=np.int64)
        return s[start:end if end is None else int(end)]
    return f


@op("Size")
def size(ctx):
    return lambda x: np.array(x.size, dtype=np.int64)


@op("ConstantOfShape")
def constant_of_shape(ctx):
    v = ctx.attr("value")
    v = np.zeros(1, np.float32) if v is None else np.asarray(v).reshape(-1)
    return lambda s: np.full(ints(s), v[0], dtype=v.dtype)


@op("Range")
def range_(ctx):
    def f(start, limit, delta):
        s, l, d = start.item(), limit.item(), delta.item()
        n = max(int(np.ceil((l - s) / d)), 0)
        return (s + np.arange(n) * d).astype(start.dtype)
    return f


@op("Expand")
def expand(ctx):
    def f(x, s):
        return np.array(np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(ints(s)))))
    return f


@op("Tile")
def tile(ctx):
    return lambda x, r: np.tile(x, ints(r))


@op("Pad")
def pad(ctx):
    if ctx.opset < 11:
        pads = ints(ctx.attr("pads" if ctx.opset >= 2 else "paddings"))
        mode = ctx.attr("mode", "constant")
        value = float(ctx.attr("value", 0.0))
        return lambda x: _pad(x, pads, mode, value, None)
    mode = ctx.attr("mode", "constant")

    def f(x, pads, value=None, axes=None, out=None):
        v = 0 if value is None or value.size == 0 else value.reshape(-1)[0]
        axes = None if axes is None else ints(axes)
        if out is not None and mode == "constant":
            # into the planner's buffer: fill, copy x in (np.pad costs ~50 us of Python
            # and a new array per call)
            begin, end = _pad_widths(x.ndim, ints(pads), axes)
            if min(begin + end) >= 0:
                out.fill(v)
                out[tuple(slice(b, b + d) for b, d in zip(begin, x.shape))] = x
                return out
        return _pad(x, ints(pads), mode, v, axes)
    return takes_out(f)


def _pad_widths(nd, pads, axes):
    """ONNX pads (all begins, then all ends, over ``axes``) -> per-axis begin, end lists."""
    axes = list(range(nd)) if axes is None else _norm(axes, nd)
    n = len(axes)
    begin, end = [0] * nd, [0] * nd
    for i, a in enumerate(axes):
        begin[a], end[a] = pads[i], pads[n + i]
    return begin, end


def _pad(x, pads, mode, value, axes):
    nd = x.ndim
    begin, end = _pad_widths(nd, pads, axes)
    # negative pads crop
    crop = tuple(slice(-b if b < 0 else 0, x.shape[a] + e if e < 0 else None)
                 for a, (b, e) in enumerate(zip(begin, end)))
    x = x[crop]
    width = [(max(b, 0), max(e, 0)) for b, e in zip(begin, end)]
    if mode == "constant":
        return np.pad(x, width, mode="constant", constant_values=value)
    np_mode = {"reflect": "reflect", "edge": "edge", "wrap": "wrap"}.get(mode)
    if np_mode is None:
        raise ValueError(f"Pad mode {mode!r} is not supported")
    return np.pad(x, width, mode=np_mode)


@op("TopK")
def topk(ctx):
    axis = int(ctx.attr("axis", -1))
    largest = int(ctx.attr("largest", 1))
    k_attr = ctx.attr("k") if ctx.opset < 10 else None

    def f(x, k=None):
        kk = int(k_attr) if k_attr is not None else int(k.reshape(-1)[0])
        key = x
        if largest:
            key = -(x.astype(np.float64) if x.dtype.kind in "ub" else x)
        idx = np.argsort(key, axis=axis, kind="stable")
        idx = np.take(idx, np.arange(kk), axis=axis)
        return np.take_along_axis(x, idx, axis=axis), idx.astype(np.int64)
    return f


# ----------------------------------------------------------------------------- reductions
def _fill(dtype, kind):
    if dtype.kind == "b":
        return kind != "max"
    if dtype.kind == "f":
        return -np.inf if kind == "max" else np.inf
    info = np.iinfo(dtype)
    return info.min if kind == "max" else info.max


_REDUCE = {
    "ReduceMax": lambda x, ax, kd: np.max(x, axis=ax, keepdims=kd,
                                          initial=_fill(x.dtype, "max")),
    "ReduceMin": lambda x, ax, kd: np.min(x, axis=ax, keepdims=kd,
                                          initial=_fill(x.dtype, "min")),
    "ReduceSum": lambda x, ax, kd: np.sum(x, axis=ax, keepdims=kd, dtype=x.dtype),
    "ReduceMean": lambda x, ax, kd: np.mean(x, axis=ax, keepdims=kd, dtype=x.dtype),
    "ReduceProd": lambda x, ax, kd: np.prod(x, axis=ax, keepdims=kd, dtype=x.dtype),
    "ReduceSumSquare": lambda x, ax, kd: np.sum(x * x, axis=ax, keepdims=kd, dtype=x.dtype),
    "ReduceL1": lambda x, ax, kd: np.sum(np.abs(x), axis=ax, keepdims=kd, dtype=x.dtype),
    "ReduceL2": lambda x, ax, kd: np.sqrt(np.sum(np.square(x.astype(np.float64)), axis=ax,
                                                 keepdims=kd)).astype(x.dtype),
    "ReduceLogSum": lambda x, ax, kd: np.log(np.sum(x, axis=ax, keepdims=kd, dtype=x.dtype)),
    "ReduceLogSumExp": lambda x, ax, kd: _logsumexp(x, ax, kd),
}


def _logsumexp(x, ax, kd):
    x64 = x.astype(np.float64)
    if x.size == 0:
        return np.log(np.sum(np.exp(x64), axis=ax, keepdims=kd)).astype(x.dtype)
    m = np.max(x64, axis=ax, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    r = np.log(np.sum(np.exp(x64 - m), axis=ax, keepdims=True)) + m
    if not kd:
        r = np.squeeze(r, axis=ax)
    return r.astype(x.dtype)


@op(*_REDUCE)
def reduce(ctx):
    t = ctx.node.op_type
    fn = _REDUCE[t]
    keepdims = bool(int(ctx.attr("keepdims", 1)))
    noop = int(ctx.attr("noop_with_empty_axes", 0))
    axes, dynamic = _axes_input_or_attr(ctx, 1, 13 if t == "ReduceSum" else 18)

    def f(x, ax=None):
        a = (ints(ax) if ax is not None else None) if dynamic else axes
        if not a:
            if noop:
                return x
            a = None
        else:
            a = tuple(_norm(a, x.ndim))
        return np.asarray(fn(x, a, keepdims))
    return f


@op("ArgMax", "ArgMin")
def argmax(ctx):
    axis = int(ctx.attr("axis", 0))
    keepdims = bool(int(ctx.attr("keepdims", 1)))
    last = int(ctx.attr("select_last_index", 0))
    fn = np.argmax if ctx.node.op_type == "ArgMax" else np.argmin

    def f(x):
        if last:
            r = x.shape[axis] - 1 - fn(np.flip(x, axis=axis), axis=axis, keepdims=keepdims)
        else:
            r = fn(x, axis=axis, keepdims=keepdims)
        return np.asarray(r, dtype=np.int64)
    return f


@op("NonZero")
def nonzero(ctx):
    return lambda x: np.array(np.nonzero(x), dtype=np.int64).reshape(x.ndim, -1)


@op("Constant")
def constant(ctx):   # only reached for Constant nodes the loader could not pre-evaluate
    raise ctx.fail("Constant node was not folded at load")
