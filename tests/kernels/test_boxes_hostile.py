"""Box kernels against hostile input (issue #15): NMS on thousands to 10^5 boxes (the grid
path of the compiled backends, from 2048 candidates per class) against the NumPy reference,
the reference's size limits, zero-area / degenerate / huge / tiny boxes, inverted and
non-finite boxes refused by every kernel. Bounded property tests are in test_boxes_props.py."""
import numpy as np
import pytest

from edgedl.errors import ValidationError
from edgedl.kernels import boxes as B

from conftest import require_backend
from ort_util import run_ort_node

COMPILED = ["cython", "numba"]
KINDS = ["iou", "giou", "diou", "ciou"]
FRAME = np.array([3840.0, 2160.0])


def _boxes(kind, n, rng, dtype):
    """n boxes of one hostile flavour, with huge, zero-area, duplicate and tiny rows mixed in."""
    if kind == "spread":               # centres over a 4K frame, sizes 10-200 px
        c, wh = rng.random((n, 2)) * FRAME, rng.uniform(10, 200, (n, 2))
    elif kind == "dense":              # one object, thousands of near-identical detections
        c, wh = 500 + rng.normal(0, 5, (n, 2)), rng.uniform(40, 60, (n, 2))
    elif kind == "mixed":              # sizes over 4 decades
        c, wh = rng.random((n, 2)) * 1000, np.exp(rng.uniform(-3, 7, (n, 2)))
    else:                              # small integer grid: exact IoU ties and duplicates
        c, wh = rng.integers(0, 40, (n, 2)) + 4.0, rng.integers(0, 8, (n, 2)).astype(float)
    b = np.concatenate([c - wh / 2, c + wh / 2], 1)
    b[:5] = [-1e4, -1e4, 1e4, 1e4]     # huge boxes covering everything
    b[5:25, 2] = b[5:25, 0]            # zero width
    b[25:30] = b[30:35]                # duplicates
    b[40:60] = b[60:80] * 1e-3         # tiny boxes
    s = rng.random(n)
    s[100:200] = np.round(s[100:200] * 4) / 4    # score ties
    return b.astype(dtype), s.astype(dtype)


# ----------------------------------------------------------------------------- grid NMS
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["spread", "dense", "mixed", "grid"])
def test_nms_grid_path_matches_reference(kind, dtype, rng):
    bes = [require_backend(be) for be in COMPILED]
    b, s = _boxes(kind, 2600, rng, dtype)
    for thr in (0.0, 1e-6, 0.3, 0.5, 0.7, 0.95, 1.0):
        want = B.nms(b, s, thr, backend="numpy")
        for be in bes:
            np.testing.assert_array_equal(B.nms(b, s, thr, backend=be), want,
                                          err_msg=f"{be} thr={thr}")
    want = B.nms(b, s, 0.5, 0.3, 100, backend="numpy")
    for be in bes:
        np.testing.assert_array_equal(B.nms(b, s, 0.5, 0.3, 100, backend=be), want)


@pytest.mark.parametrize("kind", ["spread", "dense", "mixed", "grid"])
def test_soft_nms_grid_path_matches_reference(kind, rng):
    # from 2048 boxes the compiled soft_nms finds the overlapped boxes on a grid
    bes = [require_backend(be) for be in COMPILED]
    b, s = _boxes(kind, 2300, rng, np.float32 if kind in ("spread", "grid") else np.float64)
    for method, thr, sigma, st in (("gaussian", 0.3, 0.5, 0.001), ("linear", 0.3, 0.5, 0.001),
                                   ("gaussian", 0.0, 0.05, -1.0), ("linear", 0.0, 0.5, 0.5)):
        wi, ws = B.soft_nms(b, s, thr, sigma, st, method, backend="numpy")
        for be in bes:
            gi, gs = B.soft_nms(b, s, thr, sigma, st, method, backend=be)
            np.testing.assert_array_equal(gi, wi, err_msg=f"{be} {method}")
            np.testing.assert_allclose(gs, ws, rtol=1e-5, err_msg=f"{be} {method}")


