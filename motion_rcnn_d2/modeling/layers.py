"""Small layers shared by the heads."""
import fvcore.nn.weight_init as weight_init
import torch
import torch.distributed as dist
from torch import nn

__all__ = ["RunningStandardize", "xyz_and_change", "motion_fc_layers"]

# The XYZ change between the frames is ~1 % of XYZ: it is scaled up by this factor.
XYZ_CHANGE_GAIN = 10.0


def xyz_and_change(network_input):
    """XYZ_t and 10 (XYZ_t+1 - XYZ_t) from the 12-channel network input (channels 6:9 and 9:12,
    both already divided by MOTION_RCNN.XYZ_SCALE): (B, 12, H, W) -> (B, 6, H, W).

    At a pixel on a static surface the change is the camera's motion of that point; on an
    object, its own motion plus the camera's (minus where the object moved away from the pixel).
    """
    xyz_t, xyz_t1 = network_input[:, 6:9], network_input[:, 9:12]
    return torch.cat([xyz_t, XYZ_CHANGE_GAIN * (xyz_t1 - xyz_t)], dim=1)


class RunningStandardize(nn.Module):
    """Standardise each feature with running statistics over the training inputs:

        y = (x - mu) / sqrt(var + eps),   var = E[x^2] - mu^2,

    mu and E[x^2] being exponential moving averages (``momentum``) of the per-feature mean and
    mean square of the training batches (the first non-empty batch sets them), used as they are in
    training and inference alike; no gradient flows through them.

    Why: an image-level head reads pooled backbone features that are nearly the same for every
    image (on the synthetic world the spread between images is ~10 % of the features' mean).
    A ReLU unit on such inputs is on for every image or off for every image, and the units a
    few early steps push off never come back: the camera head's first FC layer ended with
    99 % of its units dead and predicted one motion for every pair. Standardised inputs vary
    by O(1) between images, so each unit is on for some images and off for others. Unlike
    BatchNorm this is usable at a batch of 2 images (statistics over many batches) and has no
    train/test discrepancy. In distributed training the batch sums are added over the processes
    (as SyncBN does), so every process keeps the same statistics; a batch without rows (an
    image with no foreground RoI) changes nothing.
    """

    def __init__(self, num_features, momentum=0.02, eps=1e-5):
        super().__init__()
        self.momentum = momentum
        self.eps = eps
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_sq_mean", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.zeros((), dtype=torch.long))

    def forward(self, x):
        """x: (B, num_features) -> (B, num_features)."""
        if self.training:
            with torch.no_grad():
                # sums and count, so that processes (or batches) with no rows add nothing
                sums = torch.cat([x.sum(dim=0), x.pow(2).sum(dim=0), x.new_full((1,), len(x))])
                if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                    dist.all_reduce(sums)  # every process keeps the same statistics
                count = float(sums[-1])
                if count > 0:
                    mean, sq_mean = sums[:-1].view(2, -1) / count
                    rate = 1.0 if int(self.num_batches_tracked) == 0 else self.momentum
                    self.running_mean.lerp_(mean, rate)
                    self.running_sq_mean.lerp_(sq_mean, rate)
                    self.num_batches_tracked += 1
        var = (self.running_sq_mean - self.running_mean.pow(2)).clamp(min=0)
        return (x - self.running_mean) * torch.rsqrt(var + self.eps)


def motion_fc_layers(in_dim, num_fc, fc_dim, num_outputs, output_init_std, dropout=0.0):
    """The fully connected part of the motion heads: `num_fc` x (Linear with Caffe2's Xavier
    init, ReLU, Dropout when `dropout` > 0) and the output layer, normal init with std
    `output_init_std` and zero bias, i.e. near-zero motions at the start (docs/method.md
    section 3). Returns (fcs: nn.Sequential, predictor: nn.Linear)."""
    layers = []
    for _ in range(num_fc):
        fc = nn.Linear(in_dim, fc_dim)
        weight_init.c2_xavier_fill(fc)
        layers += [fc, nn.ReLU(inplace=True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        in_dim = fc_dim
    predictor = nn.Linear(in_dim, num_outputs)
    nn.init.normal_(predictor.weight, std=output_init_std)
    nn.init.constant_(predictor.bias, 0.0)
    return nn.Sequential(*layers), predictor
