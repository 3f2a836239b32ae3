"""The ``edgedl`` command: detect objects, benchmark kernels and models, inspect a model.

  edgedl detect                       run the bundled demo (FastestDet on a bundled photo)
  edgedl detect MODEL IMAGE ...       detect with your model (configured from the model;
                                      or --preset / --family)
  edgedl bench [MODEL]                kernel x backend latency table, or a model's latency
  edgedl info [MODEL]                 a model's inputs, outputs, ops, parameters, FLOPs
  edgedl warmup                       compile the numba cache ahead of time
  edgedl quantize MODEL --calib DIR -o OUT.onnx
                                      int8 (QDQ) model calibrated on images, on edgedl
"""
import argparse
import json
import os
import sys
import time

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
DEMO_MODEL = os.path.join(DATA_DIR, "fastestdet.onnx")
DEMO_IMAGE = os.path.join(DATA_DIR, "astronaut.jpg")


class UserError(Exception):
    """A mistake on the command line: reported in one line, no traceback."""


class UsageError(UserError):
    """A bad option value: one line, exit status 2 (as argparse's own errors)."""


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (no usage block) and exit status 2."""

    def error(self, message):
        self.exit(2, f"edgedl: error: {message} (see {self.prog} --help)\n")


def _count(text, most=100_000):
    """An option's count: an integer from 1 to ``most``."""
    try:
        n = int(text)
    except ValueError:
        n = None
    if n is None or not 1 <= n <= most:
        raise argparse.ArgumentTypeError(f"must be an integer from 1 to {most}, got {text!r}")
    return n


def _one_line(e):
    """An exception as one readable line."""
    from .errors import UnsupportedOpsError
    if isinstance(e, UnsupportedOpsError):
        ops = ", ".join(f"{op} ({len(n)} node{'s' * (len(n) != 1)})"
                        for op, n in sorted(e.ops.items()))
        return f"unsupported ONNX ops: {ops}"
    msg = str(e).strip().splitlines()
    return msg[0] if msg else type(e).__name__


