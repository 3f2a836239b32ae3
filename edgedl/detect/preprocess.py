"""Image loading, resize (stretch / letterbox), normalisation, layout; and the inverse mapping.

An image becomes a network input in four steps: load as H×W×3 uint8 RGB, resize to the input
size (stretch, or letterbox keeping the aspect ratio with padding placed top-left or centred),
convert to float with ``(x * scale - mean) / std`` in the model's channel order, and lay out as
NCHW or NHWC. :class:`Transform` remembers the resize so boxes and keypoints found in the
network input map back to original pixels.
"""
import os
import re
import warnings
from dataclasses import dataclass

import numpy as np

from .._validate import choice
from ..errors import DTypeError, EdgeDLError, ResourceError, ShapeError, ValidationError


def _pil():
    try:
        from PIL import Image
    except ImportError:   # pragma: no cover - Pillow is a runtime dependency
        from ..errors import MissingDependencyError
        raise MissingDependencyError("edgedl.detect needs Pillow (pip install Pillow)")
    return Image


def load_image(image, name="image"):
    """``image`` (a path, a PIL image or an array) as an H×W×3 uint8 RGB array.

    Arrays must be uint8, H×W (grey), H×W×1 (grey) or H×W×3 (RGB); grey becomes 3-channel.
    PIL images of any mode become RGB as cv2.imread would see them (alpha dropped); 16-bit
    grey (mode I;16, a 16-bit PNG) is scaled to 8 bits, as is 32-bit ``I`` holding values
    above 255, and float ``F`` in [0, 1] (larger values are taken as 0..255). A file above
    Pillow's decompression-bomb limit, or one whose pixels would exceed edgedl's memory
    limit, is a ResourceError naming the file and its size.
    """
    Image = _pil()
    if isinstance(image, (str, os.PathLike)):
        return _read_image(Image, os.fspath(image), name)
    if isinstance(image, Image.Image):
        return _pil_to_rgb(image, name)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise DTypeError(f"{name} must be a uint8 array (H×W×3 RGB), got dtype {image.dtype}")
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ShapeError(f"{name} must have shape (H, W, 3) RGB or (H, W) grey, "
                             f"got {image.shape}")
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ShapeError(f"{name} is empty (shape {image.shape})")
        return image
    raise ValidationError(f"{name} must be a file path, a PIL image or an H×W×3 uint8 array, "
                          f"got {type(image).__name__}")


def _read_image(Image, path, name):
    """Decode the file at ``path`` (its first frame) into H×W×3 uint8 RGB."""
    from PIL import ImageMode
    from .._memory import check_alloc, format_bytes
    if not os.path.exists(path):
        raise FileNotFoundError(f"{name}: no such file: {path}")
    try:
        with warnings.catch_warnings():
            # Pillow warns from 89 M pixels and refuses from 179 M; below its refusal the
            # memory guard decides (a 108 MP phone photo is a real image, not an attack)
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                m = ImageMode.getmode(im.mode)
                # decoded, one converted copy (wide grey), the RGB result
                per_pixel = 2 * np.dtype(m.typestr).itemsize * len(m.bands) + 3
                check_alloc(w * h * per_pixel, f"{name} {path} ({w}x{h} pixels, mode {im.mode})")
                im.load()
                return _pil_to_rgb(im, name)
    except Image.DecompressionBombError as e:
        pixels = re.search(r"\((\d+) pixels\)", str(e))
        size = (f"{int(pixels.group(1)):,} pixels ({format_bytes(int(pixels.group(1)) * 3)} "
                f"as RGB)" if pixels else "too many pixels")
        raise ResourceError(f"{name}: {path} ({os.path.getsize(path):,} bytes) has {size}, "
                            f"above Pillow's decompression-bomb limit of "
                            f"{2 * Image.MAX_IMAGE_PIXELS:,} pixels (PIL.Image.MAX_IMAGE_PIXELS"
                            f" x 2): refused") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        if isinstance(e, EdgeDLError):
            raise
        raise ValidationError(f"{name}: cannot read {path} as an image ({e})") from None


def _pil_to_rgb(im, name):
    """A PIL image of any mode -> H×W×3 uint8 RGB. Pillow's own convert("RGB") clips wider
    grey values at 255: a 16-bit PNG came out all white, a float image all black."""
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(im)
        if mode == "F":
            a = np.nan_to_num(a, nan=0.0, posinf=255.0, neginf=0.0)
            grey = np.rint(a * 255 if a.max(initial=0.0) <= 1 else a).clip(0, 255)
        elif mode == "I" and a.max(initial=0) <= 255:
            grey = a.clip(0, 255)                      # 8-bit values held in 32 bits
        else:                                          # 16-bit: round(v / 257), exactly
            grey = (a.clip(0, 65535).astype(np.uint32) + 128) // 257
        return np.repeat(grey.astype(np.uint8)[:, :, None], 3, axis=2)
    if mode != "RGB":
        try:
            im = im.convert("RGB")
        except ValueError as e:
            raise ValidationError(f"{name}: cannot convert a {mode} image to RGB ({e})") \
                from None
    return np.asarray(im)


