"""Detectron2's checkpointer that also loads ImageNet/COCO ResNets into the multi-frame stem.

:class:`MotionCheckpointer` loads everything :class:`DetectionCheckpointer` loads
(Detectron2 ``.pth``/``.pkl``, MSRA/Caffe2 ``.pkl`` with Detectron2's name conversion)
plus torchvision ResNet state dicts (``.pth``), and inflates a 3-channel first conv to
the model's 6- or 12-channel stem (docs/method.md section 2).

Safety: ``.pth`` and ``.pyth`` files are read with ``torch.load(weights_only=True)``, which
rebuilds tensors and plain containers only and refuses any other object, so a checkpoint
cannot run code. ``.pkl`` files (Detectron2 / Caffe2 model zoo) are Python pickles, read by
Detectron2 with ``pickle.load``: unpickling can run arbitrary code, so only load ``.pkl`` files
from sources you trust.

Checkpoints are saved atomically (written to ``<name>.pth.tmp``, then renamed over
``<name>.pth``; the same for ``last_checkpoint``): a run killed while saving leaves the
previous checkpoint and ``last_checkpoint`` intact.
"""
import os
import pickle
from collections import defaultdict

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.checkpoint.c2_model_loading import (
    align_and_update_state_dicts,
    convert_c2_detectron_names,
)
from detectron2.modeling.backbone.resnet import BasicStem, BottleneckBlock
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from .weights import convert_torchvision_resnet_names, inflate_stem_weight, is_torchvision_resnet

__all__ = ["MotionCheckpointer"]

