"""Decode, crop and resize one image file to uint8: an OpenCV backend and the plain-PIL fallback.

A backend turns an encoded file (bytes) or a decoded uint8 array `[H, W, C]` into a handle
(`decode`), tells its size (`size`) and resamples an integer box of it to `S x S`, optionally
mirrored (`crop_resize`, uint8 `[S, S, C]`). Both resample with PIL's antialiased filters: PIL itself, or OpenCV with the
filter PIL uses when shrinking (the bicubic / triangle kernel stretched by the scale factor) applied
with `sepFilter2D` before an unfiltered `resize`. On real photographs the OpenCV output differs from
PIL's by ~0.4/255 on average (bicubic; bound tested: <= 1/255) at about a quarter of the cost, and
OpenCV's JPEG decode is ~30% cheaper than PIL's (benchmarks/RESULTS.md).

Boxes are integer `(y0, x0, y1, x1)` pixel edges (see `transforms.snap_boxes`): OpenCV resizes
whole-pixel crops only, and both backends see the same crop.
"""

from __future__ import annotations

import functools
import io
import logging
import warnings

import numpy as np
from PIL import Image

_PIL_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
_PIL_MODE = {1: "L", 3: "RGB"}


class PilBackend:
    """PIL decode + `Image.resize(box=...)`: the reference, and the fallback without OpenCV."""

    name = "pil"

    def __init__(self, channels: int, interpolation: str):
        self.mode, self.resample = _PIL_MODE[channels], _PIL_RESAMPLE[interpolation]

    def decode(self, data: bytes | np.ndarray) -> Image.Image:
        """Encoded file or uint8 [H, W, C] -> PIL image in this backend's mode. Raises on bad data."""
        if isinstance(data, np.ndarray):
            return Image.fromarray(data[..., 0] if data.shape[-1] == 1 else data).convert(self.mode)
        with Image.open(io.BytesIO(data)) as img:
            return img.convert(self.mode)

    @staticmethod
    def size(img: Image.Image) -> tuple[int, int]:
        return img.height, img.width

    def crop_resize(self, img: Image.Image, box: np.ndarray, size: int, flip: bool = False) -> np.ndarray:
        """box: int (y0, x0, y1, x1) -> uint8 [S, S, C], mirrored left-right if flip."""
        y0, x0, y1, x1 = (int(v) for v in box)
        out = img.resize((size, size), self.resample, box=(x0, y0, x1, y1))
        if flip:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return np.asarray(out).reshape(size, size, -1)


class OpenCvBackend:
    """`cv2.imdecode` + antialiasing `sepFilter2D` + `cv2.resize` (PIL's fallback for other formats)."""

    name = "opencv"

    def __init__(self, channels: int, interpolation: str):
        import cv2  # pylint: disable=g-import-not-at-top  # optional dependency.

        self.cv2, self.channels, self.interpolation = cv2, channels, interpolation
        color = getattr(cv2, "IMREAD_COLOR_RGB", None)
        self.rgb_flag = color is not None
        self.flags = (cv2.IMREAD_GRAYSCALE if channels == 1 else (color or cv2.IMREAD_COLOR)) | (
            cv2.IMREAD_IGNORE_ORIENTATION  # As PIL: pixels as stored, EXIF orientation not applied.
        )
        self.resize_flag = cv2.INTER_CUBIC if interpolation == "bicubic" else cv2.INTER_LINEAR
        self.fallback = PilBackend(channels, interpolation)

    def __getstate__(self):  # Picklable for grain worker processes (a module is not).
        return self.channels, self.interpolation

    def __setstate__(self, state):
        self.__init__(*state)

    def decode(self, data: bytes | np.ndarray) -> np.ndarray:
        """Encoded file or uint8 [H, W, C] -> uint8 [H, W, channels]. Raises on bad data."""
        if isinstance(data, np.ndarray):
            return _to_channels(data, self.channels)
        image = self.cv2.imdecode(np.frombuffer(data, np.uint8), self.flags)
        if image is None:  # A format OpenCV does not read (e.g. some GIF/TIFF): let PIL try.
            img = self.fallback.decode(data)
            return np.asarray(img).reshape(img.height, img.width, self.channels)
        if self.channels == 3 and not self.rgb_flag:
            image = self.cv2.cvtColor(image, self.cv2.COLOR_BGR2RGB)
        return image.reshape(image.shape[0], image.shape[1], self.channels)

    @staticmethod
    def size(image: np.ndarray) -> tuple[int, int]:
        return image.shape[0], image.shape[1]

    def crop_resize(self, image: np.ndarray, box: np.ndarray, size: int, flip: bool = False) -> np.ndarray:
        """box: int (y0, x0, y1, x1) -> uint8 [S, S, C], mirrored left-right if flip."""
        y0, x0, y1, x1 = (int(v) for v in box)
        # Filter a margin around the crop too, so its edges see real neighbours (as PIL's do).
        scale_y, scale_x = (y1 - y0) / size, (x1 - x0) / size
        pad_y, pad_x = _margin(scale_y), _margin(scale_x)
        top, left = max(y0 - pad_y, 0), max(x0 - pad_x, 0)
        crop = image[top : y1 + pad_y, left : x1 + pad_x]
        if scale_y > 1 or scale_x > 1:
            crop = self.cv2.sepFilter2D(
                crop,
                -1,
                _kernel(self.interpolation, scale_x),
                _kernel(self.interpolation, scale_y),
                borderType=self.cv2.BORDER_REPLICATE,
            )
        crop = crop[y0 - top : y1 - top, x0 - left : x1 - left]
        out = self.cv2.resize(crop, (size, size), interpolation=self.resize_flag)
        if flip:
            out = self.cv2.flip(out, 1)  # ~15x faster than a NumPy reversed copy of [S, S, 3] uint8.
        return out.reshape(size, size, self.channels)