def _parser():
    p = _Parser(
        prog="edgedl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    from . import __version__
    p.add_argument("--version", action="version", version=f"edgedl {__version__}")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")

    d = sub.add_parser("detect", help="detect objects in images (no arguments: the demo)")
    d.add_argument("paths", nargs="*", metavar="[MODEL] SOURCE",
                   help="an .onnx model (default: the bundled FastestDet; three models: an "
                        "MTCNN cascade's P-, R- and O-Net) then sources: images, folders, "
                        "quoted globs, .txt lists of paths, - (one image on stdin), videos, "
                        "cameras (0 or /dev/video0) (default: the bundled demo photo)")
    d.add_argument("--source", action="append", default=[], metavar="SOURCE",
                   help="another source (repeatable), e.g. --source 0 for the first camera")
    d.add_argument("--recursive", action="store_true", help="read folders' sub-folders too")
    d.add_argument("--stride", type=_count, default=1, metavar="N",
                   help="videos: detect on every N-th frame (default every frame)")
    d.add_argument("--out", metavar="DIR", default=None,
                   help="where results go (default: a new edgedl-out/runN per run)")
    d.add_argument("--exist-ok", action="store_true",
                   help="write into the latest edgedl-out/runN instead of a new one")
    d.add_argument("--json", action="store_true",
                   help="print one JSON line per image or video frame as it is done (annotated "
                        "images are then written only with --out)")
    d.add_argument("--save-txt", action="store_true",
                   help="YOLO-format labels/<name>.txt per image: class cx cy w h score")
    d.add_argument("--save-json", action="store_true",
                   help="one COCO-style predictions.json for the run")
    d.add_argument("--save-crops", action="store_true",
                   help="each detection cut out under crops/<label>/")
    d.add_argument("--classes", action="append", default=[], metavar="NAMES|IDS",
                   help="keep only these classes (names or ids, comma-separated, repeatable)")
    d.add_argument("--conf", dest="cfg_score_threshold", metavar="T", default=None,
                   help="alias of --score-threshold")
    d.add_argument("--iou", dest="cfg_iou_threshold", metavar="T", default=None,
                   help="alias of --iou-threshold")
    d.add_argument("--fail-fast", action="store_true",
                   help="stop at the first source that fails (default: report it, go on)")
    d.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bar, per-image lines nor summary")
    d.add_argument("--dask", metavar="ADDRESS", default=None,
                   help="run on a Dask cluster, e.g. tcp://host:8786 (edgedl[dask]; the "
                        "workers must see the sources)")
    d.add_argument("--help-families", action="store_true",
                   help="print every detector family and configuration key, then exit")
    _config_options(d)
    _common(d)

    b = sub.add_parser("bench", help="kernel latency table, or a model's end-to-end latency")
    b.add_argument("model", nargs="?", help="an .onnx model (default: the kernel table)")
    b.add_argument("--repeat", type=_count, default=None, help="timed runs per measurement")
    b.add_argument("--preset", help="preset for the detector pipeline timing of MODEL")
    _common(b)

    i = sub.add_parser("info", help="inputs, outputs, ops, parameters and FLOPs of a model, "
                                    "and how edgedl detects with it (no MODEL: versions and "
                                    "backends)")
    i.add_argument("model", nargs="?")
    _config_options(i)

    _quantize_parser(sub)

    w = sub.add_parser("warmup", help="compile the numba cache ahead of time")
    w.add_argument("--backend", default=None, help="the backend to compile (default numba)")
    sub.add_parser("info-config", help="print versions, backends, threads and cache dir")
    return p


def _quantize_parser(sub):
    from .quantize import ACTIVATION_TYPES, OBSERVERS
    q = sub.add_parser("quantize", help="an int8 QDQ model of a float detector, calibrated on "
                                        "images with edgedl (onnxruntime runs it too)")
    q.add_argument("model", help="the float .onnx detector")
    q.add_argument("--calib", action="append", required=True, metavar="DIR|IMAGE",
                   help="calibration images: a folder or an image (repeatable); every third "
                        "is held back for the accuracy check")
    q.add_argument("-o", "--output", required=True, metavar="OUT.onnx",
                   help="where the int8 model is written")
    q.add_argument("--samples", action="store_true",
                   help="add scikit-image's bundled sample photos (pip install scikit-image)")
    q.add_argument("--observer", choices=OBSERVERS, default="minmax",
                   help="how activation ranges are chosen (default minmax)")
    q.add_argument("--percentile", type=float, default=99.999,
                   help="--observer percentile: the quantile kept each side (default 99.999)")
    q.add_argument("--activation-type", choices=ACTIVATION_TYPES, default="uint8",
                   help="8-bit activations, asymmetric (default uint8)")
    q.add_argument("--per-tensor", action="store_true",
                   help="one weight scale per tensor (default: per output channel)")
    q.add_argument("--holdout", type=float, default=1 / 3, metavar="FRACTION",
                   help="share of the images held back for the check (default 1/3; 0: none)")
    q.add_argument("--exclude", action="append", default=[], metavar="NODE",
                   help="a node name to keep in float (repeatable)")
    q.add_argument("--max-step-ratio", type=float, default=0.1, metavar="R",
                   help="keep in float the activations whose 8-bit step exceeds R times "
                        "their RMS on the calibration images (default 0.1; 0: none)")
    q.add_argument("--max-error-share", type=float, default=0.1, metavar="S",
                   help="keep in float each activation whose 8-bit noise alone makes more "
                        "than S of the output error of all of them (a float simulation on "
                        "the first calibration images; default 0.1; 0: no search)")
    q.add_argument("--no-bias-correction", dest="bias_correction", action="store_false",
                   help="keep the Conv biases as they are (default: each absorbs the mean "
                        "change its rounded weights make on the calibration images)")
    q.add_argument("--weight-rounding", choices=("gptq", "nearest"), default="gptq",
                   help="how Conv weights are rounded to int8: gptq (default) spreads each "
                        "weight's rounding error over the weights after it, by the "
                        "calibration inputs' correlations; nearest rounds each alone")
    q.add_argument("--int8-outputs", dest="float_outputs", action="store_false",
                   help="quantize the outputs' tail too (default: the last Convs and what "
                        "follows them up to the outputs stay float)")
    q.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _config_options(q)
    _common(q)


def _config_options(p):
    """--preset, --family and one option per configuration key of the family tables."""
    from .detect.autoconfig import all_keys, cli_flag, describe
    g = p.add_argument_group(
        "detector configuration", "default: read from the model and the family's reference "
        "preprocessing; --family, then --preset, then these options override it "
        "(edgedl detect --help-families lists every key)")
    g.add_argument("--preset", help="bundled preset name or a JSON preset file")
    g.add_argument("--family", help="decoder family (default: inferred from the model)")
    g.add_argument("--input-size", metavar="WxH", help="network input size, e.g. 320x320")
    for key in all_keys():
        if key not in ("input_width", "input_height"):
            meaning, metavar = describe(key)
            g.add_argument(cli_flag(key), dest="cfg_" + key, metavar=metavar, default=None,
                           help=meaning.replace("%", "%%"))
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any configuration key (repeatable), e.g. --set reg_max=15")


def _config_kw(args):
    """The Detector's keyword arguments from the configuration options."""
    from .detect.autoconfig import all_keys, parse_size, parse_value
    kw, over = {}, {}
    if args.preset:
        kw["preset"] = args.preset
    if args.family:
        kw["family"] = args.family
    if args.input_size:
        over["input_width"], over["input_height"] = parse_size(args.input_size)
    for key in all_keys():
        text = getattr(args, "cfg_" + key, None)
        if text is not None:
            over[key] = parse_value(key, text)
    for item in args.set:
        key, eq, text = item.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"--set takes KEY=VALUE, got {item!r}")
        key = key.strip().replace("-", "_")
        over[key] = parse_value(key, text)
    labels = over.get("labels")
    if isinstance(labels, str) and not os.path.exists(labels) and "/" not in labels \
            and os.sep not in labels and not labels.endswith(".txt"):
        from .detect.presets import available_label_sets
        if labels not in available_label_sets():
            over["labels"] = [labels]        # one name: a one-class model
    kw.update(over)
    return kw


