"""Dense reference: no masks. Every sparse method is read against it."""

from gapbench.method import Method, register_method


@register_method("dense")
class Dense(Method):
    description = "dense training, no pruning (the reference)"
    sparse = False

    def setup(self, model, optimizer, budget, masks, ctx) -> None:
        self.model, self.optimizer, self.budget, self.masks, self.ctx = (
            model,
            optimizer,
            budget,
            masks,
            ctx,
        )
        self.target_counts = {n: masks.numel(n) for n in masks.names}

    def before_step(self, step: int) -> None:
        pass

    def after_step(self, step: int) -> None:
        pass
