"""Video files and cameras through PyAV (the optional extra ``edgedl[video]``): frames in as
H×W×3 uint8 RGB, an annotated video out. No OpenCV.

>>> for index, frame, fps in read_frames("clip.mp4", stride=5): ...
>>> with VideoWriter("out.mp4", fps=25) as w: w.write(rgb_array)
"""
import os
import re
import sys

from ..errors import MissingDependencyError, ValidationError

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg",
                              ".mpeg", ".wmv", ".flv", ".ts", ".3gp", ".ogv", ".asf"})


def _av():
    try:
        import av
    except ImportError:
        raise MissingDependencyError("reading or writing video and cameras needs PyAV: "
                                     "pip install 'edgedl[video]'") from None
    return av


def is_video(path):
    """Whether ``path`` names a video file (by its extension)."""
    return os.path.splitext(os.fspath(path))[1].lower() in VIDEO_EXTENSIONS


def camera_device(spec):
    """The device of a camera source (``"0"`` -> ``/dev/video0`` on Linux, a ``/dev/video*``
    path as is), or None when ``spec`` names no camera."""
    spec = os.fspath(spec)
    if re.fullmatch(r"\d{1,3}", spec):
        return f"/dev/video{int(spec)}" if sys.platform.startswith("linux") else spec
    if re.fullmatch(r"/dev/video\d+", spec):
        return spec
    return None


def _open(source, camera=False):
    av = _av()
    if camera:
        fmt = {"darwin": "avfoundation", "win32": "dshow"}.get(sys.platform, "v4l2")
        if fmt == "v4l2" and not os.path.exists(source):
            raise FileNotFoundError(f"camera {source}: no such device")
        try:
            return av.open(source, format=fmt)
        except av.FFmpegError as e:
            raise ValidationError(f"camera {source}: cannot open ({_reason(e)})") from None
    if not os.path.exists(source):
        raise FileNotFoundError(f"video: no such file: {source}")
    try:
        return av.open(source)
    except av.FFmpegError as e:
        raise ValidationError(f"cannot read {source} as a video ({_reason(e)})") from None


def _reason(e):
    return getattr(e, "strerror", None) or str(e).splitlines()[0]


def frame_count(source):
    """The number of frames the file declares (0 when unknown: streams, some containers)."""
    try:
        with _open(source) as c:
            return int(c.streams.video[0].frames) if c.streams.video else 0
    except Exception:                  # only a hint for the progress bar
        return 0


def read_frames(source, stride=1, camera=False):
    """Yield (frame index, H×W×3 uint8 RGB array, frames per second) of every ``stride``-th
    frame of a video file or camera device. A file that cannot be opened or has no video
    stream is a ValidationError naming it; damage found mid-file ends the frames with a
    ValidationError naming the file and the frame."""
    av = _av()
    if stride < 1:
        raise ValidationError(f"stride must be an integer >= 1, got {stride}")
    container = _open(source, camera)
    with container:
        if not container.streams.video:
            raise ValidationError(f"{source} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"            # frame threads: decoding overlaps inference
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        index = -1
        try:
            for frame in container.decode(stream):
                index += 1
                if index % stride == 0:
                    yield index, frame.to_ndarray(format="rgb24"), fps
        except av.FFmpegError as e:
            raise ValidationError(f"{source}: cannot decode frame {index + 1} "
                                  f"({_reason(e)})") from None


class VideoWriter:
    """An annotated video written under a temporary name and renamed into place by
    :meth:`close` (an interrupted run leaves no half-written file). H.264 (libx264) when
    FFmpeg has it, else MPEG-4 part 2; odd sizes lose their last row / column (4:2:0 needs
    even sizes)."""

    def __init__(self, path, fps=25.0):
        self.av = _av()
        self.path = path
        folder = os.path.dirname(path) or "."
        os.makedirs(folder, exist_ok=True)
        ext = os.path.splitext(path)[1]
        self.tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.{id(self):x}"
                                        f".tmp{ext}")
        self.fps = fps
        self.container = self.stream = None

    def _start(self, width, height):
        from fractions import Fraction
        self.container = self.av.open(self.tmp, mode="w")
        codecs = self.av.codecs_available
        name = "libx264" if "libx264" in codecs else "mpeg4"
        self.stream = self.container.add_stream(
            name, rate=Fraction(self.fps).limit_denominator(1001))
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = "yuv420p"

    def write(self, image):
        """Append one H×W×3 uint8 RGB frame (a NumPy array or PIL image)."""
        import numpy as np
        a = np.asarray(image)
        if self.stream is None:
            self._start(a.shape[1] & ~1, a.shape[0] & ~1)
        a = np.ascontiguousarray(a[:self.stream.height, :self.stream.width])
        frame = self.av.VideoFrame.from_ndarray(a, format="rgb24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self):
        """Flush the encoder and rename the file into place (nothing written: no file)."""
        if self.container is None:
            return
        try:
            for packet in self.stream.encode():
                self.container.mux(packet)
            self.container.close()
            self.container = None
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self):
        """Drop the partial file."""
        if self.container is not None:
            try:
                self.container.close()
            except Exception:
                pass
            self.container = None
        try:
            os.unlink(self.tmp)
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        if kind is None:
            self.close()
        else:
            self.abort()
