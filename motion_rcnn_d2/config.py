"""Every config key this plugin adds, each with its unit and origin.

Call :func:`add_motion_rcnn_config` on a Detectron2 ``get_cfg()`` before merging
one of the shipped YAML files.
"""
from detectron2.config import CfgNode as CN

__all__ = ["add_motion_rcnn_config"]


def add_motion_rcnn_config(cfg):
    """Add the keys of Motion R-CNN, FlowNetS, SfM-Net and the motion data sets."""
    _C = cfg

    # ---------------------------------------------------------------- Motion R-CNN
    _C.MODEL.MOTION_RCNN = CN()
    # Append XYZ_t and XYZ_t+1 (back-projected depth, metres) to the two frames:
    # 12 input channels instead of 6 (docs/method.md section 1).
    _C.MODEL.MOTION_RCNN.XYZ_INPUT = True
    # XYZ channels are divided by this (metres); the thesis used none (1.0).
    _C.MODEL.MOTION_RCNN.XYZ_SCALE = 1.0
    # Predict per-RoI 3D motion (rotation, translation, pivot, moving). Off: the model
    # is Mask R-CNN on the two-frame (+XYZ) input with the C6 backbone.
    _C.MODEL.MOTION_RCNN.MOTION_ON = True
    # Predict the camera's ego-motion (MODEL.CAMERA_MOTION_HEAD; docs/method.md section 3).
    _C.MODEL.MOTION_RCNN.CAMERA_MOTION_ON = True
    # What supervises motion: "motion" (3D GT), "flow" (GT optical flow) or "both"
    # (docs/method.md section 6).
    _C.MODEL.MOTION_RCNN.SUPERVISION = "motion"
    # Compose the full-resolution optical flow at inference (needs masks and depth).
    _C.MODEL.MOTION_RCNN.FLOW_OUTPUT = True
    # Predicted masks are binarised at this probability for flow composition.
    _C.MODEL.MOTION_RCNN.MASK_THRESHOLD = 0.5
    # An instance (or the camera) whose moving probability is <= this gets identity motion.
    _C.MODEL.MOTION_RCNN.MOVING_THRESHOLD = 0.5
    # Test-time refinement of each detection's motion by a sweep around the RoI head's
    # prediction over its mask's points, and with MOVING_COST_RATIO its moving / still
    # (modeling/object_sweep.py; needs depth and, for the depth term, depth_next in the
    # inputs; docs/method.md section 3).
    _C.MODEL.MOTION_RCNN.OBJECT_SWEEP = CN()
    _C.MODEL.MOTION_RCNN.OBJECT_SWEEP.ENABLED = False
    # (step, count) of the yaw offsets (radians) and of the x / z offsets (metres): first
    # (dx, dz) over SHIFT x SHIFT at the predicted yaw, then (dyaw, dx, dz) over YAW x 5 x 5
    # shift steps around the best; each grid is followed by one of 5 per axis at half the
    # step, then a parabola (geometry.sweep_object_motion).
    _C.MODEL.MOTION_RCNN.OBJECT_SWEEP.YAW = [0.005, 13]
    _C.MODEL.MOTION_RCNN.OBJECT_SWEEP.SHIFT = [0.05, 21]
    # Points per mask (evenly spread over it).
    _C.MODEL.MOTION_RCNN.OBJECT_SWEEP.NUM_POINTS = 512
    # Truncations of the photometric (normalised frames' mean channel) and depth (metres)
    # terms, as CAMERA_MOTION_HEAD.SWEEP_CLAMP / SWEEP_DEPTH_CLAMP (0: photometric only); a
    # depth metre weighs CLAMP / DEPTH_CLAMP (docs/method.md section 3: 0.1 against 0.3 m
    # took E_R from 44 to 38 % of the zero row on synthetic_val).
    _C.MODEL.MOTION_RCNN.OBJECT_SWEEP.CLAMP = 0.5
    _C.MODEL.MOTION_RCNN.OBJECT_SWEEP.DEPTH_CLAMP = 0.1
    # R in (0, 1): the sweep refines every detection and decides moving / still, moving when
    # its refined motion's cost is below R x the cost of standing still (pred_moving_scores
    # = clamp(0.5 (1 - rho) / (1 - R), 0, 1), rho the cost ratio); 0: the head decides and
    # only the detections it predicts moving are refined. On synthetic_val (docs/method.md
    # section 3) moving precision / recall: the head 0.89 / 0.80, R 0.6: 0.89 / 0.91.
    _C.MODEL.MOTION_RCNN.OBJECT_SWEEP.MOVING_COST_RATIO = 0.6

    # ------------------------------------------------------------- C6 backbone
    # Number of bottleneck blocks of the extra stride-64 stage C6 (thesis table: 2;
    # original code: 3). Out channels = RES5 out channels, bottleneck = out / 4.
    _C.MODEL.RESNETS.C6_NUM_BLOCKS = 2
    # Inflate a 3-channel conv1 of loaded ImageNet/COCO weights to the 6/12-channel
    # stem (RGB filters copied to each frame / number of frames, XYZ filters zero).
    _C.MODEL.RESNETS.INFLATE_STEM = True

    # ---------------------------------------------------------------- mask head
    # Detections of an image the mask head reads at a time at inference (0: all at once, as
    # Detectron2). The masks are the same (to float rounding); the peak memory is not: with
    # 100 detections the R50 mask head's convolution workspace peaks at ~320 MiB in one call,
    # ~100 MiB in chunks of 16.
    _C.MODEL.ROI_MASK_HEAD.INFERENCE_CHUNK = 16

    # ---------------------------------------------------------- RoI motion head
    _C.MODEL.ROI_MOTION_HEAD = CN()
    _C.MODEL.ROI_MOTION_HEAD.NAME = "FCMotionHead"
    # Fully connected layers (each FC_DIM wide, ReLU) on top of the head's input.
    _C.MODEL.ROI_MOTION_HEAD.NUM_FC = 2
    _C.MODEL.ROI_MOTION_HEAD.FC_DIM = 1024
    # What the head reads per RoI, concatenated: "box" (the box head's features, the thesis),
    # "xyz" (XYZ_t and 10 (XYZ_t+1 - XYZ_t) of the network input, RoIAligned to
    # XYZ_POOL_SIZE^2 cells; needs MOTION_RCNN.XYZ_INPUT) and "camera" (the camera head's
    # predicted translation, no gradient to it; needs MOTION_RCNN.CAMERA_MOTION_ON).
    _C.MODEL.ROI_MOTION_HEAD.IN_FEATURES = ["box"]
    _C.MODEL.ROI_MOTION_HEAD.XYZ_POOL_SIZE = 5
    # Standardise the head's input with running statistics (layers.RunningStandardize).
    _C.MODEL.ROI_MOTION_HEAD.STANDARDIZE_INPUT = False
    # Learning-rate multiplier of the head's parameters (engine/optimizer.py).
    _C.MODEL.ROI_MOTION_HEAD.LR_FACTOR = 1.0
    # One motion for all classes instead of one per class.
    _C.MODEL.ROI_MOTION_HEAD.CLS_AGNOSTIC = False
    # "euler_sines" (3 sines of Euler angles, R = Rz Rx Ry) or "quaternion".
    _C.MODEL.ROI_MOTION_HEAD.ROTATION_PARAM = "euler_sines"
    # Std of the normal init of the output layer (small: see docs/method.md section 3).
    _C.MODEL.ROI_MOTION_HEAD.OUTPUT_INIT_STD = 1e-3
    # Network outputs are multiplied by these scales: rotation parameters (sines),
    # translation (m), pivot (m). Dataset statistics: mean |sine| and mean |t|.
    _C.MODEL.ROI_MOTION_HEAD.ROTATION_SCALE = 0.01
    _C.MODEL.ROI_MOTION_HEAD.TRANSLATION_SCALE = 0.5
    _C.MODEL.ROI_MOTION_HEAD.PIVOT_SCALE = 10.0
    # Loss weights of the rotation, translation, pivot and moving terms.
    _C.MODEL.ROI_MOTION_HEAD.ROTATION_LOSS_WEIGHT = 1.0
    _C.MODEL.ROI_MOTION_HEAD.TRANSLATION_LOSS_WEIGHT = 1.0
    _C.MODEL.ROI_MOTION_HEAD.PIVOT_LOSS_WEIGHT = 1.0
    _C.MODEL.ROI_MOTION_HEAD.MOVING_LOSS_WEIGHT = 1.0
    # Flow supervision: the m x m grid sampled inside each proposal box, and the
    # weight of its L1 flow loss (px).
    _C.MODEL.ROI_MOTION_HEAD.FLOW_GRID_SIZE = 14
    _C.MODEL.ROI_MOTION_HEAD.FLOW_LOSS_WEIGHT = 1.0

    # ------------------------------------------------------ camera motion head
    _C.MODEL.CAMERA_MOTION_HEAD = CN()
    # "CorrelationCameraHead" (default: a cost volume of the two frames of the network input,
    # IN_FEATURE "input") or "CameraMotionHead" (a backbone feature, e.g. "res6"; with NORM ""
    # and STANDARDIZE_INPUT False the thesis's head, which learned no ego-motion in the CPU
    # schedule: docs/method.md section 3).
    _C.MODEL.CAMERA_MOTION_HEAD.NAME = "CorrelationCameraHead"
    # What the head reads: a backbone feature (C6 = "res6", stride 64) or "input" (the network
    # input: stacked frames (+ XYZ)).
    _C.MODEL.CAMERA_MOTION_HEAD.IN_FEATURE = "input"
    # CorrelationCameraHead: largest displacement of its cost volume, in cells of stride 8.
    _C.MODEL.CAMERA_MOTION_HEAD.CORRELATION_RADIUS = 3
    # SweepCameraHead: its grid of forward translations t_z (min, max, count; metres, < 0 is
    # driving forward) and yaws (min, max, count; radians), the stride (pixels) between the
    # points of frame t it warps, the truncation of the photometric difference (units of the
    # normalised frames) and of the depth difference to frame t+1's depth (metres; 0: no depth
    # term).
    _C.MODEL.CAMERA_MOTION_HEAD.SWEEP_FORWARD = [-1.6, -0.2, 8]
    _C.MODEL.CAMERA_MOTION_HEAD.SWEEP_YAW = [-0.015, 0.015, 5]
    _C.MODEL.CAMERA_MOTION_HEAD.SWEEP_STRIDE = 4
    _C.MODEL.CAMERA_MOTION_HEAD.SWEEP_CLAMP = 0.5
    _C.MODEL.CAMERA_MOTION_HEAD.SWEEP_DEPTH_CLAMP = 0.3
    # 1x1 conv width, pooled grid (resized to POOL_SIZE x POOL_SIZE), FC layers.
    _C.MODEL.CAMERA_MOTION_HEAD.CONV_DIM = 512
    # Normalisation after the 1x1 conv ("" none, "GN", "BN", ...): without one the conv + ReLU
    # can die during training (constant camera motion for every input).
    _C.MODEL.CAMERA_MOTION_HEAD.NORM = ""
    _C.MODEL.CAMERA_MOTION_HEAD.POOL_SIZE = 7
    # Standardise the pooled features with running statistics before the FC layers
    # (modeling/layers.py): keeps the FC ReLUs alive on features that are nearly the same for
    # every image. False (with NORM "") is the thesis's head.
    _C.MODEL.CAMERA_MOTION_HEAD.STANDARDIZE_INPUT = True
    _C.MODEL.CAMERA_MOTION_HEAD.NUM_FC = 2
    _C.MODEL.CAMERA_MOTION_HEAD.FC_DIM = 1024
    _C.MODEL.CAMERA_MOTION_HEAD.DROPOUT = 0.0
    # Predict a moving/still logit pair for the camera.
    _C.MODEL.CAMERA_MOTION_HEAD.MOVING_ON = True
    _C.MODEL.CAMERA_MOTION_HEAD.ROTATION_PARAM = "euler_sines"
    _C.MODEL.CAMERA_MOTION_HEAD.OUTPUT_INIT_STD = 1e-3
    _C.MODEL.CAMERA_MOTION_HEAD.ROTATION_SCALE = 0.01
    _C.MODEL.CAMERA_MOTION_HEAD.TRANSLATION_SCALE = 1.0
    # Added to the translation output (metres): the data set's mean camera translation, so that
    # the head predicts the deviation from it in units of TRANSLATION_SCALE (its spread).
    _C.MODEL.CAMERA_MOTION_HEAD.TRANSLATION_MEAN = [0.0, 0.0, 0.0]
    _C.MODEL.CAMERA_MOTION_HEAD.ROTATION_LOSS_WEIGHT = 1.0
    _C.MODEL.CAMERA_MOTION_HEAD.TRANSLATION_LOSS_WEIGHT = 1.0
    _C.MODEL.CAMERA_MOTION_HEAD.MOVING_LOSS_WEIGHT = 1.0
    # Flow supervision: L1 (px) between camera-only flow and GT flow on pixels
    # outside all GT instances.
    _C.MODEL.CAMERA_MOTION_HEAD.FLOW_LOSS_WEIGHT = 1.0
    # Multiplies SOLVER.BASE_LR for the camera head's parameters (engine/optimizer.py): its
    # FC layers get one sample per image, and at the full LR their ReLUs died.
    _C.MODEL.CAMERA_MOTION_HEAD.LR_FACTOR = 1.0

    # ------------------------------------------------------------------ FlowNetS
    _C.MODEL.FLOWNETS = CN()
    # Flow targets are divided by this before the loss (FlowNet's convention).
    _C.MODEL.FLOWNETS.FLOW_DIV = 20.0
    # Multi-scale EPE weights, fine (stride 4) to coarse (stride 64).
    _C.MODEL.FLOWNETS.LOSS_WEIGHTS = [0.005, 0.01, 0.02, 0.08, 0.32]
    # Slope of the leaky ReLU.
    _C.MODEL.FLOWNETS.LEAKY_SLOPE = 0.1

    # ------------------------------------------------------------------- SfM-Net
    _C.MODEL.SFMNET = CN()
    # Number of object motion masks / motions (SfM-Net paper: 3).
    _C.MODEL.SFMNET.NUM_MOTIONS = 3
    # Width of the conv-deconv networks' last feature map (H x W x 32 in the paper).
    _C.MODEL.SFMNET.BASE_CHANNELS = 32
    # Loss weights: photometric L1 (grey levels / 255), smoothness of depth, flow
    # and masks, and optional supervision of depth (m), camera motion and flow (px).
    # Depth smoothness acts on mean-normalised inverse depth (see meta_arch/sfmnet.py).
    _C.MODEL.SFMNET.PHOTOMETRIC_WEIGHT = 1.0
    _C.MODEL.SFMNET.DEPTH_SMOOTH_WEIGHT = 0.01
    _C.MODEL.SFMNET.FLOW_SMOOTH_WEIGHT = 0.01
    _C.MODEL.SFMNET.MASK_SMOOTH_WEIGHT = 0.01
    _C.MODEL.SFMNET.DEPTH_WEIGHT = 0.0
    _C.MODEL.SFMNET.CAMERA_MOTION_WEIGHT = 0.0
    _C.MODEL.SFMNET.FLOW_WEIGHT = 0.0
    # Use the given depth input instead of the structure network's prediction.
    _C.MODEL.SFMNET.USE_GT_DEPTH = False
    # Range of the structure network's depth (m): sigmoid inverse depth between 1/MAX and 1/MIN.
    _C.MODEL.SFMNET.MIN_DEPTH = 0.5
    _C.MODEL.SFMNET.MAX_DEPTH = 300.0
    # Motion outputs are multiplied by these scales: rotation sines, translation (m), pivot (m).
    _C.MODEL.SFMNET.ROTATION_SCALE = 0.01
    _C.MODEL.SFMNET.TRANSLATION_SCALE = 1.0
    _C.MODEL.SFMNET.PIVOT_SCALE = 10.0

    # -------------------------------------------------------------------- data
    # Photometric augmentation applied identically to both frames: brightness,
    # contrast and saturation jitter ranges as (min, max) factors; (1, 1) = off.
    _C.INPUT.BRIGHTNESS = (1.0, 1.0)
    _C.INPUT.CONTRAST = (1.0, 1.0)
    _C.INPUT.SATURATION = (1.0, 1.0)
    # Ground truth the mapper loads besides frames, depth and K.
    _C.INPUT.LOAD_FLOW = True
    _C.INPUT.LOAD_DEPTH_NEXT = True

    # ------------------------------------------------------------------ solver
    # "SGD" (Detectron2's, MOMENTUM / NESTEROV) or "ADAMW" (torch.optim.AdamW with BETAS and
    # decoupled WEIGHT_DECAY); both with Detectron2's parameter groups, clipping and LR schedule.
    _C.SOLVER.OPTIMIZER = "SGD"
    _C.SOLVER.BETAS = (0.9, 0.999)

    # ------------------------------------------------------------- diagnostics
    # Every PERIOD iterations (0 = off) train_net.py records activation and gradient statistics
    # of every conv / FC layer under these modules of the model (engine/head_stats.py) into
    # metrics.json and TensorBoard: share of active units, dead units, spread over the batch.
    _C.DIAGNOSTICS = CN()
    _C.DIAGNOSTICS.PERIOD = 0
    _C.DIAGNOSTICS.MODULES = ["camera_head"]
    return cfg
