"""Detection over many inputs: sources, a pipelined runner, result writers, Dask scale-out.

Sources (:func:`expand_sources`): image files, folders (``recursive=True`` for sub-folders),
glob patterns (expanded here, so quoted ones work), ``.txt`` files listing one source a line
(relative to the list's folder; ``#`` starts a comment), ``-`` for one image on stdin, video
files (every ``stride``-th frame) and cameras (``0`` or ``/dev/video0``) through PyAV
(``edgedl[video]``). A source that cannot be used becomes an error record, never an exception.

The runner (:func:`run`) decodes images on a small thread pool and writes results on a writer
thread while the detector runs on the caller's thread; records come out in input order.
Each record is the JSON line of ``edgedl detect --json``: ``{"source", "frame" (videos),
"width", "height", "detections", "time_ms"}`` or ``{"source", ["frame",] "error"}``.

:func:`detect_many` runs the same over a Dask cluster (``edgedl[dask]``): one detector per
worker process, cached by model and configuration (never pickled into tasks).
"""
import glob
import io
import json
import os
import queue
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff",
                              ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".jp2", ".ico"})


# ----------------------------------------------------------------------------- sources
@dataclass
class Source:
    """One input: ``kind`` is image, stdin, video, camera, or error (``error`` says why)."""
    name: str                  # as reported (the path as given or found, "-", the camera)
    kind: str
    path: str = None           # the file, or the camera device
    error: str = None


def _media_kind(path):
    from .detect.video import is_video
    ext = os.path.splitext(path)[1].lower()
    return "video" if is_video(path) else "image" if ext in IMAGE_EXTENSIONS else None


def _folder(path, recursive):
    """Images and videos in a folder (sorted; sub-folders too when ``recursive``)."""
    found = []
    for top, dirs, files in os.walk(path):
        dirs.sort()
        found += [os.path.join(top, f) for f in sorted(files) if _media_kind(f)]
        if not recursive:
            break
    return found


def expand_sources(specs, recursive=False, _lists=()):
    """Command-line source arguments -> a list of :class:`Source`, in the order given."""
    from .detect.video import camera_device
    out = []
    for spec in specs:
        spec = os.fspath(spec)
        if spec == "-":
            out.append(Source("-", "stdin"))
        elif os.path.isdir(spec):
            files = _folder(spec, recursive)
            out += [Source(f, _media_kind(f), f) for f in files] or [Source(
                spec, "error", error=f"folder {spec} has no images or videos"
                + ("" if recursive else " (sub-folders are read with --recursive)"))]
        elif os.path.isfile(spec) and spec.lower().endswith(".txt"):
            out += _list_file(spec, recursive, _lists)
        elif os.path.isfile(spec):
            out.append(Source(spec, "video" if _media_kind(spec) == "video" else "image", spec))
        elif camera_device(spec):
            out.append(Source(spec, "camera", camera_device(spec)))
        elif glob.has_magic(spec):
            files = [f for f in sorted(glob.glob(spec, recursive=True))
                     if os.path.isfile(f) and _media_kind(f)]
            out += [Source(f, _media_kind(f), f) for f in files] or [Source(
                spec, "error", error=f"no image or video matches {spec}")]
        else:
            out.append(Source(spec, "error", error=f"no such file or folder: {spec}"))
    return out


def _list_file(path, recursive, seen):
    key = os.path.realpath(path)
    if key in seen:
        return [Source(path, "error", error=f"list {path} includes itself")]
    try:
        with open(path, encoding="utf-8") as f:
            lines = [ln.split("#", 1)[0].strip() for ln in f]
    except (OSError, UnicodeDecodeError) as e:
        return [Source(path, "error", error=f"cannot read the list {path} ({e})")]
    base = os.path.dirname(path)
    specs = [ln if os.path.isabs(ln) or ln == "-" else os.path.join(base, ln)
             for ln in lines if ln]
    if not specs:
        return [Source(path, "error", error=f"list {path} names no source")]
    return expand_sources(specs, recursive, tuple(seen) + (key,))


def _message(e, name):
    """An exception as one sentence naming the source."""
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return text if name in text else f"{name}: {text}"


