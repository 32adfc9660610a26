"""The evaluators of a data set: `MotionEvaluator`, `KittiSceneFlowEvaluator` on KITTI 2015 (with
its ground truth), and Detectron2's `COCOEvaluator` (box and mask AP) where the data set has
instance annotations and the model predicts instances."""
import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.coco import convert_to_coco_json
from detectron2.evaluation import COCOEvaluator, DatasetEvaluators
from detectron2.utils import comm

from .. import compat
from .kitti_evaluator import KittiSceneFlowEvaluator
from .motion_evaluator import MotionEvaluator

__all__ = ["build_motion_evaluators", "has_instance_annotations"]

INSTANCE_META_ARCHITECTURES = ("MotionRCNN",)  # meta-architectures whose outputs have `instances`


def has_instance_annotations(dataset_name):
    """True when the data set has thing classes and at least one dict with annotations (or a COCO
    json file in its metadata). Loads the dataset dicts (COCOEvaluator loads them anyway)."""
    metadata = MetadataCatalog.get(dataset_name)
    if hasattr(metadata, "json_file"):
        return True
    if not metadata.get("thing_classes", None):
        return False
    return any(d.get("annotations") for d in DatasetCatalog.get(dataset_name))


def _fresh_coco_json(dataset_name, output_folder):
    """Point the metadata's json_file at a COCO json converted now (main process writes)."""
    metadata = MetadataCatalog.get(dataset_name)
    if hasattr(metadata, "json_file"):  # a COCO data set, or converted earlier in this process
        return
    if not output_folder:
        raise ValueError(
            f"build_motion_evaluators(cfg, '{dataset_name}', output_folder=None): COCO AP needs a "
            "folder for the data set's COCO json; pass an output folder (e.g. OUTPUT_DIR/inference).")
    cache_path = os.path.join(output_folder, f"{dataset_name}_coco_format.json")
    if comm.is_main_process():
        convert_to_coco_json(dataset_name, cache_path, allow_cached=False)
    comm.synchronize()
    metadata.json_file = cache_path


def build_motion_evaluators(cfg, dataset_name, output_folder):
    """Evaluators for `dataset_name` (for a trainer's ``build_evaluator``).

    Always a `MotionEvaluator` (moving threshold cfg.MODEL.MOTION_RCNN.MOVING_THRESHOLD). A
    `KittiSceneFlowEvaluator` when the data set's metadata has ``kitti_scene_flow`` True
    (``kitti2015_train``, `register_kitti2015` on the training split). Plus a
    `COCOEvaluator` (tasks "bbox", and "segm" when cfg.MODEL.MASK_ON) when
    cfg.MODEL.META_ARCHITECTURE predicts instances (MotionRCNN) and the data set has instance
    annotations. For a data set without a COCO json file its dicts (RLE segmentations) are converted
    to ``output_folder/<dataset_name>_coco_format.json`` afresh once per process (Detectron2 would
    silently reuse a stale file from an earlier run on regenerated data). On a Detectron2 build
    without its C++ extension it uses pycocotools' official COCOeval (use_fast_impl=False).

    Args:
        cfg: config with add_motion_rcnn_config's keys. dataset_name: a registered data set.
        output_folder: where motion_metrics.json, the COCO json cache and predictions go.
    Returns:
        `DatasetEvaluators`.
    """
    evaluators = [MotionEvaluator(
        dataset_name, output_dir=output_folder,
        moving_threshold=cfg.MODEL.MOTION_RCNN.MOVING_THRESHOLD)]
    if MetadataCatalog.get(dataset_name).get("kitti_scene_flow", False):
        evaluators.append(KittiSceneFlowEvaluator(dataset_name, output_dir=output_folder))
    if cfg.MODEL.META_ARCHITECTURE in INSTANCE_META_ARCHITECTURES and has_instance_annotations(
            dataset_name):
        _fresh_coco_json(dataset_name, output_folder)
        tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
        evaluators.append(COCOEvaluator(
            dataset_name, tasks=tasks, distributed=True, output_dir=output_folder,
            use_fast_impl=compat.HAS_D2_EXTENSION))
    else:
        logging.getLogger(__name__).info(
            f"No COCO AP for '{dataset_name}': model {cfg.MODEL.META_ARCHITECTURE} or data set "
            "without instance annotations; motion/flow metrics only.")
    return DatasetEvaluators(evaluators)
