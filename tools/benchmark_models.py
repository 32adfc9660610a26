"""The models of tools/benchmark.py and how they are timed.

Models (random weights, nothing is downloaded; the same ResNet depth, NUM_CLASSES = 2,
FrozenBN, FREEZE_AT 2): "mask_rcnn" = Detectron2's GeneralizedRCNN from
configs/Base-RCNN-FPN.yaml on frame t (3 channels); "motion_rcnn_6ch" / "motion_rcnn_12ch" =
configs/Base-MotionRCNN-C6-FPN.yaml without / with XYZ input; "mask_rcnn_pad64" = "mask_rcnn"
with its input padded to multiples of 64 (a diagnostic: what padding for C6's stride would
cost; the C6-FPN backbone pads to 32 like Detectron2's FPN); "mask_rcnn_chunked" =
"mask_rcnn" whose mask head reads 16 detections at a time at inference, as Motion R-CNN's
(MODEL.ROI_MASK_HEAD.INFERENCE_CHUNK; a memory diagnostic: how much of the peak that saves
in stock Mask R-CNN too); "flownets", "sfmnet" from their Base configs.

The R-CNNs see the same number of RoIs, which random weights would otherwise make
model-dependent:
- RPN.NMS_THRESH = 1.0: a random RPN's NMS keeps 400..1000 proposals depending on the
  model; without it every model passes exactly POST_NMS_TOPK (1000) to the box head;
- ROI_HEADS.SCORE_THRESH_TEST = 0, NMS_THRESH_TEST = 1.0 and TEST.DETECTIONS_PER_IMAGE = 100
  (quick: 25): every model keeps exactly that many detections for the mask head, the motion
  head and the flow composition;
- POOLER_SAMPLING_RATIO = 2 (box and mask): with Detectron2's adaptive 0 the RoIAlign cost
  (its CPU backward is the largest op of a training step) grows with the RoI sizes, which
  random RPNs choose differently per model;
- ROI_HEADS.IOU_THRESHOLDS = [0.99]: random proposals overlap the GT boxes by chance, giving
  a model-dependent number (2..128) of foreground RoIs for the mask and motion heads in
  training; at 0.99 these are exactly the GT boxes appended to the proposals, in every model
  (BATCH_SIZE_PER_IMAGE = 512 RoIs for the box head as usual).
The counts are recorded. PIXEL_STD is the ImageNet std and XYZ_SCALE 10 m for every model
(moderate activations; no effect on the cost).

Timing: `time_rounds` runs the models in interleaved rounds and reports medians;
`StageTimer` splits an inference into the submodules of STAGES (forward hooks); `train_step`
splits an iteration into forward, backward and an SGD step with lr 0 (the full cost of a
step, unchanged weights). `now` synchronises CUDA before reading the clock.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch (see train_net.py)

import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

import motion_rcnn_d2  # noqa: E402,F401  (compat layer, registrations)
from detectron2.config import get_cfg  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

from motion_rcnn_d2 import add_motion_rcnn_config  # noqa: E402

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
RCNNS = ("mask_rcnn", "mask_rcnn_pad64", "motion_rcnn_6ch", "motion_rcnn_12ch")
CHUNKED = "mask_rcnn_chunked"  # memory diagnostic (module docstring)
STAGES = ("backbone", "proposal_generator", "roi_heads.box_pooler", "roi_heads.box_head",
          "roi_heads.box_predictor", "roi_heads.mask_pooler", "roi_heads.mask_head",
          "roi_heads.motion_head", "camera_head")
SAMPLING_RATIO = 2  # RoIAlign samples per bin side for every R-CNN (module docstring)
FG_IOU = 0.99  # foreground RoIs in training = the GT boxes appended to the proposals


def model_cfg(kind, depth, device, detections=100):
    """The Detectron2 config of the benchmarked model `kind` (module docstring)."""
    cfg = get_cfg()
    add_motion_rcnn_config(cfg)
    name = {"flownets": "Base-FlowNetS.yaml", "sfmnet": "Base-SfMNet.yaml"}.get(
        kind, "Base-RCNN-FPN.yaml" if kind.startswith("mask") else "Base-MotionRCNN-C6-FPN.yaml")
    cfg.merge_from_file(os.path.join(CONFIGS, name))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = device
    if kind == CHUNKED:  # StandardROIHeads plus the chunked mask head
        cfg.MODEL.ROI_HEADS.NAME = "MotionROIHeads"
        cfg.MODEL.MOTION_RCNN.MOTION_ON = False
    if kind in RCNNS + (CHUNKED,):
        cfg.MODEL.PIXEL_STD = [57.375, 57.12, 58.395]
        cfg.MODEL.RESNETS.DEPTH = depth
        if depth in (18, 34):
            cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = 2
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
        cfg.TEST.DETECTIONS_PER_IMAGE = detections
        cfg.MODEL.MOTION_RCNN.XYZ_INPUT = kind == "motion_rcnn_12ch"
        cfg.MODEL.MOTION_RCNN.XYZ_SCALE = 10.0
        cfg.MODEL.RPN.NMS_THRESH = 1.0  # equal RoI counts (module docstring)
        cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST = 1.0
        cfg.MODEL.ROI_HEADS.IOU_THRESHOLDS = [FG_IOU]
        cfg.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO = SAMPLING_RATIO
        cfg.MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO = SAMPLING_RATIO
    return cfg


def build(kind, depth, device, detections=100):
    """The model `kind` in eval mode, initialised from seed 0."""
    torch.manual_seed(0)
    model = build_model(model_cfg(kind, depth, device, detections)).eval()
    if kind == "mask_rcnn_pad64":  # inputs padded to 64 (module docstring)
        model.backbone._size_divisibility = 64
    return model


def is_cuda(device):
    """Whether `device` is a CUDA device: its clock reads wait for the queued work (`now`),
    its memory is read from torch.cuda, and stage times come from extra rounds."""
    return torch.device(device).type == "cuda"


def now(device):
    """perf_counter after the device's queued work is done."""
    if is_cuda(device):
        torch.cuda.synchronize()
    return time.perf_counter()


