"""Test-time refinement of the RoI motion head's object motions by a per-object sweep
(docs/method.md section 3, `geometry.sweep_object_motion`).

For each detection, the points of its mask in frame t (depth t, K) are moved by hypotheses
around the head's motion (a yaw and a shift in x and z, then the camera's motion), and the
hypothesis whose warp of frame t+1 (and depth t+1) best matches frame t on those points
replaces the prediction. Why: an object's yaw moves its pixels by a fraction of a pixel at
512x160, too little for the RoI head to learn from pooled features, while the warp integrates
it over every pixel of the object. With a MOVING_COST_RATIO R > 0 the sweep also decides moving
or still: with rho = c(refined motion) / c(standing still) (`geometry.object_motion_costs`),

    pred_moving_scores = clamp(0.5 (1 - rho) / (1 - R), 0, 1),

which is > 0.5 exactly when rho < R (the refined motion explains the object clearly better
than no motion); with R = 0 only the detections the head predicts moving are refined.
"""
import torch
from detectron2.config import configurable
from detectron2.layers.mask_ops import paste_masks_in_image

from ..geometry import backproject, object_motion_costs, sweep_object_motion

__all__ = ["ObjectMotionSweep", "MIN_POINTS"]

# A mask with fewer valid points than this keeps the head's motion and moving score.
MIN_POINTS = 20


def _grid(value, key):
    if len(value) != 2 or value[0] < 0 or int(value[1]) != value[1] or value[1] < 1:
        raise ValueError(f"MODEL.MOTION_RCNN.OBJECT_SWEEP.{key} = {list(value)}: give "
                         "(step, count) with step >= 0 and an integer count >= 1")
    return float(value[0]), int(value[1])


