"""GraSP (Wang et al., ICLR 2020, arXiv 2002.07376): prune at initialisation to preserve gradient
flow, then train the fixed sparse network.

Follows github.com/alecwangcq/GraSP pruner/GraSP.py (the CIFAR/Tiny-ImageNet pruner):
- scoring runs with every Linear weight re-drawn xavier-normal (`reinit=True`, on the reference's
  copy of the model; here in place and restored after): the scores use those weights, the run
  trains the task's initial weights;
- probe data: `samples_per_class` samples of every class (10 in the reference CIFAR configs),
  ordered by class, scored in two halves (`inputs[:N//2]`, `inputs[N//2:]`); tasks without classes
  score one fixed training batch, also in halves;
- loss: cross-entropy of logits / T with T = 200, where the task has logits (Workload
  `tempered_loss`); tasks without logits score their own loss, and the record says so;
- g = sum over halves of the gradient of every conv/linear weight; Hg = sum over halves of the
  gradient of g^T stop_grad(grad) over the same halves and the same weights, train mode;
- score S = -w * Hg; the highest S are removed. `--distribution global` is the reference's single
  ranking; uniform/ERK rank within each layer (a documented variant). The ranking covers the
  prunable weights only: layers the task keeps dense (`dense_layers`) are never pruned, where the
  reference ranks every conv/linear weight.
Each remaining difference is a parameter (below).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from gapbench.errors import UserError
from gapbench.registry import register_method
from gapbench.sparse.method import Context, Method, Params


@dataclass(frozen=True)
class GraSPParams(Params):
    temperature: float | None = 200.0  # logits / T (reference); none: the task's training loss
    samples_per_class: int = 10  # class-balanced probe data (reference CIFAR); 0: one batch
    parts: int = 2  # the probe data scored in equal slices (reference: two halves)
    reinit_linear: bool = True  # score a copy whose Linear weights are xavier-normal (reference)
    hessian: Literal["all", "prunable"] = "all"  # weights g and Hg run over (reference: all)

    def check(self) -> None:
        if self.temperature is not None and self.temperature <= 0:
            raise UserError("temperature must be positive (or none)")
        if self.samples_per_class < 0 or self.parts < 1:
            raise UserError("needs samples_per_class >= 0 and parts >= 1")


@register_method("grasp")
class GraSP(Method):
    description = "GraSP: prune at init by -w*(Hg) to keep gradient flow, then static sparse"
    reference = "Wang et al., ICLR 2020; alecwangcq/GraSP pruner/GraSP.py"
    Params = GraSPParams
    params: GraSPParams

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        if ctx.probe_loss is None:
            raise UserError("grasp needs the loop's probe_loss service (a training batch)")
        p = self.params
        temperature = p.temperature if ctx.probe_temperature else None
        per_class = p.samples_per_class if ctx.probe_classes else 0
        model = ctx.model
        params = dict(model.named_parameters())
        saved: dict[nn.Module, torch.Tensor] = {}
        if p.reinit_linear:  # scored with xavier-normal Linear weights, trained with the task's
            gen = torch.Generator().manual_seed(ctx.seed)
            with torch.no_grad():
                for module in model.modules():
                    if isinstance(module, nn.Linear):
                        saved[module] = module.weight.detach().clone()
                        drawn = nn.init.xavier_normal_(
                            torch.empty(module.weight.shape), generator=gen
                        )
                        module.weight.copy_(drawn)
        names = list(self.masks.names)
        if p.hessian == "all":
            names += [n for n in ctx.dense_weights if n in params and n not in set(names)]
        weights = [params[n] for n in names]
        options = _accepts_options(ctx.probe_loss)

        def loss(i: int) -> torch.Tensor:
            if not options:  # a loop whose probe takes no options: its one batch, its loss
                return ctx.probe_loss()
            return ctx.probe_loss(
                part=(i, p.parts), temperature=temperature, samples_per_class=per_class
            )

        parts = p.parts if options else 1
        try:
            g = [torch.zeros_like(w) for w in weights]
            for i in range(parts):
                for acc, grad in zip(g, torch.autograd.grad(loss(i), weights)):
                    acc += grad
            hg = [torch.zeros_like(w) for w in weights]
            for i in range(parts):
                grads = torch.autograd.grad(loss(i), weights, create_graph=True)
                z = sum((a * b).sum() for a, b in zip(g, grads))
                for acc, h in zip(hg, torch.autograd.grad(z, weights)):
                    acc += h
            scored = {n: params[n].detach().clone() for n in self.masks.names}
        finally:
            with torch.no_grad():
                for module, value in saved.items():
                    module.weight.copy_(value)
        if not options:
            loss_used = "the loop's probe (one batch, its loss; it takes no options)"
        elif temperature is not None:
            loss_used = f"cross-entropy of logits / {temperature:g}"
        elif p.temperature is not None:
            loss_used = "the task's loss (the task has no logits: no temperature)"
        else:
            loss_used = "the task's loss"
        # S = -w * Hg on the scored weights; the highest S are removed: keep the highest w * Hg.
        hg_of = dict(zip(names, hg))
        keep = {n: scored[n] * hg_of[n] for n in self.masks.names}
        self.prune_by_scores(keep)
        self.log = {
            "scored_on": (
                f"{per_class} samples per class" if options and per_class else "one training batch"
            ),
            "parts": parts,
            "loss": loss_used,
            "reinit_linear": p.reinit_linear,
            "hessian_over": len(names),
        }


def _accepts_options(probe: Callable[..., torch.Tensor]) -> bool:
    """Whether the loop's probe takes part/temperature/samples_per_class (the Trainer's does)."""
    try:
        parameters = inspect.signature(probe).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(q.kind is q.VAR_KEYWORD or q.name == "part" for q in parameters)
