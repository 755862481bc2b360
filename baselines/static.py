"""Static sparse training: random masks at init, never changed — the floor every dynamic method
must beat."""

from gapbench.masks import random_masks
from gapbench.method import Method, register_method


def draw_random_masks(method: Method) -> None:
    """Exact-count random masks from one generator seeded by the run's seed (same on every rank)."""
    import torch

    masks = method.masks
    gen = torch.Generator().manual_seed(method.ctx.seed)
    shapes = [masks.params[n].shape for n in masks.names]
    counts = [method.target_counts[n] for n in masks.names]
    for name, mask in zip(masks.names, random_masks(shapes, counts, gen)):
        masks.set_mask(name, mask, method.optimizer)


@register_method("static")
class StaticSparse(Method):
    description = "random sparse masks at init, fixed for the whole run"

    def setup(self, model, optimizer, budget, masks, ctx) -> None:
        super().setup(model, optimizer, budget, masks, ctx)
        draw_random_masks(self)
