"""Input checks, batching and output resizing shared by the frame-pair meta-architectures.

Used by MotionRCNN, FlowNetS and SfM-Net:

- `require_key`: a clear ValueError when a model-input dict lacks a key (with a hint to
  MotionPredictor when `image_next` is missing, i.e. a single image was passed);
- `padded_batch`: the padded (B, C, H, W) ImageList that images of given sizes go into;
- `batch_tensors`: pad (C, H_i, W_i) tensors into one ImageList;
- `sizes_only`: an ImageList without its pixels (only the image sizes);
- `write_frames`, `write_xyz`: Motion R-CNN's input channels, written into (a view of) its batch;
- `batch_frames`: both frames of each pair, normalised and stacked (6 channels), plus the raw
  frames in [0, 1] (for photometric losses);
- `batch_flow_targets`: GT flow and its validity, padded like the frames (padding invalid);
- `batch_background`: where no GT instance mask is, padded like the frames;
- `output_size`, `resize_flow`, `resize_map`: crop padded maps and resize them to the original
  image size (flow vectors scaled with the resize; depth and masks keep their units).

Model-input dicts (docs/method.md section 10) carry `image` and `image_next` (uint8 3xHxW),
optionally `depth` (1xHxW metres), `intrinsics` (3x3), `flow` (2xHxW px) and `flow_valid` (HxW
bool), all for the (possibly resized) network input, and `height` / `width`, the original
image size.
"""
import torch
import torch.nn.functional as F
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import BitMasks, ImageList

from ...geometry import backproject

__all__ = [
    "require_key",
    "batch_frames",
    "batch_tensors",
    "padded_batch",
    "sizes_only",
    "write_frames",
    "write_xyz",
    "batch_flow_targets",
    "batch_background",
    "output_size",
    "resize_flow",
    "resize_map",
]


# Appended to "no image_next" errors: a single image (DefaultPredictor) is not a model input.
PAIR_HINT = (" Two-frame models take frame pairs: a single image (e.g. from Detectron2's "
             "DefaultPredictor) is not enough. Use motion_rcnn_d2.MotionPredictor: "
             "predictor(image, image_next, depth, intrinsics).")

def require_key(batched_inputs, key, why):
    """Raise a clear ValueError when a model-input dict lacks `key` (needed for `why`)."""
    for i, x in enumerate(batched_inputs):
        if key not in x:
            hint = PAIR_HINT if key == "image_next" else (
                " The data set must provide it (MotionDatasetMapper: dataset dicts with the "
                "matching file name, and INPUT.LOAD_FLOW True for 'flow').")
            raise ValueError(
                f"model input {i} ({x.get('image_id', x.get('file_name', '?'))}) has no '{key}', "
                f"needed for {why}.{hint}"
            )


