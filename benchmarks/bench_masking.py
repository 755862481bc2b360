"""What keeping a network sparse costs per training step, measured side by side in one process.

Variants, each its own copy of the model (same init), stepped in rotation so load on the machine
hits all alike; the median step time of each is divided by the dense one:
  dense        plain SGD step, no masks
  gapbench     MaskSet + MaskEnforcer as the Trainer uses them (gradients masked before the step
               through the optimizer's pre-hook; SGD leaves zero weights at zero, so no second pass)
  float_mask   float32 masks, one torch._foreach_mul_ over the weights after the step
  torch_prune  torch.nn.utils.prune.custom_from_mask (weight_orig * mask in a forward pre-hook)
mask_mib is the memory each keeps for its masks (and, for prune, the extra weight copies).
Then it times the mask updates against one dense step: GaP's prune of its largest partition and
one RigL drop/grow over every layer.

    python benchmarks/bench_masking.py --model resnet50 --batch-size 2 --image-size 32 --steps 20 --csv
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.nn.utils import prune
from torchvision import models

from gapbench.sparse.distribution import uniform_counts
from gapbench.sparse.enforce import MaskEnforcer
from gapbench.sparse.masks import MaskSet, random_masks, topk_mask
from gapbench.sparse.partition import consecutive_partitions


def prunable(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Conv/linear modules but the stem (RigL's uniform policy)."""
    mods = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    return mods[1:]


def masks_for(model: nn.Module, sparsity: float) -> dict[str, torch.Tensor]:
    mods = prunable(model)
    shapes = [m.weight.shape for _, m in mods]
    counts = uniform_counts([s.numel() for s in shapes], sparsity)
    masks = random_masks(shapes, counts, torch.Generator().manual_seed(0))
    return {f"{n}.weight": mask for (n, _), mask in zip(mods, masks)}


class Variant:
    def __init__(self, name: str, model: nn.Module, after=None, mask_bytes: int = 0):
        self.name, self.model, self.after, self.mask_bytes = name, model, after, mask_bytes
        self.opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        self.times: list[float] = []

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        start = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(self.model(x), y).backward()
        self.opt.step()
        if self.after:
            self.after()
        self.times.append(time.perf_counter() - start)


def build(model_name: str, sparsity: float) -> list[Variant]:
    def fresh() -> nn.Module:
        torch.manual_seed(0)
        return getattr(models, model_name)(weights=None)

    dense = Variant("dense", fresh())

    model = fresh()
    masks = MaskSet(model, list(masks_for(model, sparsity)))
    for name, mask in masks_for(model, sparsity).items():
        masks.set_mask(name, mask)
    gapbench = Variant("gapbench", model, mask_bytes=sum(m.numel() for m in masks.masks.values()))
    MaskEnforcer(masks, gapbench.opt)
    gapbench.masks = masks

    model = fresh()
    params = dict(model.named_parameters())
    names = list(masks_for(model, sparsity))
    floats = [m.float() for m in masks_for(model, sparsity).values()]
    weights = [params[n] for n in names]

    def float_after() -> None:
        with torch.no_grad():
            torch._foreach_mul_(weights, floats)

    float_mask = Variant("float_mask", model, float_after, sum(4 * m.numel() for m in floats))

    model = fresh()
    bool_masks = masks_for(model, sparsity)
    for name, module in prunable(model):
        prune.custom_from_mask(module, "weight", bool_masks[f"{name}.weight"])
    extra = sum(2 * 4 * m.weight.numel() for _, m in prunable(model))  # float mask + weight copy
    torch_prune = Variant("torch_prune", model, mask_bytes=extra)
    return [dense, gapbench, float_mask, torch_prune]


def time_updates(variant: Variant, sparsity: float) -> dict[str, float]:
    """GaP prunes its largest partition (kappa=4, balanced); RigL drops and grows every layer."""
    masks = variant.masks
    names = masks.names
    parts = consecutive_partitions(names, [masks.numel(n) for n in names], 4)
    largest = max(parts, key=lambda p: sum(masks.numel(n) for n in p))
    counts = dict(zip(names, uniform_counts([masks.numel(n) for n in names], sparsity)))
    for name in largest:  # grown: dense
        masks.set_mask(name, torch.ones_like(masks.masks[name]))
    start = time.perf_counter()
    for name in largest:
        masks.set_mask(
            name, topk_mask(masks.params[name].detach().abs(), counts[name]), variant.opt
        )
    gap_prune = time.perf_counter() - start
    start = time.perf_counter()
    for name in names:
        old, p = masks.masks[name], masks.params[name]
        alive = masks.count(name)
        k = int(0.3 * alive)
        kept = topk_mask(p.detach().abs().masked_fill(~old, -1), alive - k)
        score = torch.rand_like(p).masked_fill(kept, -float("inf"))
        masks.set_mask(name, kept | topk_mask(score, k), variant.opt)
    rigl = time.perf_counter() - start
    return {"gap_prune_largest_partition": gap_prune, "rigl_drop_grow_all_layers": rigl}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--csv", action="store_true", help="print variant,step_ratio,mask_mib rows")
    args = parser.parse_args()
    variants = build(args.model, args.sparsity)
    torch.manual_seed(1)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    y = torch.randint(0, 1000, (args.batch_size,))
    for i in range(args.steps + 2):  # 2 warm-up rounds (allocators, momentum buffers)
        order = variants[i % len(variants) :] + variants[: i % len(variants)]
        for variant in order:
            variant.step(x, y)
    median = {v.name: statistics.median(v.times[2:]) for v in variants}
    dense = median["dense"]
    if args.csv:
        print("variant,step_ratio,mask_mib")
    else:
        print(
            f"{args.model}, batch {args.batch_size}, {args.image_size} px, sparsity {args.sparsity}, "
            f"{torch.get_num_threads()} threads, median of {args.steps} interleaved steps"
        )
        print("| variant | step (ms) | vs dense | mask memory (MiB) |\n|---|---|---|---|")
    for v in variants:
        ratio = median[v.name] / dense
        if args.csv:
            print(f"{v.name},{ratio:.4f},{v.mask_bytes / 2**20:.1f}")
        else:
            print(
                f"| {v.name} | {1000 * median[v.name]:.1f} | {ratio:.3f} | {v.mask_bytes / 2**20:.1f} |"
            )
    gapbench = next(v for v in variants if v.name == "gapbench")
    verdict = "meets" if median["gapbench"] <= 1.03 * dense else "misses"
    versus = "<=" if median["gapbench"] <= median["float_mask"] else ">"
    print(
        f"# gapbench {median['gapbench'] / dense:.3f}x dense ({verdict} the 1.03 target), {versus} float_mask"
    )
    for what, seconds in time_updates(gapbench, args.sparsity).items():
        print(f"# {what}: {1000 * seconds:.1f} ms = {seconds / dense:.2f} dense steps")


if __name__ == "__main__":
    main()