def _common(p):
    p.add_argument("--backend", default=None, help="cython, numba or numpy (default: best)")
    p.add_argument("--threads", type=int, default=None, help="threads kernels may use")


def main(argv=None):
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:         # --help (0), or a bad option already reported (2)
        return 0 if e.code is None else e.code
    if args.cmd == "detect":
        # A one-shot command: OpenMP's default spin-waiting costs seconds when the cores are
        # busy (measured: the demo 6 s -> 1.6 s on 2 loaded cores). Read when the OpenMP
        # runtime loads, i.e. before the first Cython kernel; a user's setting wins.
        os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    from . import _config
    with _config.kept_process_settings():
        return _run(args)


def _run(args):
    try:
        import edgedl
        _check_options(args)
        if getattr(args, "backend", None) and args.cmd != "warmup":
            edgedl.set_backend(args.backend)
        if getattr(args, "threads", None) is not None:
            edgedl.set_num_threads(args.threads)
        if args.cmd == "detect":
            return cmd_detect(args)
        if args.cmd == "bench":
            return cmd_bench(args)
        if args.cmd == "info" and args.model:
            return cmd_info(args)
        if args.cmd == "quantize":
            return cmd_quantize(args)
        if args.cmd == "warmup":
            times = edgedl.warmup(args.backend or "numba", verbose=True)
            print(f"warmed {len(times)} kernel families")
            return 0
        edgedl.show_config()
        return 0
    except KeyboardInterrupt:
        print("edgedl: interrupted", file=sys.stderr)
        return 130
    except UsageError as e:
        print(f"edgedl: error: {e}", file=sys.stderr)
        return 2
    except (UserError, OSError, ValueError, TypeError, ImportError, NotImplementedError,
            RuntimeError, MemoryError) as e:
        from .errors import EdgeDLError
        if not isinstance(e, (UserError, EdgeDLError, OSError)) and \
                os.environ.get("EDGEDL_DEBUG"):
            raise
        hint = "" if isinstance(e, (UserError, EdgeDLError, OSError)) else \
            f" ({type(e).__name__}; set EDGEDL_DEBUG=1 for a traceback)"
        print(f"edgedl: error: {_one_line(e)}{hint}", file=sys.stderr)
        return 1


def _check_options(args):
    """Option values argparse cannot check alone (they need edgedl), before any work: a bad
    one is a UsageError (exit status 2)."""
    from . import _config
    from .errors import EdgeDLError
    try:
        if getattr(args, "backend", None) is not None:
            _config._check_backend(args.backend)         # unknown, or unavailable here
    except EdgeDLError as e:
        raise UsageError(f"--backend: {e}") from None
    try:
        if getattr(args, "threads", None) is not None:
            _config.check_num_threads(args.threads, "--threads")
        else:
            _config.get_num_threads()          # EDGEDL_NUM_THREADS (named in the message)
        if getattr(args, "backend", None) is None:
            _config.get_backend()              # EDGEDL_BACKEND
    except EdgeDLError as e:
        raise UsageError(str(e)) from None
    if hasattr(args, "set"):           # the detector configuration options parse
        try:
            _config_kw(args)
        except EdgeDLError as e:
            raise UsageError(_one_line(e)) from None
    models = [args.model] if getattr(args, "model", None) else []
    for path in getattr(args, "paths", None) or []:     # detect: the leading .onnx paths
        if not path.lower().endswith(".onnx"):
            break
        models.append(path)
    for model in models:
        if not os.path.isfile(model):
            raise UsageError(f"model not found: {model}" if not os.path.exists(model) else
                             f"model {model} is not a file")
    out = getattr(args, "out", None)
    if out is not None and os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out}: exists and is not a folder")


