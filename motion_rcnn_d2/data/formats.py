"""Reading and writing the image, depth and flow files of the motion data sets.

Every function takes a path and works on numpy arrays; every error names the file.
Files are decoded with OpenCV (16-bit PNG, JPEG, Middlebury ``.flo``). Before
decoding, a PNG must end with its ``IEND`` chunk and a JPEG with its ``EOI`` marker:
OpenCV decodes a truncated JPEG (and some truncated PNGs) silently into a partly
grey picture, which would otherwise pass as data. A PNG with damaged data fails its
chunk checksums (decoding error). A JPEG has no checksum: libjpeg reports damaged
entropy-coded data only as a warning on stderr ("Corrupt JPEG data: ...") and returns
a garbled picture, so that message is captured during decoding and raised as an error;
damage that still decodes as valid JPEG data cannot be detected by any reader.

Encodings (``f`` a flow component in pixels, ``d`` a depth in metres):

- depth PNG (Virtual KITTI 1.3.1 / 2, synthetic world): uint16, value = round(d * 100)
  (centimetres); value 0 and the sky value 65535 are invalid and read as depth 0.
- Virtual KITTI flow PNG: uint16, 3 channels stored B, G, R = (valid flag, v, u) with
  value = (f / (size - 1) + 1) * (2^16 - 1) / 2, size = W for u and H for v;
  B = 0 marks invalid pixels (written as 1 where valid; any non-zero B reads valid).
- KITTI 2015 flow PNG: uint16 R, G, B = (u, v, valid) with value = f * 64 + 2^15.
- KITTI 2015 disparity PNG: uint16, disparity = value / 256 px, 0 = invalid.

Every writer writes to a temporary name beside the target and renames it (os.replace): a reader
never sees a half-written file.
- instance / object map PNG (Virtual KITTI 2 ``instancegt``, KITTI 2015 ``obj_map``):
  one channel, 8 or 16 bit, or 8-bit palette (read as palette indices, through Pillow,
  because OpenCV turns palette images into colours).
- Middlebury ``.flo``: float32 (u, v), through ``cv2.readOpticalFlow`` /
  ``cv2.writeOpticalFlow``.
"""
import io
import os
import sys
import tempfile

import cv2
import numpy as np
from PIL import Image

from ..utils.files import write_atomically

__all__ = [
    "DataFormatError",
    "read_image",
    "read_depth_png",
    "write_depth_png",
    "read_vkitti_flow_png",
    "write_vkitti_flow_png",
    "read_kitti_flow_png",
    "write_kitti_flow_png",
    "read_flo",
    "write_flo",
    "read_kitti_disparity_png",
    "read_kitti_depth_png",
    "write_kitti_disparity_png",
    "read_instance_png",
]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"
_JPEG_START = b"\xff\xd8"
_JPEG_END = b"\xff\xd9"
_U16_MAX = 65535
_KITTI_OFFSET = 2.0**15
_KITTI_SCALE = 64.0


class DataFormatError(ValueError):
    """A data file is corrupt, truncated, or not in the expected format."""


def _read_bytes(path):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"File not found: '{path}'. Check the data set root and layout.")
    with open(path, "rb") as f:
        return f.read()


def _check_complete(path, data):
    """Raise DataFormatError for an empty, truncated or unknown PNG/JPEG byte string."""
    if data.startswith(_PNG_SIGNATURE):
        if not data.rstrip(b"\x00").endswith(_PNG_END):
            raise DataFormatError(f"Truncated PNG file '{path}' (no IEND chunk at its end).")
    elif data.startswith(_JPEG_START):
        if not data.rstrip(b"\x00").endswith(_JPEG_END):
            raise DataFormatError(f"Truncated JPEG file '{path}' (no end-of-image marker).")
    else:
        raise DataFormatError(
            f"'{path}' is neither a PNG nor a JPEG file ({len(data)} bytes; corrupt or wrong file)."
        )


def _decode(path, flags):
    """Read a PNG or JPEG with cv2 ``flags``; errors name ``path``."""
    data = _read_bytes(path)
    _check_complete(path, data)
    buffer = np.frombuffer(data, dtype=np.uint8)
    if data.startswith(_JPEG_START):
        array, messages = _imdecode_capturing_stderr(buffer, flags)
        corrupt = [m for m in messages if m.startswith(_LIBJPEG_CORRUPT)]
        if corrupt:
            raise DataFormatError(f"Corrupt JPEG file '{path}' (libjpeg: {corrupt[0]}).")
        for message in messages:  # anything else libjpeg/OpenCV said goes where it was going
            print(message, file=sys.stderr)
    else:
        array = cv2.imdecode(buffer, flags)
    if array is None:
        raise DataFormatError(f"Could not decode image file '{path}' (corrupt data).")
    return array


_LIBJPEG_CORRUPT = ("Corrupt JPEG data", "Premature end of JPEG file")


