#!/usr/bin/env bash
# A small detection board THROUGH MMDET (not gapbench's native SSD board): the tiny RetinaNet
# (configs/mmdet/retinanet_tiny_gap_shapes.py: ResNet-18 at 16 channels, 128 px, 3 epochs from
# scratch) on gapbench's embedded COCO-format shapes (v1: 640 train / 96 val images), trained by
# mmengine's Runner with GapbenchSparsityHook; dense, magnitude, GaP and static at 90% uniform
# (backbone layer1-4 and FPN pruned, stem and head dense), seeds 0 and 1. One process at a time.
#   bash benchmarks/mmdet_board.sh [OUT]       # default results/reference-mmdet
#   METHODS="gap static" SEEDS="0" bash benchmarks/mmdet_board.sh /tmp/board
# Records go to OUT/records (existing ones are kept: a finished run is skipped), the board to
# OUT/leaderboard.{md,csv}; data and work dirs under $TMPDIR. Metric: coco/bbox_mAP (val), percent.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-results/reference-mmdet}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1
export BOARD_OUT="$OUT" BOARD_METHODS="${METHODS:-dense magnitude gap static}" BOARD_SEEDS="${SEEDS:-0 1}"
python3 - <<'PY'
"""Each (method, seed) once, sequentially; a run whose record exists is skipped."""
import json
import os
import shutil
import time
from pathlib import Path

from mmengine.runner import Runner

from gapbench.integrations.mmdet_train import build_config
from gapbench.report.leaderboard import write_leaderboard

CONFIG = Path("configs/mmdet/retinanet_tiny_gap_shapes.py")
METHOD_ARGS = {  # 3 epochs of 80 steps
    "dense": {},
    "static": {},
    "magnitude": {"start": 0.0, "end": 0.7},
    "gap": {"partitions": 3, "rounds": 1, "epochs_per_step": 1, "finetune": 0},
}
out = Path(os.environ["BOARD_OUT"])
tmp = Path(os.environ.get("TMPDIR", "/tmp")) / "gapbench-mmdet-board"
work = tmp / "work"
for seed in [int(s) for s in os.environ["BOARD_SEEDS"].split()]:
    for method in os.environ["BOARD_METHODS"].split():
        done = [
            p for p in (out / "records").glob(f"*-{method}-*.json")
            if json.loads(p.read_text())["seed"] == seed
        ] if (out / "records").is_dir() else []
        if done:
            print(f"{method} seed {seed}: done ({done[0].name})", flush=True)
            continue
        wd = work / f"{method}-s{seed}"
        shutil.rmtree(wd, ignore_errors=True)
        cfg = build_config(CONFIG, shapes=tmp / "shapes", work_dir=wd)
        cfg.randomness = dict(seed=seed, deterministic=True)
        cfg.default_hooks.logger.interval = 20
        cfg.default_hooks.checkpoint.interval = 3
        hook = cfg.custom_hooks[0]
        hook["method"], hook["seed"], hook["out"] = method, seed, str(out)
        hook["method_args"] = METHOD_ARGS[method]
        hook["task"] = "retinanet_tiny_shapes_mmdet"
        if method != "gap":
            hook.pop("partitions")
        start = time.time()
        Runner.from_cfg(cfg).train()
        print(f"{method} seed {seed}: {time.time() - start:.0f} s", flush=True)
write_leaderboard(out)
print((out / "leaderboard.md").read_text())
PY