# ----------------------------------------------------------------------------- detect
def _load_detector(model, **kw):
    import warnings
    from .detect import Detector
    from .detect.autoconfig import cli_message
    from .errors import EdgeDLError, ModelError, ValidationError
    for m in model if isinstance(model, list) else [model]:
        if not os.path.exists(m):
            raise UserError(f"model not found: {m}")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            det = Detector(model, **kw)
    except ValidationError as e:       # configuration: name flags, not Python keywords
        raise UsageError(cli_message(_one_line(e))) from e
    except ModelError as e:            # the model and its settings disagree: flags too
        raise UserError(cli_message(_one_line(e))) from e
    except (EdgeDLError, FileNotFoundError):
        raise
    except Exception as e:             # a broken file can raise anything from protobuf / onnx
        raise UserError(f"cannot load model {model}: {_one_line(e)}") from e
    for w in caught:
        print(f"edgedl: warning: {cli_message(str(w.message))}", file=sys.stderr)
    return det


def cmd_detect(args):
    from . import batch
    from .errors import ValidationError
    if args.help_families:
        from .detect.autoconfig import families_reference
        print(families_reference(), end="")
        return 0
    models, model, specs = _models_and_sources(args)
    config = _config_kw(args)
    t0 = time.perf_counter()
    det = _load_detector(model, **config)
    try:
        class_ids = batch.resolve_classes(args.classes, det.labels)
    except ValidationError as e:
        raise UsageError(str(e)) from None
    sources = batch.expand_sources(specs, args.recursive)
    startup = None if args.dask else time.perf_counter() - t0 + batch.warm_up(det)
    outputs = _outputs(args, sources, det, protect=models or [model])
    few = _few_images(sources)
    progress = batch.Progress(None if few else batch.count_units(sources, args.stride),
                              quiet=args.quiet or few)
    tell = sys.stderr if args.json else sys.stdout
    on_record = _record_printer(args, det, few, progress)
    summary = batch.Summary(startup_s=startup,
                            out_dir=None if outputs is None else outputs.out_dir)
    try:
        if args.dask:
            _detect_on_dask(args, model, config, sources, class_ids, outputs, on_record,
                            progress, summary)
        else:
            batch.run(sources, det, outputs, stride=args.stride, classes=class_ids,
                      fail_fast=args.fail_fast, on_record=on_record, progress=progress,
                      summary=summary)
    finally:
        if outputs is not None and not few and not args.quiet:
            _tell_videos_written(sources, outputs, tell)
    if not args.quiet and not (few and summary.images + summary.failures <= 1):
        print(summary.line(), file=tell)
    return 1 if summary.failures else 0


def _models_and_sources(args):
    """(the models given, the model to load, the image / video specs): the leading .onnx
    paths are one model, or three for a cascade; without them the demo model, without
    sources the demo image."""
    paths = list(args.paths)
    models = []
    while paths and paths[0].lower().endswith(".onnx"):
        models.append(paths.pop(0))
    if len(models) not in (0, 1, 3):
        raise UsageError(f"give one model, or three for a cascade (MTCNN's P-, R- and O-Net), "
                         f"got {len(models)}: {', '.join(models)}")
    model = models if len(models) == 3 else models[0] if models else DEMO_MODEL
    return models, model, paths + args.source or [DEMO_IMAGE]


def _few_images(sources):
    """A few still images get the full table each; more (or any video) one line each."""
    return len(sources) <= 3 and not any(s.kind in ("video", "camera") for s in sources)


def _outputs(args, sources, det, protect):
    """The run's batch.Outputs, or None when nothing is written (--json alone): annotated
    images unless --json, plus the --save-* files, under --out or the next edgedl-out/runN."""
    from . import batch
    images = not args.json or args.out is not None
    out_dir = args.out or (batch.next_run_dir("edgedl-out", args.exist_ok) if images or
                           args.save_txt or args.save_json or args.save_crops else None)
    if not out_dir:
        return None
    return batch.Outputs(out_dir, sources, images=images, txt=args.save_txt,
                         crops=args.save_crops, coco=args.save_json, labels=det.labels,
                         protect=protect)


