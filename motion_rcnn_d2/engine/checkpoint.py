"""Detectron2's checkpointer that also loads ImageNet/COCO ResNets into the multi-frame stem.

:class:`MotionCheckpointer` loads everything :class:`DetectionCheckpointer` loads
(Detectron2 ``.pth``/``.pkl``, MSRA/Caffe2 ``.pkl`` with Detectron2's name conversion)
plus torchvision ResNet state dicts (``.pth``), and inflates a 3-channel first conv to
the model's 6- or 12-channel stem (docs/method.md section 2). Its pieces: :func:`read_tensors`
(safe reading), :func:`pycls_checkpoint`, :func:`check_fit` (what loaded; the resume check);
the conversions are in :mod:`.weights`, atomic writing in :mod:`motion_rcnn_d2.utils.files`.

Safety: ``.pth`` and ``.pyth`` files are read with ``torch.load(weights_only=True)``, which
rebuilds tensors and plain containers only and refuses any other object, so a checkpoint
cannot run code. ``.pkl`` files (Detectron2 / Caffe2 model zoo) are Python pickles, read by
Detectron2 with ``pickle.load``: unpickling can run arbitrary code, so only load ``.pkl`` files
from sources you trust.

Checkpoints are saved atomically (fvcore's ``save`` and ``tag_last_checkpoint`` through a path
manager that writes a temporary file beside ``<name>.pth``, then renames it over it; the same
for ``last_checkpoint``): a run killed while saving leaves the previous checkpoint and
``last_checkpoint`` intact.
"""
import pickle

import torch
from detectron2.checkpoint import DetectionCheckpointer
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from ..utils.files import AtomicWritePathManager
from .weights import (align_per_module, inflate_stems, is_torchvision_resnet, multi_frame_stems,
                      torchvision_checkpoint)

__all__ = ["MotionCheckpointer", "read_tensors", "pycls_checkpoint", "check_fit"]


class MotionCheckpointer(DetectionCheckpointer):
    """:class:`DetectionCheckpointer` for models with a multi-frame ResNet stem.

    On top of Detectron2's behaviour:

    * ``.pth`` files are read with ``torch.load(weights_only=True)``; a torchvision
      ResNet state dict (also under a "model" key) is renamed to Detectron2's names
      and matched by name heuristics. torchvision weights take RGB; for a model whose
      frames are BGR (``input_format``, i.e. cfg.INPUT.FORMAT) the first conv's input
      channels are reversed (logged).
    * Name heuristics (Caffe2/MSRA ``.pkl``, torchvision, files with
      "matching_heuristics") run per top-level module (backbone, roi_heads, ...), so
      one checkpoint stage can initialise two modules, e.g. the C4 variant's
      backbone.res5 (for C6) and roi_heads.res5 both from ImageNet's res5.
    * When the checkpoint's first conv has 3 input channels and a Detectron2
      :class:`BasicStem` of the model has more, the weight is inflated with
      :func:`.weights.inflate_stem_weight` (``num_frames`` frames, XYZ filters zero) and one
      line is logged. With ``inflate_stem=False`` it is left out (Detectron2 then
      skips it for its shape).
    * A checkpoint none of whose weights fit the model (another architecture) raises
      ValueError naming the file and examples of the mismatched names and shapes; a partial
      fit logs one warning with the counts after Detectron2's per-key warnings. Resuming
      (``resume_or_load(..., resume=True)`` with a last checkpoint) requires every model
      weight to load.
    * ``save`` and ``tag_last_checkpoint`` write atomically (module docstring).
    """

    def __init__(self, model, save_dir="", *, input_format="BGR", inflate_stem=True,
                 num_frames=2, save_to_disk=None, **checkpointables):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.path_manager = AtomicWritePathManager(self.path_manager)
        self.input_format = input_format
        self.inflate_stem = inflate_stem
        self.num_frames = num_frames
        self._file = None  # the file being loaded, named in errors
        self._resuming = False  # every model weight must load

    @classmethod
    def from_config(cls, cfg, model, save_dir="", **kwargs):
        """Checkpointer with INPUT.FORMAT and MODEL.RESNETS.INFLATE_STEM of ``cfg``."""
        return cls(model, save_dir, input_format=cfg.INPUT.FORMAT,
                   inflate_stem=cfg.MODEL.RESNETS.INFLATE_STEM, **kwargs)

    def resume_or_load(self, path, *, resume=True):
        """fvcore's: the last checkpoint of ``save_dir`` with all checkpointables when
        ``resume`` and one exists (then every model weight must load), else ``path``'s model."""
        self._resuming = resume and self.has_checkpoint()
        try:
            return super().resume_or_load(path, resume=resume)
        finally:
            self._resuming = False

    def _load_file(self, filename):
        self._file = filename
        if filename.endswith(".pkl"):
            return super()._load_file(filename)  # pickle: trusted sources only
        loaded = read_tensors(self.path_manager, filename)
        if filename.endswith(".pyth"):
            return pycls_checkpoint(loaded, filename)
        if not isinstance(loaded, dict):
            raise ValueError("{} holds a {}, not a state dict or a checkpoint dict.".format(
                filename, type(loaded).__name__))
        state_dict = loaded.get("model", loaded)
        if isinstance(state_dict, dict) and is_torchvision_resnet(state_dict):
            return torchvision_checkpoint(state_dict, self.model, self.input_format, filename,
                                          self.logger)
        return loaded if "model" in loaded else {"model": loaded}

    def _load_model(self, checkpoint):
        ckpt = checkpoint["model"]
        self._convert_ndarray_to_tensor(ckpt)
        consume_prefix_in_state_dict_if_present(ckpt, "module.")
        stems = multi_frame_stems(self.model)
        if checkpoint.get("matching_heuristics", False):
            ckpt = align_per_module(self.model.state_dict(), ckpt, stems,
                                    checkpoint.get("__author__") == "Caffe2", self.logger)
            checkpoint["matching_heuristics"] = False  # done: Detectron2 loads by name
        inflate_stems(ckpt, stems, self.num_frames, self.inflate_stem, self.logger)
        checkpoint["model"] = ckpt
        num_checkpoint_weights = len(ckpt)
        incompatible = super()._load_model(checkpoint)  # drops mis-shaped entries from ckpt
        check_fit(list(self.model.state_dict()), ckpt, incompatible, num_checkpoint_weights,
                  self._file, resuming=self._resuming, logger=self.logger)
        return incompatible