def infer(model, x):
    """The output dict of one model input (no gradients)."""
    with torch.no_grad():
        return model([x])[0]


def train_step(model, optimizer, x, device="cpu", phases=None):
    """One training iteration on `x`: forward, backward, optimizer step (their seconds and the
    number of foreground RoIs are appended to `phases` when given)."""
    start = now(device)
    with EventStorage() as storage:
        losses = model([x])
    forward = now(device)
    optimizer.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    backward = now(device)
    optimizer.step()
    if phases is not None:
        phases.append({"forward": forward - start, "backward": backward - forward,
                       "optimizer": now(device) - backward,
                       "fg_rois": storage.latest()["roi_head/num_fg_samples"][0]})


def sgd(model):
    """SGD with momentum and weight decay but lr 0: the full cost of a step, unchanged weights."""
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0,
                           momentum=0.9, weight_decay=1e-4)


def time_rounds(calls, warmup, repeats, device):
    """Median seconds of each callable over `repeats` interleaved rounds (after `warmup`
    rounds); every callable is called with the round number."""
    for i in range(warmup):
        for fn in calls.values():
            fn(i)
    samples = {name: [] for name in calls}
    for i in range(repeats):
        for name, fn in calls.items():
            torch.manual_seed(i)  # the same RPN / RoI sampling for every model of a round
            start = now(device)
            fn(i)
            samples[name].append(now(device) - start)
    return {name: statistics.median(s) for name, s in samples.items()}


def medians(records):
    """Per-key median of a list of dicts (missing keys count as 0)."""
    keys = dict.fromkeys(k for r in records for k in r)
    return {k: statistics.median(r.get(k, 0.0) for r in records) for k in keys}


class StageTimer:
    """ms spent in the submodules of STAGES (forward hooks) between start() and stop(), and
    the rest ("other": pre-processing, post-processing, flow composition)."""

    def __init__(self, model, device):
        self.device, self.rounds, self.proposals = device, [], None
        self._spent, self._handles = None, []
        for name in STAGES:
            module = model
            for part in name.split("."):
                module = getattr(module, part, None)
            if isinstance(module, torch.nn.Module):
                self._handles += [
                    module.register_forward_pre_hook(lambda *_, n=name: self._tick(n, -1)),
                    module.register_forward_hook(
                        lambda _m, _i, out, n=name: self._tick(n, 1, out))]

    def _tick(self, name, sign, outputs=None):
        if self._spent is not None:
            self._spent[name] = self._spent.get(name, 0.0) + sign * now(self.device)
            if name == "proposal_generator" and outputs is not None:
                self.proposals = len(outputs[0][0])  # proposals of the (only) image

    def start(self):
        self._spent = {}
        self._start = now(self.device)

    def stop(self):
        total = now(self.device) - self._start
        stages = {name: 1000 * self._spent.get(name, 0.0) for name in STAGES}
        stages["other"] = 1000 * total - sum(stages.values())
        self.rounds.append(stages)
        self._spent = None

    def close(self):
        for handle in self._handles:
            handle.remove()


def parameter_counts(model):
    """Millions of parameters: all of them and the trainable ones."""
    params = list(model.parameters())
    return {"total_m": sum(p.numel() for p in params) / 1e6,
            "trainable_m": sum(p.numel() for p in params if p.requires_grad) / 1e6}
