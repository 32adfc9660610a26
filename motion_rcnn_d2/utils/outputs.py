"""Result files a person looks at: a video of the pictures and a table of the motions.

Both are written under a temporary name and renamed when complete (``os.replace``); when the
run fails or is interrupted, the temporary file is removed: a result video or ``motions.csv``
that exists is always complete.

``motions.csv`` has one row per pair and object (a pair without objects has one row with the
object columns empty), so that a researcher can plot it:

=====================  =================================================================
image_id, frame        frame t's image id and its index in the source
time_s                 frame / fps (s); empty without a frame rate
object                 the object's index in the pair's output
class, score           Motion R-CNN: class name and detection score. SfM-Net: "mask<k>" and
                       the mean of the k-th object mask (its share of the picture)
moving                 1 if the moving probability > the model's MOVING_THRESHOLD, else 0
rotation_deg           rotation angle of R (degrees, frame t to t+1)
tx_m, ty_m, tz_m       translation t (m, camera coordinates of frame t)
translation_m          |t| (m per pair)
speed_mps              |t| / dt with dt = step / fps (m/s); empty without a frame rate
camera_rotation_deg,   the camera's rotation angle, |translation| and speed, likewise
camera_translation_m,
camera_speed_mps
=====================  =================================================================
"""
import csv
import os

import cv2
import numpy as np
import torch

from .files import temporary_path

__all__ = ["CSV_COLUMNS", "MotionsCSV", "VideoOutput", "motion_rows", "rotation_deg"]

CSV_COLUMNS = ("image_id", "frame", "time_s", "object", "class", "score", "moving",
               "rotation_deg", "tx_m", "ty_m", "tz_m", "translation_m", "speed_mps",
               "camera_rotation_deg", "camera_translation_m", "camera_speed_mps")

# container extension -> OpenCV FourCC of a codec its FFmpeg build writes
VIDEO_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "FFV1"}


