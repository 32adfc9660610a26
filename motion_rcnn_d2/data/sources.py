"""Frame pairs from a video or a folder of frames, streamed, with their depth and K.

``VideoFrames`` (anything ``cv2.VideoCapture`` reads) and ``FrameFiles`` (a folder, a glob or
a list of PNG/JPEG files, in natural name order: ``f2`` before ``f10``) decode one frame at a
time; ``FramePairs`` turns every ``step``-th frame into consecutive pairs (frames 0-K, K-2K,
...) and adds each frame's depth (``DepthFiles``: the i-th depth file belongs to the i-th frame
of the source, before stepping) and K. At most two frames and their depth are held.

Everything that can be checked before the first pair is checked when the objects are built
(the video opens and has a first frame, folder contents, the depth count against the frame
count, the first depth file's size and validity), so that a bad input fails before any output
is written; every error names the file.
"""
import glob
import logging
import os
import re

import cv2
import numpy as np

from .depth_files import DEPTH_EXTENSIONS, read_depth
from .formats import DataFormatError, read_image

__all__ = ["IMAGE_EXTENSIONS", "DepthFiles", "FrameFiles", "FramePairs", "VideoFrames",
           "list_files"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def _natural_key(path):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def list_files(spec, extensions, what):
    """Files of ``spec`` (a file, a folder's non-hidden files, or a glob) in natural order.

    Raises FileNotFoundError when there is no file and DataFormatError naming the first file
    whose extension is not one of ``extensions``.
    """
    spec = os.fspath(spec)
    if os.path.isdir(spec):
        paths = [os.path.join(spec, name) for name in os.listdir(spec)
                 if not name.startswith(".") and os.path.isfile(os.path.join(spec, name))]
    elif glob.has_magic(spec):
        paths = [path for path in glob.glob(spec) if os.path.isfile(path)]
    elif os.path.isfile(spec):
        paths = [spec]
    else:
        raise FileNotFoundError(f"{what} '{spec}': no such file or folder.")
    if not paths:
        raise FileNotFoundError(f"{what} '{spec}' holds no file.")
    other = [path for path in paths if os.path.splitext(path)[1].lower() not in extensions]
    if other:
        raise DataFormatError(
            f"'{sorted(other)[0]}' in {what} '{spec}' is not a {'/'.join(extensions)} file "
            f"({len(other)} such file(s)): remove it or select the files with a glob "
            f"(e.g. '{os.path.join(spec, '*' + extensions[0])}').")
    return sorted(paths, key=_natural_key)


class FrameFiles:
    """Frames from image files (PNG / JPEG), read one at a time.

    Attributes: ``paths``, ``count`` (number of frames), ``fps`` (None: unknown),
    ``width``, ``height`` (of the first frame), ``name`` (what errors name).
    """

    def __init__(self, spec=None, paths=None):
        self.paths = list(paths) if paths is not None else list_files(
            spec, IMAGE_EXTENSIONS, "frame folder")
        self.name = spec if spec is not None else self.paths[0]
        self.count, self.fps = len(self.paths), None
        self._first = read_image(self.paths[0])
        self.height, self.width = self._first.shape[:2]

    def frames(self, step=1):
        """Yield (index, image id, HxWx3 uint8 BGR) of frames 0, step, 2 step, ..."""
        for index in range(0, self.count, step):
            path = self.paths[index]
            image = self._first if index == 0 else read_image(path)
            yield index, os.path.splitext(os.path.basename(path))[0], image

    def where(self, index):
        return f"frame file '{self.paths[index]}'"


class VideoFrames:
    """Frames of a video, decoded one at a time with ``cv2.VideoCapture`` (skipped frames are
    only grabbed, not decoded).

    Attributes: ``count`` (the container's frame count; None when it has none), ``fps``
    (None when the container has no usable rate), ``width``, ``height``, ``name``.
    """

    def __init__(self, path):
        self.name = path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Video file not found: '{path}' (--video-input).")
        self._capture = cv2.VideoCapture(path)
        if not self._capture.isOpened():
            raise DataFormatError(f"Could not open video '{path}': OpenCV cannot read it "
                                  "(empty or corrupt file, or not a video).")
        ok, self._first = self._capture.read()
        if not ok or self._first is None:
            self._capture.release()
            raise DataFormatError(f"Video '{path}' has no frame OpenCV can decode (empty or "
                                  "corrupt video).")
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if np.isfinite(fps) and 0 < fps < 1000 else None
        count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.count = count if count > 0 else None
        self.height, self.width = self._first.shape[:2]
        self._stem = os.path.splitext(os.path.basename(path))[0]

    def frames(self, step=1):
        """Yield (index, image id '<video name>_<index>', HxWx3 uint8 BGR) of frames 0, step,
        2 step, ... until the video ends."""
        if self._first is None:
            raise RuntimeError(f"the frames of '{self.name}' are streamed once; open the video "
                               "again (VideoFrames) to read them again")
        index, image = 0, self._first
        self._first = None
        try:
            while True:
                yield index, f"{self._stem}_{index:06d}", image
                for _ in range(step - 1):
                    if not self._capture.grab():
                        break
                    index += 1
                else:
                    ok, image = self._capture.read()
                    if ok and image is not None:
                        index += 1
                        continue
                if self.count is not None and index + 1 < self.count:
                    logging.getLogger(__name__).warning(
                        f"'{self.name}' ended after {index + 1} of the {self.count} frames its "
                        "container lists (a frame OpenCV could not decode?).")
                self.count = index + 1  # the video ended: now the count is exact
                return
        finally:
            self._capture.release()

    def where(self, index):
        return f"frame {index} of video '{self.name}'"


class DepthFiles:
    """Depth files matched to frames by order: the i-th file belongs to the i-th frame."""

    def __init__(self, spec, scale=100.0, paths=None):
        self.paths = list(paths) if paths is not None else list_files(
            spec, DEPTH_EXTENSIONS, "depth")
        self.scale = scale

    def __len__(self):
        return len(self.paths)

    def read(self, index, width, height):
        """Depth of frame ``index`` (HxW float32 metres, 0 where invalid); a ValueError naming
        the file when there is none or its size is not the frames'."""
        if index >= len(self.paths):
            raise ValueError(f"frame {index} has no depth: there are only {len(self.paths)} "
                             f"depth files (first '{self.paths[0]}').")
        depth = read_depth(self.paths[index], self.scale)
        if depth.shape != (height, width):
            raise ValueError(f"Depth file '{self.paths[index]}' is {depth.shape[1]}x"
                             f"{depth.shape[0]} but the frames are {width}x{height}: depth must "
                             "be at the frames' resolution.")
        return depth


class FramePairs:
    """Consecutive pairs of every ``step``-th frame of ``frames`` with depth and K.

    Iterating yields dicts: "image_id" (frame t's), "frame" (frame t's index in the source),
    "image", "image_next" (HxWx3 uint8 BGR), "depth", "depth_next" (HxW metres, or None
    without depth files) and "intrinsics" (3x3, or None).
    """

    def __init__(self, frames, depth=None, intrinsics=None, step=1, max_pairs=None):
        if step < 1:
            raise ValueError(f"step must be >= 1, got {step}")
        self.source, self.depth, self.intrinsics = frames, depth, intrinsics
        self.step, self.max_pairs = step, max_pairs
        if frames.count is not None and frames.count <= step:
            raise ValueError(f"'{frames.name}' has {frames.count} frame(s): a pair needs two, "
                             f"{step} frame(s) apart (--step).")
        if depth is not None:
            if frames.count is not None:
                self._check_depth_count()
            depth.read(0, frames.width, frames.height)  # size and validity, before any output

    def __len__(self):
        """The number of pairs (from the container's frame count for a video)."""
        count = 0 if self.source.count is None else (self.source.count - 1) // self.step
        return count if self.max_pairs is None else min(count, self.max_pairs)

    def _depth(self, index):
        if self.depth is None or (index > 0 and len(self.depth) == 1):
            return None
        return self.depth.read(index, self.source.width, self.source.height)

    def __iter__(self):
        previous, pairs = None, 0
        for index, name, image in self.source.frames(self.step):
            if image.shape[:2] != (self.source.height, self.source.width):
                raise ValueError(f"{self.source.where(index)} is {image.shape[1]}x"
                                 f"{image.shape[0]} but the first frame is {self.source.width}x"
                                 f"{self.source.height}: all frames must have one size.")
            current = (index, name, image, self._depth(index))
            if previous is not None:
                yield {"image_id": previous[1], "frame": previous[0], "image": previous[2],
                       "image_next": image, "depth": previous[3], "depth_next": current[3],
                       "intrinsics": self.intrinsics}
                pairs += 1
                if self.max_pairs is not None and pairs >= self.max_pairs:
                    return
            previous = current
        if self.depth is not None:
            self._check_depth_count()

    def _check_depth_count(self):
        """One depth file per frame (a pair of two frames may have frame t's alone)."""
        depth, count = len(self.depth), self.source.count
        if depth != count and not (count == 2 and depth == 1):
            raise ValueError(f"{depth} depth files ('{self.depth.paths[0]}' ...) for {count} "
                             f"frames of '{self.source.name}': give one depth file per frame, "
                             "in the frames' order.")