class ObjectMotionSweep:
    """Refines the detections' pred_rotations and pred_translations (and, with a
    MOVING_COST_RATIO, pred_moving_scores) of the RoI heads' raw Instances."""

    @configurable
    def __init__(self, *, yaw_grid=(0.005, 13), shift_grid=(0.05, 21), num_points: int = 512,
                 clamp: float = 0.5, depth_clamp: float = 0.1, moving_cost_ratio: float = 0.6,
                 mask_threshold: float = 0.5):
        """
        Args:
            yaw_grid: (step radians, count) of the yaw offsets dtheta;
            shift_grid: (step metres, count) of the offsets dx and dz
                (`geometry.sweep_object_motion`).
            num_points: at most this many points of each mask, evenly spread over it.
            clamp: truncation of the absolute difference of the normalised frames' mean
                channel; depth_clamp: metres, truncation of the depth term (0: photometric
                only). As in `geometry.sweep_costs`.
            moving_cost_ratio: R of the module docstring (0: the head decides moving / still).
            mask_threshold: binarisation of the pasted masks.
        """
        self.yaw_grid = _grid(yaw_grid, "YAW")
        self.shift_grid = _grid(shift_grid, "SHIFT")
        if int(num_points) != num_points or num_points < MIN_POINTS:
            raise ValueError(f"MODEL.MOTION_RCNN.OBJECT_SWEEP.NUM_POINTS = {num_points!r}: an "
                             f"integer >= {MIN_POINTS}")
        self.num_points = int(num_points)
        self.clamp, self.depth_clamp = float(clamp), float(depth_clamp)
        if not 0.0 <= moving_cost_ratio < 1.0:
            raise ValueError(f"MODEL.MOTION_RCNN.OBJECT_SWEEP.MOVING_COST_RATIO = "
                             f"{moving_cost_ratio!r}: use 0 (off) or a ratio in (0, 1)")
        self.moving_cost_ratio = float(moving_cost_ratio)
        self.mask_threshold = float(mask_threshold)

    @classmethod
    def from_config(cls, cfg):
        sweep = cfg.MODEL.MOTION_RCNN.OBJECT_SWEEP
        return {"yaw_grid": tuple(sweep.YAW), "shift_grid": tuple(sweep.SHIFT),
                "num_points": sweep.NUM_POINTS, "clamp": sweep.CLAMP,
                "depth_clamp": sweep.DEPTH_CLAMP, "moving_cost_ratio": sweep.MOVING_COST_RATIO,
                "mask_threshold": cfg.MODEL.MOTION_RCNN.MASK_THRESHOLD}

    def _object_points(self, masks, points, gray):
        """Up to num_points valid points of each mask, evenly spread over the mask's pixels
        in raster order: points (N, 3, 1, M) (Z = 0 padding), gray (N, 1, 1, M), and how
        many are valid (N,)."""
        valid_depth = points[2] > 0
        out_points = points.new_zeros(len(masks), 3, 1, self.num_points)
        out_gray = gray.new_zeros(len(masks), 1, 1, self.num_points)
        counts = []
        for k, mask in enumerate(masks):
            index = (mask & valid_depth).flatten().nonzero()[:, 0]
            if len(index) > self.num_points:
                index = index[torch.linspace(0, len(index) - 1, self.num_points,
                                             device=index.device).round().long()]
            out_points[k, :, 0, :len(index)] = points.flatten(1)[:, index]
            out_gray[k, 0, 0, :len(index)] = gray.flatten()[index]
            counts.append(len(index))
        return out_points, out_gray, torch.tensor(counts, device=points.device)

    @torch.no_grad()
    def __call__(self, instances, gray_t, gray_t1, depth, depth_t1, intrinsics,
                 camera_rotation, camera_translation, moving_threshold):
        """Refine the detections of one image: those whose moving score > moving_threshold,
        or all of them (and their moving scores) with a MOVING_COST_RATIO.

        Args:
            instances: the RoI heads' raw Instances at the network input's size (pred_boxes,
                pred_masks (N, 1, m, m) probabilities, pred_rotations, pred_translations,
                pred_pivots, pred_moving_scores).
            gray_t, gray_t1: (H, W) the normalised frames' mean channel.
            depth, depth_t1: (H, W) metres (<= 0 invalid); depth_t1 may be None.
            intrinsics: (3, 3) K of the input's pixel grid.
            camera_rotation (3, 3), camera_translation (3,): the camera's (gated) motion.
        Returns:
            `instances` with refined pred_rotations and pred_translations (and
            pred_moving_scores with a MOVING_COST_RATIO), new tensors.
        """
        if self.moving_cost_ratio > 0:
            chosen = torch.arange(len(instances), device=depth.device)
        else:
            chosen = (instances.pred_moving_scores > moving_threshold).nonzero()[:, 0]
        if len(chosen) == 0:
            return instances
        masks = paste_masks_in_image(instances.pred_masks[chosen, 0],
                                     instances.pred_boxes[chosen], tuple(depth.shape),
                                     threshold=self.mask_threshold)
        points = backproject(depth[None, None], intrinsics[None])[0]
        object_points, object_gray, counts = self._object_points(masks, points, gray_t)
        keep = counts >= MIN_POINTS
        chosen, object_points, object_gray = chosen[keep], object_points[keep], object_gray[keep]
        num = len(chosen)
        if num == 0:
            return instances
        size = tuple(gray_t1.shape)
        frames = (object_gray, gray_t1.expand(num, 1, *size), object_points,
                  intrinsics.expand(num, 3, 3))
        pivots = instances.pred_pivots[chosen]
        camera = (camera_rotation.expand(num, 3, 3), camera_translation.expand(num, 3))
        depth_term = (None if depth_t1 is None or self.depth_clamp <= 0
                      else depth_t1.expand(num, 1, *size), self.depth_clamp)
        rotations, translations = sweep_object_motion(
            *frames, instances.pred_rotations[chosen], instances.pred_translations[chosen],
            pivots, *camera, self.yaw_grid, self.shift_grid, self.clamp, *depth_term)
        # new tensors: the head's outputs may be views of one another (split per image)
        instances.pred_rotations = instances.pred_rotations.index_put((chosen,), rotations)
        instances.pred_translations = instances.pred_translations.index_put((chosen,),
                                                                            translations)
        if self.moving_cost_ratio > 0:
            still = (torch.eye(3, device=depth.device).expand(num, 3, 3),
                     torch.zeros(num, 3, device=depth.device))
            costs = object_motion_costs(
                *frames, torch.stack([rotations, still[0]], dim=1),
                torch.stack([translations, still[1]], dim=1), pivots, *camera, self.clamp,
                *depth_term)
            rho = costs[:, 0] / costs[:, 1].clamp(min=1e-12)
            scores = (0.5 * (1 - rho) / (1 - self.moving_cost_ratio)).clamp(0.0, 1.0)
            instances.pred_moving_scores = instances.pred_moving_scores.index_put(
                (chosen,), scores.to(instances.pred_moving_scores.dtype))
        return instances
