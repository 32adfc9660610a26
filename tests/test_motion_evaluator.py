"""MotionEvaluator against hand-computed cases (docs/method.md section 8)."""
import json
import math
import os

import pytest
import torch

import motion_rcnn_d2  # noqa: F401  (first: compat for detectron2; also in spawned workers)
from detectron2.data import MetadataCatalog
from detectron2.structures import BitMasks, Boxes, Instances

from motion_rcnn_d2.evaluation import MotionEvaluator
from motion_rcnn_d2.evaluation.motion_stats import merge_partial_sums, summarize_sums

DATASET = "motion_evaluator_test"
MetadataCatalog.get(DATASET).set(thing_classes=["Car", "Van"])

I3 = torch.eye(3)
RY90 = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])  # 90 deg about y, by hand
C30, S30 = math.sqrt(3) / 2, 0.5
RX30 = torch.tensor([[1.0, 0.0, 0.0], [0.0, C30, -S30], [0.0, S30, C30]])  # 30 deg about x
H, W = 20, 30


def gt_instances(boxes, classes=None, rotations=None, translations=None, pivots=None, moving=None,
                 size=(H, W), masks=None):
    n = len(boxes)
    inst = Instances(size)
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(n, 4))
    inst.gt_classes = torch.tensor(classes if classes is not None else [0] * n, dtype=torch.int64)
    inst.gt_rotations = torch.stack(rotations) if rotations else I3.expand(n, 3, 3).clone()
    inst.gt_translations = torch.tensor(translations or [[0.0, 0.0, 0.0]] * n).reshape(n, 3)
    inst.gt_pivots = torch.tensor(pivots or [[0.0, 0.0, 10.0]] * n).reshape(n, 3)
    inst.gt_moving = torch.tensor(moving if moving is not None else [True] * n, dtype=torch.bool)
    if masks is not None:
        inst.gt_masks = BitMasks(masks)
    return inst


def pred_instances(boxes, classes=None, rotations=None, translations=None, pivots=None,
                   moving_scores=None, size=(H, W)):
    n = len(boxes)
    inst = Instances(size)
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(n, 4))
    inst.scores = torch.ones(n)
    inst.pred_classes = torch.tensor(classes if classes is not None else [0] * n, dtype=torch.int64)
    inst.pred_rotations = torch.stack(rotations) if rotations else I3.expand(n, 3, 3).clone()
    inst.pred_translations = torch.tensor(translations or [[0.0, 0.0, 0.0]] * n).reshape(n, 3)
    inst.pred_pivots = torch.tensor(pivots or [[0.0, 0.0, 10.0]] * n).reshape(n, 3)
    inst.pred_moving_scores = torch.tensor(moving_scores or [0.9] * n)
    return inst


def evaluate(pairs, **kwargs):
    evaluator = MotionEvaluator(DATASET, distributed=False, **kwargs)
    evaluator.reset()
    for inp, out in pairs:
        evaluator.process([inp], [out])
    return evaluator.evaluate()["motion"]


def pair(gt=None, pred=None, size=(H, W), **extra):
    inp = {"height": size[0], "width": size[1], "image_id": "s/clone/00000"}
    if gt is not None:
        inp["instances"] = gt
    out = {} if pred is None else {"instances": pred}
    for key, value in extra.items():
        (out if key.startswith("out_") else inp)[key[4:]] = value
    return inp, out


BOX = [0.0, 0.0, 10.0, 10.0]


def test_rotation_translation_pivot_errors():
    gt = gt_instances([BOX], translations=[[1.0, 1.0, 1.0]], pivots=[[1.0, 2.0, 3.0]])
    pred = pred_instances([BOX], rotations=[RY90], translations=[[4.0, 5.0, 1.0]],
                          pivots=[[1.0, 2.0, 5.0]])
    m = evaluate([pair(gt, pred)])
    assert m["E_R"] == pytest.approx(90.0, abs=1e-6)
    assert m["E_t"] == pytest.approx(5.0)  # (3, 4, 0)
    assert m["E_p"] == pytest.approx(2.0)  # (0, 0, 2)
    assert m["E_R_count"] == m["E_t_count"] == m["E_p_count"] == m["num_matched"] == 1
    assert m["E_R-Car"] == pytest.approx(90.0, abs=1e-6) and m["E_R_count-Car"] == 1
    assert math.isnan(m["E_R-Van"]) and m["E_R_count-Van"] == 0


