"""Detector pipelines: preprocessing, per-family decoders, NMS, drawing."""