# ----------------------------------------------------------------------------- units
@dataclass
class _Job:
    """One image or video frame on its way through the pipeline."""
    index: int                 # the source's position
    source: Source
    frame: int = None          # video frame index
    fps: float = None
    future: Future = None      # -> (image, error message)

    def result(self):
        return self.future.result()


def _done(value):
    f = Future()
    f.set_result(value)
    return f


def _decode(source, data=None):
    """(H×W×3 uint8 image, None) or (None, one-sentence error)."""
    from .detect.preprocess import load_image
    try:
        if data is not None:
            from PIL import Image
            if not data:
                return None, "stdin: no data (pipe one image file to `-`)"
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                return load_image(im, "stdin"), None
        return load_image(source.path), None
    except Exception as e:               # unreadable, not an image, truncated, too big
        if data is not None:             # Pillow's message names a BytesIO object
            return None, (f"stdin: cannot read its {len(data):,} bytes as an image "
                          f"({type(e).__name__})")
        return None, _message(e, source.name)


def _jobs(sources, stride, pool, stop):
    """The jobs of every source in order: images decoded on ``pool``, video frames here."""
    from .detect.video import read_frames
    for i, src in enumerate(sources):
        if stop.is_set():
            return
        if src.kind == "error":
            yield _Job(i, src, future=_done((None, src.error)))
        elif src.kind == "stdin":
            data = sys.stdin.buffer.read()
            yield _Job(i, src, future=pool.submit(_decode, src, data))
        elif src.kind == "image":
            yield _Job(i, src, future=pool.submit(_decode, src))
        else:
            frames = read_frames(src.path, stride, camera=src.kind == "camera")
            try:
                for k, image, fps in frames:
                    if stop.is_set():
                        frames.close()
                        return
                    yield _Job(i, src, k, fps, _done((image, None)))
            except Exception as e:       # not a video, damaged mid-file, no PyAV
                yield _Job(i, src, future=_done((None, _message(e, src.name))))


def _produce(jobs, q, stop):
    """Feed ``q`` from the ``jobs`` generator (a thread), then None; stop early when asked."""
    def put(item):
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False
    try:
        for job in jobs:
            if not put(job):
                return
    except BaseException as e:           # reached the consumer, which re-raises it
        put(e)
    put(None)


# ----------------------------------------------------------------------------- records
def resolve_classes(specs, labels):
    """``--classes`` values (names or ids, comma-separated) -> a set of class ids; an unknown
    name or an id out of range is a ValidationError naming it and the known classes."""
    from .errors import ValidationError
    ids = set()
    names = list(labels or [])
    for spec in specs:
        for part in str(spec).split(","):
            part = part.strip()
            if not part:
                continue
            if part.lstrip("-").isdigit():
                k = int(part)
                if k < 0 or (names and k >= len(names)):
                    raise ValidationError(f"--classes: class id {k} is out of range (the model "
                                          f"has {len(names)} classes: 0 to {len(names) - 1})")
                ids.add(k)
            elif part in names:
                ids.add(names.index(part))
            else:
                shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
                raise ValidationError(f"--classes: {part!r} is not a class of this model "
                                      f"(classes: {shown or 'numbered only; give ids'})")
    return ids


def _keep_classes(d, class_ids):
    if not class_ids or not len(d):
        return d
    from .detect import Detections
    m = np.isin(d.class_ids, sorted(class_ids))
    return Detections(d.boxes[m], d.scores[m], d.class_ids[m],
                      [lb for lb, k in zip(d.labels, m) if k] if d.labels else [],
                      None if d.keypoints is None else d.keypoints[m])


def _detect(det, image, class_ids):
    """(Detections, record fields) of one image: what every runner, local or remote, does."""
    d = _keep_classes(det(image), class_ids)
    t = det.timings
    return d, {"width": int(image.shape[1]), "height": int(image.shape[0]),
               "detections": d.to_list(),
               "time_ms": {k: round(t.get(k, 0.0) * 1e3, 3)
                           for k in ("preprocess", "inference", "postprocess")}}


def _head(job):
    rec = {"source": job.source.name}
    if job.frame is not None:
        rec["frame"] = job.frame
    return rec


