"""Detector pipelines: preprocessing, per-family decoders, NMS, drawing.

>>> det = edgedl.Detector("fastestdet.onnx")              # configured from the model
>>> d = det("photo.jpg")                                   # Detections in original pixels
>>> d.boxes, d.scores, d.class_ids, d.labels, d.keypoints

Families: fastestdet, ssd, yolox, yunet, yolov5, yolov8, nanodet, picodet, scrfd.
"""
from .decoders import FAMILIES
from .detector import Detections, Detector
from .draw import draw_detections
from .preprocess import Transform, load_image, normalize, preprocess, resize
from .presets import available_presets, load_preset, resolve_labels

__all__ = ["Detector", "Detections", "FAMILIES", "available_presets", "load_preset",
           "resolve_labels", "draw_detections", "load_image", "resize", "normalize",
           "preprocess", "Transform"]
