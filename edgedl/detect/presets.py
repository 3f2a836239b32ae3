"""Presets: a dict (or JSON file) of preprocessing and decoding settings for one model.

A preset names its ``family`` (the decoder) and overrides that family's defaults
(``decoders.FAMILIES``); any key not known to the family is refused, so a typo in a preset
or in ``Detector(..., **overrides)`` is caught at once. The presets shipped with edgedl are the
JSON files in ``edgedl/detect/presets/``.
"""
import json
import numbers
import os

from .._validate import choice, integer, real
from ..errors import ValidationError
from .decoders import FAMILIES, family_defaults

PRESET_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "presets")
DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
#: keys a preset may carry besides the settings: descriptive ones, ``match`` (the model's
#: input / output names and shapes, how a bundled preset is found by content) and ``_dir``
#: (set on loading a file: its labels files resolve there)
META_KEYS = ("family", "name", "description", "source", "license", "match", "_dir")


def available_presets():
    """Names of the bundled presets."""
    return sorted(f[:-5] for f in os.listdir(PRESET_DIR) if f.endswith(".json"))


def load_preset(preset):
    """A preset name (bundled), a path to a JSON file, or a dict -> a new dict."""
    if isinstance(preset, dict):
        return dict(preset)
    if not isinstance(preset, (str, os.PathLike)):
        raise ValidationError(f"preset must be a name, a JSON file path or a dict, got "
                              f"{type(preset).__name__}")
    path = os.fspath(preset)
    if not path.endswith(".json") or not os.path.exists(path):
        bundled = os.path.join(PRESET_DIR, path + ".json")
        if os.path.exists(bundled):
            path = bundled
        elif not os.path.exists(path):
            raise ValidationError(f"unknown preset {preset!r}: not a bundled preset "
                                  f"({', '.join(available_presets())}) nor a JSON file")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise ValidationError(f"cannot read preset {path}: {e}") from None
    if not isinstance(data, dict):
        raise ValidationError(f"preset {path} must hold a JSON object, got {type(data).__name__}")
    data.setdefault("name", os.path.basename(path)[:-5])
    data["_dir"] = os.path.dirname(os.path.abspath(path))
    return data


def resolve(preset=None, family=None, overrides=None, model_name=None):
    """The full configuration: family defaults <- preset <- overrides, validated, without
    looking at a model (kept for callers of the first API; ``Detector`` configures from the
    model with ``autoconfig.configure``).

    With neither ``preset`` nor ``family``, a bundled preset named like the model file is used.
    """
    if preset is None and family is None:
        stem = os.path.splitext(os.path.basename(model_name or ""))[0]
        if stem in available_presets():
            preset = stem
        else:
            raise ValidationError(
                f"cannot tell how to decode model {model_name or '<in memory>'!r}: give a "
                f"preset (preset= or --preset: {', '.join(available_presets())}, a JSON file "
                f"or a dict) or a family (family= or --family: {', '.join(sorted(FAMILIES))})")
    p = load_preset(preset) if preset is not None else {}
    fam = family if family is not None else p.get("family")
    if fam is None:
        raise ValidationError("the preset has no 'family' key; pass family=")
    if family is not None and p.get("family") not in (None, family):
        raise ValidationError(f"family={family!r} contradicts the preset's family "
                              f"{p['family']!r}")
    cfg = family_defaults(fam)
    for src_name, src in (("preset", p), ("override", overrides or {})):
        for k, v in src.items():
            if k not in cfg and k not in META_KEYS:
                raise ValidationError(
                    f"unknown {src_name} key {k!r} for family {fam!r}; known keys: "
                    f"{', '.join(sorted(cfg))}")
            cfg[k] = v
    cfg["family"] = fam
    return _check(cfg)


