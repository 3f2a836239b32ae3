"""Region kernels (connected components, region sums, minimum-area rectangles), every backend
vs OpenCV in the same run, one thread.

Run: pytest benchmarks/bench_regions.py --benchmark-only

Maps: a DB text-detector-like 736x736 probability map (60 slanted text lines) and a noisy
640x640 binary map (~30 % on: thousands of small regions, the worst case of the rectangles).
Peers: ``cv2.connectedComponents`` for labelling, and ``cv2.connectedComponents`` +
``cv2.minAreaRect`` per region for the whole DB step (what PaddleOCR does with contours).
The closing table gives medians and each backend's time relative to OpenCV.
"""
import numpy as np
import pytest

from edgedl._config import BACKEND_ORDER, why_unavailable
from edgedl.kernels import regions as R
from _common import Table, show_now, single_thread, timed

T = Table("regions, 1 thread", cols=list(BACKEND_ORDER) + ["opencv"],
          ratios={"cy/cv": lambda row, t: t.ratio(row, "cython", "opencv")})


@pytest.fixture(scope="module", autouse=True)
def one_thread(request):
    try:
        import cv2
        cv2.setNumThreads(1)
    except ImportError:
        pass
    with single_thread():
        yield
    show_now(request.config, lambda w: [w(line) for line in [""] + T.lines()])


def text_map(size=736, lines=60, seed=0):
    """A probability map with slanted bars of text-line size."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    p = (rng.random((size, size)) * 0.1).astype(np.float32)
    for _ in range(lines):
        cx, cy = rng.uniform(40, size - 40, 2)
        t = rng.uniform(-0.3, 0.3)
        u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
        v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
        p[(np.abs(u) < rng.uniform(20, 120)) & (np.abs(v) < rng.uniform(4, 12))] = 0.9
    return p


MAPS = {"text736": lambda: text_map() > 0.3,
        "noise640": lambda: np.random.default_rng(1).random((640, 640)) < 0.3}


def _run(backend, mask):
    lab, n = R.label_regions(mask, 8, backend=backend)
    R.min_area_rects(lab, n, backend=backend)


def _opencv(mask):
    import cv2
    m = mask.astype(np.uint8)

    def run():
        n, lab = cv2.connectedComponents(m, connectivity=8)
        ys, xs = np.nonzero(lab)
        order = np.argsort(lab[ys, xs], kind="stable")
        pts = np.stack([xs, ys], 1)[order].astype(np.float32)
        starts = np.searchsorted(lab[ys, xs][order], np.arange(1, n + 1))
        for a, b in zip(starts[:-1], starts[1:]):
            cv2.minAreaRect(pts[a:b])
    return run


@pytest.mark.parametrize("runtime", list(BACKEND_ORDER) + ["opencv"])
@pytest.mark.parametrize("name", list(MAPS))
@pytest.mark.parametrize("step", ["label", "label+rects"])
def test_regions(benchmark, step, name, runtime):
    mask = MAPS[name]()
    if runtime == "opencv":
        cv2 = pytest.importorskip("cv2")
        m = mask.astype(np.uint8)
        fn = (lambda: cv2.connectedComponents(m, connectivity=8)) if step == "label" \
            else _opencv(mask)
    else:
        if why_unavailable(runtime):
            pytest.skip(why_unavailable(runtime))
        if runtime == "numpy" and name == "noise640" and step == "label+rects":
            pytest.skip("the NumPy reference loops in Python per region: seconds here")
        fn = (lambda: R.label_regions(mask, 8, backend=runtime)) if step == "label" \
            else (lambda: _run(runtime, mask))
    fn()
    benchmark.group = f"regions {step} {name}"
    T.record((step, name), runtime, timed(benchmark, fn, rounds=10 if runtime != "numpy"
                                          else 3, warmup=1))
