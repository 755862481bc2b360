"""Training throughput of each task's paper model on synthetic input of the real shape: a plain
PyTorch loop (the ceiling) against gapbench's StepLoop running dense and each method, measured side
by side in one process (variants stepped in rotation), outside mask-update steps.

Targets (issue 11): gapbench dense >= 0.98 of the plain loop; every sparse method >= 0.95 of
gapbench dense outside mask-update steps. Prints one row per task and variant.

    python benchmarks/bench_throughput.py [--tasks classification,translation] [--steps 8] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import torch

from gapbench.engine.loop import StepLoop
from gapbench.registry import get_method_class, get_task_class
from gapbench.sparse.masks import MaskSet
from gapbench.sparse.method import Budget, Context
from gapbench.sparse.selection import select_prunable

METHODS = ["dense", "static", "magnitude", "set", "rigl", "gap"]


def workload(task: str, device: torch.device, batch: int):
    """(build model, loss(model, batch), synthetic batch, profile) for the paper profile."""
    profile = get_task_class(task).profiles["paper"]
    gen = torch.Generator().manual_seed(0)
    if task == "classification":
        from tasks.classification.models import build_resnet50
        from tasks.classification.task import loss

        data = (
            torch.randn(batch, 3, 224, 224, generator=gen),
            torch.randint(0, 1000, (batch,), generator=gen),
        )
        return partial(build_resnet50, 1000), loss, data, profile
    if task == "detection":
        from tasks.detection.models import build_ssd300
        from tasks.detection.task import loss

        boxes = torch.tensor([[30.0, 40.0, 150.0, 200.0], [100.0, 20.0, 280.0, 120.0]])
        images = [torch.rand(3, 300, 300, generator=gen) for _ in range(batch)]
        targets = [{"boxes": boxes.clone(), "labels": torch.tensor([1, 2])} for _ in range(batch)]
        return partial(build_ssd300, 80), loss, (images, targets), profile
    if task == "partseg":
        from tasks.partseg.categories import NUM_CATEGORIES, NUM_PARTS
        from tasks.partseg.model import PointNet2PartSeg
        from tasks.partseg.task import _loss

        opts = profile.options
        points = torch.randn(batch, opts["points"], 6, generator=gen)
        data = (
            points,
            torch.randint(0, 4, (batch,), generator=gen),
            torch.randint(0, NUM_PARTS, (batch, opts["points"]), generator=gen),
        )
        return (
            partial(PointNet2PartSeg, NUM_PARTS, NUM_CATEGORIES, opts["width"], opts["centroids"]),
            _loss,
            data,
            profile,
        )
    from tasks.translation.model import ModelConfig, Transformer
    from tasks.translation.task import translation_loss

    recipe = profile.options["recipe"]
    cfg = ModelConfig(vocab_size=recipe.vocab_size, d_model=recipe.d_model, ffn_dim=recipe.ffn_dim, heads=recipe.heads,
                      encoder_layers=recipe.encoder_layers, decoder_layers=recipe.decoder_layers, dropout=recipe.dropout,
                      attention_dropout=recipe.attention_dropout, activation_dropout=recipe.activation_dropout,
                      max_positions=recipe.max_positions)  # fmt: skip
    tokens = torch.randint(4, recipe.vocab_size, (batch, 32), generator=gen)
    data = {"src": tokens, "prev": tokens, "target": tokens}
    return (
        partial(Transformer, cfg),
        partial(translation_loss, eps=recipe.label_smoothing),
        data,
        profile,
    )


class Variant:
    def __init__(self, name: str, step):
        self.name, self.step, self.times = name, step, []


def variants(task: str, device: torch.device, batch: int, steps: int) -> list[Variant]:
    build, loss, data, profile = workload(task, device, batch)
    from gapbench.task import move_to_device

    data = move_to_device(data, device)
    out = []
    torch.manual_seed(0)
    model = build().to(device)
    opt = profile.optimizer.build(model.parameters(), batch)

    def plain(model=model, opt=opt):
        opt.zero_grad(set_to_none=True)
        loss(model, data).backward()
        opt.step()

    out.append(Variant("plain loop", plain))
    for name in METHODS:
        torch.manual_seed(0)
        model = build().to(device)
        opt = profile.optimizer.build(model.parameters(), batch)
        selection = select_prunable(
            model, profile.exclude, ("first",) if task == "classification" else ()
        )
        masks = MaskSet(model, selection.prunable)
        params = {"gap": {"partitions": 3, "rounds": 1, "epochs_per_step": 1}}.get(name, {})
        method = get_method_class(name)(**params)
        plan = method.plan(Budget(10, 1000, batch))
        method.setup(
            Context(
                model,
                opt,
                masks,
                Budget(plan.epochs, 1000, batch),
                0.9,
                "uniform",
                0,
                selection.prunable,
            )
        )
        loop = StepLoop(
            model,
            opt,
            masks,
            method,
            plan,
            loss,
            total_steps=plan.epochs * 1000,
            grad_clip=profile.grad_clip,
        )
        # Outside mask updates: RigL/SET/GMP update at scheduled steps only, start past them.
        loop.step = 1 if name in ("rigl", "set") else 0
        out.append(Variant("gapbench " + name, lambda loop=loop: loop.run_step([data])))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="classification,detection,partseg,translation")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(
        f"device {device}, {torch.get_num_threads()} threads, batch {args.batch_size}, median of {args.steps} interleaved steps"
    )
    print(
        "| task | variant | samples/s | vs plain loop | vs gapbench dense |\n|---|---|---|---|---|"
    )
    for task in args.tasks.split(","):
        runs = variants(task, device, args.batch_size, args.steps)
        for i in range(args.steps + 1):  # one warm-up round
            for v in runs[i % len(runs) :] + runs[: i % len(runs)]:
                start = time.perf_counter()
                v.step()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if i:
                    v.times.append(time.perf_counter() - start)
        median = {v.name: statistics.median(v.times) for v in runs}
        plain, dense = median["plain loop"], median["gapbench dense"]
        for v in runs:
            rate = args.batch_size / median[v.name]
            print(
                f"| {task} | {v.name} | {rate:.2f} | {plain / median[v.name]:.3f} | {dense / median[v.name]:.3f} |"
            )


if __name__ == "__main__":
    main()