def _margin(scale: float) -> int:
    return int(np.ceil(2 * scale)) if scale > 1 else 0


@functools.lru_cache(maxsize=4096)
def _kernel_cached(interpolation: str, scale_milli: int) -> np.ndarray:
    scale = scale_milli / 1000
    support = 2.0 if interpolation == "bicubic" else 1.0
    radius = int(np.ceil(support * scale))
    x = np.abs(np.arange(-radius, radius + 1) / scale)
    if interpolation == "bicubic":  # PIL's bicubic, a = -0.5.
        a = -0.5
        k = np.where(
            x < 1,
            ((a + 2) * x - (a + 3)) * x * x + 1,
            np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0),
        )
    else:
        k = np.maximum(1 - x, 0.0)
    return (k / k.sum()).astype(np.float32)


def _kernel(interpolation: str, scale: float) -> np.ndarray:
    """PIL's filter stretched by the shrink factor `scale` (> 1: antialiasing), or the identity."""
    if scale <= 1:
        return np.ones(1, np.float32)
    return _kernel_cached(interpolation, int(round(scale * 1000)))


def _to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """uint8 [H, W], [H, W, 1] or [H, W, 3] -> [H, W, channels] (gray repeated, RGB to luma)."""
    image = np.asarray(image, np.uint8)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == channels:
        return image
    if image.shape[-1] == 1:
        return np.repeat(image, channels, axis=-1)
    rgb = np.ascontiguousarray(image[..., :3])  # RGBA: alpha dropped, as PIL's convert("RGB").
    return rgb if channels == 3 else np.asarray(Image.fromarray(rgb).convert("L"))[..., None]


def opencv_available() -> bool:
    try:
        import cv2  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import
    except ImportError:
        return False
    return True


def make_backend(name: str, channels: int, interpolation: str) -> PilBackend | OpenCvBackend:
    """The backend `name` ("auto" | "opencv" | "pil") for `channels` (1 or 3) and `interpolation`."""
    if name == "auto":
        name = "opencv" if opencv_available() else "pil"
        if name == "pil":  # a warning: Python shows it once per process
            warnings.warn("data.image_backend='auto' decodes with PIL: OpenCV is not installed (pip install "
                          "opencv-python-headless for faster decoding; data.image_backend='pil' says PIL on purpose).",
                          stacklevel=2)
    if name == "opencv":
        if not opencv_available():
            raise ImportError(
                "data.image_backend='opencv' needs OpenCV: pip install opencv-python-headless (see "
                "requirements.txt), or set data.image_backend='pil'."
            )
        return OpenCvBackend(channels, interpolation)
    if name == "pil":
        return PilBackend(channels, interpolation)
    raise ValueError(f"Unknown image backend {name!r}; use 'auto', 'opencv' or 'pil'.")


def decode_or_none(backend, data, record: str):
    """backend.decode(data), or None (logged) when the file is unreadable."""
    if data is None:
        return None
    try:
        return backend.decode(data)
    except Exception as e:  # pylint: disable=broad-except  # PIL/OpenCV raise many types on bad files.
        logging.warning("Could not decode %s (%s); masking it out of its batch.", record, e)
        return None