@dataclass(frozen=True)
class Transform:
    """How an original image was mapped into the network input.

    input = original * scale + pad (per axis); ``width``/``height`` are the original size.
    """
    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float
    width: int
    height: int

    def boxes_to_original(self, boxes, clip=True):
        """xyxy boxes in network-input pixels -> original pixels (a new float32 array)."""
        b = np.array(boxes, dtype=np.float32, copy=True).reshape(-1, 4)
        b[:, 0::2] = (b[:, 0::2] - self.pad_x) / self.scale_x
        b[:, 1::2] = (b[:, 1::2] - self.pad_y) / self.scale_y
        if clip:
            np.clip(b[:, 0::2], 0, self.width, out=b[:, 0::2])
            np.clip(b[:, 1::2], 0, self.height, out=b[:, 1::2])
        return b

    def points_to_original(self, points):
        """(..., 2) x,y points in network-input pixels -> original pixels (not clipped)."""
        p = np.array(points, dtype=np.float32, copy=True)
        p[..., 0] = (p[..., 0] - self.pad_x) / self.scale_x
        p[..., 1] = (p[..., 1] - self.pad_y) / self.scale_y
        return p


def _geometry(h0, w0, width, height, mode, placement):
    """(nw, nh, px, py): size and top-left corner of the resized image inside the input."""
    choice(mode, "resize", ("stretch", "letterbox"))
    choice(placement, "placement", ("topleft", "center"))
    if mode == "stretch":
        return width, height, 0, 0
    r = min(width / w0, height / h0)
    nw, nh = max(1, min(width, round(w0 * r))), max(1, min(height, round(h0 * r)))
    px, py = (0, 0) if placement == "topleft" else ((width - nw) // 2, (height - nh) // 2)
    return nw, nh, px, py


_PLANS = {}       # (h0, w0, nh, nw, dtype) -> resize tables (a camera sends one size)


def _plan(h0, w0, nh, nw, dtype):
    """Bilinear tables of an (h0, w0) -> (nh, nw) resize, half-pixel centres, edge-clamped:
    what cv2.resize(..., INTER_LINEAR) computes (no antialiasing filter).

    Returns (rows, cols, ih, wh, iw, ww): ``rows``/``cols`` are the source rows / columns the
    taps touch (None when that is all of them; a big photo shrunk to 320 px needs few), and
    ``ih``/``iw`` index into that gathered sub-image.
    """
    key = (h0, w0, nh, nw, np.dtype(dtype).str)
    hit = _PLANS.get(key)
    if hit is None:
        from ..kernels.resize import linear_taps
        tabs = []
        for n_out, n_in in ((nh, h0), (nw, w0)):
            # coordinates in float64 (the kernel's float32 ONNX ones are off by ~1e-5 px)
            xs = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
            idx, wt = linear_taps(xs, n_in)
            used = np.unique(idx)
            if len(used) < n_in:
                idx = np.searchsorted(used, idx)
            else:
                used = None
            tabs.append((used, np.ascontiguousarray(idx, np.int64),
                         np.ascontiguousarray(wt, dtype)))
        (rows, ih, wh), (cols, iw, ww) = tabs
        hit = (rows, cols, ih, wh, iw, ww)
        if len(_PLANS) >= 64:
            _PLANS.clear()
        _PLANS[key] = hit
    return hit


def _border(x, nchw, px, py, nw, nh, values):
    """Fill everything of input ``x`` (1, C, H, W) or (1, H, W, C) outside the placed image."""
    for c, v in enumerate(values):
        ch = x[0, c] if nchw else x[0, :, :, c]
        ch[:py] = v
        ch[py + nh:] = v
        ch[py:py + nh, :px] = v
        ch[py:py + nh, px + nw:] = v


def to_input(image, width, height, resize_mode="stretch", placement="topleft", pad_value=0,
             channel_order="rgb", scale=1.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
             layout="nchw", dtype=np.float32, out=None, backend=None):
    """H×W×3 uint8 RGB image -> network input with batch axis, and its :class:`Transform`.

    Resize (stretch or letterbox, bilinear with half-pixel centres like cv2.resize
    INTER_LINEAR) and ``(x * scale - mean) / std`` in ``channel_order`` and ``layout``, in one
    pass of the ``resize_linear_u8`` kernel from the uint8 pixels (of a big photo only the rows
    and columns the taps touch are gathered first) into the input tensor; letterbox padding
    writes only the border.
    ``out`` (the right shape and dtype) is written and returned instead of a new array.
    """
    choice(channel_order, "channel_order", ("rgb", "bgr"))
    choice(layout, "layout", ("nchw", "nhwc"))
    a, b = _affine(scale, mean, std)
    h0, w0 = image.shape[:2]
    nw, nh, px, py = _geometry(h0, w0, width, height, resize_mode, placement)
    dtype = np.dtype(dtype)
    nchw = layout == "nchw"
    shape = (1, 3, height, width) if nchw else (1, height, width, 3)
    if out is None:
        out = np.empty(shape, dtype)
    elif out.shape != shape or out.dtype != dtype:
        raise ShapeError(f"out must be a {dtype} array of shape {shape}, got {out.dtype} "
                         f"{out.shape}")
    order = np.array([2, 1, 0] if channel_order == "bgr" else [0, 1, 2], np.int64)
    # the placed image, as a (C, nh, nw) view of out
    region = (out[0, :, py:py + nh, px:px + nw] if nchw else
              out[0, py:py + nh, px:px + nw].transpose(2, 0, 1))
    rows, cols, ih, wh, iw, ww = _plan(h0, w0, nh, nw, dtype)
    src = image if rows is None else image[rows]
    src = np.ascontiguousarray(src if cols is None else src[:, cols])
    from ..kernels.resize import resize_linear_u8
    resize_linear_u8(src, ih, wh, iw, ww, order, a.astype(dtype), b.astype(dtype), region,
                     backend=backend)
    if (nw, nh) != (width, height):
        pad = np.broadcast_to(np.asarray(pad_value, np.float64).clip(0, 255).round(), (3,))
        _border(out, nchw, px, py, nw, nh, (pad[order] * a + b).astype(dtype))
    return out, Transform(nw / w0, nh / h0, float(px), float(py), int(w0), int(h0))


def resize(image, width, height, mode="stretch", placement="topleft", pad_value=0):
    """Resize an H×W×3 uint8 image to ``height``×``width``; returns (uint8 array, Transform).

    ``mode="letterbox"`` keeps the aspect ratio and pads the rest with ``pad_value``, the image
    placed at the top-left corner or centred (``placement="center"``). Bilinear with half-pixel
    centres, rounded to uint8 (as cv2.resize INTER_LINEAR; :func:`to_input` is the same
    without the rounding).
    """
    h0, w0 = image.shape[:2]
    nw, nh, px, py = _geometry(h0, w0, width, height, mode, placement)
    if (nw, nh) == (w0, h0) == (width, height):
        return image, Transform(1.0, 1.0, 0.0, 0.0, int(w0), int(h0))
    x, t = to_input(image, width, height, mode, placement, pad_value, layout="nhwc")
    return np.clip(np.rint(x[0]), 0, 255).astype(np.uint8), t


def _affine(scale, mean, std):
    """(a, b) float64 (3,): ``(x * scale - mean) / std == x * a + b``, per channel."""
    mean = np.asarray(mean, np.float64).reshape(-1)
    std = np.asarray(std, np.float64).reshape(-1)
    if mean.size not in (1, 3) or std.size not in (1, 3):
        raise ValidationError(f"mean and std must have 1 or 3 values, got {mean.size} and "
                              f"{std.size}")
    if np.any(std == 0):
        raise ValidationError(f"std must not contain 0, got {std.tolist()}")
    return (np.broadcast_to(scale / std, (3,)).astype(np.float64),
            np.broadcast_to(-mean / std, (3,)).astype(np.float64))


def normalize(image, channel_order="rgb", scale=1.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
              layout="nchw", dtype=np.float32):
    """uint8 H×W×3 RGB -> float ``(x * scale - mean) / std`` in ``channel_order``, with a batch
    axis: (1, 3, H, W) for ``layout="nchw"``, (1, H, W, 3) for ``"nhwc"``.

    ``mean``/``std`` are given in the model's channel order.
    """
    choice(channel_order, "channel_order", ("rgb", "bgr"))
    choice(layout, "layout", ("nchw", "nhwc"))
    a, b = _affine(scale, mean, std)
    src = image[:, :, ::-1] if channel_order == "bgr" else image
    # one affine per channel: x * a + b with a = scale / std, b = -mean / std
    a, b = a.astype(dtype), b.astype(dtype)
    if layout == "nchw":
        x = np.empty((1, 3) + image.shape[:2], dtype)
        for c in range(3):
            np.multiply(src[:, :, c], a[c], out=x[0, c], casting="unsafe")
            if b[c]:
                x[0, c] += b[c]
    else:
        x = np.empty((1,) + image.shape[:2] + (3,), dtype)
        np.multiply(src, a, out=x[0], casting="unsafe")
        if b.any():
            x[0] += b
    return x


def preprocess(image, width, height, resize_mode="stretch", placement="topleft", pad_value=0,
               channel_order="rgb", scale=1.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
               layout="nchw", dtype=np.float32):
    """Load, resize and normalise one image: returns (input tensor with batch axis, Transform)."""
    return to_input(load_image(image), width, height, resize_mode, placement, pad_value,
                    channel_order, scale, mean, std, layout, dtype)
