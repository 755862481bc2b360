"""What keeping a network sparse costs: ResNet-50 training step on CPU, one process.

Compares, at 90% uniform sparsity over conv/linear weights (stem and classifier dense):
  dense          plain training step, no masks
  gapbench       MaskSet (bool masks): mask gradients, step, re-apply masks
  float-mask     the same with float32 masks (multiply)
  torch.prune    torch.nn.utils.prune.custom_from_mask (weight_orig * mask in a forward pre-hook)
Reports the median step time and the extra memory each keeps for its masks (and weight copies).
Run by hand:  python benchmarks/bench_masking.py [--batch-size 8] [--steps 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.nn.utils import prune
from torchvision.models import resnet50

from gapbench.sparse.masks import MaskSet, random_masks


def prunable_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d | nn.Linear) and n not in ("conv1", "fc")
    ]


def make_masks(model: nn.Module, sparsity: float) -> dict[str, torch.Tensor]:
    mods = prunable_modules(model)
    shapes = [m.weight.shape for _, m in mods]
    counts = [round((1 - sparsity) * s.numel()) for s in shapes]
    masks = random_masks(shapes, counts, torch.Generator().manual_seed(0))
    return {f"{n}.weight": mask for (n, _), mask in zip(mods, masks)}


def time_steps(model, step_fn, x, y, steps: int) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    times = []
    for i in range(steps + 1):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        step_fn(opt)
        if i:  # the first step warms up allocators and creates momentum buffers
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def time_mask_ops(fn, repeats: int = 20) -> float:
    """Median time of the masking work alone (robust to noise in the full step)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--sparsity", type=float, default=0.9)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 3, 224, 224)
    y = torch.randint(0, 1000, (args.batch_size,))
    results = []

    model = resnet50(weights=None)
    results.append(("dense", time_steps(model, lambda o: o.step(), x, y, args.steps), 0, 0.0))

    model = resnet50(weights=None)
    bool_masks = make_masks(model, args.sparsity)
    mset = MaskSet(model, list(bool_masks))
    for n, m in bool_masks.items():
        mset.set_mask(n, m)

    def gap_step(opt):
        mset.apply_to_grads()
        opt.step()
        mset.apply()

    extra = sum(m.numel() * m.element_size() for m in mset.masks.values())
    step_time = time_steps(model, gap_step, x, y, args.steps)
    ops = time_mask_ops(lambda: (mset.apply_to_grads(), mset.apply()))
    results.append(("gapbench MaskSet (bool)", step_time, extra, ops))

    model = resnet50(weights=None)
    params = dict(model.named_parameters())
    float_masks = {n: m.float() for n, m in make_masks(model, args.sparsity).items()}

    def float_mask_ops(before_step: bool = True, after_step: bool = True):
        if before_step:
            for n, m in float_masks.items():
                params[n].grad.mul_(m)
        if after_step:
            with torch.no_grad():
                for n, m in float_masks.items():
                    params[n].mul_(m)

    def float_step(opt):
        float_mask_ops(after_step=False)
        opt.step()
        float_mask_ops(before_step=False)

    extra = sum(m.numel() * m.element_size() for m in float_masks.values())
    step_time = time_steps(model, float_step, x, y, args.steps)
    results.append(("float-mask multiply", step_time, extra, time_mask_ops(float_mask_ops)))

    model = resnet50(weights=None)
    masks = make_masks(model, args.sparsity)
    for name, module in prunable_modules(model):
        prune.custom_from_mask(module, "weight", masks[f"{name}.weight"])
    # prune keeps weight_orig (parameter), weight_mask (float buffer) and the computed weight.
    extra = sum(
        m.weight_mask.numel() * m.weight_mask.element_size()
        + m.weight.numel() * m.weight.element_size()
        for _, m in prunable_modules(model)
    )
    step_time = time_steps(model, lambda o: o.step(), x, y, args.steps)

    def prune_ops():  # what prune's forward pre-hooks compute every forward: weight_orig * mask
        for _, m in prunable_modules(model):
            for hook in m._forward_pre_hooks.values():
                hook(m, None)

    results.append(("torch.nn.utils.prune", step_time, extra, time_mask_ops(prune_ops)))

    dense_time = results[0][1]
    print(
        f"ResNet-50, batch {args.batch_size}, 224 px, sparsity {args.sparsity}, "
        f"{torch.get_num_threads()} threads, median of {args.steps} steps"
    )
    print(
        "| variant | step time (s) | vs dense | masking work per step (ms) | extra memory (MiB) |"
    )
    print("|---|---|---|---|---|")
    for name, t, extra, ops in results:
        print(
            f"| {name} | {t:.3f} | {100 * (t / dense_time - 1):+.1f}% | {1000 * ops:.1f} "
            f"| {extra / 2**20:.1f} |"
        )


if __name__ == "__main__":
    main()
