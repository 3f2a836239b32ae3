"""Draw detections on an image with Pillow: boxes, class names with scores, keypoints.

Labels are placed so that none overlaps another label or leaves the image (the first free
spot of: above the box, inside its top, below it, inside its bottom, then sliding down);
line width and font grow with the image; a class keeps its colour across runs and images.
"""
import numpy as np

from .preprocess import _pil, load_image

# a colour per class id (cycled): well separated, readable on photos
PALETTE = [(255, 56, 56), (56, 168, 255), (72, 249, 10), (255, 157, 151), (255, 178, 29),
           (207, 210, 49), (146, 204, 23), (61, 219, 134), (26, 147, 52), (0, 212, 187),
           (44, 153, 168), (0, 194, 255), (52, 69, 147), (100, 115, 255), (0, 24, 236),
           (132, 56, 255), (82, 0, 133), (203, 56, 255), (255, 149, 200), (255, 55, 199)]
KEYPOINT_COLORS = [(255, 0, 0), (0, 0, 255), (0, 255, 0), (255, 0, 255), (0, 255, 255)]


def _overlaps(r, placed):
    x1, y1, x2, y2 = r
    return any(x1 < b[2] and b[0] < x2 and y1 < b[3] and b[1] < y2 for b in placed)


def layout_labels(boxes, sizes, width, height):
    """Top-left corners of label rectangles of ``sizes`` (w, h) for xyxy ``boxes``, in order
    (place the most important first): inside the image, not overlapping each other when
    the image has room."""
    placed, corners = [], []
    for (x1, y1, x2, y2), (tw, th) in zip(boxes, sizes):
        x = min(max(0, int(x1)), max(0, width - tw))
        ys = [y1 - th, y1, y2, y2 - th]
        ys += list(range(0, max(1, height - th + 1), max(1, th)))     # then anywhere free
        xs = [x, min(max(0, int(x2) - tw), max(0, width - tw))]
        xs += list(range(0, max(1, width - tw + 1), max(1, tw // 2)))
        spot = None
        for y in ys:
            y = min(max(0, int(y)), max(0, height - th))
            for xx in xs:
                r = (xx, y, xx + tw, y + th)
                if not _overlaps(r, placed):
                    spot = r
                    break
            if spot:
                break
        if spot is None:                     # no free room: above the box, as before
            y = min(max(0, int(y1 - th)), max(0, height - th))
            spot = (x, y, x + tw, y + th)
        placed.append(spot)
        corners.append(spot[:2])
    return corners


def _font(size):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)
    except TypeError:          # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def draw_detections(image, detections, line_width=None, show_scores=True):
    """A new RGB PIL image: ``image`` (path, PIL image or array) with ``detections`` drawn."""
    Image = _pil()
    from PIL import ImageDraw
    im = Image.fromarray(load_image(image)).copy()
    draw = ImageDraw.Draw(im)
    lw = line_width or max(2, round(0.003 * (im.width + im.height)))
    labels = detections.labels or [str(c) for c in detections.class_ids]
    order = np.argsort(-np.asarray(detections.scores), kind="stable")   # best first
    colors = [PALETTE[int(c) % len(PALETTE)] for c in detections.class_ids]
    for i in order[::-1]:                                  # boxes: best drawn last, on top
        x1, y1, x2, y2 = (float(v) for v in detections.boxes[i])
        draw.rectangle([x1, y1, x2, y2], outline=colors[i], width=lw)
        if detections.keypoints is not None:
            r = max(2, lw)
            for k, (px, py) in enumerate(detections.keypoints[i]):
                c = KEYPOINT_COLORS[k % len(KEYPOINT_COLORS)]
                draw.ellipse([px - r, py - r, px + r, py + r], fill=c)
    texts, sizes, fonts = [], [], []
    for i in order:
        text = f"{labels[i]} {detections.scores[i]:.2f}" if show_scores else labels[i]
        size = max(11, 6 * lw)
        while True:                         # smaller type for a label wider than the image
            font = _font(size)
            l, t, r, b = draw.textbbox((0, 0), text, font=font)
            if r - l + 2 * lw <= im.width or size <= 8:
                break
            size -= 2
        texts.append((text, l, t))
        fonts.append(font)
        sizes.append((r - l + 2 * lw, b - t + 2 * lw))
    corners = layout_labels([detections.boxes[i] for i in order], sizes, im.width, im.height)
    for i, (text, l, t), font, (tw, th), (x, y) in zip(order, texts, fonts, sizes, corners):
        draw.rectangle([x, y, x + tw - 1, y + th - 1], fill=colors[i])
        draw.text((x + lw - l, y + lw - t), text, fill=(255, 255, 255), font=font)
    return im
