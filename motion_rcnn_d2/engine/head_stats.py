"""Training diagnostics: activation and gradient statistics of chosen modules, every N steps.

Enabled with ``DIAGNOSTICS.PERIOD > 0``; ``DIAGNOSTICS.MODULES`` names modules of the model
(dotted paths, e.g. ``camera_head``). For every ``nn.Linear`` / ``nn.Conv2d`` below them it
writes to Detectron2's EventStorage (so into ``metrics.json`` and TensorBoard), under
``diag/<module path>/...``:

- ``active``: share of the layer's outputs that are > 0 after the following ReLU (computed as
  share of outputs > 0; for an output layer it is informational), over the batch and all units;
  a unit that is never active for any input of the batch is "dead" (``dead``: share of units).
- ``batch_std``: mean over units of the std across the batch of the layer's output: 0 means
  the layer outputs the same value for every input of the batch.
- ``grad_norm``: L2 norm of the gradients of its parameters (after clipping, as applied).
- ``weight_norm``: L2 norm of its weights.

``diag/grad_norm_total`` is the norm of all the model's gradients, for scale.
"""
import torch
from detectron2.engine import HookBase
from torch import nn

__all__ = ["HeadStatsHook"]


class HeadStatsHook(HookBase):
    """Record activation and gradient statistics of the layers under `module_names`."""

    def __init__(self, model, module_names, period):
        """
        Args:
            model: the trained model (DDP-wrapped or not).
            module_names: dotted paths of modules of the model.
            period: record every `period` iterations (and at the last one).
        """
        self._model = getattr(model, "module", model)
        self._period = period
        self._layers = {}
        modules = dict(self._model.named_modules())
        for name in module_names:
            if name not in modules:
                raise ValueError(f"DIAGNOSTICS.MODULES: the model has no module {name!r} "
                                 f"(e.g. {sorted(n for n in modules if '.' not in n and n)})")
            for sub, layer in modules[name].named_modules():
                if isinstance(layer, (nn.Linear, nn.Conv2d)):
                    self._layers[f"{name}.{sub}" if sub else name] = layer
        self._outputs = {}
        self._handles = [layer.register_forward_hook(self._keep(path))
                         for path, layer in self._layers.items()]

    def _keep(self, path):
        def hook(module, inputs, output):
            if module.training and self._recording:  # not the evaluation at the last step
                self._outputs[path] = output.detach()
        return hook

    @property
    def _recording(self):
        trainer = getattr(self, "trainer", None)
        return trainer is not None and self._due(trainer.iter)

    def _due(self, iteration):
        return (iteration + 1) % self._period == 0 or iteration + 1 == self.trainer.max_iter

    def after_step(self):
        if not self._due(self.trainer.iter):
            return
        stats = {}
        stats["diag/grad_norm_total"] = _grad_norm(self._model)
        for path, layer in self._layers.items():
            out = self._outputs.get(path)
            if out is not None:
                units = out.transpose(0, 1).reshape(out.shape[1], -1) if out.dim() > 2 else out.t()
                positive = units > 0
                stats[f"diag/{path}/active"] = float(positive.float().mean())
                stats[f"diag/{path}/dead"] = float((~positive.any(dim=1)).float().mean())
                per_image = out.flatten(start_dim=1) if out.dim() == 2 else out.mean(dim=(2, 3))
                stats[f"diag/{path}/batch_std"] = float(per_image.std(dim=0).mean())
            if any(p.grad is not None for p in layer.parameters()):
                stats[f"diag/{path}/grad_norm"] = _grad_norm(layer)
            stats[f"diag/{path}/weight_norm"] = float(layer.weight.detach().norm())
        self._outputs.clear()
        self.trainer.storage.put_scalars(**stats, smoothing_hint=False)

    def after_train(self):
        for handle in self._handles:
            handle.remove()


def _grad_norm(module):
    """L2 norm of the gradients of the module's parameters (0 without any)."""
    squares = [p.grad.detach().pow(2).sum() for p in module.parameters() if p.grad is not None]
    return float(torch.stack(squares).sum().sqrt()) if squares else 0.0