def _record_printer(args, det, few, progress):
    """on_record(rec): each image's result as asked: a JSON line (--json), an error line, the
    table (a few images), or one line (more, when no progress bar shows)."""
    def on_record(rec):
        if args.json:
            print(json.dumps(rec), flush=True)
        if "error" in rec:
            progress.write(f"edgedl: error: {rec['error']}")
        elif args.json or args.quiet:
            pass
        elif few:
            _print_table(rec, det)
        elif not progress.on:
            _print_line(rec)
    return on_record


def _print_line(rec):
    n = len(rec["detections"])
    frame = f" frame {rec['frame']}" if "frame" in rec else ""
    print(f"{rec['source']}{frame}: {n} detection{'s' * (n != 1)}"
          f"{_label_counts(rec)} in {sum(rec['time_ms'].values()):.1f} ms", flush=True)


def _detect_on_dask(args, model, config, sources, class_ids, outputs, on_record, progress,
                    summary):
    """The run on a Dask cluster (--dask): each worker loads its own detector."""
    from . import batch
    key = batch._key(model, args.backend, args.threads or 1, config)
    client = batch._client(args.dask)

    def on_remote(rec):
        progress.update()
        on_record(rec)
    try:
        batch._run_dask(client, sources, key, args.stride, class_ids, outputs,
                        on_remote, summary, fail_fast=args.fail_fast)
    finally:
        progress.close()
        client.close()


def _tell_videos_written(sources, outputs, tell):
    for s, saved in zip(sources, outputs.annotated):
        if saved and s.kind in ("video", "camera") and os.path.exists(saved):
            print(f"wrote {saved}", file=tell)


def _label_counts(rec):
    counts = {}
    for d in rec["detections"]:
        counts[d["label"]] = counts.get(d["label"], 0) + 1
    return " (" + ", ".join(f"{n} {k}" for k, n in counts.items()) + ")" if counts else ""


def _print_table(rec, det):
    t, dets = rec["time_ms"], rec["detections"]
    n = len(dets)
    frame = f" frame {rec['frame']}" if "frame" in rec else ""
    print(f"{os.path.basename(rec['source'])}{frame} ({rec['width']}x{rec['height']}): {n} "
          f"detection{'s' * (n != 1)} in {sum(t.values()):.1f} ms (preprocess "
          f"{t['preprocess']:.1f}, inference {t['inference']:.1f}, postprocess "
          f"{t['postprocess']:.1f}) [{det.family}]")
    if n:
        width = max(5, max(len(d["label"]) for d in dets))
        kps = any("keypoints" in d for d in dets)
        print(f"  {'#':>2}  {'label':{width}s}  {'score':>5s}  {'x1':>7s} {'y1':>7s} "
              f"{'x2':>7s} {'y2':>7s}" + ("  keypoints" if kps else ""))
        for i, row in enumerate(dets):
            x1, y1, x2, y2 = row["box"]
            line = (f"  {i:2d}  {row['label']:{width}s}  {row['score']:5.2f}  {x1:7.1f} "
                    f"{y1:7.1f} {x2:7.1f} {y2:7.1f}")
            if "keypoints" in row:
                line += "  " + " ".join(f"({x:.0f},{y:.0f})" for x, y in row["keypoints"])
            print(line)
    if rec.get("annotated"):
        print(f"wrote {rec['annotated']}")


# ----------------------------------------------------------------------------- bench
def _kernel_cases():
    """(family, kernel, args factory) of the kernel table: typical detector sizes, float32."""
    import numpy as np
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 32, 80, 80)).astype(np.float32)
    w3 = (rng.standard_normal((32, 32, 3, 3)) * 0.1).astype(np.float32)
    wdw = (rng.standard_normal((32, 1, 3, 3)) * 0.1).astype(np.float32)
    xy = rng.uniform(0, 300, (2000, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(5, 60, (2000, 2)).astype(np.float32)], 1)
    scores = rng.uniform(0, 1, 2000).astype(np.float32)
    return [
        ("activations", "relu", lambda: (x,), {}),
        ("activations", "sigmoid", lambda: (x,), {}),
        ("activations", "hard_swish", lambda: (x,), {}),
        ("activations", "softmax", lambda: (x,), {"axis": 1}),
        ("pooling", "max_pool2d", lambda: (x, (3, 3), (2, 2), (1, 1, 1, 1)), {}),
        ("conv", "conv2d", lambda: (x, w3, None, (1, 1), (1, 1, 1, 1)), {}),
        ("conv", "conv2d", lambda: (x, wdw, None, (1, 1), (1, 1, 1, 1), (1, 1), 32), {}),
        ("boxes", "box_iou", lambda: (boxes[:500], boxes[:500]), {}),
        ("boxes", "nms", lambda: (boxes, scores, 0.5), {}),
    ]


