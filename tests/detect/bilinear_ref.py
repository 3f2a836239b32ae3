"""cv2.resize INTER_LINEAR written out in float64: the reference preprocessing of the detect
tests (the models' own inference scripts resize with cv2, and so does edgedl)."""
import numpy as np


def bilinear(img, w, h):
    """cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR) without its rounding to uint8:
    half-pixel centres, source coordinates clamped to the image, no antialiasing. The models'
    own inference scripts resize with cv2 (FastestDet, YOLOX, YuNet via OpenCV, UltraFace),
    and so does edgedl; float64 here, so the input matches edgedl's to float32 precision."""
    h0, w0 = img.shape[:2]

    def taps(n_out, n_in):
        x = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
        i0 = np.floor(x).astype(np.int64)
        return i0, np.minimum(i0 + 1, n_in - 1), x - i0

    y0, y1, ty = taps(h, h0)
    x0, x1, tx = taps(w, w0)
    f = img.astype(np.float64)
    rows = f[y0] * (1 - ty)[:, None, None] + f[y1] * ty[:, None, None]
    return rows[:, x0] * (1 - tx)[None, :, None] + rows[:, x1] * tx[None, :, None]