def padded_batch(image_sizes, channels, size_divisibility, device, pad_value=0.0):
    """An ImageList of a (B, *channels, H, W) float32 tensor filled with `pad_value`, H and W
    the largest of `image_sizes` ((h_i, w_i) per image) rounded up to multiples of
    `size_divisibility`; image i goes into tensor[i, ..., :h_i, :w_i].

    The padded size is computed from the sizes as Python integers: Detectron2's
    `ImageList.from_tensors` computes it with tensor ops, which `torch.export` turns into
    data-dependent sizes that stop the export (tools/export_model.py)."""
    image_sizes = [(int(h), int(w)) for h, w in image_sizes]
    stride = max(int(size_divisibility), 1)
    height, width = (-(-max(sizes) // stride) * stride for sizes in zip(*image_sizes))
    batched = torch.full((len(image_sizes), *channels, height, width), pad_value,
                         dtype=torch.float32, device=device)
    return ImageList(batched, image_sizes)


def batch_tensors(tensors, size_divisibility, device, pad_value=0.0):
    """Pad a list of (C, H_i, W_i) tensors to one (B, C, H, W) ImageList (H, W multiples of
    `size_divisibility`, padding at the bottom/right with `pad_value`): the same batch as
    `ImageList.from_tensors` (`padded_batch`)."""
    images = padded_batch([t.shape[-2:] for t in tensors], tensors[0].shape[:-2],
                          size_divisibility, device, pad_value)
    for batched, t, (h, w) in zip(images.tensor, tensors, images.image_sizes):
        batched[..., :h, :w] = t
    return images


def sizes_only(images):
    """`images` (an ImageList) without its pixels: a (B, 0, H, W) tensor and the same image
    sizes, for the parts of a detector that read only the sizes (Detectron2's proposal
    generators and RoI heads), so that the network input can be freed before them."""
    empty = images.tensor.new_empty((images.tensor.shape[0], 0, *images.tensor.shape[-2:]))
    return ImageList(empty, images.image_sizes)


def write_frames(frames, pixel_mean, pixel_std, out, name=""):
    """out (6, H, W) = the frames (I_t, I_t+1), each (3, H, W), normalised: (I - mean) / std;
    a ValueError naming the input `name` when the frames differ in size."""
    if tuple(frames[0].shape) != tuple(frames[1].shape):
        raise ValueError(f"input {name!r}: image {tuple(frames[0].shape)} and image_next "
                         f"{tuple(frames[1].shape)} differ in size")
    for frame, part in zip(frames, (out[0:3], out[3:6])):
        torch.sub(frame.to(out.device), pixel_mean, out=part).div_(pixel_std)


def write_xyz(depth, intrinsics, xyz_scale, out):
    """out (3, H, W) = backproject(depth, K) / xyz_scale, 0 where depth (1, H, W) metres is
    invalid (<= 0 or not finite); K (3, 3) on out's device."""
    depth = depth.to(out.device, torch.float32)[None]
    invalid = (depth <= 0) | ~torch.isfinite(depth)
    points = backproject(depth.masked_fill(invalid, 0.0), intrinsics[None])
    torch.div(points.masked_fill_(invalid, 0.0)[0], xyz_scale, out=out)


def batch_frames(batched_inputs, pixel_mean, pixel_std, size_divisibility):
    """Both frames of each pair, batched.

    normalised = cat((I_t - mean) / std, (I_t+1 - mean) / std) per pair (6 channels, padded with
    0 = the mean colour), and raw = cat(I_t, I_t+1) / 255 in [0, 1] (padded with 0).

    Args:
        batched_inputs: model-input dicts with `image`, `image_next` (3xHxW, cfg.INPUT.FORMAT).
        pixel_mean, pixel_std: (3, 1, 1) tensors on the model's device.
        size_divisibility: padded H, W are multiples of this.
    Returns:
        (normalised ImageList (B, 6, H, W), raw ImageList (B, 6, H, W)); image_sizes (h_i, w_i).
    """
    require_key(batched_inputs, "image_next", "a two-frame model")
    device = pixel_mean.device
    raw, normalised = [], []
    for x in batched_inputs:
        frames = [x["image"].to(device=device, dtype=torch.float32),
                  x["image_next"].to(device=device, dtype=torch.float32)]
        if frames[0].shape != frames[1].shape:
            raise ValueError(f"image {tuple(frames[0].shape)} and image_next "
                             f"{tuple(frames[1].shape)} of {x.get('image_id', '?')} differ in size")
        raw.append(torch.cat(frames, dim=0) / 255.0)
        normalised.append(torch.cat([(f - pixel_mean) / pixel_std for f in frames], dim=0))
    return (batch_tensors(normalised, size_divisibility, device),
            batch_tensors(raw, size_divisibility, device))


def batch_flow_targets(batched_inputs, size_divisibility, device):
    """GT flow (B, 2, H, W) px and its validity (B, H, W) bool, padded like the frames (padding
    is invalid). `flow_valid` defaults to "flow is finite"; non-finite flow is zeroed."""
    require_key(batched_inputs, "flow", "flow supervision")
    flows, valids = [], []
    for x in batched_inputs:
        flow = x["flow"].to(device=device, dtype=torch.float32)
        valid = x["flow_valid"].to(device) if "flow_valid" in x else torch.ones_like(flow[0]) > 0
        valid = valid.bool() & torch.isfinite(flow).all(dim=0)
        flows.append(torch.where(valid[None], flow, torch.zeros_like(flow)))
        valids.append(valid[None].float())
    flow = batch_tensors(flows, size_divisibility, device).tensor
    valid = batch_tensors(valids, size_divisibility, device).tensor[:, 0] > 0.5
    return flow, valid


def batch_background(gt_instances, images):
    """(B, H, W) bool: True outside every GT instance mask of each image, False in the padding
    of the ImageList `images` (the batched network input); gt_instances None = no instances."""
    size = images.tensor.shape[-2:]
    out = []
    for (height, width), inst in zip(images.image_sizes, gt_instances or [None] * len(images)):
        union = torch.zeros(height, width, dtype=torch.bool, device=images.tensor.device)
        if inst is not None and len(inst):
            masks = inst.gt_masks
            if not isinstance(masks, BitMasks):
                masks = BitMasks.from_polygon_masks(masks, height, width)
            union = masks.tensor.to(union.device).any(dim=0)
        out.append(F.pad(~union, (0, size[1] - width, 0, size[0] - height)))
    return torch.stack(out)


def output_size(batched_input, image_size):
    """(height, width) to return results at: the input dict's original size, else the input's."""
    return batched_input.get("height", image_size[0]), batched_input.get("width", image_size[1])


def resize_flow(flow, image_size, height, width):
    """Crop a padded flow map to the network input size and resize it to (height, width).

    With pixel centres at integers, a resize by (s_x, s_y) = (width / w, height / h) maps a
    coordinate as x' = s_x (x + 0.5) - 0.5, so displacements scale by the same factors:
        flow'(x') = (s_x u, s_y v)(x),   sampled bilinearly (align_corners=False).

    Args:
        flow: (2, H_pad, W_pad) pixels of the network input.
        image_size: (h, w) of the network input inside the padding.
        height, width: output size in pixels.
    Returns:
        (2, height, width) pixels of the output size.
    """
    h, w = image_size
    out = sem_seg_postprocess(flow, (h, w), height, width)
    scale = torch.tensor([width / w, height / h], dtype=out.dtype, device=out.device)
    return out * scale[:, None, None]


def resize_map(values, image_size, height, width, mode="bilinear"):
    """Crop a padded (C, H_pad, W_pad) map to `image_size` (h, w) and resize it to
    (C, height, width) without changing its values' units (depth, masks). `mode` is "bilinear"
    (align_corners=False) or "nearest-exact" (pixel-centre aligned, for maps with invalid zeros)."""
    h, w = image_size
    crop = values[None, :, :h, :w]
    if (h, w) == (height, width):
        return crop[0]
    if mode == "bilinear":
        return F.interpolate(crop, size=(height, width), mode=mode, align_corners=False)[0]
    return F.interpolate(crop, size=(height, width), mode=mode)[0]