def test_rotation_error_is_symmetric_in_direction_and_small_angles_are_precise():
    small = torch.tensor([[1.0, 0.0, 0.0], [0.0, math.cos(1e-4), -math.sin(1e-4)],
                          [0.0, math.sin(1e-4), math.cos(1e-4)]])
    m = evaluate([pair(gt_instances([BOX], rotations=[RY90]), pred_instances([BOX])),
                  pair(gt_instances([BOX]), pred_instances([BOX], rotations=[small]))])
    assert m["E_R"] == pytest.approx((90.0 + math.degrees(1e-4)) / 2, rel=1e-3)


def test_moving_precision_and_recall():
    # GT: A, B moving, C still; 3 detections all predicted moving -> tp 2, pred 3, gt moving 2.
    # A 4th detection on C with moving score exactly 0.5 is NOT predicted moving (score > 0.5).
    boxes = [[0, 0, 5, 5], [10, 0, 15, 5], [20, 0, 25, 5]]
    gt = gt_instances(boxes, moving=[True, True, False])
    pred = pred_instances(boxes + [[20, 0, 25, 5]], moving_scores=[0.9, 0.8, 0.7, 0.5])
    m = evaluate([pair(gt, pred)])
    assert m["O_pr"] == pytest.approx(2 / 3) and m["O_pr_count"] == 3
    assert m["O_rc"] == pytest.approx(1.0) and m["O_rc_count"] == 2
    assert m["num_matched"] == 4


def test_iou_threshold_and_two_detections_on_one_gt():
    gt = gt_instances([BOX], translations=[[0.0, 0.0, 0.0]])
    pred = pred_instances(
        [[5, 0, 15, 10],   # IoU 50/150 = 1/3: not matched (its error 100 must not count)
         [0, 0, 10, 20],   # IoU 100/200 = 0.5: matched (>=)
         [0, 0, 10, 10]],  # IoU 1: matched to the same GT, both count
        translations=[[100.0, 0, 0], [2.0, 0, 0], [0.0, 4.0, 0]])
    m = evaluate([pair(gt, pred)])
    assert m["num_detections"] == 3 and m["num_gt"] == 1 and m["num_matched"] == 2
    assert m["E_t"] == pytest.approx(3.0) and m["E_t_count"] == 2


def test_mean_over_instances_of_the_whole_set_not_per_image():
    one = pair(gt_instances([BOX]), pred_instances([BOX], translations=[[1.0, 0, 0]]))
    boxes = [[0, 0, 5, 5], [10, 0, 15, 5], [20, 0, 25, 5]]
    three = pair(gt_instances(boxes), pred_instances(boxes, translations=[[0, 3.0, 0]] * 3))
    m = evaluate([one, three])
    assert m["E_t"] == pytest.approx((1 + 3 * 3) / 4)  # 2.5; per image would give 2.0
    assert m["E_t_count"] == 4 and m["num_images"] == 2


def test_per_class_groups_by_the_matched_gt_class():
    boxes = [[0, 0, 5, 5], [10, 0, 15, 5]]
    gt = gt_instances(boxes, classes=[0, 1])
    pred = pred_instances(boxes, classes=[1, 1], translations=[[1.0, 0, 0], [0, 0, 3.0]])
    m = evaluate([pair(gt, pred)])
    assert m["E_t-Car"] == pytest.approx(1.0) and m["E_t-Van"] == pytest.approx(3.0)
    assert m["num_detections-Car"] == 0 and m["num_detections-Van"] == 2
    assert m["num_gt-Car"] == 1 and m["num_gt-Van"] == 1


