"""Export for deployment: what of each model goes into an artefact (tools/export_model.py).

Detectron2's ``TracingAdapter`` flattens the model's dict inputs and its outputs (dicts,
``Instances``, ``Boxes``) into tuples of tensors; its ``outputs_schema`` rebuilds them. The
artefact takes the flat input tensors in ``input_names`` order and returns the flat outputs
in ``output_names`` order; ``export.json`` beside it holds both and the schema (as JSON).

What goes in (every artefact is specialised to one input size, H x W):

- FlowNetS, SfM-Net: the whole model, frames (and K, given depth) in, every output out, at
  the input size; all three formats.
- Motion R-CNN, ``torchscript``: as Detectron2's tracing export of Mask R-CNN, the network up
  to the raw detections (``inference(do_postprocess=False)``: boxes, scores, classes, 28x28
  RoI masks, ungated motions; the camera head's output). Mask pasting, motion gating and flow
  composition stay in Python (:func:`motion_rcnn_postprocess`): the pasting loops over the
  detections, whose number is only known at run time.
- Motion R-CNN, ``export`` / ``onnx``: the dense stage only, backbone (ResNet-C6 + FPN), the
  RoI motion head's XYZ context and the camera head (:class:`DenseStage`, network input in,
  features and camera motion out). ``torch.export`` needs every size decided at export time
  or bounded by checks it can prove; the RPN's proposal selection (top-k per level, then NMS)
  and the RoI heads after it branch in Python on how many boxes survive, which torch.export
  refuses ("Could not guard on data-dependent expression"). The rest runs eagerly
  (:func:`with_dense_stage`).
"""
import contextlib
import dataclasses
import importlib
import json

import torch
from detectron2.structures import ImageList
from torch import nn

from ..compat import tracing_adapter
from ..modeling.roi_heads import MotionROIHeads as _MotionROIHeads

__all__ = ["FORMATS", "ARTEFACTS", "input_keys", "sample_inputs", "plan_export", "DenseStage",
           "with_dense_stage", "motion_rcnn_postprocess", "exported_runner", "schema_to_json",
           "schema_from_json", "flat_names", "load_artefact", "write_manifest"]

FORMATS = ("export", "onnx", "torchscript")
ARTEFACTS = {"export": "model.pt2", "onnx": "model.onnx", "torchscript": "model.ts"}

MOTION_RCNN_PARTIAL = (
    "not exported (run eagerly by motion_rcnn_d2.engine.export.with_dense_stage): the RPN's "
    "proposal selection and NMS, the RoI heads, mask pasting and flow composition. torch.export "
    "needs every tensor size fixed at export time or provably bounded, but the number of boxes "
    "that survive NMS, and with it every later size, is data-dependent, and Detectron2's RPN "
    "branches on the data in Python (find_top_rpn_proposals: 'if not valid_mask.all()'), which "
    "torch.export refuses ('Could not guard on data-dependent expression').")
MOTION_RCNN_TRACED = (
    "not exported (run by motion_rcnn_d2.engine.export.motion_rcnn_postprocess): mask pasting, "
    "motion gating and flow composition at the original size, as Detectron2's tracing export "
    "leaves detector_postprocess out; pasting loops over the detections, whose number is only "
    "known at run time.")


def _arch(model):
    return type(model).__name__


def input_keys(model):
    """The model-input keys the artefact takes, in order (all tensors)."""
    keys = ["image", "image_next"]
    if _arch(model) == "SfMNet":
        keys += ["depth", "intrinsics"] if model.use_gt_depth else ["intrinsics"]
    elif _arch(model) == "MotionRCNN" and (model.xyz_input or model.flow_output):
        keys += ["depth", "intrinsics"]
    return keys


def sample_inputs(model, height, width, seed=0):
    """One model-input dict of random frames (uint8 3xHxW), a depth ramp from 40 m (top) to
    10 m (bottom) and K with f = width px and the principal point at the centre."""
    if height < 1 or width < 1:
        raise ValueError(f"--input-size: height and width must be positive, got {height} {width}")
    gen = torch.Generator().manual_seed(seed)
    rows = torch.arange(height, dtype=torch.float32)[:, None].expand(height, width)
    pool = {
        "image": torch.randint(0, 256, (3, height, width), generator=gen, dtype=torch.uint8),
        "image_next": torch.randint(0, 256, (3, height, width), generator=gen, dtype=torch.uint8),
        "depth": (40.0 - 30.0 * rows / height)[None].clone(),
        "intrinsics": torch.tensor([[float(width), 0.0, (width - 1) / 2.0],
                                    [0.0, float(width), (height - 1) / 2.0], [0.0, 0.0, 1.0]]),
    }
    return {key: pool[key] for key in input_keys(model)}


