"""Small Motion R-CNN configs and hand-built model inputs (docs/method.md section 10) for tests."""
import os

import torch
from detectron2.config import get_cfg
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from motion_rcnn_d2 import add_motion_rcnn_config
from motion_rcnn_d2.geometry import compose_flow, euler_angles_to_matrix

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def tiny_cfg(variant="fpn", **motion_rcnn):
    """An R18 Motion R-CNN from the shipped Base config, shrunk for fast CPU tests.

    variant: "fpn" or "c4"; motion_rcnn: overrides of MODEL.MOTION_RCNN keys.
    """
    cfg = get_cfg()
    add_motion_rcnn_config(cfg)
    name = "Base-MotionRCNN-C6-FPN.yaml" if variant == "fpn" else "Base-MotionRCNN-C6-C4.yaml"
    cfg.merge_from_file(os.path.join(CONFIG_DIR, name))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    # inputs of unit scale: a randomly initialised network keeps moderate activations
    cfg.MODEL.PIXEL_STD = [57.375, 57.12, 58.395]
    cfg.MODEL.MOTION_RCNN.XYZ_SCALE = 10.0
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.C6_NUM_BLOCKS = 1
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 200
    cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = 200
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 40
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 40
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 2
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 64
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 16
    cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 1
    cfg.MODEL.ROI_MOTION_HEAD.FC_DIM = 64
    cfg.MODEL.ROI_MOTION_HEAD.FLOW_GRID_SIZE = 7
    cfg.MODEL.CAMERA_MOTION_HEAD.CONV_DIM = 32
    cfg.MODEL.CAMERA_MOTION_HEAD.FC_DIM = 64
    for key, value in motion_rcnn.items():
        setattr(cfg.MODEL.MOTION_RCNN, key.upper(), value)
    return cfg


def intrinsics(height, width):
    """A pinhole K with f = width (pixels) and the principal point at the image centre."""
    return torch.tensor([[float(width), 0.0, (width - 1) / 2.0],
                         [0.0, float(width), (height - 1) / 2.0],
                         [0.0, 0.0, 1.0]])


def make_input(height=96, width=128, num_instances=2, seed=0, training=True, flow=True):
    """One model-input dict with `num_instances` box-shaped objects on a slanted ground depth."""
    gen = torch.Generator().manual_seed(seed)
    k = intrinsics(height, width)
    rows = torch.arange(height, dtype=torch.float32)[:, None].expand(height, width)
    depth = (40.0 - 30.0 * rows / height)[None].clone()
    depth[0, :3, :5] = 0.0  # a few invalid pixels
    x = {
        "image": torch.randint(0, 256, (3, height, width), generator=gen, dtype=torch.uint8),
        "image_next": torch.randint(0, 256, (3, height, width), generator=gen, dtype=torch.uint8),
        "depth": depth,
        "depth_next": depth * 0.98,
        "intrinsics": k,
        "height": height,
        "width": width,
        "file_name": f"synthetic_{seed}.png",
        "image_id": f"synthetic/{seed}",
    }
    masks = torch.zeros(num_instances, height, width, dtype=torch.bool)
    boxes = []
    for i in range(num_instances):
        x0 = 4 + (width // 2) * i + int(torch.randint(0, 8, (1,), generator=gen))
        y0 = height // 5 + int(torch.randint(0, 8, (1,), generator=gen))
        x1, y1 = min(x0 + width * 2 // 5, width - 1), min(y0 + height // 2, height - 1)
        masks[i, y0:y1, x0:x1] = True
        boxes.append([x0, y0, x1, y1])
    angles = torch.zeros(num_instances, 3)
    angles[:, 1] = (torch.rand(num_instances, generator=gen) - 0.5) * 0.1
    rotations = euler_angles_to_matrix(angles)
    translations = (torch.rand(num_instances, 3, generator=gen) - 0.5) * 2.0
    pivots = torch.tensor([[-3.0 + 6.0 * i, 1.0, 15.0] for i in range(num_instances)])
    pivots = pivots.reshape(num_instances, 3)
    moving = torch.arange(num_instances) % 2 == 0
    rotations[~moving] = torch.eye(3)
    translations[~moving] = 0.0
    camera_rotation = euler_angles_to_matrix(torch.tensor([0.0, 0.01, 0.0]))
    camera_translation = torch.tensor([0.0, 0.0, -0.8])
    if flow:
        gt_flow, valid = compose_flow(depth[None], k[None], masks[None].float(), rotations[None],
                                      translations[None], pivots[None], camera_rotation[None],
                                      camera_translation[None])
        x["flow"], x["flow_valid"] = gt_flow[0], valid[0]
    if training:
        inst = Instances((height, width))
        inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        inst.gt_classes = torch.arange(num_instances, dtype=torch.int64) % 2
        inst.gt_masks = BitMasks(masks)
        inst.gt_rotations = rotations
        inst.gt_translations = translations
        inst.gt_pivots = pivots
        inst.gt_moving = moving
        x["instances"] = inst
        x["camera_motion"] = {"rotation": camera_rotation, "translation": camera_translation,
                              "moving": torch.tensor(True)}
    return x


def train_step(model, inputs):
    """One training forward + backward; returns the loss dict (asserts a finite total)."""
    model.train()
    with EventStorage():
        losses = model(inputs)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    return losses


def assert_every_parameter_has_a_gradient(model):
    """What DDP without find_unused_parameters needs: every trainable parameter took part."""
    missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing


def diversify_motions(model, seed=0):
    """Random output biases, so that motions are far from identity and some instances are
    still, others moving; the camera moves."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for head in (model.roi_heads.motion_head, model.camera_head):
            if head is not None:
                bias = head.predictor.bias
                bias.copy_(torch.randn(bias.shape, generator=gen) * 2.0)
        model.camera_head.predictor.bias[-2:] = torch.tensor([-5.0, 5.0])


def outputs(model, x):
    """The eval-mode output dict of one input."""
    model.eval()
    with torch.no_grad():
        return model([x])[0]


def one_hot_by_score(masks, scores):
    """(N, H, W) float: each pixel belongs to the highest-scoring instance covering it."""
    one_hot = torch.zeros(masks.shape, dtype=torch.float32)
    taken = torch.zeros(masks.shape[1:], dtype=torch.bool)
    for k in scores.argsort(descending=True).tolist():
        one_hot[k] = (masks[k] & ~taken).float()
        taken |= masks[k]
    return one_hot