def _check(cfg):
    """Validate the values that steer preprocessing and NMS (names the `key` on error)."""
    q = lambda k: f"`{k}`"
    choice(cfg["resize"], q("resize"), ("stretch", "letterbox"))
    choice(cfg["placement"], q("placement"), ("topleft", "center"))
    choice(cfg["channel_order"], q("channel_order"), ("rgb", "bgr"))
    choice(cfg["layout"], q("layout"), ("nchw", "nhwc"))
    cfg["score_threshold"] = real(cfg["score_threshold"], q("score_threshold"), 0.0, 1.0)
    cfg["iou_threshold"] = real(cfg["iou_threshold"], q("iou_threshold"), 0.0, 1.0)
    cfg["scale"] = real(cfg["scale"], q("scale"), 0.0, lo_open=True)
    cfg["max_detections"] = integer(cfg["max_detections"], q("max_detections"), lo=1)
    for k in ("input_width", "input_height"):
        if cfg[k] is not None:
            cfg[k] = integer(cfg[k], q(k), lo=1)
    for k in ("mean", "std"):
        v = cfg[k]
        v = [v] * 3 if isinstance(v, numbers.Real) else v
        if not isinstance(v, (list, tuple)) or len(v) not in (1, 3):
            raise ValidationError(f"{q(k)} must have 1 or 3 values, got {v!r}")
        cfg[k] = [real(e, f"{q(k)}[{i}]") for i, e in enumerate(v)]
    if any(s == 0 for s in cfg["std"]):
        raise ValidationError(f"`std` must not contain 0, got {cfg['std']}")
    if "strides" in cfg:
        v = cfg["strides"]
        if not isinstance(v, (list, tuple)) or not v:
            raise ValidationError(f"`strides` must be a list of integers, got {v!r}")
        cfg["strides"] = [integer(s, f"`strides`[{i}]", lo=1) for i, s in enumerate(v)]
    if "score_activation" in cfg:
        choice(cfg["score_activation"], q("score_activation"), ("none", "sigmoid", "softmax"))
    return cfg


_LABEL_SETS = {}


def _read_names(path, what):
    try:
        with open(path, encoding="utf-8") as f:
            return [ln.strip() for ln in f if ln.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise ValidationError(f"cannot read {what} {path}: {e}") from None


def resolve_labels(labels, base_dir=None):
    """``labels`` -> a list of names or None: None, a list of names, the name of a bundled
    set (``coco80``) or a text file with one name a line.

    ``base_dir`` is the folder of the preset that named the file: the file resolves there and
    may not lie outside it. Without it (a path the user typed) the path is taken as given.
    """
    if labels is None:
        return None
    if isinstance(labels, (list, tuple)):
        return [str(x) for x in labels]
    if not isinstance(labels, (str, os.PathLike)):
        raise ValidationError(f"labels must be a list of names, a bundled set name or a text "
                              f"file, got {type(labels).__name__}")
    text = os.fspath(labels)
    bundled = os.path.join(DATA_DIR, text + ".txt")
    is_set = os.sep not in text and "/" not in text and os.path.exists(bundled)
    if base_dir is not None and not is_set:
        root = os.path.realpath(base_dir)
        path = os.path.realpath(os.path.join(root, text))
        if os.path.commonpath([root, path]) != root:
            raise ValidationError(f"labels file {text!r} of a preset must lie inside the "
                                  f"preset's folder {root}")
        if not os.path.isfile(path):
            raise ValidationError(f"labels file {text!r} not found in the preset's folder "
                                  f"{root}")
        return _read_names(path, "labels file")
    if not is_set and os.path.isfile(text):
        return _read_names(text, "labels file")
    if not is_set:
        raise ValidationError(f"unknown label set {text!r}: not a bundled set "
                              f"({', '.join(available_label_sets())}) nor a file")
    if text not in _LABEL_SETS:
        _LABEL_SETS[text] = _read_names(bundled, "label set")
    return list(_LABEL_SETS[text])


def available_label_sets():
    return sorted(f[:-4] for f in os.listdir(DATA_DIR) if f.endswith(".txt"))