def _median_ms(fn, repeat, budget=0.5):
    """Median of up to ``repeat`` timed calls (fewer if they exceed ``budget`` seconds)."""
    import statistics
    fn()                               # warm: JIT / first-call costs are not latency
    times, start = [], time.perf_counter()
    while len(times) < repeat and (len(times) < 3 or time.perf_counter() - start < budget):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def _progress(i, n, text):
    if sys.stderr.isatty():
        bar = "#" * round(20 * i / n)
        print(f"\r[{bar:20s}] {i}/{n} {text:40.40s}", end="", file=sys.stderr, flush=True)
    else:
        print(f"[{i}/{n}] {text}", file=sys.stderr, flush=True)


def cmd_bench(args):
    if args.model:
        return _bench_model(args)
    import edgedl
    from ._warmup import FAMILIES
    repeat = args.repeat or 30
    backends = [args.backend] if args.backend else edgedl.backends()
    if "numpy" not in backends:
        backends.append("numpy")
    cases = _kernel_cases()
    labels = {}
    rows = []
    todo = len(cases) * len(backends)
    done = 0
    for fam, name, make, kw in cases:
        try:
            fn = getattr(FAMILIES[fam], name)
        except (KeyError, AttributeError):
            done += len(backends)
            continue
        a = make()
        label = f"{name} {'x'.join(map(str, a[0].shape))}"
        if name == "conv2d":
            label = f"conv2d {'dw' if len(a) > 6 else ''}3x3 {'x'.join(map(str, a[0].shape))}"
        labels[label] = True
        res = {}
        for be in backends:
            done += 1
            _progress(done, todo, f"{label} {be}")
            try:
                res[be] = _median_ms(lambda: fn(*a, backend=be, **kw), repeat)
            except Exception as e:      # a backend lacking a kernel: show it, go on
                res[be] = f"error: {_one_line(e)[:30]}"
        rows.append((label, res))
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(f"kernel latency, median of up to {repeat} runs, {edgedl.get_num_threads()} "
          f"thread(s); 'x' = speed-up over numpy")
    head = f"{'kernel':32s}" + "".join(f"{be:>20s}" for be in backends)
    print(head)
    for label, res in rows:
        base = res.get("numpy")
        cells = []
        for be in backends:
            v = res.get(be)
            if isinstance(v, float):
                ratio = f" ({base / v:5.1f}x)" if isinstance(base, float) and v > 0 else ""
                cells.append(f"{v:9.3f} ms{ratio:>9s}")
            else:
                cells.append(str(v)[:20])
        print(f"{label:32s}" + "".join(f"{c:>20s}" for c in cells))
    return 0


def _bench_model(args):
    import statistics
    import numpy as np
    from .errors import EdgeDLError
    from .onnx.session import InferenceSession
    if not os.path.exists(args.model):
        raise UserError(f"model not found: {args.model}")
    try:
        sess = InferenceSession(args.model, backend=args.backend, num_threads=args.threads,
                                profile=True)
    except EdgeDLError:
        raise
    except Exception as e:
        raise UserError(f"cannot load model {args.model}: {_one_line(e)}") from e
    feed = {}
    for inp in sess.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in (inp.shape or [])]
        dt = np.float64 if "double" in inp.type else np.float32
        if "int" in inp.type:
            feed[inp.name] = np.zeros(shape, np.int64)
        else:
            feed[inp.name] = np.random.default_rng(0).random(shape).astype(dt)
    repeat = args.repeat or 20
    _progress(0, repeat, "first run (plans the model)")
    t = time.perf_counter()
    sess.run(None, feed)
    first = (time.perf_counter() - t) * 1e3
    times = []
    for i in range(repeat):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t) * 1e3)
        _progress(i + 1, repeat, "timed runs")
    if sys.stderr.isatty():
        print(file=sys.stderr)
    shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in feed.items())
    print(f"{os.path.basename(args.model)}: {shapes}; first run {first:.1f} ms, then median "
          f"{statistics.median(times):.2f} ms, min {min(times):.2f} ms over {repeat} runs "
          f"(backend {args.backend or __import__('edgedl').get_backend()}, "
          f"{__import__('edgedl').get_num_threads()} threads)")
    if hasattr(sess, "format_profile"):
        print("\nper op type (profiled runs):")
        print(sess.format_profile())
    _bench_pipeline(args, sess)
    return 0


