"""FlowNetS (Dosovitskiy et al. 2015) as a Detectron2 meta-architecture (docs/method.md section 9).

Network (seed table "FlowNetS"; leaky ReLU after every conv and deconv, none after the flow
predictions):
    input: (I_t - mean)/std and (I_t+1 - mean)/std stacked, 6 x H x W, H and W padded to 64
    encoder: conv1 7x7/2 64, conv2 5x5/2 128, conv3 5x5/2 256, conv3_1 3x3 256,
             conv4 3x3/2 512, conv4_1 3x3 512, conv5 3x3/2 512, conv5_1 3x3 512,
             conv6 3x3/2 1024 (the thesis's table has no conv6_1, so neither has this model)
    refinement (FlowNet's): flow6 = conv3x3(conv6 -> 2); then for l = 5, 4, 3, 2:
             concat_l = [conv_l skip, deconv_l(concat_l+1) (5x5/2, 512/256/128/64 channels),
                         upflow_l(flow_l+1) (4x4/2 transposed conv, 2 -> 2)]
             flow_l = conv3x3(concat_l -> 2)
    output: flow2 (stride 4) x FLOW_DIV, bilinearly upsampled x4 to H x W.

Flow units: every flow_l is the flow divided by FLOW_DIV (20) in pixels of the FULL-resolution
input (not of its own grid), so flow = FLOW_DIV * upsample(flow2) with no further scaling.

Loss (multi-scale EPE, on pixels with valid GT only): the GT flow g (px) is averaged over each
s x s cell of scale l (s = 4..64) using valid pixels only,
    g_l(c) = sum_{x in c} v(x) g(x) / sum_{x in c} v(x),   v_l(c) = [sum_{x in c} v(x) > 0],
and
    L = sum_l w_l sum_c v_l(c) || flow_l(c) - g_l(c) / FLOW_DIV ||_2 / max(1, sum_c v_2(c)),
w = LOSS_WEIGHTS fine (stride 4) to coarse (stride 64). This is FlowNet's summed EPE (whose
weights 0.005 .. 0.32 balance the 4x fewer cells per coarser level) divided by the number of
valid stride-4 cells, so the loss magnitude does not depend on the image size (its gradients
are small: plain SGD needs a large BASE_LR, about 0.5 on the synthetic world).

Init: He (MSRA) normal for every conv / deconv, the flow predictions scaled by 0.1 so that the
initial flow is near 0 px instead of about 20 px.
"""
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from torch import nn

from .frame_pairs import batch_flow_targets, batch_frames, output_size, resize_flow

__all__ = ["FlowNetS", "downsample_flow_target", "multiscale_epe"]

# (name, in, out, kernel, stride) of the encoder, seed table order.
_ENCODER = (
    ("conv1", 6, 64, 7, 2),
    ("conv2", 64, 128, 5, 2),
    ("conv3", 128, 256, 5, 2),
    ("conv3_1", 256, 256, 3, 1),
    ("conv4", 256, 512, 3, 2),
    ("conv4_1", 512, 512, 3, 1),
    ("conv5", 512, 512, 3, 2),
    ("conv5_1", 512, 512, 3, 1),
    ("conv6", 512, 1024, 3, 2),
)
# Refinement levels l = 5..2: (skip feature, its channels, deconv output channels).
_REFINE = (("conv5_1", 512, 512), ("conv4_1", 512, 256), ("conv3_1", 256, 128), ("conv2", 128, 64))
_STRIDES = (4, 8, 16, 32, 64)  # of flow2 .. flow6


