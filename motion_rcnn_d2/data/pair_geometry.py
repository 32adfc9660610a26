"""PairGeometry: one sampled Detectron2 transform (resize, crop, horizontal flip) applied to a
frame pair's dense maps, intrinsics, flow and 3D motions consistently (the rules are listed in
mapper.py's docstring)."""
import numpy as np
import torch
from detectron2.data import transforms as T

from ..geometry import crop_intrinsics, flip_intrinsics, scale_intrinsics

__all__ = ["PairGeometry"]

_MIRROR = np.diag([-1.0, 1.0, 1.0])


def _nearest_indices(size_in, size_out):
    """Input index of each output pixel of a nearest resize (pixel centres at integers)."""
    index = np.floor((np.arange(size_out) + 0.5) * (size_in / size_out)).astype(np.int64)
    return np.minimum(index, size_in - 1)


class PairGeometry:
    """Applies a sampled TransformList to dense maps and tracks K, flow scaling and mirroring."""

    def __init__(self, transforms, intrinsics):
        if not isinstance(transforms, T.TransformList):
            transforms = T.TransformList([transforms])
        self.transforms = transforms.transforms
        self.intrinsics = torch.as_tensor(intrinsics, dtype=torch.float64)
        self.flow_scale = np.ones(2)
        self.mirrored = False
        for t in self.transforms:
            if isinstance(t, T.ResizeTransform):
                sx, sy = t.new_w / t.w, t.new_h / t.h
                self.intrinsics = scale_intrinsics(self.intrinsics, sx, sy)
                self.flow_scale *= (sx, sy)
            elif isinstance(t, T.CropTransform):
                self.intrinsics = crop_intrinsics(self.intrinsics, t.x0, t.y0)
            elif isinstance(t, T.HFlipTransform):
                self.intrinsics = flip_intrinsics(self.intrinsics, t.width)
                self.flow_scale *= (-1.0, 1.0)
                self.mirrored = not self.mirrored
            elif not isinstance(t, T.NoOpTransform):
                raise ValueError(
                    f"MotionDatasetMapper cannot apply {type(t).__name__}: only resize, crop and "
                    "horizontal flip keep intrinsics, flow and 3D motions consistent. Remove that "
                    "augmentation (e.g. INPUT.RANDOM_FLIP='vertical') from the config."
                )

    def dense(self, array):
        """Nearest-neighbour transform of an HxW or HxWxC array (any dtype)."""
        for t in self.transforms:
            if isinstance(t, T.ResizeTransform):
                if (t.new_h, t.new_w) != (t.h, t.w):
                    array = np.take(array, _nearest_indices(t.h, t.new_h), axis=0)
                    array = np.take(array, _nearest_indices(t.w, t.new_w), axis=1)
            elif not isinstance(t, T.NoOpTransform):
                array = t.apply_image(array)
        return np.ascontiguousarray(array)

    def flow(self, flow):
        """Transform an HxWx2 flow map (px): nearest sampling, values scaled / u negated."""
        return self.dense(flow) * self.flow_scale.astype(np.float32)

    def motion(self, rotation, translation, pivot=None):
        """Mirror a motion when the pair was flipped: R -> S R S, t -> S t, p -> S p."""
        rotation = np.asarray(rotation, np.float64)
        translation = np.asarray(translation, np.float64)
        pivot = None if pivot is None else np.asarray(pivot, np.float64)
        if self.mirrored:
            rotation = _MIRROR @ rotation @ _MIRROR
            translation = translation @ _MIRROR
            pivot = None if pivot is None else pivot @ _MIRROR
        return rotation, translation, pivot
