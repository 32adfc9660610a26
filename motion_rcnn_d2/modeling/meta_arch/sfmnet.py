"""SfM-Net (Vijayanarasimhan et al. 2017) as a Detectron2 meta-architecture (docs/method.md section 9).

The structure network predicts depth d from I_t (or, with MODEL.SFMNET.USE_GT_DEPTH, the input's
`depth` is used and no structure network is built); the motion network predicts N sigmoid masks
m_k and per-object motions (R_k, t_k, p_k) and the camera motion (R_cam, t_cam) from (I_t, I_t+1)
(sfmnet_networks.py). Flow follows docs/method.md section 4 (geometry.compose_flow):

    P = d K^-1 [x, 1],  P' = P + sum_k m_k (R_k (P - p_k) + p_k + t_k - P),  P'' = R_cam P' + t_cam,
    flow = pi(K P'') - x.

Training loss (sfmnet_losses.py; weights MODEL.SFMNET.*, a term with weight 0 is not computed):
    PHOTOMETRIC_WEIGHT    x  L1(I_t, I_t+1 warped back by the flow), pixels leaving the image out
    DEPTH_SMOOTH_WEIGHT   x  L1 of the gradients of the mean-normalised inverse depth
                             (1/d) / mean(1/d) (predicted depth only; see below)
    FLOW_SMOOTH_WEIGHT    x  L1 of flow gradients (px)
    MASK_SMOOTH_WEIGHT    x  L1 of mask gradients
    DEPTH_WEIGHT          x  L1 to the input's valid `depth` (m; predicted depth only)
    CAMERA_MOTION_WEIGHT  x  L1 on the 9 entries of R_cam and on t_cam (m) vs `camera_motion`
    FLOW_WEIGHT           x  L1 to the input's `flow` on `flow_valid` pixels (px)
Each image's terms are computed on its own unpadded area, then averaged over the batch.
Depth smoothness acts on inverse depth normalised by its mean (as Monodepth2): it is
scale-invariant (monocular depth has no scale without supervision) and does not let the far
background's metre-sized steps dominate; on depth in metres it drove the unsupervised model
to a constant depth on the synthetic world.
The defaults (config.py) are photometric 1.0, each smoothness 0.01, supervision off; the
SfM-Net paper does not publish its weights.

Inference output per pair, at the original size (height, width): "flow" (2, H, W) px,
"flow_valid" (H, W), "points" and "scene_flow" (3, H, W) (P and P'' - P, metres, camera-t
coordinates, NaN where depth is invalid), "depth" (1, H, W) m, "masks" (N, H, W),
"camera_motion" {"rotation" (3, 3),
"translation" (3,)}, "motions" {"rotations" (N, 3, 3), "translations" (N, 3), "pivots" (N, 3)}.
When the network input was resized, depth and masks are resized to the original size (bilinear;
nearest for a given depth with its invalid zeros), K is rescaled (geometry.scale_intrinsics) and
the flow is composed again there, so flow and K stay consistent.
"""
import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from torch import nn

from ...geometry import compose_flow, scale_intrinsics
from . import sfmnet_losses as sfm_losses
from .frame_pairs import (batch_flow_targets, batch_frames, batch_tensors, output_size,
                          require_key, resize_map)
from .sfmnet_networks import MotionNetwork, StructureNetwork

__all__ = ["SfMNet"]

_LOSS_KEYS = ("photometric", "depth_smooth", "flow_smooth", "mask_smooth", "depth",
              "camera_motion", "flow")