def downsample_flow_target(flow, valid, stride):
    """Valid-pixel average of GT flow over stride x stride cells.

        g_s(c) = sum_{x in c} v(x) g(x) / sum_{x in c} v(x),   v_s(c) = [sum_{x in c} v(x) > 0]

    Args:
        flow: (B, 2, H, W) pixels, H and W multiples of `stride`.
        valid: (B, H, W) bool.
        stride: cell size in pixels.
    Returns:
        (B, 2, H/stride, W/stride) flow (same units, not rescaled), (B, H/s, W/s) bool validity.
    """
    v = valid[:, None].to(flow.dtype)
    flow_sum = F.avg_pool2d(flow * v, stride)
    count = F.avg_pool2d(v, stride)
    cell_valid = count[:, 0] > 0
    return flow_sum / count.clamp(min=1e-12), cell_valid


def multiscale_epe(predictions, flow, valid, flow_div, weights):
    """FlowNet's multi-scale end-point-error loss (module docstring).

    Args:
        predictions: list of (B, 2, H/s, W/s) for s = 4, 8, 16, 32, 64, in flow / flow_div units.
        flow: (B, 2, H, W) GT pixels; valid: (B, H, W) bool.
        flow_div: flow scale (20); weights: one per prediction, fine to coarse.
    Returns:
        dict {"loss_flow{s}": 0-d tensor} with s the stride of each scale.
    """
    target = flow / flow_div
    normaliser = None
    losses = {}
    for pred, weight, stride in zip(predictions, weights, _STRIDES):
        target_s, valid_s = downsample_flow_target(target, valid, stride)
        if normaliser is None:
            normaliser = valid_s.sum().clamp(min=1).to(pred.dtype)
        epe = torch.linalg.vector_norm(pred - target_s, dim=1)
        losses[f"loss_flow{stride}"] = weight * (epe * valid_s).sum() / normaliser
    return losses


def _msra_init(module, slope):
    """He (MSRA) normal init for a conv followed by a leaky ReLU of `slope` (slope 1 = linear):
    std = sqrt(2 / ((1 + slope^2) fan_in)), fan_in = in_channels k^2 for a conv and
    in_channels k^2 / stride^2 (the inputs reaching one output) for a transposed conv; bias 0."""
    weight = module.weight
    if isinstance(module, nn.ConvTranspose2d):
        fan_in = weight.shape[0] * weight[0, 0].numel() / (module.stride[0] * module.stride[1])
    else:
        fan_in = weight[0].numel()
    nn.init.normal_(weight, std=(2.0 / ((1.0 + slope**2) * fan_in)) ** 0.5)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


def _conv(in_channels, out_channels, kernel, stride, slope):
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride, padding=(kernel - 1) // 2),
        nn.LeakyReLU(slope, inplace=True),
    )


def _deconv(in_channels, out_channels, slope):
    # 5x5 transposed conv, stride 2: padding 2 + output_padding 1 gives exactly 2x the size.
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, 5, 2, padding=2, output_padding=1),
        nn.LeakyReLU(slope, inplace=True),
    )


