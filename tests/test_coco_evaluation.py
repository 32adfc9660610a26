"""build_motion_evaluators: COCO box/mask AP on our dataset dicts (RLE, string image ids) next to
the motion metrics, on the pure-Python Detectron2 build as well."""
import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

import motion_rcnn_d2  # noqa: F401
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import BitMasks, Boxes, BoxMode, Instances

from motion_rcnn_d2 import add_motion_rcnn_config, compat
from motion_rcnn_d2.evaluation import MotionEvaluator, build_motion_evaluators

H, W = 32, 48
# (image index, class, box XYXY): image 0 has a Car and a Van, image 1 a Car
OBJECTS = [(0, 0, (2, 3, 14, 13)), (0, 1, (20, 8, 40, 26)), (1, 0, (10, 10, 30, 22))]


def _mask(box):
    m = np.zeros((H, W), dtype=bool)
    m[box[1]:box[3], box[0]:box[2]] = True
    return m


def _rle(mask):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")  # our dataset dicts: counts as str
    return rle


def _dataset_dicts(with_annotations=True):
    dicts = []
    for i in range(2):
        d = {"file_name": f"rgb_{i:05d}.jpg", "file_name_next": f"rgb_{i + 1:05d}.jpg",
             "height": H, "width": W, "image_id": f"SceneNN/clone/{i:05d}",
             "intrinsics": [[50.0, 0, 23.5], [0, 50.0, 15.5], [0, 0, 1]]}
        if with_annotations:
            d["annotations"] = [
                {"bbox": list(box), "bbox_mode": BoxMode.XYXY_ABS, "category_id": c,
                 "segmentation": _rle(_mask(box)), "iscrowd": 0, "track_id": k,
                 "motion": {"rotation": np.eye(3).tolist(), "translation": [0.0, 0.0, 1.0],
                            "pivot": [0.0, 1.0, 10.0], "moving": True}}
                for k, (img, c, box) in enumerate(OBJECTS) if img == i]
        dicts.append(d)
    return dicts


@pytest.fixture
def dataset(request):
    name = f"coco_eval_test_{request.node.name}"
    with_annotations = getattr(request, "param", True)
    DatasetCatalog.register(name, lambda: _dataset_dicts(with_annotations))
    MetadataCatalog.get(name).set(thing_classes=["Car", "Van"])
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _cfg(meta_architecture="MotionRCNN"):
    cfg = get_cfg()
    add_motion_rcnn_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = meta_architecture
    cfg.MODEL.MASK_ON = True
    return cfg


def _pairs(wrong_mask_in_image1=False):
    """Model inputs (GT) and outputs: every detection exact, except optionally image 1's mask."""
    pairs = []
    for i, d in enumerate(_dataset_dicts()):
        anns = d["annotations"]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32)
        masks = torch.from_numpy(np.stack([mask_util.decode(a["segmentation"]) for a in anns])).bool()
        gt = Instances((H, W), gt_boxes=Boxes(boxes), gt_masks=BitMasks(masks),
                       gt_classes=torch.tensor([a["category_id"] for a in anns]),
                       gt_rotations=torch.eye(3).expand(len(anns), 3, 3).clone(),
                       gt_translations=torch.tensor([[0.0, 0.0, 1.0]] * len(anns)),
                       gt_pivots=torch.tensor([[0.0, 1.0, 10.0]] * len(anns)),
                       gt_moving=torch.ones(len(anns), dtype=torch.bool))
        pred_masks = masks.clone()
        if wrong_mask_in_image1 and i == 1:
            pred_masks[0] = torch.from_numpy(_mask((0, 0, 8, 8)))  # IoU 0 with the GT mask
        pred = Instances((H, W), pred_boxes=Boxes(boxes.clone()), pred_masks=pred_masks,
                         scores=torch.tensor([0.9 - 0.1 * i] * len(anns)),
                         pred_classes=gt.gt_classes.clone(),
                         pred_rotations=gt.gt_rotations.clone(),
                         pred_translations=gt.gt_translations + torch.tensor([0.0, 0.3, 0.4]),
                         pred_pivots=gt.gt_pivots.clone(), pred_moving_scores=torch.full((len(anns),), 0.9))
        inp = {"image_id": d["image_id"], "file_name": d["file_name"], "height": H, "width": W,
               "instances": gt}
        pairs.append((inp, {"instances": pred}))
    return pairs