class _AtomicOutput:
    """A context manager writing ``self.tmp``; renamed to ``path`` on success, else removed."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self.tmp = temporary_path(self.path)
        parent = os.path.dirname(self.path)
        if parent:
            os.makedirs(parent, exist_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        complete = self._close() and exc_type is None
        if complete:
            os.replace(self.tmp, self.path)
        elif os.path.exists(self.tmp):
            os.remove(self.tmp)
        return False


class VideoOutput(_AtomicOutput):
    """Write RGB pictures as a video with ``cv2.VideoWriter`` (codec by extension:
    ``VIDEO_CODECS``). Every picture is padded (black) or cut to the first one's size, rounded
    up to even sides (what the codecs need). A video without a picture is not written."""

    def __init__(self, path, fps):
        extension = os.path.splitext(os.fspath(path))[1].lower()
        if extension not in VIDEO_CODECS:
            raise ValueError(f"Output video '{path}': unknown container; use one of "
                             f"{', '.join(VIDEO_CODECS)}.")
        if not fps > 0:
            raise ValueError(f"Output video '{path}': the frame rate must be > 0, got {fps}.")
        super().__init__(path)
        self.fourcc = cv2.VideoWriter_fourcc(*VIDEO_CODECS[extension])
        self.fps, self.count, self._writer, self.size = float(fps), 0, None, None

    def write(self, picture_rgb):
        picture = np.ascontiguousarray(picture_rgb[:, :, ::-1])
        if self._writer is None:
            height, width = picture.shape[:2]
            self.size = (width + width % 2, height + height % 2)
            self._writer = cv2.VideoWriter(self.tmp, self.fourcc, self.fps, self.size)
            if not self._writer.isOpened():
                raise OSError(f"Could not write video '{self.path}' (OpenCV's writer does not "
                              "open it: unwritable folder or codec missing).")
        width, height = self.size
        frame = np.zeros((height, width, 3), np.uint8)
        h, w = min(height, picture.shape[0]), min(width, picture.shape[1])
        frame[:h, :w] = picture[:h, :w]
        self._writer.write(frame)
        self.count += 1

    def _close(self):
        if self._writer is not None:
            self._writer.release()
        return self.count > 0 and os.path.isfile(self.tmp) and os.path.getsize(self.tmp) > 0


class MotionsCSV(_AtomicOutput):
    """``motions.csv`` (module docstring), one ``add`` per pair, streamed to a temporary file."""

    def __init__(self, path, class_names=(), fps=None, step=1, moving_threshold=0.5):
        super().__init__(path)
        self.class_names, self.fps, self.step = list(class_names), fps, step
        self.moving_threshold = moving_threshold
        self._file = open(self.tmp, "w", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=CSV_COLUMNS)
        self._writer.writeheader()

    def add(self, image_id, frame, output):
        """Write the rows of one pair's model output (MotionPredictor's dict)."""
        seconds = None if self.fps is None else self.step / self.fps
        rows = motion_rows(output, self.class_names, seconds, self.moving_threshold)
        time = "" if self.fps is None else f"{frame / self.fps:.6g}"
        for row in rows:
            self._writer.writerow({"image_id": image_id, "frame": frame, "time_s": time, **row})

    def _close(self):
        self._file.close()
        return True


def _number(value):
    return f"{float(value):.6g}"


def rotation_deg(rotation):
    """Rotation angle of R in degrees, accurate down to the smallest angles (float64):

        angle = atan2(|vee(R - R^T)| / 2, (tr(R) - 1) / 2),

    since R - R^T = 2 sin(angle) [a]_x for a rotation by ``angle`` about the unit axis a
    (arccos of the trace alone loses angles below ~0.03 degrees to float32 rounding)."""
    rotation = torch.as_tensor(rotation).detach().cpu().double().reshape(3, 3)
    skew = rotation - rotation.T
    sine = torch.stack([skew[2, 1], skew[0, 2], skew[1, 0]]).norm() / 2.0
    cosine = (torch.trace(rotation) - 1.0) / 2.0
    return float(torch.rad2deg(torch.atan2(sine, cosine)))


def _motion(rotation, translation, seconds):
    """Columns of one rigid motion (R 3x3, t 3 m) over ``seconds`` (None: unknown)."""
    translation = torch.as_tensor(translation).detach().cpu().double().reshape(3)
    distance = float(translation.norm())
    return {
        "rotation_deg": _number(rotation_deg(rotation)),
        "translation_m": _number(distance),
        "speed_mps": "" if seconds is None else _number(distance / seconds),
        "tx_m": _number(translation[0]), "ty_m": _number(translation[1]),
        "tz_m": _number(translation[2]),
    }


def motion_rows(output, class_names=(), seconds=None, moving_threshold=0.5):
    """The CSV columns (without image_id, frame, time_s) of one pair's output: one dict per
    object, or one with empty object columns when there is none. ``seconds``: time between
    the pair's frames (None: speeds are left empty)."""
    camera = {}
    if "camera_motion" in output:
        motion = _motion(output["camera_motion"]["rotation"],
                         output["camera_motion"]["translation"], seconds)
        camera = {"camera_rotation_deg": motion["rotation_deg"],
                  "camera_translation_m": motion["translation_m"],
                  "camera_speed_mps": motion["speed_mps"]}
    objects = []
    instances = output.get("instances")
    if instances is not None:
        instances = instances.to("cpu")
        for i in range(len(instances)):
            c = int(instances.pred_classes[i])
            row = {"class": class_names[c] if c < len(class_names) else str(c),
                   "score": _number(instances.scores[i])}
            if instances.has("pred_translations"):  # without the motion head: detections only
                row["moving"] = int(float(instances.pred_moving_scores[i]) > moving_threshold)
                row.update(_motion(instances.pred_rotations[i], instances.pred_translations[i],
                                   seconds))
            objects.append(row)
    elif "motions" in output:  # SfM-Net: one rigid motion per object mask
        masks = output["masks"].detach().cpu()
        for k in range(len(masks)):
            objects.append({"class": f"mask{k}", "score": _number(masks[k].double().mean()),
                            **_motion(output["motions"]["rotations"][k],
                                      output["motions"]["translations"][k], seconds)})
    if not objects:
        return [dict(camera)]
    return [dict(camera, object=i, **row) for i, row in enumerate(objects)]