def test_batched_nms_grid_path(rng):
    bes = [require_backend(be) for be in COMPILED]
    b, s = _boxes("spread", 5000, rng, np.float32)
    c = rng.integers(0, 2, 5000)                  # two classes of ~2500: both on the grid
    want = B.batched_nms(b, s, c, 0.5, backend="numpy")
    for be in bes:
        np.testing.assert_array_equal(B.batched_nms(b, s, c, 0.5, backend=be), want)


def test_non_max_suppression_grid_path_vs_onnxruntime(rng):
    pytest.importorskip("onnxruntime")
    b, s = _boxes("spread", 2500, rng, np.float32)
    bx = (b / 4000).reshape(1, -1, 4)
    flip = rng.random(bx.shape[1]) < 0.5          # the op allows either corner order
    bx[0, flip] = bx[0, flip][:, [2, 3, 0, 1]]
    sc = np.stack([s, s[::-1]])[None]             # 2 classes
    ins = [("b", bx), ("s", sc), ("m", np.array([3000], np.int64)),
           ("i", np.array([0.5], np.float32)), ("t", np.array([0.05], np.float32))]
    want = run_ort_node("NonMaxSuppression", ins, {"center_point_box": 0}, opset=11)[0]
    for be in ["numpy"] + COMPILED:
        require_backend(be)
        got = B.non_max_suppression(bx, sc, 3000, 0.5, 0.05, backend=be)
        np.testing.assert_array_equal(got, want, err_msg=be)


def _check_greedy_sample(b, s, keep, thr, rng, k=150):
    """Greedy NMS invariants on a sample (an exact check of 10^5 boxes is O(N^2)): sampled
    kept boxes overlap no other kept box by IoU > thr; every sampled dropped box has an
    earlier-visited kept box with IoU > thr."""
    kept = np.zeros(len(s), bool)
    kept[keep] = True
    order = np.lexsort((np.arange(len(s)), -s.astype(np.float64)))
    rank = np.empty(len(s), np.int64)
    rank[order] = np.arange(len(s))
    ki = rng.choice(keep, min(k, len(keep)), replace=False)
    iou = B.box_iou(b[ki], b[keep], backend="numpy").astype(np.float64)
    iou[ki[:, None] == keep[None, :]] = 0
    assert (iou <= thr).all()
    dropped = np.flatnonzero(~kept)
    di = rng.choice(dropped, min(k, len(dropped)), replace=False)
    iou = B.box_iou(b[di], b[keep], backend="numpy").astype(np.float64)
    earlier = rank[keep][None, :] < rank[di][:, None]
    assert ((iou > thr) & earlier).any(1).all()


@pytest.mark.parametrize("be", COMPILED)
def test_nms_1e5_spread_boxes(be, rng):
    require_backend(be)
    n = 100_000
    b = np.concatenate([rng.random((n, 2)) * FRAME, rng.uniform(10, 200, (n, 2))], 1)
    b[:, 2:] += b[:, :2]
    b[:10, 2:] = b[:10, :2] + 3000                 # a few huge boxes
    b = b.astype(np.float32)
    s = rng.random(n).astype(np.float32)
    keep = B.nms(b, s, 0.5, backend=be)
    assert 1000 < len(keep) < n
    _check_greedy_sample(b, s, keep, 0.5, rng)
    other = [o for o in COMPILED if o != be][0]
    require_backend(other)
    np.testing.assert_array_equal(keep, B.nms(b, s, 0.5, backend=other))


def test_nms_many_duplicates(rng):
    # copies of a few boxes: suppressed at once below t = 1; at t = 1 (IoU never exceeds 1,
    # in floating point too) every copy is kept, without N^2 tests
    base = np.concatenate([rng.random((50, 2)) * 100, rng.random((50, 2)) * 100 + 100], 1)
    b = base[rng.integers(0, 50, 3000)].astype(np.float32)
    s = rng.random(3000).astype(np.float32)
    for thr in (0.0, 0.5, 0.999, 1.0):
        want = B.nms(b, s, thr, backend="numpy")
        for be in COMPILED:
            require_backend(be)
            np.testing.assert_array_equal(B.nms(b, s, thr, backend=be), want)
            np.testing.assert_array_equal(B.nms(b, s, thr, max_output=7, backend=be), want[:7])
    big = np.repeat(b[:1], 200_000, 0)
    sb = rng.random(200_000).astype(np.float32)
    for be in COMPILED:
        assert len(B.nms(big, sb, 1.0, backend=be)) == 200_000
        assert len(B.nms(big, sb, 0.99, backend=be)) == 1