def _bench_pipeline(args, sess):
    """When edgedl can configure MODEL as a detector (from the model, or --preset), time the
    whole detector on the demo photo: pre / infer / post."""
    import statistics
    import warnings
    from .detect import Detector, load_image
    from .errors import EdgeDLError
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            det = Detector(args.model, preset=args.preset, session=sess)
    except EdgeDLError as e:
        if args.preset:
            raise
        print(f"\n(no detector pipeline timing: {_one_line(e)})")
        return
    img = load_image(DEMO_IMAGE)
    det(img)
    parts = {"preprocess": [], "inference": [], "postprocess": []}
    for _ in range(args.repeat or 20):
        det(img)
        for k in parts:
            parts[k].append(det.timings[k] * 1e3)
    med = {k: statistics.median(v) for k, v in parts.items()}
    total = sum(med.values())
    print(f"\ndetector pipeline on the demo photo ({det.family}): "
          + ", ".join(f"{k} {v:.2f} ms" for k, v in med.items())
          + f"; pre+post = {(med['preprocess'] + med['postprocess']) / total:.0%} of {total:.1f} ms")


# ----------------------------------------------------------------------------- quantize
def cmd_quantize(args):
    from .quantize import quantize_static
    res = quantize_static(
        args.model, args.calib, args.output, per_channel=not args.per_tensor,
        activation_type=args.activation_type, observer=args.observer,
        percentile=args.percentile, holdout=args.holdout, samples=args.samples,
        nodes_to_exclude=args.exclude, max_step_ratio=args.max_step_ratio,
        max_error_share=args.max_error_share, bias_correction=args.bias_correction,
        weight_rounding=args.weight_rounding,
        float_outputs=args.float_outputs, backend=args.backend, quiet=args.quiet,
        **_config_kw(args))
    print(res.summary())
    return 0


# ----------------------------------------------------------------------------- info
def cmd_info(args):
    if not os.path.exists(args.model):
        raise UserError(f"model not found: {args.model}")
    from .onnx.graph import read_model
    proto = read_model(args.model)
    g = proto.graph
    inits = {t.name: t for t in g.initializer}
    opsets = ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in proto.opset_import)
    print(f"{args.model}: IR {proto.ir_version}, opset {opsets}, producer "
          f"{proto.producer_name or '?'} {proto.producer_version}".rstrip())
    shapes = _infer_shapes(args.model)
    print("inputs:")
    for vi in g.input:
        if vi.name not in inits:
            print(f"  {vi.name:20s} {_type_str(vi)}")
    print("outputs:")
    for vi in g.output:
        print(f"  {vi.name:20s} {_type_str(vi)}")
    unsupported = _print_ops(g)
    _print_size(g, shapes, inits)
    _print_detector(args, proto)
    if unsupported:
        print(f"edgedl cannot run this model yet: unsupported {', '.join(sorted(unsupported))}")
        return 1
    return 0


def _print_ops(g):
    """The op types by count, each marked supported or not; returns the unsupported ones."""
    from .onnx.ops import OPS
    counts = {}
    for n in g.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    print(f"ops ({len(g.node)} nodes, {len(counts)} types):")
    for op, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {op:24s} {c:5d}  {'supported' if op in OPS else 'NOT SUPPORTED'}")
    return [op for op in counts if op not in OPS]


def _print_size(g, shapes, inits):
    """Parameters (initializers and Constant values) and FLOPs per run."""
    params = sum(_numel(t.dims) for t in g.initializer)
    params += sum(_numel(a.t.dims) for n in g.node if n.op_type == "Constant"
                  for a in n.attribute if a.name == "value")
    flops, counted = _flops(g, shapes, inits)
    print(f"parameters: {params:,} ({params / 1e6:.2f} M)")
    if counted:
        print(f"FLOPs: {flops / 1e9:.3f} G per run (Conv, ConvTranspose, Gemm, MatMul; "
              f"multiply-add = 2 FLOPs; symbolic dims taken as 1)")
    else:
        print("FLOPs: unknown (shapes could not be inferred)")