def read_tensors(path_manager, filename):
    """What ``torch.save`` wrote to ``filename``, read with ``weights_only=True``: tensors and
    plain containers only; anything else raises an ``UnpicklingError`` naming the file, an
    empty, truncated or corrupt file a ``RuntimeError`` naming it."""
    with path_manager.open(filename, "rb") as f:
        try:
            return torch.load(f, map_location=torch.device("cpu"), weights_only=True)
        except pickle.UnpicklingError as error:
            raise pickle.UnpicklingError(
                "{} holds objects other than tensors and plain containers; it is not loaded "
                "because unpickling them could run code. Load only checkpoints of tensors "
                "(torch.save of a state dict). ({})".format(filename, error)) from None
        except (EOFError, RuntimeError) as error:
            raise RuntimeError(
                "{} is not a complete torch.save file (empty, truncated or corrupt): save or "
                "download it again. ({})".format(filename, str(error) or type(error).__name__)
            ) from None


def pycls_checkpoint(loaded, filename):
    """A pycls ``.pyth`` file's content as a checkpoint: Detectron2's conversion (its
    "model_state" without ``num_batches_tracked``, matched by name heuristics)."""
    if not isinstance(loaded, dict) or "model_state" not in loaded:
        raise ValueError("{}: a pycls .pyth checkpoint must hold 'model_state'.".format(filename))
    model = {k: v for k, v in loaded["model_state"].items()
             if not k.endswith("num_batches_tracked")}
    return {"model": model, "__author__": "pycls", "matching_heuristics": True}


def check_fit(model_keys, loaded_state, incompatible, num_checkpoint_weights, filename, *,
              resuming, logger):
    """Raise a ValueError naming ``filename`` when no weight of the model (names
    ``model_keys``) came from the checkpoint or, ``resuming``, not every one did;
    ``loaded_state``: what was loaded, ``incompatible``: fvcore's report. Warn with the
    counts when only some did (e.g. FrozenBatchNorm fills absent statistics itself: they
    count as not loaded)."""
    loaded = [k for k in model_keys if k in loaded_state]
    missing = set(model_keys) - set(loaded)
    shapes = incompatible.incorrect_shapes
    if len(loaded) == len(model_keys) and not incompatible.unexpected_keys:
        return
    examples = "; ".join(
        ["'{}' is {} in the checkpoint, {} in the model".format(k, tuple(c), tuple(m))
         for k, c, m in shapes[:3]]
        + ["model weight '{}' is not in the checkpoint".format(k)
           for k in sorted(missing - {k for k, _, _ in shapes})[:3]]
        + ["checkpoint weight '{}' is not in the model".format(k)
           for k in sorted(incompatible.unexpected_keys)[:3]])
    summary = ("{}: {} of the model's {} weights loaded from its {}; {} have other shapes, "
               "{} are not in the checkpoint, {} checkpoint weights are unused (e.g. {})."
               .format(filename, len(loaded), len(model_keys), num_checkpoint_weights,
                       len(shapes), len(missing) - len(shapes),
                       len(incompatible.unexpected_keys), examples))
    if num_checkpoint_weights and not loaded:
        raise ValueError(summary + " It is a checkpoint of another architecture: use one "
                         "made with this config (MODEL.*) or change MODEL.WEIGHTS.")
    if resuming and missing:
        raise ValueError(summary + " Resuming needs the checkpoint of this very model: "
                         "the OUTPUT_DIR holds another model's run; use a new OUTPUT_DIR "
                         "or drop --resume.")
    if missing:
        summary += (" The others keep their initialisation: fine for a pretrained "
                    "backbone, wrong for a trained model of this config.")
    logger.warning(summary)
