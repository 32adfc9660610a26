"""Small layers shared by the heads."""
import torch
import torch.distributed as dist
from torch import nn

__all__ = ["RunningStandardize"]


class RunningStandardize(nn.Module):
    """Standardise each feature with running statistics over the training inputs:

        y = (x - mu) / sqrt(var + eps),   var = E[x^2] - mu^2,

    mu and E[x^2] being exponential moving averages (``momentum``) of the per-feature mean and
    mean square of the training batches (the first batch sets them), used as they are in
    training and inference alike; no gradient flows through them.

    Why: an image-level head reads pooled backbone features that are nearly the same for every
    image (on the synthetic world the spread between images is ~10 % of the features' mean).
    A ReLU unit on such inputs is on for every image or off for every image, and the units a
    few early steps push off never come back: the camera head's first FC layer ended with
    99 % of its units dead and predicted one motion for every pair. Standardised inputs vary
    by O(1) between images, so each unit is on for some images and off for others. Unlike
    BatchNorm this is usable at a batch of 2 images (statistics over many batches) and has no
    train/test discrepancy. In distributed training the batch moments are averaged over the
    processes (as SyncBN does), so every process keeps the same statistics.
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
                moments = torch.stack([x.mean(dim=0), x.pow(2).mean(dim=0)])
                if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                    dist.all_reduce(moments)  # every process keeps the same statistics
                    moments /= dist.get_world_size()
                mean, sq_mean = moments
                rate = 1.0 if int(self.num_batches_tracked) == 0 else self.momentum
                self.running_mean.lerp_(mean, rate)
                self.running_sq_mean.lerp_(sq_mean, rate)
                self.num_batches_tracked += 1
        var = (self.running_sq_mean - self.running_mean.pow(2)).clamp(min=0)
        return (x - self.running_mean) * torch.rsqrt(var + self.eps)