def test_gt_boxes_are_rescaled_from_the_input_size():
    # Input resized to half: the GT box [0,0,5,5] at 10x15 is [0,0,10,10] at 20x30.
    gt = gt_instances([[0, 0, 5, 5]], size=(H // 2, W // 2))
    m = evaluate([pair(gt, pred_instances([BOX]))])
    assert m["num_matched"] == 1  # without rescaling IoU = 25/100 < 0.5


def test_camera_errors():
    gt_cam = {"rotation": I3, "translation": torch.tensor([0.0, 0.0, 1.0]), "moving": torch.tensor(True)}
    out_cam = {"rotation": RX30, "translation": torch.tensor([0.0, 0.6, 1.8]),
               "moving_score": torch.tensor(0.9)}
    other = {"rotation": I3, "translation": torch.tensor([0.0, 0.0, 1.0])}
    m = evaluate([pair(inp_camera_motion=gt_cam, out_camera_motion=out_cam),
                  pair(inp_camera_motion=gt_cam, out_camera_motion=other),
                  pair(out_camera_motion=out_cam)])  # no GT camera motion: skipped
    assert m["E_R_cam"] == pytest.approx(15.0, abs=1e-5)  # (30 + 0) / 2
    assert m["E_t_cam"] == pytest.approx(0.5)  # (||(0, .6, .8)|| = 1, 0) / 2
    assert m["E_R_cam_count"] == m["E_t_cam_count"] == 2


def _flow_case():
    """2x3 flow. GT u = 10 everywhere; pred equal except (0,0) u = 14 (EPE 4, outlier: > 3 px and
    > 5% of 10), (0,1) v = 2 (EPE 2, not an outlier), (1,2) invalid GT with error 100 (ignored).
    GT instance mask: column 0 (pixels (0,0), (1,0))."""
    gt = torch.zeros(2, 2, 3)
    gt[0] = 10.0
    pred = gt.clone()
    pred[0, 0, 0] = 14.0
    pred[1, 0, 1] = 2.0
    pred[0, 1, 2] = 110.0
    valid = torch.ones(2, 3, dtype=torch.bool)
    valid[1, 2] = False
    masks = torch.zeros(1, 2, 3, dtype=torch.bool)
    masks[0, :, 0] = True
    return pred, gt, valid, masks


def test_flow_metrics_all_foreground_background():
    pred, gt, valid, masks = _flow_case()
    gt_inst = gt_instances([[0, 0, 1, 2]], size=(2, 3), masks=masks)
    m = evaluate([pair(gt_inst, size=(2, 3), inp_flow=gt, inp_flow_valid=valid, out_flow=pred)])
    assert m["AEE"] == pytest.approx(6 / 5) and m["Fl_all"] == pytest.approx(1 / 5)
    assert m["AEE_count"] == m["Fl_all_count"] == 5
    assert m["AEE_fg"] == pytest.approx(4 / 2) and m["Fl_fg"] == pytest.approx(1 / 2)
    assert m["AEE_fg_count"] == 2
    assert m["AEE_bg"] == pytest.approx(2 / 3) and m["Fl_bg"] == 0.0 and m["AEE_bg_count"] == 3
    # a flow-only output (FlowNetS): no instance metrics at all
    assert m["num_detections"] == 0 and m["num_gt"] == 0 and m["E_R_count"] == 0


def test_relative_outlier_rule():
    gt = torch.zeros(2, 1, 2)
    gt[0] = 100.0
    pred = gt.clone()
    pred[0, 0, 0] += 4.0  # EPE 4 > 3 px but < 5% of 100: not an outlier
    pred[0, 0, 1] += 6.0  # EPE 6 > 3 and > 5: outlier
    m = evaluate([pair(size=(1, 2), inp_flow=gt, inp_flow_valid=torch.ones(1, 2, dtype=torch.bool),
                       out_flow=pred)])
    assert m["AEE"] == pytest.approx(5.0) and m["Fl_all"] == pytest.approx(0.5)
    assert m["AEE_fg_count"] == 0 and math.isnan(m["AEE_fg"])  # no GT masks: no fg/bg split


def test_flow_gt_is_resized_to_the_original_size():
    # GT at 2x3 (u = 5, v = -1), prediction at 4x6 = original: GT scaled by 2 -> (10, -2).
    gt = torch.stack([torch.full((2, 3), 5.0), torch.full((2, 3), -1.0)])
    valid = torch.ones(2, 3, dtype=torch.bool)
    valid[0, 0] = False  # the top-left 2x2 block of the original becomes invalid
    pred = torch.stack([torch.full((4, 6), 10.0), torch.full((4, 6), -2.0)])
    pred[:, :2, :2] = 1000.0  # wrong but invalid
    pred[0, 3, 5] = 13.0  # EPE 3 on one valid pixel
    m = evaluate([pair(size=(4, 6), inp_flow=gt, inp_flow_valid=valid, out_flow=pred)])
    assert m["AEE_count"] == 24 - 4
    assert m["AEE"] == pytest.approx(3.0 / 20)


def test_sfmnet_output_gets_flow_and_camera_metrics_only():
    pred, gt, valid, masks = _flow_case()
    cam = {"rotation": I3, "translation": torch.zeros(3)}
    out = {"flow": pred, "depth": torch.ones(1, 2, 3), "masks": torch.zeros(3, 2, 3),
           "camera_motion": {"rotation": RX30, "translation": torch.tensor([0.0, 0.0, 2.0])},
           "motions": {"rotations": I3.expand(3, 3, 3), "translations": torch.zeros(3, 3),
                       "pivots": torch.zeros(3, 3)}}
    inp = {"height": 2, "width": 3, "flow": gt, "flow_valid": valid, "camera_motion": cam,
           "instances": gt_instances([[0, 0, 1, 2]], size=(2, 3), masks=masks)}
    m = evaluate([(inp, out)])
    assert m["AEE"] == pytest.approx(6 / 5) and m["E_t_cam"] == pytest.approx(2.0)
    assert m["E_R_cam"] == pytest.approx(30.0, abs=1e-5)
    assert m["num_gt"] == 0 and m["E_R_count"] == 0 and math.isnan(m["E_R"])


def test_empty_cases_give_zero_counts_and_nan():
    no_detections = pair(gt_instances([BOX]), pred_instances([]))
    no_gt = pair(gt_instances([]), pred_instances([BOX]))
    no_gt_field = pair(None, pred_instances([BOX]))
    m = evaluate([no_detections, no_gt, no_gt_field])
    assert m["num_detections"] == 2 and m["num_gt"] == 1 and m["num_matched"] == 0
    for key in ("E_R", "E_t", "E_p", "O_pr", "O_rc", "E_R_cam", "E_t_cam", "AEE", "Fl_all"):
        assert math.isnan(m[key]) and m[key + "_count"] == 0, key
    # nothing processed at all
    assert math.isnan(evaluate([])["E_R"])


def test_no_moving_objects():
    gt = gt_instances([BOX], moving=[False])
    m = evaluate([pair(gt, pred_instances([BOX], moving_scores=[0.1]))])
    assert m["O_rc_count"] == 0 and math.isnan(m["O_rc"])
    assert m["O_pr_count"] == 0 and math.isnan(m["O_pr"])
    assert m["E_R"] == pytest.approx(0.0, abs=1e-6) and m["E_R_count"] == 1
    m = evaluate([pair(gt, pred_instances([BOX], moving_scores=[0.9]))])
    assert m["O_pr"] == 0.0 and m["O_pr_count"] == 1 and math.isnan(m["O_rc"])


def test_detections_without_motion_fields_count_as_matched_only():
    pred = pred_instances([BOX])
    for field in ("pred_rotations", "pred_translations", "pred_pivots", "pred_moving_scores"):
        pred.remove(field)
    m = evaluate([pair(gt_instances([BOX]), pred)])
    assert m["num_matched"] == 1 and m["E_R_count"] == 0 and m["O_pr_count"] == 0


def test_json_file_equals_returned_results(tmp_path):
    evaluator = MotionEvaluator(DATASET, distributed=False, output_dir=str(tmp_path))
    evaluator.reset()
    inp, out = pair(gt_instances([BOX]), pred_instances([BOX], translations=[[3.0, 4.0, 0]]))
    evaluator.process([inp], [out])
    results = evaluator.evaluate()
    assert list(results) == ["motion"]
    with open(os.path.join(tmp_path, "motion_metrics.json")) as f:
        stored = json.load(f)
    assert stored.keys() == results.keys() and stored["motion"].keys() == results["motion"].keys()
    for key, value in results["motion"].items():
        if isinstance(value, float) and math.isnan(value):
            assert stored["motion"][key] is None, key
        else:
            assert stored["motion"][key] == value, key
    assert stored["motion"]["E_t"] == 5.0
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]
    for value in results["motion"].values():  # EventStorage / print_csv_format need numbers
        assert isinstance(value, (int, float))


def _all_pairs():
    boxes = [[0, 0, 5, 5], [10, 0, 15, 5]]
    pred, gt, valid, masks = _flow_case()
    cam = {"rotation": I3, "translation": torch.zeros(3)}
    pairs = [
        pair(gt_instances(boxes, classes=[0, 1], moving=[True, False]),
             pred_instances(boxes, classes=[0, 1], rotations=[RY90, I3],
                            translations=[[1.0, 0, 0], [0, 2.0, 0]], moving_scores=[0.9, 0.8])),
        pair(gt_instances([BOX]), pred_instances([BOX, [5, 0, 15, 10]], translations=[[0, 0, 7.0]] * 2)),
        pair(gt_instances([[0, 0, 1, 2]], size=(2, 3), masks=masks), size=(2, 3), inp_flow=gt,
             inp_flow_valid=valid, out_flow=pred, inp_camera_motion=cam,
             out_camera_motion={"rotation": RX30, "translation": torch.ones(3)}),
    ]
    return pairs


def test_merge_of_two_ranks_equals_one_evaluator():
    pairs = _all_pairs()
    rank0 = MotionEvaluator(DATASET, distributed=False)
    rank1 = MotionEvaluator(DATASET, distributed=False)
    rank0.process(*zip(*pairs[:2]))
    rank1.process(*zip(*pairs[2:]))
    merged = summarize_sums(merge_partial_sums([rank0._sums, rank1._sums]), ["Car", "Van"])
    single = evaluate(pairs)
    assert merged.keys() == single.keys()
    for key in single:
        assert merged[key] == pytest.approx(single[key], nan_ok=True), key
    assert single["num_matched"] == 3 and single["AEE_count"] == 5 and single["E_R_cam_count"] == 1


def _distributed_worker(rank, init_file, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        pairs = _all_pairs()
        evaluator = MotionEvaluator(DATASET, distributed=True, output_dir=out_dir)
        evaluator.reset()
        mine = pairs[:2] if rank == 0 else pairs[2:]
        evaluator.process(*zip(*mine))
        results = evaluator.evaluate()
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump({"empty": results == {}}, f)
        dist.barrier()  # rank 1 returns before rank 0 has its gather: tear down together
    finally:
        dist.destroy_process_group()


def test_real_two_process_gloo_gather(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_distributed_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    assert json.load(open(tmp_path / "rank0.json")) == {"empty": False}
    assert json.load(open(tmp_path / "rank1.json")) == {"empty": True}
    stored = json.load(open(tmp_path / "motion_metrics.json"))["motion"]
    single = evaluate(_all_pairs())
    for key, value in single.items():
        if isinstance(value, float) and math.isnan(value):
            assert stored[key] is None, key
        else:
            assert stored[key] == pytest.approx(value), key
