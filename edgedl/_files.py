"""Output files of a detection run (edgedl detect and edgedl.batch): the annotated image's
path of each input, and atomic saves."""
import os

_KEEP_EXT = (".jpg", ".jpeg", ".png")


def file_key(path):
    """What two spellings of one file have in common (symlinked folders, case on
    case-insensitive file systems)."""
    return os.path.normcase(os.path.realpath(path)).lower()


def output_paths(inputs, out_dir, protect=()):
    """The annotated image's path of each input: under ``out_dir``, the inputs' folders
    mirrored below their common folder (a/x.jpg and b/x.jpg -> out/a/, out/b/), named
    ``<stem>_detections<ext>``; an extension other than jpg / png stays in the name
    (x.gif -> x_gif_detections.png). Never the path of an input (nor of ``protect``), never
    one path twice: a clash takes -2, -3, ... in input order."""
    dirs = [os.path.dirname(os.path.abspath(p)) for p in inputs]
    try:
        root = os.path.commonpath(dirs)
    except ValueError:                 # nothing in common (another drive): flat names
        root = None
    taken = {file_key(p) for p in list(inputs) + list(protect)}
    paths = []
    for path, folder in zip(inputs, dirs):
        stem, ext = os.path.splitext(os.path.basename(path))
        if ext.lower() in _KEEP_EXT:
            ext = ext.lower()
        else:
            stem, ext = (f"{stem}_{ext[1:].lower()}" if ext else stem), ".png"
        sub = os.path.relpath(folder, root) if root else "."
        base = os.path.normpath(os.path.join(out_dir, sub, f"{stem}_detections"))
        cand, k = base + ext, 1
        while file_key(cand) in taken:
            k += 1
            cand = f"{base}-{k}{ext}"
        taken.add(file_key(cand))
        paths.append(cand)
    return paths


def write_atomic(path, write, tag=""):
    """Call ``write(f)`` on a new temporary file beside ``path``, then rename it over
    ``path``: no reader ever sees a half-written file, and an interrupted run leaves no
    damaged one (the rename also replaces a link rather than writing through it). ``tag``
    keeps the temporary names of concurrent writers in one process apart."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}{tag}.tmp")
    try:
        with open(tmp, "xb") as f:     # new file, created with the user's umask
            write(f)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def save_atomic(image, path):
    """Save a PIL image atomically (see write_atomic) in the format its extension names.
    PNG at zlib level 1: level 6 (Pillow's default) took ~100-200 ms per 512x512 photo, the
    bottleneck of a folder run, for files only ~10 % smaller."""
    from PIL import Image
    fmt = Image.registered_extensions()[os.path.splitext(path)[1].lower()]
    opts = {"compress_level": 1} if fmt == "PNG" else {}
    write_atomic(path, lambda f: image.save(f, format=fmt, **opts), f".{id(image):x}")