@META_ARCH_REGISTRY.register()
class SfMNet(nn.Module):
    """SfM-Net: depth, object masks and rigid motions, camera motion and the flow they imply."""

    size_divisibility = 32

    @configurable
    def __init__(self, *, pixel_mean, pixel_std, num_motions=3, base_channels=32,
                 use_gt_depth=False, min_depth=0.5, max_depth=300.0, rotation_scale=0.01,
                 translation_scale=1.0, pivot_scale=10.0, loss_weights=None):
        """
        Args:
            pixel_mean, pixel_std: per-channel normalisation of each frame.
            num_motions: number of object masks / motions N.
            base_channels: width of the conv-deconv networks' output (32).
            use_gt_depth: use the input's `depth` instead of a structure network.
            min_depth, max_depth: range of the predicted depth (m).
            rotation_scale, translation_scale, pivot_scale: output scales (sines, m, m).
            loss_weights: dict over photometric, depth_smooth, flow_smooth, mask_smooth, depth,
                camera_motion, flow (missing = 0; None = photometric 1, smoothness 0.01 each).
        """
        super().__init__()
        if loss_weights is None:
            loss_weights = {"photometric": 1.0, "depth_smooth": 0.01, "flow_smooth": 0.01,
                            "mask_smooth": 0.01}
        unknown = set(loss_weights) - set(_LOSS_KEYS)
        if unknown:
            raise ValueError(f"unknown SfM-Net loss weights {sorted(unknown)}; use {_LOSS_KEYS}")
        self.loss_weights = {k: float(loss_weights.get(k, 0.0)) for k in _LOSS_KEYS}
        self.use_gt_depth = use_gt_depth
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.motion_network = MotionNetwork(
            num_motions, base_channels, rotation_scale=rotation_scale,
            translation_scale=translation_scale, pivot_scale=pivot_scale,
        )
        self.structure_network = (
            None if use_gt_depth else StructureNetwork(base_channels, min_depth, max_depth)
        )

    @classmethod
    def from_config(cls, cfg):
        c = cfg.MODEL.SFMNET
        return {
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "num_motions": c.NUM_MOTIONS,
            "base_channels": c.BASE_CHANNELS,
            "use_gt_depth": c.USE_GT_DEPTH,
            "min_depth": c.MIN_DEPTH,
            "max_depth": c.MAX_DEPTH,
            "rotation_scale": c.ROTATION_SCALE,
            "translation_scale": c.TRANSLATION_SCALE,
            "pivot_scale": c.PIVOT_SCALE,
            "loss_weights": {
                "photometric": c.PHOTOMETRIC_WEIGHT,
                "depth_smooth": c.DEPTH_SMOOTH_WEIGHT,
                "flow_smooth": c.FLOW_SMOOTH_WEIGHT,
                "mask_smooth": c.MASK_SMOOTH_WEIGHT,
                "depth": c.DEPTH_WEIGHT,
                "camera_motion": c.CAMERA_MOTION_WEIGHT,
                "flow": c.FLOW_WEIGHT,
            },
        }

    @property
    def device(self):
        return self.pixel_mean.device

    def _given_depth(self, batched_inputs):
        require_key(batched_inputs, "depth", "MODEL.SFMNET.USE_GT_DEPTH / DEPTH_WEIGHT")
        return batch_tensors([x["depth"] for x in batched_inputs], self.size_divisibility,
                             self.device).tensor

    def predict(self, images, intrinsics, given_depth=None):
        """Depth, masks, motions and flow of a padded batch.

        Args:
            images: (B, 6, H, W) normalised (I_t, I_t+1), H and W multiples of 32.
            intrinsics: (B, 3, 3) K of the network input.
            given_depth: (B, 1, H, W) metres, used (instead of the structure network) when
                USE_GT_DEPTH.
        Returns:
            dict: "depth" (B, 1, H, W) m, "masks" (B, N, H, W), "flow" (B, 2, H, W) px,
            "flow_valid" (B, H, W) bool, "points" and "scene_flow" (B, 3, H, W) m (NaN where
            depth is invalid), and the motions of MotionNetwork.
        """
        masks, motions = self.motion_network(images)
        depth = given_depth if self.use_gt_depth else self.structure_network(images[:, :3])
        flow, valid, points, scene_flow = compose_flow(
            depth, intrinsics, masks, motions["rotations"], motions["translations"],
            motions["pivots"], motions["camera_rotation"], motions["camera_translation"],
            with_points=True,
        )
        return dict(motions, depth=depth, masks=masks, flow=flow, flow_valid=valid, points=points,
                    scene_flow=scene_flow)

    def forward(self, batched_inputs):
        """
        Args:
            batched_inputs: list of model-input dicts (docs/method.md section 10) with `image`,
                `image_next`, `intrinsics` (and `depth`, `camera_motion`, `flow` as the options need).
        Returns:
            training: dict of weighted losses "loss_<term>"; inference: list of output dicts.
        """
        images, raw = batch_frames(batched_inputs, self.pixel_mean, self.pixel_std,
                                   self.size_divisibility)
        require_key(batched_inputs, "intrinsics", "composing flow")
        intrinsics = torch.stack([torch.as_tensor(x["intrinsics"], dtype=torch.float32)
                                  for x in batched_inputs]).to(self.device)
        need_depth = self.use_gt_depth or (self.training and self.loss_weights["depth"] > 0)
        given_depth = self._given_depth(batched_inputs) if need_depth else None
        pred = self.predict(images.tensor, intrinsics, given_depth)
        if self.training:
            return self.losses(batched_inputs, images.image_sizes, raw.tensor, pred, given_depth)
        return [self._postprocess(pred, i, image_size, intrinsics[i], x)
                for i, (image_size, x) in enumerate(zip(images.image_sizes, batched_inputs))]

    def losses(self, batched_inputs, image_sizes, raw, pred, given_depth):
        """Weighted losses (module docstring), each averaged over the images of the batch."""
        w = self.loss_weights
        if w["flow"] > 0:
            gt_flow, gt_valid = batch_flow_targets(batched_inputs, self.size_divisibility,
                                                   self.device)
        terms = {k: [] for k in _LOSS_KEYS if w[k] > 0 and k != "camera_motion"}
        for i, (h, w_i) in enumerate(image_sizes):
            crop = (slice(i, i + 1), slice(None), slice(0, h), slice(0, w_i))
            flow, valid = pred["flow"][crop], pred["flow_valid"][crop[:1] + crop[2:]]
            if "photometric" in terms:
                terms["photometric"].append(sfm_losses.photometric_loss(
                    raw[crop][:, :3], raw[crop][:, 3:], flow, valid))
            if "flow_smooth" in terms:
                terms["flow_smooth"].append(sfm_losses.smoothness_loss(flow))
            if "mask_smooth" in terms:
                terms["mask_smooth"].append(sfm_losses.smoothness_loss(pred["masks"][crop]))
            if "depth_smooth" in terms and not self.use_gt_depth:
                disparity = 1.0 / pred["depth"][crop]
                terms["depth_smooth"].append(
                    sfm_losses.smoothness_loss(disparity / disparity.mean()))
            if "depth" in terms and not self.use_gt_depth:
                terms["depth"].append(sfm_losses.depth_loss(pred["depth"][crop], given_depth[crop]))
            if "flow" in terms:
                both = valid & gt_valid[crop[:1] + crop[2:]]
                terms["flow"].append(sfm_losses.flow_loss(flow, gt_flow[crop], both))
        out = {f"loss_{k}": w[k] * torch.stack(v).mean() for k, v in terms.items() if v}
        if w["camera_motion"] > 0:
            require_key(batched_inputs, "camera_motion", "MODEL.SFMNET.CAMERA_MOTION_WEIGHT")
            gt_rot = torch.stack([torch.as_tensor(x["camera_motion"]["rotation"]).float()
                                  for x in batched_inputs]).to(self.device)
            gt_trans = torch.stack([torch.as_tensor(x["camera_motion"]["translation"]).float()
                                    for x in batched_inputs]).to(self.device)
            out["loss_camera_motion"] = w["camera_motion"] * sfm_losses.camera_motion_loss(
                pred["camera_rotation"], pred["camera_translation"], gt_rot, gt_trans)
        return out

    def _postprocess(self, pred, i, image_size, intrinsics, batched_input):
        """One pair's outputs at the original size (module docstring)."""
        h, w = image_size
        height, width = output_size(batched_input, image_size)
        depth_mode = "nearest-exact" if self.use_gt_depth else "bilinear"
        depth = resize_map(pred["depth"][i], image_size, height, width, mode=depth_mode)
        masks = resize_map(pred["masks"][i], image_size, height, width)
        if (h, w) == (height, width):
            flow, valid, points, scene_flow = (pred[k][i, ..., :h, :w] for k in (
                "flow", "flow_valid", "points", "scene_flow"))
        else:
            k = scale_intrinsics(intrinsics, width / w, height / h)
            flow, valid, points, scene_flow = (r[0] for r in compose_flow(
                depth[None], k[None], masks[None], pred["rotations"][i: i + 1],
                pred["translations"][i: i + 1], pred["pivots"][i: i + 1],
                pred["camera_rotation"][i: i + 1], pred["camera_translation"][i: i + 1],
                with_points=True,
            ))
        return {
            "flow": flow,
            "flow_valid": valid,
            "points": points,
            "scene_flow": scene_flow,
            "depth": depth,
            "masks": masks,
            "camera_motion": {"rotation": pred["camera_rotation"][i],
                              "translation": pred["camera_translation"][i]},
            "motions": {"rotations": pred["rotations"][i], "translations": pred["translations"][i],
                        "pivots": pred["pivots"][i]},
        }