def _imdecode_capturing_stderr(buffer, flags):
    """cv2.imdecode, and the lines written to the stderr file descriptor meanwhile (libjpeg's
    warnings). Not thread-safe: another thread's stderr output during the call is captured."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr descriptor: nothing to capture
        return cv2.imdecode(buffer, flags), []
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            array = cv2.imdecode(buffer, flags)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        text = capture.read().decode(errors="replace")
    return array, [line.strip() for line in text.splitlines() if line.strip()]


def _write_image(path, array):
    """cv2.imwrite to a temporary name with the same extension, then renamed onto ``path``."""
    def write(tmp):
        try:
            written = cv2.imwrite(tmp, array)
        except cv2.error:
            written = False
        if not written:
            raise OSError(
                f"Could not write image file '{path}' (unwritable path or unknown extension).")

    write_atomically(path, write)


def _expect(path, array, dtype, channels, what):
    got_channels = 1 if array.ndim == 2 else array.shape[2]
    if array.dtype != dtype or got_channels != channels:
        raise DataFormatError(
            f"'{path}' is not a {what}: expected {channels}-channel {np.dtype(dtype).name}, "
            f"got {got_channels}-channel {array.dtype.name} (wrong bit depth or file)."
        )


def read_image(path):
    """Read an 8-bit colour image (PNG or JPEG) -> HxWx3 uint8, BGR channel order."""
    image = _decode(path, cv2.IMREAD_COLOR)
    _expect(path, image, np.uint8, 3, "colour image")
    return image


def read_depth_png(path, scale=100.0):
    """Read a uint16 depth PNG -> HxW float32 metres, d = value / scale; 0 where invalid.

    PNG values 0 (no depth) and 65535 (sky / beyond range) are invalid and read as 0.
    """
    raw = _decode(path, cv2.IMREAD_UNCHANGED)
    _expect(path, raw, np.uint16, 1, "16-bit depth PNG")
    depth = raw.astype(np.float32) / np.float32(scale)
    depth[(raw == 0) | (raw == _U16_MAX)] = 0.0
    return depth


def write_depth_png(path, depth):
    """Write HxW depth (metres) as uint16 centimetres: round(d * 100).

    d <= 0 or non-finite -> 0 (invalid); d >= 655.35 m -> 65535 (sky, also invalid).
    """
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2:
        raise ValueError(f"write_depth_png('{path}'): depth must be HxW, got shape {depth.shape}.")
    finite = np.isfinite(depth)
    cm = np.round(np.where(finite, depth, 0.0) * 100.0)
    raw = np.clip(cm, 0, _U16_MAX).astype(np.uint16)
    raw[~finite | (depth <= 0)] = 0
    _write_image(path, raw)


def read_vkitti_flow_png(path):
    """Read a Virtual KITTI flow PNG -> (flow HxWx2 float32 (u, v) px, valid HxW bool).

    f = (2 * value / (2^16 - 1) - 1) * (size - 1), size = W for u, H for v; flow = 0
    where the B channel is 0 (invalid).
    """
    raw = _decode(path, cv2.IMREAD_UNCHANGED)
    _expect(path, raw, np.uint16, 3, "16-bit 3-channel Virtual KITTI flow PNG")
    height, width = raw.shape[:2]
    valid = raw[..., 0] > 0
    flow = raw[..., 2:0:-1].astype(np.float32) * np.float32(2.0 / _U16_MAX) - 1.0
    flow[..., 0] *= width - 1
    flow[..., 1] *= height - 1
    flow[~valid] = 0.0
    return flow, valid


def write_vkitti_flow_png(path, flow, valid):
    """Write flow HxWx2 (u, v) px and valid HxW as a Virtual KITTI flow PNG.

    value = round((f / (size - 1) + 1) * (2^16 - 1) / 2), clipped to [0, 65535];
    B = 1 where valid, 0 (and u = v = 0) elsewhere.
    """
    flow = np.asarray(flow, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    if flow.ndim != 3 or flow.shape[2] != 2 or valid.shape != flow.shape[:2]:
        raise ValueError(
            f"write_vkitti_flow_png('{path}'): flow must be HxWx2 and valid HxW, "
            f"got {flow.shape} and {valid.shape}."
        )
    height, width = valid.shape
    flow = np.where(valid[..., None] & np.isfinite(flow), flow, 0.0)
    norm = flow / np.array([max(width - 1, 1), max(height - 1, 1)], dtype=np.float64)
    raw = np.clip(np.round((norm + 1.0) * (_U16_MAX / 2.0)), 0, _U16_MAX).astype(np.uint16)
    bgr = np.stack([valid.astype(np.uint16), raw[..., 1], raw[..., 0]], axis=2)
    _write_image(path, bgr)


def read_kitti_flow_png(path):
    """Read a KITTI 2015 flow PNG -> (flow HxWx2 float32 px, valid HxW bool).

    f = (value - 2^15) / 64; flow = 0 where the valid channel is 0.
    """
    raw = _decode(path, cv2.IMREAD_UNCHANGED)
    _expect(path, raw, np.uint16, 3, "16-bit 3-channel KITTI flow PNG")
    valid = raw[..., 0] > 0
    flow = raw[..., 2:0:-1].astype(np.float32) - np.float32(_KITTI_OFFSET)
    flow /= np.float32(_KITTI_SCALE)
    flow[~valid] = 0.0
    return flow, valid


def write_kitti_flow_png(path, flow, valid=None):
    """Write flow HxWx2 px as a KITTI 2015 flow PNG: value = round(f * 64 + 2^15).

    ``valid`` defaults to all finite pixels; invalid pixels are written as (0, 0, 0).
    """
    flow = np.asarray(flow, dtype=np.float64)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"write_kitti_flow_png('{path}'): flow must be HxWx2, got {flow.shape}.")
    finite = np.isfinite(flow).all(axis=2)
    valid = finite if valid is None else (np.asarray(valid, dtype=bool) & finite)
    raw = np.round(np.where(finite[..., None], flow, 0.0) * _KITTI_SCALE + _KITTI_OFFSET)
    raw = np.clip(raw, 0, _U16_MAX).astype(np.uint16)
    raw[~valid] = 0
    bgr = np.stack([valid.astype(np.uint16), raw[..., 1], raw[..., 0]], axis=2)
    _write_image(path, bgr)


def read_kitti_disparity_png(path):
    """Read a KITTI 2015 disparity PNG -> HxW float32 px, value / 256; 0 = invalid."""
    raw = _decode(path, cv2.IMREAD_UNCHANGED)
    _expect(path, raw, np.uint16, 1, "16-bit KITTI disparity PNG")
    return raw.astype(np.float32) / np.float32(256.0)


def read_kitti_depth_png(path, fx_baseline):
    """Read a KITTI disparity PNG as depth: Z = fx b / d (m) with fx b in px m (from
    calib_cam_to_cam: data.calibration.read_kitti_calib); 0 (invalid) where d = 0."""
    disparity = read_kitti_disparity_png(path)
    depth = np.zeros_like(disparity)
    np.divide(np.float32(fx_baseline), disparity, out=depth, where=disparity > 0)
    return depth


def write_kitti_disparity_png(path, disparity):
    """Write HxW disparities (px) as a KITTI disparity PNG: value = round(d * 256), at least 1
    where d > 0 and finite (the devkit's max(d * 256, 1)), 0 (invalid) elsewhere."""
    disparity = np.asarray(disparity, dtype=np.float64)
    if disparity.ndim != 2:
        raise ValueError(f"write_kitti_disparity_png('{path}'): disparity must be HxW, got "
                         f"shape {disparity.shape}.")
    valid = np.isfinite(disparity) & (disparity > 0)
    raw = np.clip(np.round(np.where(valid, disparity, 0.0) * 256.0), 1, _U16_MAX)
    _write_image(path, np.where(valid, raw, 0).astype(np.uint16))


def read_instance_png(path):
    """Read a single-channel id map (grey 8/16 bit or 8-bit palette PNG) -> HxW integer ids
    (uint8, uint16 or int32 as stored)."""
    data = _read_bytes(path)
    _check_complete(path, data)
    try:
        with Image.open(io.BytesIO(data)) as image:
            mode = image.mode
            ids = np.asarray(image)
    except (OSError, ValueError, SyntaxError) as error:
        raise DataFormatError(f"Could not decode id map PNG '{path}': {error}") from error
    if mode not in ("P", "L", "I", "I;16", "I;16B") or ids.ndim != 2:
        raise DataFormatError(
            f"'{path}' is not a single-channel id map PNG (Pillow mode {mode}, shape {ids.shape}); "
            "expected 8/16-bit grey or 8-bit palette."
        )
    if ids.dtype.kind == "i" and ids.size and ids.min() < 0:
        raise DataFormatError(f"Id map PNG '{path}' has negative ids.")
    return ids.astype(np.int32) if ids.dtype.kind not in "iu" else ids


def read_flo(path):
    """Read a Middlebury ``.flo`` file -> HxWx2 float32 (u, v) px."""
    data = _read_bytes(path)
    header = np.frombuffer(data[:12], dtype="<f4", count=1) if len(data) >= 12 else None
    if header is None or header[0] != np.float32(202021.25):
        raise DataFormatError(f"'{path}' is not a Middlebury .flo file (bad magic number).")
    width, height = np.frombuffer(data[4:12], dtype="<i4")
    if width <= 0 or height <= 0 or len(data) < 12 + 8 * int(width) * int(height):
        raise DataFormatError(
            f"Truncated or corrupt .flo file '{path}' ({width}x{height}, {len(data)} bytes)."
        )
    flow = cv2.readOpticalFlow(os.fspath(path))
    if flow is None or flow.size == 0:
        raise DataFormatError(f"Could not read .flo file '{path}'.")
    return flow.astype(np.float32, copy=False)


def write_flo(path, flow):
    """Write flow HxWx2 (u, v) px as a Middlebury ``.flo`` file."""
    flow = np.ascontiguousarray(flow, dtype=np.float32)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"write_flo('{path}'): flow must be HxWx2, got {flow.shape}.")
    def write(tmp):
        if not cv2.writeOpticalFlow(tmp, flow):
            raise OSError(f"Could not write .flo file '{path}'.")

    write_atomically(path, write)