def test_zero_area_boxes_kept_on_grid_path(rng):
    # thousands of boxes, half of them zero-area (points and segments) on top of the others:
    # a zero-area box has IoU 0 with everything: never suppressed, never suppresses
    bes = ["numpy"] + [require_backend(be) for be in COMPILED]
    c = 500 + np.clip(rng.normal(0, 4, (3000, 2)), -15, 15)     # every pair overlaps
    b = np.concatenate([c - 25, c + 25], 1).astype(np.float32)
    s = rng.random(3000).astype(np.float32)
    z = np.arange(0, 3000, 2)
    b[z, 2] = b[z, 0]
    b[z[::2], 3] = b[z[::2], 1]
    s[z] += 1                                      # the zero-area boxes score highest
    for be in bes:
        keep = B.nms(b, s, 0.0, backend=be)
        assert set(z) <= set(keep.tolist()), be
        assert len(keep) == len(z) + 1, be          # plus the best real box


# ----------------------------------------------------------------------------- limits
def test_reference_size_limits(rng):
    b = np.concatenate([rng.random((20001, 2)) * 100, rng.random((20001, 2)) * 100 + 100], 1)
    s = rng.random(20001)
    with pytest.raises(ValidationError, match=r"numpy reference.*O\(N\^2\).*cython"):
        B.nms(b, s, 0.5, backend="numpy")
    with pytest.raises(ValidationError, match="numpy reference"):
        B.batched_nms(b, s, np.zeros(20001, int), 0.5, backend="numpy")
    # 80 classes x 3000: 7.2e8 pairs (each box a candidate in every class, no threshold)
    sc = rng.random((1, 80, 3000))
    with pytest.raises(ValidationError, match="numpy reference"):
        B.non_max_suppression(b[None, :3000], sc, 10, 0.5, backend="numpy")
    # many small classes stay allowed
    assert len(B.batched_nms(b, s, np.arange(20001) % 100, 0.5, backend="numpy")) > 0
    with pytest.raises(ValidationError, match="soft_nms is up to O\\(N\\^2\\).*10000"):
        B.soft_nms(b[:10001], s[:10001], backend="numpy")
    for be in COMPILED:
        require_backend(be)
        with pytest.raises(ValidationError, match="20000"):
            B.soft_nms(b, s, backend=be)


# ----------------------------------------------------------------------------- degenerate IoU
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_iou_family_degenerate_boxes(backend, dtype):
    big = float(np.finfo(dtype).max) / 2
    a = np.array([[0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 5, 0], [3, 0, 3, 7],
                  [2, 2, 4, 4], [0, 0, 1e-30, 1e-30], [1e30, 1e30, big, big],
                  [-big, -big, big, big], [-big, 0, big, 0], [0, 0, 1e6, 1e-6]], dtype)
    zero_area = [0, 1, 2, 3, 4, 9]
    for kind in KINDS:
        got = B.box_iou(a, a, kind, backend=backend)
        al = B.box_iou_aligned(a, a[::-1].copy(), kind, backend=backend)
        assert np.isfinite(got).all() and np.isfinite(al).all(), kind
        # GIoU, DIoU in [-1, 1]; CIoU's aspect term reaches 1/2 when DIoU is near -1, but a
        # zero-area box has no aspect term: any pair with one is in [-1, 1]
        lo = -1.5 if kind == "ciou" else -1.0
        assert (got >= lo - 1e-6).all() and (got <= 1 + 1e-6).all(), kind
        for g in (got[zero_area], got[:, zero_area]):
            assert (g >= -1 - 1e-6).all() and (g <= 1 + 1e-6).all(), kind
        if kind == "iou":
            assert (got[zero_area] == 0).all() and (got[:, zero_area] == 0).all()
        np.testing.assert_allclose(got, B.box_iou(a, a, kind, backend="numpy"),
                                   rtol=1e-5, atol=1e-6, err_msg=kind)
        # identical points: IoU 0 and every extra term 0 (enclosing area, diagonal, aspect)
        assert got[1, 2] == 0 and got[0, 0] == 0, kind
        # a huge box with itself: 1 for the scale-invariant kinds
        if kind != "iou":
            assert got[8, 8] == pytest.approx(1, abs=1e-6), kind