class DenseStage(nn.Module):
    """Motion R-CNN's dense stage: padded network input (B, 6/12, H, W) (and the intrinsics
    (B, 3, 3) for a camera head that reads them) in, backbone features (plus the motion head's
    "xyz" / "camera" context) and the camera head's output out."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, network_input, intrinsics=None):
        size = tuple(network_input.shape[-2:])
        features, camera = self.model._features_and_camera(
            ImageList(network_input, [size] * len(network_input)), intrinsics)
        return {"features": features} if camera is None else {"features": features,
                                                                "camera": camera}


@contextlib.contextmanager
def with_dense_stage(model, dense):
    """Inside, ``model`` (a MotionRCNN) computes its features and camera motion with
    ``dense`` (network input tensor -> the dict of :class:`DenseStage`), e.g. an exported
    program, and everything else as before: ``model(inputs)`` gives the usual outputs."""

    def features_and_camera(images, intrinsics=None):
        out = dense(images.tensor) if intrinsics is None else dense(images.tensor, intrinsics)
        return out["features"], out.get("camera")

    model._features_and_camera = features_and_camera
    try:
        yield model
    finally:
        del model._features_and_camera


def _raw_motion_rcnn(model, inputs):
    """The traced part of Motion R-CNN: raw per-image detections and the camera head's output
    (MotionRCNN.inference without postprocessing). As TracingAdapter does for Detectron2's
    heads, len() in the RoI motion heads is traced (not a constant), so that the number of
    detections may change from pair to pair."""
    images = model.preprocess_image(inputs)
    features, camera = model._features_and_camera(images, model._camera_intrinsics(inputs))
    proposals, _ = model._proposals(images, features, inputs, None)
    patch_len = importlib.import_module("detectron2.export.torchscript_patch").patch_builtin_len
    with patch_len([_MotionROIHeads.__module__]):
        results, _ = model.roi_heads(images, features, proposals, None)
    return [{"instances": r} if camera is None else
            {"instances": r, "camera": {k: v[i] for k, v in camera.items()}}
            for i, r in enumerate(results)]


def motion_rcnn_postprocess(model, inputs, raw):
    """The outputs of ``model(inputs)`` from the traced part's rebuilt outputs ``raw`` (one
    {"instances", "camera"} per input): pasted masks, gated motions, flow at the original
    size (MotionRCNN._postprocess_one)."""
    out = []
    for i, (x, r) in enumerate(zip(inputs, raw)):
        camera = None if "camera" not in r else {k: v[None] for k, v in r["camera"].items()}
        image_size = tuple(x["image"].shape[-2:])
        out.append(model._postprocess_one(r["instances"], x, image_size, camera, 0))
    return out


@dataclasses.dataclass
class ExportPlan:
    """What to export: ``adapter`` (a TracingAdapter already run once, so its outputs_schema
    is set) on ``flat_inputs`` named ``input_names``, and what stays in Python (``partial``,
    None when the whole model is in the artefact)."""

    adapter: nn.Module
    flat_inputs: tuple
    input_names: list
    exported: str
    partial: str = None


def plan_export(model, fmt, inputs):
    """The ExportPlan of ``model`` (eval mode) for format ``fmt`` on one model-input dict."""
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    TracingAdapter = tracing_adapter()
    arch, names = _arch(model), input_keys(model)
    inputs = {k: inputs[k] for k in names}
    if arch != "MotionRCNN":
        adapter = TracingAdapter(model, [inputs])
        plan = ExportPlan(adapter, adapter.flattened_inputs, sorted(names),
                          f"{arch}: the whole model (inputs {', '.join(names)}; every output)")
    elif fmt == "torchscript":
        adapter = TracingAdapter(model, [inputs], _raw_motion_rcnn)
        plan = ExportPlan(adapter, adapter.flattened_inputs, sorted(names),
                          "MotionRCNN: the network to the raw detections and the camera motion",
                          MOTION_RCNN_TRACED)
    else:
        flat = (model.preprocess_image([inputs]).tensor,)
        intrinsics = model._camera_intrinsics([inputs])
        if intrinsics is not None:
            flat += (intrinsics,)
        adapter = TracingAdapter(DenseStage(model), flat)
        plan = ExportPlan(adapter, adapter.flattened_inputs,
                          ["network_input", "intrinsics"][:len(flat)],
                          "MotionRCNN: the dense stage (backbone, XYZ context, camera head; inputs: "
                          "model.preprocess_image(inputs).tensor and, for a camera head that reads "
                          "them, the intrinsics)", MOTION_RCNN_PARTIAL)
    with torch.no_grad():
        plan.adapter(*plan.flat_inputs)  # sets outputs_schema
    return plan


def exported_runner(model, fmt, artefact, schema):
    """A callable: one model-input dict -> what ``model([inputs])[0]`` returns, computed by
    the loaded ``artefact`` (:func:`load_artefact`) whose outputs ``schema`` rebuilds, plus,
    for Motion R-CNN, the parts left in Python (run by ``model``). Inputs are those of
    :func:`input_keys` at the exported size."""
    names = sorted(input_keys(model))
    if _arch(model) != "MotionRCNN":
        return lambda inputs: schema(artefact(*(inputs[k] for k in names)))[0]
    if fmt == "torchscript":
        return lambda inputs: motion_rcnn_postprocess(
            model, [inputs], schema(artefact(*(inputs[k] for k in names))))[0]

    def run(inputs):
        with with_dense_stage(model, lambda *tensors: schema(artefact(*tensors))):
            return model([inputs])[0]
    return run


def schema_to_json(schema):
    """A Detectron2 flatten Schema (a dataclass tree) as JSON-ready dicts."""
    out = {"type": type(schema).__name__}
    for field in dataclasses.fields(schema):
        value = getattr(schema, field.name)
        out[field.name] = [schema_to_json(s) for s in value] if field.name == "schemas" else value
    return out


def schema_from_json(data):
    """Inverse of :func:`schema_to_json`."""
    flatten = __import__(tracing_adapter().__module__, fromlist=["Schema"])
    data = dict(data)
    cls = getattr(flatten, data.pop("type"))
    if "schemas" in data:
        data["schemas"] = [schema_from_json(s) for s in data["schemas"]]
    return cls(**data)


def flat_names(obj, prefix="out"):
    """Names of the flattened outputs of ``obj``, in Detectron2's flatten order (dict keys
    sorted, Instances fields sorted then its image_size, Boxes / masks as their tensor)."""
    if isinstance(obj, dict):
        return [n for k in sorted(obj) for n in flat_names(obj[k], f"{prefix}.{k}")]
    if isinstance(obj, (list, tuple)):
        return [n for i, v in enumerate(obj) for n in flat_names(v, f"{prefix}[{i}]")]
    if hasattr(obj, "get_fields"):  # Instances
        return flat_names(obj.get_fields(), prefix) + [f"{prefix}.image_size"]
    return [prefix]


def load_artefact(path):
    """A callable: flat input tensors -> tuple of flat output tensors, for a ``.pt2``
    (torch.export.load), ``.onnx`` (onnxruntime, CPU) or ``.ts`` (torch.jit.load) file."""
    if path.endswith(".pt2"):
        module = torch.export.load(path).module()
        return lambda *args: tuple(module(*args))
    if path.endswith(".ts"):
        module = torch.jit.load(path)
        return lambda *args: tuple(module(*args))
    if path.endswith(".onnx"):
        session = _onnx_session(path)
        names = [i.name for i in session.get_inputs()]

        def run(*args):
            feeds = {n: a.detach().cpu().numpy() for n, a in zip(names, args)}
            return tuple(torch.from_numpy(o) for o in session.run(None, feeds))
        return run
    raise ValueError(f"{path}: not an artefact of tools/export_model.py (.pt2, .onnx, .ts)")


def _onnx_session(path):
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError(f"running {path} needs onnxruntime: pip install "
                          "'motion_rcnn_d2[export]' (or onnxruntime)") from error
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # as many threads as torch
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def write_manifest(path, plan, fmt, height, width, outputs):
    """export.json: format, sizes, what is exported and what not, input / output names and
    the outputs schema."""
    manifest = {
        "format": fmt, "artefact": ARTEFACTS[fmt], "input_size": [height, width],
        "exported": plan.exported, "not_exported": plan.partial,
        "inputs": [{"name": n, "shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")}
                   for n, t in zip(plan.input_names, plan.flat_inputs)],
        "outputs": flat_names(outputs),
        "outputs_schema": schema_to_json(plan.adapter.outputs_schema),
    }
    with open(path, "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest
