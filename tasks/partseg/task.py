"""`partseg`: PointNet++ SSG part segmentation on ShapeNet-part (paper) or its procedural twin."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from gapbench.errors import UserError
from gapbench.task import Task, TaskSetup, register_task
from tasks.partseg.categories import NUM_CATEGORIES, NUM_PARTS
from tasks.partseg.data import PartSegDataset, category_mask
from tasks.partseg.metrics import MIoU
from tasks.partseg.model import PointNet2PartSeg
from tasks.partseg.synthetic import FOLDER, ensure_tiny

# The first shared-MLP layer (6 inputs) and the 50-way classifier are tiny and sensitive: dense.
DENSE = ("sa1.mlp.0.weight", "classifier.weight")
POLICY = {
    "prunable": "shared-MLP weights of SA, FP and head layers",
    "first_layer": "dense",
    "classifier": "dense",
}
PROFILES = {
    # npoints per shape, SA centroids, width multiplier, batch size, epochs, lr, GaP schedule
    "tiny": dict(points=512, centroids=(128, 32), width=0.5, batch=32, epochs=12, lr=2e-3,
                 gap={"partitions": 3, "rounds": 1, "epochs_per_step": 2, "finetune": 6}),
    "paper": dict(points=2048, centroids=(512, 128), width=1.0, batch=16, epochs=250, lr=1e-3,
                  gap={"partitions": 3, "rounds": 5, "epochs_per_step": 10, "finetune": 100}),
}  # fmt: skip


def prunable_names(model: nn.Module) -> list[str]:
    """Conv weights in forward order, minus the layers kept dense by policy."""
    return [
        f"{name}.weight"
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv1d | nn.Conv2d) and f"{name}.weight" not in DENSE
    ]


def partitions(prunable: list[str]) -> dict[int, list[list[str]]]:
    """kappa=3: encoder (SA) | deep decoder (fp3, fp2) | output side (fp1 + the one-layer head,
    too small alone); kappa=2: encoder | decoder + head."""

    def pick(prefixes: tuple[str, ...]) -> list[str]:
        return [n for n in prunable if n.startswith(prefixes)]

    enc = pick(("sa",))
    return {
        3: [enc, pick(("fp3", "fp2")), pick(("fp1", "head"))],
        2: [enc, pick(("fp", "head"))],
    }


def _forward(model: nn.Module, batch) -> torch.Tensor:
    points, category, _ = batch
    return model(points, category)


def _loss(model: nn.Module, batch) -> torch.Tensor:
    return nn.functional.cross_entropy(_forward(model, batch), batch[2])


def _evaluate(model: nn.Module, loader) -> dict[str, float]:
    """mIoU with predictions restricted to each shape's own category parts (standard protocol)."""
    miou = MIoU()
    allowed = None
    for batch in loader:
        points, category, labels = batch
        logits = _forward(model, batch)
        if allowed is None:
            allowed = category_mask(logits.shape[1]).to(logits.device)
        logits = logits.masked_fill(~allowed[category].unsqueeze(-1), float("-inf"))
        pred = logits.argmax(1).cpu().numpy()
        for p, t, c in zip(pred, labels.cpu().numpy(), category.tolist(), strict=True):
            miou.add(p, t, c)
    return miou.result()


@register_task("partseg")
class PartSegTask(Task):
    description = "PointNet++ SSG part segmentation, ShapeNet-part layout (mIoU)"
    metrics = ("instance_mIoU", "class_mIoU")

    def setup(self, profile, data_root, seed, device, batch_size=None, cache_dir=None) -> TaskSetup:
        if profile not in PROFILES:
            raise UserError(f"partseg has no profile {profile!r}; choose tiny or paper")
        cfg = PROFILES[profile]
        if data_root is None:
            if profile == "paper":
                raise UserError(f"the paper profile needs --data-root pointing at {FOLDER}")
            root = ensure_tiny(Path(cache_dir or "results/cache/partseg"))
            dataset = "procedural ShapeNet-part twin (4 categories)"
        else:
            root = Path(data_root)
            dataset = f"ShapeNet-part at {root}"
        n = cfg["points"]
        train = PartSegDataset(root, "train", n, train=True)
        val = PartSegDataset(root, "val", n, train=False)
        test = PartSegDataset(root, "test", n, train=False)
        if len(train) == 0 or len(test) == 0:
            raise UserError(f"{root}/train_test_split: the train or test list is empty")
        bs = batch_size or cfg["batch"]
        model = PointNet2PartSeg(NUM_PARTS, NUM_CATEGORIES, cfg["width"], cfg["centroids"])
        prunable = prunable_names(model)
        lr = cfg["lr"]
        flops = (torch.zeros(1, n, 6), torch.zeros(1, dtype=torch.long), torch.zeros(1, n).long())
        flops[0][0, :, 0] = torch.linspace(-1, 1, n)  # distinct points, so FPS is well defined
        return TaskSetup(
            model=model,
            train_loader=DataLoader(train, bs, shuffle=True, drop_last=len(train) > bs),
            val_loader=DataLoader(val, bs),
            test_loader=DataLoader(test, bs),
            loss=_loss,
            evaluate=_evaluate,
            make_optimizer=lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=1e-4),
            epochs=cfg["epochs"],
            metric="instance_mIoU",
            dataset=dataset,
            prunable=prunable,
            policy=POLICY,
            partitions=partitions(prunable),
            gap_defaults=dict(cfg["gap"]),
            lr_schedule="cosine",
            warmup_epochs=1,
            flops_batch=flops,
            forward=_forward,
            flops_batch_size=1,
            extra={"points_per_shape": n, "categories": sorted({c for _, c in train.items})},
        )