def _print_detector(args, proto):
    """How ``edgedl detect`` would configure this model: family and why, every setting with
    its source, and the model's metadata."""
    import warnings
    from .detect import autoconfig
    from .errors import ValidationError
    meta = autoconfig.read_metadata(proto)
    print("metadata:" + ("" if meta else " none"))
    for k, v in meta.items():
        v = " ".join(v.split())
        print(f"  {k:20s} {v[:100] + ' ...' if len(v) > 100 else v}")
    kw = _config_kw(args)
    preset, family = kw.pop("preset", None), kw.pop("family", None)
    facts = autoconfig.model_facts(autoconfig.ProtoIO(proto), proto, args.model)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            conf = autoconfig.configure(facts, preset, family, kw)
    except ValidationError as e:
        if kw or preset is not None or family is not None:
            # a setting the user gave is wrong: a usage error (exit 2), as in `detect`
            raise UsageError(autoconfig.cli_message(_one_line(e))) from None
        print(f"detector: not configured: {autoconfig.cli_message(_one_line(e))}")
        for m in autoconfig.matches(facts):
            print(f"  the outputs fit {m.family} ({m.reason})")
        return
    print(f"detector: family {conf.family} ({conf.reason})")
    if conf.preset_name:
        how = "given" if preset else "bundled, found by the model's inputs and outputs"
        print(f"  preset {conf.preset_name} ({how})")
    for w in caught:
        print(f"  warning: {autoconfig.cli_message(str(w.message))}")
    _print_settings(conf)


def _print_settings(conf):
    """Every setting of a configuration with where it came from, the input size, classes."""
    print("configuration (model = read from the model, family = family default, preset, "
          "user):")
    for k, v in conf.settings.items():
        if k != "family" and not k.startswith("_"):
            print(f"  {k:18s} {_setting_text(k, v):48s} {conf.sources.get(k, '')}")
    size = (f"{conf.settings['input_width']}x{conf.settings['input_height']}"
            if conf.settings["input_width"] else "per image")
    print(f"  input size: {size} ({conf.size_from})")
    if conf.num_classes is not None:
        print(f"  classes: {conf.num_classes}")


def _setting_text(key, value):
    """A setting's value in at most 70 characters (labels: their count, then the names)."""
    shown = json.dumps(value) if not isinstance(value, float) else f"{value:.6g}"
    if key == "labels" and value:
        shown = f"{len(value)} name{'s' * (len(value) != 1)}: {', '.join(value)}"
    if len(shown) > 70:
        shown = shown[:66] + " ..."
    return shown


def _numel(dims):
    n = 1
    for d in dims:
        n *= int(d)
    return n


def _dims_of(type_proto):
    if not type_proto.HasField("tensor_type") or not type_proto.tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in type_proto.tensor_type.shape.dim]


def _type_str(vi):
    from .onnx.proto import type_name
    return f"{type_name(vi.type.tensor_type.elem_type).lower()} {_dims_of(vi.type)}"


def _infer_shapes(path):
    """{value name: shape list} from onnx shape inference with symbolic input dims set to 1
    (the onnx package's; without it, or when it fails, FLOPs are "unknown")."""
    try:
        import onnx
        m = onnx.load(path)
    except Exception:
        return {}
    for vi in m.graph.input:
        if vi.type.HasField("tensor_type"):
            for d in vi.type.tensor_type.shape.dim:
                if not d.HasField("dim_value") or d.dim_value <= 0:
                    d.Clear()
                    d.dim_value = 1
    try:
        m = onnx.shape_inference.infer_shapes(m)
    except Exception:                    # inference is best effort: FLOPs become "unknown"
        pass
    shapes = {}
    for vi in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        d = _dims_of(vi.type)
        if d is not None and all(isinstance(x, int) and x > 0 for x in d):
            shapes[vi.name] = d
    for t in m.graph.initializer:
        shapes[t.name] = list(t.dims)
    return shapes


def _flops(g, shapes, inits):
    total, counted = 0, 0
    for n in g.node:
        try:
            if n.op_type == "Conv":
                out, w = shapes[n.output[0]], shapes[n.input[1]]
                total += 2 * _numel(out) * _numel(w[1:])
            elif n.op_type == "ConvTranspose":
                x, w = shapes[n.input[0]], shapes[n.input[1]]
                total += 2 * _numel(x) * _numel(w[1:])
            elif n.op_type in ("Gemm", "MatMul"):
                a, out = shapes[n.input[0]], shapes[n.output[0]]
                trans_a = any(at.name == "transA" and at.i for at in n.attribute)
                k = a[-2] if trans_a else a[-1]
                total += 2 * _numel(out) * k
            else:
                continue
            counted += 1
        except (KeyError, IndexError):
            continue
    return total, counted
