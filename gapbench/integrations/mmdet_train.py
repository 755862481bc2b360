"""Train an mmdet config with gapbench's hook: a small wrapper over mmengine's Runner.

    python -m gapbench.integrations.mmdet_train CONFIG [--shapes DIR | --data-root DIR]
        [--work-dir DIR] [--resume [CKPT]] [--cfg-options key=value ...]

pip-installed mmdet ships no `tools/train.py`; this is what it would do, plus one data override:
`--data-root DIR` points every split, the evaluators, the class names and the head's class count
at a COCO-layout folder (COCO 2017's `instances_{train,val}2017.json`, or gapbench's own
`instances_{train,val,test}.json`); `--shapes DIR` first writes gapbench's embedded COCO-format
shapes there (once) and then does the same. Without either, the config's own paths are used.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
from pathlib import Path
from typing import Any

from gapbench.errors import UserError


def coco_layout(root: Path) -> dict[str, tuple[str, str]]:
    """split -> (ann_file relative to root, image folder) for a COCO-layout data root."""
    ann = root / "annotations"
    if (ann / "instances_train.json").is_file():  # gapbench's shapes: train / val / test
        test = "test" if (ann / "instances_test.json").is_file() else "val"
        names = {"train": "train", "val": "val", "test": test}
    elif (ann / "instances_train2017.json").is_file():  # COCO 2017: test = val2017
        names = {"train": "train2017", "val": "val2017", "test": "val2017"}
    else:
        raise UserError(
            f"{root} is not a COCO-layout data root: no annotations/instances_train2017.json "
            "or annotations/instances_train.json"
        )
    return {s: (f"annotations/instances_{n}.json", f"{n}/") for s, n in names.items()}


def _leaf(dataset: dict[str, Any]) -> dict[str, Any]:
    while isinstance(dataset.get("dataset"), dict):  # RepeatDataset and other wrappers
        dataset = dataset["dataset"]
    return dataset


def point_at(cfg: Any, root: Path) -> None:
    """Point `cfg`'s dataloaders, evaluators and class count at the COCO-layout `root`."""
    layout = coco_layout(root)
    doc = json.loads((root / layout["train"][0]).read_text())
    classes = tuple(c["name"] for c in sorted(doc["categories"], key=lambda c: c["id"]))
    for split in ("train", "val", "test"):
        loader = cfg.get(f"{split}_dataloader")
        if not loader:
            continue
        ann_file, images = layout[split]
        leaf = _leaf(loader["dataset"])
        leaf.update(data_root=f"{root}/", ann_file=ann_file, data_prefix=dict(img=images))
        leaf["metainfo"] = dict(classes=classes)
        evaluator = cfg.get(f"{split}_evaluator")
        for ev in evaluator if isinstance(evaluator, list) else [evaluator] if evaluator else []:
            if "ann_file" in ev:
                ev["ann_file"] = str(root / ann_file)
    head = cfg.model.get("bbox_head")
    if head is not None and "num_classes" in head:
        head["num_classes"] = len(classes)


def build_config(
    config: str | Path,
    data_root: str | Path | None = None,
    shapes: str | Path | None = None,
    cfg_options: dict[str, Any] | None = None,
    work_dir: str | Path | None = None,
) -> Any:
    """The config as the Runner will see it (data override first, then --cfg-options)."""
    from mmengine.config import Config

    cfg = Config.fromfile(str(config))
    if shapes is not None:
        # The detection task's generator, found by name like every task (the core never imports
        # tasks/ statically): the same COCO-format shapes set gapbench's own SSD trains on.
        synthetic = importlib.import_module("tasks.detection.synthetic")
        data_root = synthetic.write_synthetic(Path(shapes).resolve())
    if data_root is not None:
        point_at(cfg, Path(data_root).resolve())
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.work_dir = str(work_dir or cfg.get("work_dir") or Path("work_dirs") / Path(config).stem)
    return cfg


def main(argv: list[str] | None = None) -> None:
    from mmengine.config import DictAction

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config")
    data = ap.add_mutually_exclusive_group()
    data.add_argument("--data-root", help="a COCO-layout folder to train and validate on")
    data.add_argument("--shapes", help="write gapbench's embedded shapes here (once) and use them")
    ap.add_argument("--work-dir")
    ap.add_argument(
        "--resume", nargs="?", const="auto", help="resume the latest (or the given) checkpoint"
    )
    ap.add_argument("--cfg-options", nargs="+", action=DictAction, default={})
    args = ap.parse_args(argv)
    # mmengine's checkpoints hold more than tensors; torch >= 2.6 loads weights only by default.
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    from mmengine.runner import Runner

    cfg = build_config(args.config, args.data_root, args.shapes, args.cfg_options, args.work_dir)
    if args.resume == "auto":
        cfg.resume, cfg.load_from = True, None
    elif args.resume:
        cfg.resume, cfg.load_from = True, args.resume
    Runner.from_cfg(cfg).train()


if __name__ == "__main__":
    main()