def _suffix_match(model_key, ckpt_key):
    # Detectron2's matching rule: the checkpoint name is a whole-component suffix
    return model_key == ckpt_key or model_key.endswith("." + ckpt_key)


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
      :func:`inflate_stem_weight` (``num_frames`` frames, XYZ filters zero) and one
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
        self.input_format = input_format
        self.inflate_stem = inflate_stem
        self.num_frames = num_frames
        self._file = None  # the file being loaded, named in errors
        self._require_all = False  # resuming: every model weight must load

    @classmethod
    def from_config(cls, cfg, model, save_dir="", **kwargs):
        """Checkpointer with INPUT.FORMAT and MODEL.RESNETS.INFLATE_STEM of ``cfg``."""
        return cls(model, save_dir, input_format=cfg.INPUT.FORMAT,
                   inflate_stem=cfg.MODEL.RESNETS.INFLATE_STEM, **kwargs)

    # ------------------------------------------------------------------ saving
    def _is_local(self):
        return "://" not in self.save_dir

    def save(self, name, **kwargs):
        """fvcore's ``Checkpointer.save`` (model, checkpointables, ``kwargs``) written atomically:
        to ``<save_dir>/<name>.pth.tmp``, flushed to disk, renamed to ``<name>.pth``; then
        ``last_checkpoint`` names it (also atomically)."""
        if not self.save_dir or not self.save_to_disk:
            return
        if not self._is_local():
            super().save(name, **kwargs)
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = "{}.pth".format(name)
        path = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to {}".format(path))
        _write_atomically(path, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename):
        if not self._is_local():
            super().tag_last_checkpoint(last_filename_basename)
            return
        _write_atomically(os.path.join(self.save_dir, "last_checkpoint"),
                          lambda f: f.write(last_filename_basename.encode()))

    # ----------------------------------------------------------------- loading
    def resume_or_load(self, path, *, resume=True):
        """fvcore's: the last checkpoint of ``save_dir`` with all checkpointables when
        ``resume`` and one exists (then every model weight must load), else ``path``'s model."""
        self._require_all = resume and self.has_checkpoint()
        try:
            return super().resume_or_load(path, resume=resume)
        finally:
            self._require_all = False

    def _load_file(self, filename):
        self._file = filename
        if filename.endswith(".pkl"):
            return super()._load_file(filename)  # pickle: trusted sources only
        with self.path_manager.open(filename, "rb") as f:
            try:
                loaded = torch.load(f, map_location=torch.device("cpu"), weights_only=True)
            except pickle.UnpicklingError as error:
                raise pickle.UnpicklingError(
                    "{} holds objects other than tensors and plain containers; it is not loaded "
                    "because unpickling them could run code. Load only checkpoints of tensors "
                    "(torch.save of a state dict). ({})".format(filename, error)) from None
        if filename.endswith(".pyth"):  # pycls (Detectron2's conversion, loaded safely)
            if not isinstance(loaded, dict) or "model_state" not in loaded:
                raise ValueError("{}: a pycls .pyth checkpoint must hold 'model_state'.".format(
                    filename))
            model = {k: v for k, v in loaded["model_state"].items()
                     if not k.endswith("num_batches_tracked")}
            return {"model": model, "__author__": "pycls", "matching_heuristics": True}
        if not isinstance(loaded, dict):
            raise ValueError("{} holds a {}, not a state dict or a checkpoint dict.".format(
                filename, type(loaded).__name__))
        state_dict = loaded.get("model", loaded)
        if isinstance(state_dict, dict) and is_torchvision_resnet(state_dict):
            return self._from_torchvision(state_dict, filename)
        if "model" not in loaded:
            loaded = {"model": loaded}
        return loaded

    def _from_torchvision(self, state_dict, filename):
        model = convert_torchvision_resnet_names(state_dict)
        fmt = self.input_format
        if fmt == "BGR":
            model["stem.conv1.weight"] = model["stem.conv1.weight"].flip(1)
            self.logger.info("{}: torchvision ResNet (RGB) loaded for BGR input: first conv's "
                             "input channels reversed.".format(filename))
        elif fmt != "RGB":
            self.logger.warning("{}: torchvision ResNet expects RGB but INPUT.FORMAT is {}; "
                                "first conv loaded unchanged.".format(filename, fmt))
        return {"model": model, "__author__": "torchvision", "matching_heuristics": True}

    def _multi_frame_stems(self):
        """{state-dict name of a BasicStem's conv1 weight with != 3 inputs: its shape}."""
        stems = {}
        for name, module in self.model.named_modules():
            if isinstance(module, BasicStem) and module.conv1.in_channels != 3:
                key = name + ".conv1.weight" if name else "conv1.weight"
                stems[key] = tuple(module.conv1.weight.shape)
        return stems

    def _align(self, ckpt, stems, c2_conversion):
        """Detectron2's name heuristics, run per top-level module; multi-frame stems
        are matched as if they had 3 input channels (they are inflated afterwards)."""
        if c2_conversion:
            ckpt, _ = convert_c2_detectron_names(ckpt)
        groups = defaultdict(dict)
        for key, value in self.model.state_dict().items():
            if key in stems:
                value = value[:, :3]
            groups[key.split(".", 1)[0]][key] = value
        aligned, unused = {}, None
        for group in groups.values():
            if not any(_suffix_match(m, c) for m in group for c in ckpt):
                continue
            result = align_and_update_state_dicts(group, ckpt, c2_conversion=False)
            aligned.update({k: v for k, v in result.items() if k in group})
            leftover = {k for k in result if k not in group}  # checkpoint names
            unused = leftover if unused is None else unused & leftover
        if unused is None:
            self.logger.warning("No weights in the checkpoint matched the model.")
            return ckpt
        aligned.update({k: ckpt[k] for k in unused})  # reported as unused by Detectron2
        return aligned

    def _inflate(self, ckpt, stems):
        for key, shape in stems.items():
            if key not in ckpt or tuple(ckpt[key].shape) == shape:
                continue
            weight = ckpt[key]
            if weight.dim() != 4 or weight.shape[1] != 3 or shape[1] < 3 * self.num_frames:
                continue  # Detectron2 reports the shape mismatch and skips it
            if not self.inflate_stem:
                self.logger.warning(
                    "{}: checkpoint has 3 input channels, model {}; not inflated "
                    "(MODEL.RESNETS.INFLATE_STEM is False), left as initialised.".format(
                        key, shape[1]))
                continue
            ckpt[key] = inflate_stem_weight(weight, shape[1], self.num_frames)
            self.logger.info(
                "Inflated {} from 3 to {} input channels: the 3-channel filters copied to "
                "each of {} frames and divided by {}, the other {} (XYZ) channels zero.".format(
                    key, shape[1], self.num_frames, self.num_frames,
                    shape[1] - 3 * self.num_frames))

    def _warn_torchvision_stride(self):
        strided_1x1 = any(
            isinstance(m, BottleneckBlock) and m.conv1.stride != (1, 1)
            for m in self.model.modules()
        )
        if strided_1x1:
            self.logger.warning(
                "torchvision bottleneck ResNets have the stride in the 3x3 conv, this model "
                "in the 1x1 conv: set MODEL.RESNETS.STRIDE_IN_1X1 False for these weights.")

    def _load_model(self, checkpoint):
        ckpt = checkpoint["model"]
        self._convert_ndarray_to_tensor(ckpt)
        consume_prefix_in_state_dict_if_present(ckpt, "module.")
        stems = self._multi_frame_stems()
        if checkpoint.get("__author__") == "torchvision":
            self._warn_torchvision_stride()
        if checkpoint.get("matching_heuristics", False):
            ckpt = self._align(ckpt, stems, checkpoint.get("__author__") == "Caffe2")
            checkpoint["matching_heuristics"] = False
        self._inflate(ckpt, stems)
        checkpoint["model"] = ckpt
        num_checkpoint_weights = len(ckpt)
        incompatible = super()._load_model(checkpoint)  # drops mis-shaped entries from ckpt
        self._check_fit(ckpt, incompatible, num_checkpoint_weights)
        return incompatible

    def _check_fit(self, loaded_state, incompatible, num_checkpoint_weights):
        """Raise when no weight (or, resuming, not every weight) of the model came from the
        checkpoint (``loaded_state``: what was loaded); warn with the counts when only some did
        (e.g. FrozenBatchNorm fills absent statistics itself: they count as not loaded)."""
        model_keys = list(self.model.state_dict())
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
                   .format(self._file, len(loaded), len(model_keys), num_checkpoint_weights,
                           len(shapes), len(missing) - len(shapes),
                           len(incompatible.unexpected_keys), examples))
        if num_checkpoint_weights and not loaded:
            raise ValueError(summary + " It is a checkpoint of another architecture: use one "
                             "made with this config (MODEL.*) or change MODEL.WEIGHTS.")
        if self._require_all and missing:
            raise ValueError(summary + " Resuming needs the checkpoint of this very model: "
                             "the OUTPUT_DIR holds another model's run; use a new OUTPUT_DIR "
                             "or drop --resume.")
        if missing:
            summary += (" The others keep their initialisation: fine for a pretrained "
                        "backbone, wrong for a trained model of this config.")
        self.logger.warning(summary)


def _write_atomically(path, write):
    """Write a file via ``write(binary file)`` to ``path + '.tmp'``, fsync, rename to ``path``:
    readers (and a later run) see the old file or the complete new one, never a partial one."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