def _run(evaluators, pairs):
    evaluators.reset()
    for inp, out in pairs:
        evaluators.process([inp], [out])
    return evaluators.evaluate()


def test_motion_rcnn_gets_coco_and_motion_evaluators(dataset, tmp_path):
    with open(os.path.join(tmp_path, f"{dataset}_coco_format.json"), "w") as f:
        json.dump({"images": [], "annotations": [], "categories": []}, f)  # stale, earlier run
    evaluators = build_motion_evaluators(_cfg(), dataset, str(tmp_path))
    kinds = [type(e) for e in evaluators._evaluators]
    assert kinds == [MotionEvaluator, COCOEvaluator]
    coco = evaluators._evaluators[1]
    assert coco._use_fast_impl == compat.HAS_D2_EXTENSION  # pure-Python build: official COCOeval
    assert tuple(coco._tasks) == ("bbox", "segm")
    # the RLE dataset dicts were converted afresh to a COCO json in the output folder
    with open(os.path.join(tmp_path, f"{dataset}_coco_format.json")) as f:
        coco_json = json.load(f)
    assert [a["area"] for a in coco_json["annotations"]] == [120.0, 360.0, 240.0]
    assert coco_json["images"][1]["id"] == "SceneNN/clone/00001"

    results = _run(evaluators, _pairs())
    assert set(results) == {"motion", "bbox", "segm"}
    assert results["bbox"]["AP"] == pytest.approx(100.0)
    assert results["segm"]["AP"] == pytest.approx(100.0)
    assert results["motion"]["num_matched"] == 3
    assert results["motion"]["E_t"] == pytest.approx(0.5)  # ||(0, .3, .4)||
    assert os.path.exists(os.path.join(tmp_path, "motion_metrics.json"))


def test_mask_ap_counts_a_wrong_mask(dataset, tmp_path):
    results = _run(build_motion_evaluators(_cfg(), dataset, str(tmp_path)),
                   _pairs(wrong_mask_in_image1=True))
    assert results["bbox"]["AP"] == pytest.approx(100.0)
    # Car: 2 GT, the first (score 0.9) right, the second (0.8) wrong at every IoU threshold ->
    # precision 1 up to recall 0.5: 51 of COCO's 101 recall points; Van: 100.
    assert results["segm"]["AP-Car"] == pytest.approx(100 * 51 / 101, abs=1e-3)
    assert results["segm"]["AP-Van"] == pytest.approx(100.0)
    assert results["segm"]["AP"] == pytest.approx((100 * 51 / 101 + 100) / 2, abs=1e-3)


def test_flow_only_model_gets_motion_evaluator_only(dataset, tmp_path):
    evaluators = build_motion_evaluators(_cfg("FlowNetS"), dataset, str(tmp_path))
    assert [type(e) for e in evaluators._evaluators] == [MotionEvaluator]


@pytest.mark.parametrize("dataset", [False], indirect=True)
def test_data_set_without_annotations_gets_motion_evaluator_only(dataset, tmp_path):
    evaluators = build_motion_evaluators(_cfg(), dataset, str(tmp_path))
    assert [type(e) for e in evaluators._evaluators] == [MotionEvaluator]
    assert not os.path.exists(os.path.join(tmp_path, f"{dataset}_coco_format.json"))


def test_coco_needs_an_output_folder(dataset):
    with pytest.raises(ValueError, match="output_folder=None.*pass an output folder"):
        build_motion_evaluators(_cfg(), dataset, None)