# ----------------------------------------------------------------------------- bad boxes
def _calls(good, bad):
    """Every kernel taking xyxy boxes, with ``bad`` in each xyxy argument in turn:
    (argument name, zero-argument call)."""
    s = np.linspace(0.9, 0.1, len(good)).astype(good.dtype)
    c = np.zeros(len(good), int)
    return [
        ("a", lambda be: B.box_iou(bad, good, backend=be)),
        ("b", lambda be: B.box_iou(good, bad, "giou", backend=be)),
        ("a", lambda be: B.box_iou_aligned(bad, good, backend=be)),
        ("boxes", lambda be: B.nms(bad, s, 0.5, backend=be)),
        ("boxes", lambda be: B.batched_nms(bad, s, c, 0.5, backend=be)),
        ("boxes", lambda be: B.soft_nms(bad, s, backend=be)),
        ("anchors", lambda be: B.assign_anchors(bad, good, backend=be)),
        ("gt_boxes", lambda be: B.assign_anchors(good, bad, backend=be)),
        ("gt", lambda be: B.encode_boxes(bad, good, backend=be)),
        ("priors", lambda be: B.encode_boxes(good, bad, backend=be)),
        ("priors", lambda be: B.decode_boxes(good, bad, backend=be)),
    ]


def test_inverted_boxes_refused_by_every_kernel(backend):
    good = np.array([[0, 0, 2, 2], [1, 1, 3, 4], [2, 0, 5, 1]], np.float32)
    for col in (0, 1):                              # x2 < x1, then y2 < y1
        bad = good.copy()
        bad[2, [col, col + 2]] = bad[2, [col + 2, col]]
        for name, call in _calls(good, bad):
            with pytest.raises(ValidationError, match=rf"^{name}\[2\] = .*xyxy"):
                call(backend)


def test_non_finite_boxes_refused_by_every_kernel(backend):
    good = np.array([[0, 0, 2, 2], [1, 1, 3, 4], [2, 0, 5, 1]], np.float64)
    for v in (np.nan, np.inf, -np.inf):
        bad = good.copy()
        bad[1, 3] = v
        for name, call in _calls(good, bad):
            with pytest.raises(ValidationError, match=rf"^{name} contains NaN or inf"):
                call(backend)
        with pytest.raises(ValidationError, match="boxes contains NaN or inf"):
            B.non_max_suppression(bad[None], np.ones((1, 1, 3)), 3, 0.5, backend=backend)


def test_non_max_suppression_accepts_any_corner_order(backend):
    # the ONNX op (and onnxruntime) take [y1, x1, y2, x2] of any diagonal corner pair
    b = np.array([[[0, 0, 2, 2], [2.2, 2.2, 0.2, 0.2], [5, 5, 4, 6]]], np.float32)
    s = np.array([[[0.9, 0.8, 0.7]]], np.float32)
    np.testing.assert_array_equal(B.non_max_suppression(b, s, 5, 0.5, backend=backend),
                                  [[0, 0, 0], [0, 0, 2]])


def test_iou_an_ulp_above_threshold(backend):
    # float32 IoU fl(...) = 0.50000006 > 0.5: suppressed / decayed on every backend (numba's
    # fastmath once contracted it to 0.5; found by the long hypothesis run)
    rows = [["0x1.adea8ap-10", "-0x1.8777e2p-13", "0x1.fc8f32p-10", "0x1.db5ac4p-14"],
            ["0x1.93b3a6p-10", "-0x1.f751p-14", "0x1.fc8f32p-10", "0x1.797cc4p-13"]]
    b = np.array([[float.fromhex(v) for v in r] for r in rows], np.float32)
    s = np.array([0.9, 0.5], np.float32)
    assert B.box_iou(b[:1], b[1:], backend="numpy")[0, 0] == np.float32(0.50000006)
    np.testing.assert_array_equal(B.nms(b, s, 0.5, backend=backend), [0])
    idx, sc = B.soft_nms(b, s, 0.5, 0.5, 0.001, "linear", backend=backend)
    np.testing.assert_array_equal(idx, [0, 1])
    assert sc[1] == np.float32(0.5 * (1 - float(np.float32(0.50000006))))
