"""SfM-Net's structure and motion networks (seed table "SfM-Net"; Vijayanarasimhan et al. 2017).

Conv-Deconv (both networks, weights not shared): a full-resolution 3x3 conv (C channels), then
five levels of [3x3 conv stride 2, 3x3 conv] with min(C 2^l, 8 C) channels (stride 32 at the
bottleneck), then five levels of [4x4 transposed conv stride 2, concat with the encoder feature
of the same stride, 3x3 conv] back to H x W x C (C = MODEL.SFMNET.BASE_CHANNELS = 32). ReLU
after every conv; no normalisation (batch size 1 is common). Input H, W must be multiples of 32.

Structure network: I_t -> Conv-Deconv -> 1x1 conv -> depth. Positive activation: a sigmoid
inverse depth (as Monodepth2),
    depth = 1 / (1/max_depth + (1/min_depth - 1/max_depth) sigmoid(x))   in [min_depth, max_depth],
with the 1x1 conv's bias set so that depth starts at sqrt(min_depth max_depth).

Motion network: (I_t, I_t+1) -> Conv-Deconv -> 1x1 conv -> N sigmoid masks; from the bottleneck,
average-pooled to a fixed 4 x 4 grid (so any image size works) and flattened: 2x FC 512 + ReLU,
then a linear layer to N x 9 + 6 numbers (small-std init, zero bias: motions start at identity):
per object rotation sines (3), translation (3), pivot (3), then the camera's rotation sines (3)
and translation (3); each multiplied by its scale (rotation sines unitless, translation and
pivot in metres). Rotations: R = Rz(gamma) Rx(alpha) Ry(beta) from the sines
(geometry.euler_sines_to_matrix).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from ...geometry import euler_sines_to_matrix

__all__ = ["ConvDeconv", "StructureNetwork", "MotionNetwork"]

NUM_LEVELS = 5  # stride 2^5 = 32 at the bottleneck


def _conv(in_channels, out_channels, stride=1):
    conv = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1)
    nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
    nn.init.zeros_(conv.bias)
    return nn.Sequential(conv, nn.ReLU(inplace=True))


class ConvDeconv(nn.Module):
    """Encoder-decoder with skips (module docstring). forward(x (B, C_in, H, W)) ->
    (features (B, C, H, W), bottleneck (B, 8 C, H/32, W/32))."""

    def __init__(self, in_channels, base_channels=32):
        super().__init__()
        widths = [min(base_channels * 2**level, 8 * base_channels)
                  for level in range(NUM_LEVELS + 1)]
        self.stem = _conv(in_channels, widths[0])
        self.down = nn.ModuleList(
            nn.Sequential(_conv(widths[l - 1], widths[l], stride=2), _conv(widths[l], widths[l]))
            for l in range(1, NUM_LEVELS + 1)
        )
        self.up = nn.ModuleList()
        self.fuse = nn.ModuleList()
        for level in range(NUM_LEVELS, 0, -1):
            deconv = nn.ConvTranspose2d(widths[level], widths[level - 1], 4, 2, padding=1)
            nn.init.kaiming_normal_(deconv.weight, nonlinearity="relu")
            nn.init.zeros_(deconv.bias)
            self.up.append(nn.Sequential(deconv, nn.ReLU(inplace=True)))
            self.fuse.append(_conv(2 * widths[level - 1], widths[level - 1]))
        self.out_channels = widths[0]
        self.bottleneck_channels = widths[-1]

    def forward(self, x):
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        bottleneck = skips.pop()
        out = bottleneck
        for up, fuse in zip(self.up, self.fuse):
            out = fuse(torch.cat([skips.pop(), up(out)], dim=1))
        return out, bottleneck


class StructureNetwork(nn.Module):
    """I_t (B, 3, H, W) normalised -> depth (B, 1, H, W) metres in [min_depth, max_depth]."""

    def __init__(self, base_channels=32, min_depth=0.5, max_depth=300.0):
        super().__init__()
        if not 0 < min_depth < max_depth:
            raise ValueError(f"MODEL.SFMNET.MIN_DEPTH ({min_depth}) and MAX_DEPTH ({max_depth}) "
                             "must satisfy 0 < MIN_DEPTH < MAX_DEPTH (metres)")
        self.conv_deconv = ConvDeconv(3, base_channels)
        self.depth_head = nn.Conv2d(self.conv_deconv.out_channels, 1, 1)
        self.min_disparity = 1.0 / max_depth
        self.disparity_range = 1.0 / min_depth - 1.0 / max_depth
        # sigmoid(b) such that depth = sqrt(min_depth * max_depth) at a zero input.
        start = (1.0 / math.sqrt(min_depth * max_depth) - self.min_disparity) / self.disparity_range
        nn.init.normal_(self.depth_head.weight, std=1e-3)
        nn.init.constant_(self.depth_head.bias, math.log(start / (1.0 - start)))

    def forward(self, image):
        features, _ = self.conv_deconv(image)
        disparity = self.min_disparity + self.disparity_range * torch.sigmoid(
            self.depth_head(features)
        )
        return 1.0 / disparity


class MotionNetwork(nn.Module):
    """(I_t, I_t+1) (B, 6, H, W) normalised -> masks (B, N, H, W) in (0, 1) and motions:
    {"rotations" (B, N, 3, 3), "translations" (B, N, 3) m, "pivots" (B, N, 3) m,
     "camera_rotation" (B, 3, 3), "camera_translation" (B, 3) m}."""

    def __init__(self, num_motions=3, base_channels=32, fc_dim=512, pool_size=4,
                 rotation_scale=0.01, translation_scale=1.0, pivot_scale=10.0,
                 output_init_std=1e-3):
        super().__init__()
        self.num_motions = num_motions
        self.pool_size = pool_size
        self.scales = (rotation_scale, translation_scale, pivot_scale)
        self.conv_deconv = ConvDeconv(6, base_channels)
        self.mask_head = nn.Conv2d(self.conv_deconv.out_channels, num_motions, 1)
        nn.init.normal_(self.mask_head.weight, std=1e-2)
        nn.init.zeros_(self.mask_head.bias)
        in_dim = self.conv_deconv.bottleneck_channels * pool_size**2
        self.fc = nn.Sequential(
            nn.Linear(in_dim, fc_dim), nn.ReLU(inplace=True),
            nn.Linear(fc_dim, fc_dim), nn.ReLU(inplace=True),
        )
        for layer in self.fc:
            if isinstance(layer, nn.Linear):
                nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
                nn.init.zeros_(layer.bias)
        self.motion_out = nn.Linear(fc_dim, num_motions * 9 + 6)
        nn.init.normal_(self.motion_out.weight, std=output_init_std)
        nn.init.zeros_(self.motion_out.bias)

    def forward(self, pair):
        features, bottleneck = self.conv_deconv(pair)
        masks = torch.sigmoid(self.mask_head(features))
        pooled = F.adaptive_avg_pool2d(bottleneck, self.pool_size).flatten(1)
        raw = self.motion_out(self.fc(pooled))
        rot_scale, trans_scale, pivot_scale = self.scales
        objects = raw[:, : 9 * self.num_motions].reshape(-1, self.num_motions, 9)
        camera = raw[:, 9 * self.num_motions:]
        motions = {
            "rotations": euler_sines_to_matrix(rot_scale * objects[..., 0:3]),
            "translations": trans_scale * objects[..., 3:6],
            "pivots": pivot_scale * objects[..., 6:9],
            "camera_rotation": euler_sines_to_matrix(rot_scale * camera[:, 0:3]),
            "camera_translation": trans_scale * camera[:, 3:6],
        }
        return masks, motions