@META_ARCH_REGISTRY.register()
class FlowNetS(nn.Module):
    """FlowNetS: two frames in, dense optical flow out (module docstring for the equations).

    Training input: model-input dicts with `image`, `image_next`, `flow`, `flow_valid`;
    returns {"loss_flow4", ..., "loss_flow64"}. Inference returns per pair
    {"flow": (2, height, width) pixels at the original size}.
    """

    size_divisibility = 64

    @configurable
    def __init__(self, *, pixel_mean, pixel_std, flow_div=20.0,
                 loss_weights=(0.005, 0.01, 0.02, 0.08, 0.32), leaky_slope=0.1):
        """
        Args:
            pixel_mean, pixel_std: per-channel normalisation of each frame (cfg.INPUT.FORMAT).
            flow_div: predictions are flow / flow_div (pixels).
            loss_weights: 5 weights of the multi-scale EPE, fine (stride 4) to coarse (stride 64).
            leaky_slope: negative slope of the leaky ReLUs.
        """
        super().__init__()
        if len(loss_weights) != len(_STRIDES):
            raise ValueError(f"MODEL.FLOWNETS.LOSS_WEIGHTS needs {len(_STRIDES)} weights (strides "
                             f"{_STRIDES}, fine to coarse), got {list(loss_weights)}")
        self.flow_div = float(flow_div)
        self.loss_weights = tuple(float(w) for w in loss_weights)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

        for name, cin, cout, kernel, stride in _ENCODER:
            self.add_module(name, _conv(cin, cout, kernel, stride, leaky_slope))
        self.predict_flow6 = nn.Conv2d(1024, 2, 3, padding=1)
        in_channels = 1024
        for level, (_, skip_channels, out_channels) in zip((5, 4, 3, 2), _REFINE):
            self.add_module(f"deconv{level}", _deconv(in_channels, out_channels, leaky_slope))
            self.add_module(f"upsample_flow{level + 1}_to_{level}",
                            nn.ConvTranspose2d(2, 2, 4, 2, padding=1, bias=False))
            in_channels = skip_channels + out_channels + 2
            self.add_module(f"predict_flow{level}", nn.Conv2d(in_channels, 2, 3, padding=1))
        for name, module in self.named_modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                linear = name.startswith(("predict_flow", "upsample_flow"))
                _msra_init(module, 1.0 if linear else leaky_slope)
                if name.startswith("predict_flow"):  # initial flow near 0 instead of ~20 px
                    module.weight.data.mul_(0.1)

    @classmethod
    def from_config(cls, cfg):
        return {
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "flow_div": cfg.MODEL.FLOWNETS.FLOW_DIV,
            "loss_weights": cfg.MODEL.FLOWNETS.LOSS_WEIGHTS,
            "leaky_slope": cfg.MODEL.FLOWNETS.LEAKY_SLOPE,
        }

    @property
    def device(self):
        return self.pixel_mean.device

    def predict(self, x):
        """Multi-scale flow of a padded batch.

        Args:
            x: (B, 6, H, W) normalised frame pairs, H and W multiples of 64.
        Returns:
            [flow2, flow3, flow4, flow5, flow6]: (B, 2, H/s, W/s) for s = 4 .. 64, in units of
            flow / flow_div (full-resolution pixels).
        """
        features = {}
        out = x
        for name, *_ in _ENCODER:
            out = getattr(self, name)(out)
            features[name] = out
        feat = features["conv6"]
        flow = self.predict_flow6(feat)
        flows = [flow]
        for level, (skip, _, _) in zip((5, 4, 3, 2), _REFINE):
            up_feat = getattr(self, f"deconv{level}")(feat)
            up_flow = getattr(self, f"upsample_flow{level + 1}_to_{level}")(flow)
            feat = torch.cat([features[skip], up_feat, up_flow], dim=1)
            flow = getattr(self, f"predict_flow{level}")(feat)
            flows.append(flow)
        return flows[::-1]

    def full_resolution_flow(self, flow2):
        """Flow in pixels at the padded input size: FLOW_DIV * bilinear x4 upsampling of flow2
        (align_corners=False, i.e. cell centres at 4 i + 1.5). (B, 2, H/4, W/4) -> (B, 2, H, W)."""
        return self.flow_div * F.interpolate(flow2, scale_factor=4, mode="bilinear",
                                             align_corners=False)

    def forward(self, batched_inputs):
        """
        Args:
            batched_inputs: list of model-input dicts (docs/method.md section 10).
        Returns:
            training: dict of losses; inference: list of {"flow": (2, height, width)}.
        """
        images, _ = batch_frames(batched_inputs, self.pixel_mean, self.pixel_std,
                                 self.size_divisibility)
        flows = self.predict(images.tensor)
        if self.training:
            gt_flow, gt_valid = batch_flow_targets(batched_inputs, self.size_divisibility,
                                                   self.device)
            return multiscale_epe(flows, gt_flow, gt_valid, self.flow_div, self.loss_weights)
        full = self.full_resolution_flow(flows[0])
        results = []
        for flow, image_size, x in zip(full, images.image_sizes, batched_inputs):
            height, width = output_size(x, image_size)
            results.append({"flow": resize_flow(flow, image_size, height, width)})
        return results
