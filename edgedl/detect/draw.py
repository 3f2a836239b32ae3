"""Draw detections on an image with Pillow: boxes, class names with scores, keypoints."""
import numpy as np

from .preprocess import _pil, load_image

# a colour per class id (cycled): well separated, readable on photos
PALETTE = [(255, 56, 56), (56, 168, 255), (72, 249, 10), (255, 157, 151), (255, 178, 29),
           (207, 210, 49), (146, 204, 23), (61, 219, 134), (26, 147, 52), (0, 212, 187),
           (44, 153, 168), (0, 194, 255), (52, 69, 147), (100, 115, 255), (0, 24, 236),
           (132, 56, 255), (82, 0, 133), (203, 56, 255), (255, 149, 200), (255, 55, 199)]
KEYPOINT_COLORS = [(255, 0, 0), (0, 0, 255), (0, 255, 0), (255, 0, 255), (0, 255, 255)]


def draw_detections(image, detections, line_width=None, show_scores=True):
    """A new RGB PIL image: ``image`` (path, PIL image or array) with ``detections`` drawn."""
    Image = _pil()
    from PIL import ImageDraw, ImageFont
    im = Image.fromarray(load_image(image)).copy()
    draw = ImageDraw.Draw(im)
    lw = line_width or max(2, round(0.003 * (im.width + im.height)))
    try:
        font = ImageFont.load_default(size=max(11, 6 * lw))
    except TypeError:          # Pillow < 10.1: fixed-size bitmap font
        font = ImageFont.load_default()
    labels = detections.labels or [str(c) for c in detections.class_ids]
    for i in np.argsort(detections.scores, kind="stable"):      # best drawn last, on top
        x1, y1, x2, y2 = (float(v) for v in detections.boxes[i])
        color = PALETTE[int(detections.class_ids[i]) % len(PALETTE)]
        draw.rectangle([x1, y1, x2, y2], outline=color, width=lw)
        text = f"{labels[i]} {detections.scores[i]:.2f}" if show_scores else labels[i]
        l, t, r, b = draw.textbbox((0, 0), text, font=font)
        tw, th = r - l, b - t + 2 * lw
        ty = y1 - th if y1 - th >= 0 else y1
        draw.rectangle([x1, ty, x1 + tw + 2 * lw, ty + th], fill=color)
        draw.text((x1 + lw, ty + lw - t), text, fill=(255, 255, 255), font=font)
        if detections.keypoints is not None:
            r = max(2, lw)
            for k, (px, py) in enumerate(detections.keypoints[i]):
                c = KEYPOINT_COLORS[k % len(KEYPOINT_COLORS)]
                draw.ellipse([px - r, py - r, px + r, py + r], fill=c)
    return im