def warm_up(det):
    """Run ``det`` once on a black image (builds the model's plan); returns the seconds."""
    t = time.perf_counter()
    w, h = getattr(det, "width", None) or 64, getattr(det, "height", None) or 64
    det(np.zeros((h, w, 3), np.uint8))
    return time.perf_counter() - t


# ----------------------------------------------------------------------------- summary
@dataclass
class Summary:
    """What a run did: counts, summed stage times, and where the results went."""
    images: int = 0            # images and video frames detected
    detections: int = 0
    failures: int = 0
    ms: dict = field(default_factory=lambda: {"preprocess": 0.0, "inference": 0.0,
                                              "postprocess": 0.0})
    detect_s: float = 0.0      # summed detect() wall time
    wall_s: float = 0.0        # first read -> last result written
    startup_s: float = None    # model load + first (planning) run, when measured
    out_dir: str = None
    records: list = None       # every record, when collected

    def add(self, rec, detect_s=0.0):
        if "error" in rec:
            self.failures += 1
            return
        self.images += 1
        self.detections += len(rec["detections"])
        self.detect_s += detect_s
        for k in self.ms:
            self.ms[k] += rec["time_ms"][k]

    def line(self):
        n = max(self.images, 1)
        parts = [f"{self.images} image{'s' * (self.images != 1)}",
                 f"{self.detections} detection{'s' * (self.detections != 1)}",
                 f"{self.failures} failed"]
        text = ", ".join(parts)
        if self.images:
            text += ("; mean " + ", ".join(f"{k} {v / n:.1f}" for k, v in self.ms.items())
                     + " ms")
        if self.wall_s > 0:
            text += f"; {self.images / self.wall_s:.1f} images/s"
        if self.startup_s is not None:
            text += f" (start-up {self.startup_s * 1e3:.0f} ms not counted)"
        if self.out_dir and os.path.isdir(self.out_dir):
            text += f"; results in {self.out_dir}"
        return text


# ----------------------------------------------------------------------------- progress
class Progress:
    """A progress bar on stderr (tqdm when installed, else a plain one); silent when stderr is
    not a terminal, when ``quiet``, or for ``total`` below ``least``."""

    def __init__(self, total, quiet=False, least=4, file=None):
        self.file = file or sys.stderr
        self.on = not quiet and (total is None or total >= least) and self.file.isatty()
        self.total, self.n, self.bar = total, 0, None
        self.t0 = time.perf_counter()
        if self.on:
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, file=self.file, unit="img", leave=False)
            except ImportError:
                pass

    def update(self):
        self.n += 1
        if self.bar is not None:
            self.bar.update()
        elif self.on:
            rate = self.n / max(time.perf_counter() - self.t0, 1e-9)
            if self.total:
                done = round(30 * min(self.n / self.total, 1))
                text = f"[{'#' * done:30s}] {self.n}/{self.total}"
            else:
                text = f"{self.n}"
            print(f"\r{text} {rate:.1f} img/s", end="", file=self.file, flush=True)

    def write(self, text):
        """A line (an error) above the bar."""
        if self.bar is not None:
            self.bar.write(text, file=self.file)
        else:
            if self.on and self.n:
                print("\r\033[K", end="", file=self.file)
            print(text, file=self.file, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
        elif self.on and self.n:
            print("\r\033[K", end="", file=self.file, flush=True)


def count_units(sources, stride=1):
    """Images + video frames expected (None when a camera or an unknown length is in)."""
    from .detect.video import frame_count
    n = 0
    for s in sources:
        if s.kind == "camera":
            return None
        if s.kind == "video":
            k = frame_count(s.path)
            if not k:
                return None
            n += -(-k // stride)
        else:
            n += 1
    return n


# ----------------------------------------------------------------------------- writers
def _write_atomic(path, data):
    """``data`` (str or bytes) written atomically (see _files.write_atomic)."""
    from ._files import write_atomic
    write_atomic(path, lambda f: f.write(data.encode() if isinstance(data, str) else data))


def yolo_lines(d, width, height):
    """YOLO-format text of one image: ``class cx cy w h score`` per detection, normalised."""
    rows = []
    for (x1, y1, x2, y2), s, k in zip(d.boxes.tolist(), d.scores.tolist(), d.class_ids.tolist()):
        rows.append(f"{k} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} "
                    f"{(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f} {s:.4f}")
    return "".join(r + "\n" for r in rows)


def next_run_dir(base="edgedl-out", exist_ok=False):
    """``base/run1``, ``run2``, ...: the next free one, or with ``exist_ok`` the latest one
    (run1 when there is none)."""
    nums = []
    if os.path.isdir(base):
        nums = [int(n[3:]) for n in os.listdir(base) if n.startswith("run") and n[3:].isdigit()]
    k = (max(nums) if exist_ok else max(nums) + 1) if nums else 1
    return os.path.join(base, f"run{k}")


class Outputs:
    """The files of a run under ``out_dir``: annotated images (``images``; an annotated video
    per video source), YOLO text files under ``labels/`` (``txt``), crops under
    ``crops/<label>/`` (``crops``), one COCO-style ``predictions.json`` (``coco``).

    File names mirror the inputs' relative paths (``edgedl._files.output_paths``): no input is
    ever overwritten, no two results share a name, every file is written under a temporary
    name and renamed. Still images are written on ``writers`` background threads (PNG and
    JPEG encoding release the GIL), video frames on one more, in order.
    """

    def __init__(self, out_dir, sources, *, images=True, txt=False, crops=False, coco=False,
                 labels=None, protect=(), backlog=16, writers=2):
        from ._files import file_key as _file_key, output_paths as _output_paths
        self.out_dir, self.labels = out_dir, labels
        self.images, self.txt, self.crops, self.coco = images, txt, crops, coco
        # a video's result is a video: named as if it were a .png, then given .mp4 (so an
        # image and a video of one stem still get distinct names)
        naming = {}                         # source index -> the name results derive from
        for i, s in enumerate(sources):
            if s.kind in ("image", "video"):
                naming[i] = s.path
            elif s.kind in ("stdin", "camera"):  # named in the current folder
                naming[i] = "stdin" if s.kind == "stdin" else os.path.basename(s.path)
            if s.kind in ("video", "camera"):
                naming[i] = os.path.splitext(naming[i])[0] + ".png"
        named = dict(zip(naming, _output_paths(list(naming.values()), out_dir,
                                               protect=list(protect)) if naming else []))
        self.annotated = [None if i not in named else
                          os.path.splitext(named[i])[0] + ".mp4" if s.kind in ("video", "camera")
                          else named[i] for i, s in enumerate(sources)]
        self._key = _file_key
        self._taken = {_file_key(p) for p in [a for a in self.annotated if a] + list(protect)}
        self._taken |= {_file_key(s.path) for s in sources if s.path}
        self._videos = {}                  # source index -> VideoWriter
        self._coco = {"images": [], "annotations": []}
        self._pool = ThreadPoolExecutor(writers, thread_name_prefix="edgedl-write")
        self._vpool = ThreadPoolExecutor(1, thread_name_prefix="edgedl-video")
        self._pending, self._backlog = [], backlog
        self.errors = []

    def claim(self, path):
        """``path``, or ``<stem>-2<ext>``, ... when taken: each result file its own name."""
        stem, ext = os.path.splitext(path)
        cand, k = path, 1
        while self._key(cand) in self._taken:
            k += 1
            cand = f"{stem}-{k}{ext}"
        self._taken.add(self._key(cand))
        return cand

    def _rel(self, job):
        """The mirrored folder and stem of a job's result files (``stem_<frame>`` for video)."""
        rel = os.path.relpath(os.path.dirname(self.annotated[job.index]), self.out_dir)
        stem = os.path.splitext(os.path.basename(job.source.path or job.source.kind))[0]
        return rel, stem if job.frame is None else f"{stem}_{job.frame}"

    def submit(self, job, image, d, rec):
        """Queue the files of one detected image (``image`` None: re-read from its path)."""
        # a distributed run's video frames come without pixels: their records and text only
        pixels = image is not None or job.frame is None
        if self.images and pixels:
            rec["annotated"] = self.annotated[job.index]
        if self.coco:
            self._add_coco(job, d, rec)
        if not ((self.images or self.crops) and pixels or self.txt):
            return
        rel, stem = self._rel(job)
        txt = self.claim(os.path.normpath(os.path.join(self.out_dir, "labels", rel,
                                                       stem + ".txt"))) if self.txt else None
        crops = [self.claim(os.path.normpath(os.path.join(
            self.out_dir, "crops", _safe(lb), rel, f"{stem}_{i}.jpg")))
            for i, lb in enumerate(d.labels)] if self.crops and pixels else []
        draw = self.images and pixels
        while len(self._pending) >= self._backlog:       # bounded memory
            self._pending.pop(0).result()
        pool = self._pool if job.frame is None else self._vpool
        self._pending.append(pool.submit(self._write, job, image, d, rec, draw, txt, crops))

    def _write(self, job, image, d, rec, draw, txt, crops):
        from ._files import save_atomic as _save_atomic
        from .detect import draw_detections, load_image
        if image is None and (draw or crops):
            image = load_image(job.source.path)
        if draw:
            drawn = draw_detections(image, d)
            if job.frame is None:
                _save_atomic(drawn, self.annotated[job.index])
            else:
                self._video(job).write(drawn)
        if txt:
            _write_atomic(txt, yolo_lines(d, rec["width"], rec["height"]))
        if crops:
            from PIL import Image
            for path, (x1, y1, x2, y2) in zip(crops, d.boxes.tolist()):
                x1, y1 = int(x1), int(y1)
                x2, y2 = max(int(np.ceil(x2)), x1 + 1), max(int(np.ceil(y2)), y1 + 1)
                _save_atomic(Image.fromarray(np.ascontiguousarray(image[y1:y2, x1:x2])), path)

    def _video(self, job):
        from .detect.video import VideoWriter
        w = self._videos.get(job.index)
        if w is None:
            for k in list(self._videos):   # one video at a time: the previous one is done
                self._videos.pop(k).close()
            w = self._videos[job.index] = VideoWriter(self.annotated[job.index], job.fps or 25)
        return w

    def _add_coco(self, job, d, rec):
        image_id = job.source.name + ("" if job.frame is None else f"#{job.frame}")
        self._coco["images"].append({"id": image_id, "file_name": job.source.name,
                                     "width": rec["width"], "height": rec["height"],
                                     **({} if job.frame is None else {"frame": job.frame})})
        for row in rec["detections"]:
            x1, y1, x2, y2 = row["box"]
            ann = {"id": len(self._coco["annotations"]) + 1, "image_id": image_id,
                   "category_id": row["class_id"],
                   "bbox": [x1, y1, round(x2 - x1, 1), round(y2 - y1, 1)],
                   "score": row["score"]}
            if "keypoints" in row:
                ann["keypoints"] = [v for x, y in row["keypoints"] for v in (x, y, 2)]
                ann["num_keypoints"] = len(row["keypoints"])
            self._coco["annotations"].append(ann)

    def close(self):
        """Wait for every file, finish the videos, write predictions.json."""
        try:
            for f in self._pending:
                f.result()
            self._vpool.submit(lambda: [w.close() for w in self._videos.values()]).result()
            self._videos.clear()
        finally:
            self._pool.shutdown(wait=True)
            self._vpool.shutdown(wait=True)
            for w in self._videos.values():      # a failed run: no half-written video
                w.abort()
        if self.coco:
            names = list(self.labels or [])
            seen = sorted({a["category_id"] for a in self._coco["annotations"]} |
                          set(range(len(names))))
            doc = {"categories": [{"id": k, "name": names[k] if k < len(names) else str(k)}
                                  for k in seen], **self._coco}
            self.coco_path = os.path.join(self.out_dir, "predictions.json")
            _write_atomic(self.coco_path, json.dumps(doc))


def _safe(label):
    """A class name as a folder name."""
    return "".join(c if c.isalnum() or c in "-_. " else "_" for c in str(label)).strip() or "_"


# ----------------------------------------------------------------------------- runner
def run(sources, det, outputs=None, *, stride=1, classes=None, fail_fast=False,
        on_record=None, progress=None, decode_threads=2, prefetch=8, summary=None):
    """Detect on every source with ``det``: decoding (``decode_threads``, ``prefetch``
    images ahead) and ``outputs`` writing overlap the detector; ``on_record(rec)`` is called
    in input order as each image is done. Returns a :class:`Summary`."""
    summary = summary or Summary()
    stop = threading.Event()
    q = queue.Queue(maxsize=prefetch)
    pool = ThreadPoolExecutor(decode_threads, thread_name_prefix="edgedl-read")
    t0 = time.perf_counter()
    producer = threading.Thread(target=_produce, args=(_jobs(sources, stride, pool, stop), q,
                                                       stop), daemon=True)
    producer.start()
    try:
        while True:
            job = q.get()
            if job is None:
                break
            if isinstance(job, BaseException):
                raise job
            image, err = job.result()
            rec = _head(job)
            took = 0.0
            if err is None:
                try:
                    t = time.perf_counter()
                    d, fields = _detect(det, image, classes)
                    took = time.perf_counter() - t
                    rec.update(fields)
                    if outputs is not None:
                        outputs.submit(job, image, d, rec)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as e:
                    err = _message(e, job.source.name)
            if err is not None:
                rec = {**_head(job), "error": err}
            summary.add(rec, took)
            if progress is not None:
                progress.update()
            if on_record is not None:
                on_record(rec)
            if err is not None and fail_fast:
                break
    finally:
        stop.set()
        while producer.is_alive():           # unblock it; it sees `stop` and ends
            try:
                q.get(timeout=0.05)
            except queue.Empty:
                pass
        pool.shutdown(wait=True, cancel_futures=True)
        if progress is not None:
            progress.close()
        if outputs is not None:
            outputs.close()
    summary.wall_s = time.perf_counter() - t0
    return summary


# ----------------------------------------------------------------------------- Dask
_DETECTORS = {}                       # per process: (model, backend, threads, config) -> det
_DETECTORS_LOCK = threading.Lock()


def _key(model, backend, num_threads, config):
    models = tuple(os.path.abspath(m) for m in (model if isinstance(model, (list, tuple))
                                                else [model]))
    return models, backend, num_threads, json.dumps(config, sort_keys=True)


def _cached_detector(key):
    """This process's detector for ``key``, built (and warmed) on first use, with its lock:
    a Detector keeps per-call state (``timings``), so one call at a time."""
    with _DETECTORS_LOCK:
        hit = _DETECTORS.get(key)
        if hit is None:
            from .detect import Detector
            models, backend, threads, config = key
            det = Detector(list(models) if len(models) == 3 else models[0], backend=backend,
                           num_threads=threads, **json.loads(config))
            warm_up(det)
            hit = _DETECTORS[key] = (det, threading.Lock())
    return hit


def _remote_sources(sources, key, stride, classes):
    """A Dask task: every record of a few sources, on the worker's cached detector."""
    det, lock = _cached_detector(key)
    records = []
    with lock:
        for job in _jobs(sources, stride, _Inline(), threading.Event()):
            image, err = job.result()
            rec = _head(job)
            if err is None:
                try:
                    rec.update(_detect(det, image, classes)[1])
                except Exception as e:
                    err = _message(e, job.source.name)
            records.append((job.index, {**_head(job), "error": err} if err is not None
                            else rec))
    return records              # (position in ``sources``, record)


class _Inline:
    """A pool that runs the call at once (one decode per task on a worker)."""

    def submit(self, fn, *a):
        return _done(fn(*a))


def _client(client):
    try:
        import distributed
    except ImportError:
        from .errors import MissingDependencyError
        raise MissingDependencyError("running on a Dask cluster needs dask.distributed: "
                                     "pip install 'edgedl[dask]'") from None
    return client if isinstance(client, distributed.Client) else distributed.Client(client)


def detect_many(paths, model, client=None, *, out=None, images=False, txt=False, crops=False,
                coco=False, stride=1, classes=None, recursive=False, backend=None,
                num_threads=1, on_record=None, chunk=8, **config):
    """Detect on many images / videos; returns every record (the JSON lines of
    ``edgedl detect --json``) in input order.

    ``client``: a ``distributed.Client`` or a scheduler address (``"tcp://host:8786"``) runs
    a task per ``chunk`` sources on the cluster, the detector built once per worker process from
    ``model`` + ``config`` (workers must see the files); None runs here, pipelined. ``out``
    with ``images`` / ``txt`` / ``crops`` / ``coco`` writes the files of a local run (written
    here, by the client; annotated images and crops re-read the image, videos get frame
    records but no annotated video on a cluster). ``config``: Detector settings.
    """
    from .errors import ValidationError
    sources = expand_sources(paths, recursive) if not isinstance(paths, Source) else [paths]
    key = _key(model, backend, num_threads, config)
    det = None
    if client is None or classes:
        det = _cached_detector(key)[0]
    class_ids = resolve_classes(classes or [], getattr(det, "labels", None)) if classes else None
    outputs = None
    if out is not None and (images or txt or crops or coco):
        outputs = Outputs(out, sources, images=images, txt=txt, crops=crops, coco=coco,
                          labels=getattr(det, "labels", None),
                          protect=list(key[0]))
    summary = Summary(records=[], out_dir=out if outputs else None)

    def keep(rec):
        summary.records.append(rec)
        if on_record is not None:
            on_record(rec)

    if client is None:
        return run(sources, det, outputs, stride=stride, classes=class_ids, on_record=keep,
                   summary=summary).records
    if stride < 1:
        raise ValidationError(f"stride must be an integer >= 1, got {stride}")
    c = _client(client)
    try:
        return _run_dask(c, sources, key, stride, class_ids, outputs, keep, summary,
                         chunk).records
    finally:
        if c is not client:                # ours (from an address): closed with the run
            c.close()


def _run_dask(client, sources, key, stride, class_ids, outputs, on_record, summary,
              chunk=8, fail_fast=False):
    """A task per ``chunk`` sources (a task costs ~10 ms of scheduling: more than a small
    model's inference); records handed on in input order as they arrive."""
    from distributed import as_completed
    t0 = time.perf_counter()
    # this process's stdin and cameras are not the workers'
    sources = [Source(s.name, "error", error=f"{s.name}: {s.kind} is read here, not on a "
                      f"cluster: run it without --dask")
               if s.kind in ("stdin", "camera") else s for s in sources]
    starts = list(range(0, len(sources), max(1, chunk)))
    futures = [client.submit(_remote_sources, sources[s:s + chunk], key, stride, class_ids,
                             pure=False) for s in starts]
    index = {f.key: i for i, f in enumerate(futures)}
    ready, nxt = {}, 0
    try:
        for f in as_completed(futures):
            ready[index[f.key]] = f.result()
            f.release()                    # fetched: a worker lost later costs nothing
            while nxt in ready:
                for k, rec in ready.pop(nxt):
                    i = starts[nxt] + k
                    summary.add(rec, sum(rec.get("time_ms", {}).values()) / 1e3)
                    if outputs is not None and "error" not in rec:
                        outputs.submit(_Job(i, sources[i], rec.get("frame")), None,
                                       _from_record(rec), rec)
                    on_record(rec)
                    if fail_fast and "error" in rec:
                        raise _Stop
                nxt += 1
    except _Stop:
        client.cancel(futures)
    finally:
        if outputs is not None:
            outputs.close()
    summary.wall_s = time.perf_counter() - t0
    return summary


class _Stop(Exception):
    """--fail-fast on a cluster: the first failure ends the run."""


def _from_record(rec):
    """Detections back from a record's rows (for the writers of a distributed run)."""
    from .detect import Detections
    rows = rec["detections"]
    kps = [r["keypoints"] for r in rows if "keypoints" in r]
    return Detections(np.array([r["box"] for r in rows], np.float32).reshape(-1, 4),
                      np.array([r["score"] for r in rows], np.float32),
                      np.array([r["class_id"] for r in rows], np.int64),
                      [r["label"] for r in rows],
                      np.array(kps, np.float32) if kps and len(kps) == len(rows) else None)
