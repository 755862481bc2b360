"""Convert labelled .ply/.pcd clouds into the ShapeNet-part layout the partseg task reads.

    python -m tasks.partseg.convert --category Mug --out DATA_ROOT [--split train] CLOUD.ply ...

Labels come from a sidecar next to each cloud: CLOUD.labels.txt or CLOUD.labels.npy with one
global ShapeNet-part id per point (e.g. Mug 36-37), in the cloud's point order. Normals are read
from the file when present, otherwise estimated with open3d. Runs append to the split lists.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from gapbench.errors import UserError
from tasks.partseg.categories import CATEGORIES, part_range
from tasks.partseg.synthetic import estimate_normals, write_shape


def read_labels(cloud: Path, n: int) -> np.ndarray:
    """The per-point labels sidecar of a cloud."""
    for side in (cloud.with_suffix(".labels.npy"), cloud.with_suffix(".labels.txt")):
        if side.is_file():
            labels = np.load(side) if side.suffix == ".npy" else np.loadtxt(side, ndmin=1)
            labels = np.asarray(labels).astype(np.int64).reshape(-1)
            if len(labels) != n:
                raise UserError(f"{side}: {len(labels)} labels for {n} points; one label per point")
            return labels
    raise UserError(f"{cloud}: no {cloud.with_suffix('.labels.txt').name} (or .npy) label sidecar")


def convert_cloud(cloud: Path, category: str) -> np.ndarray:
    """Rows (N, 7) for one labelled cloud, read through open3d."""
    import open3d as o3d

    pcd = o3d.io.read_point_cloud(str(cloud))
    xyz = np.asarray(pcd.points)
    if len(xyz) == 0:
        raise UserError(f"{cloud}: open3d read no points; pass a .ply or .pcd point cloud")
    normals = np.asarray(pcd.normals) if pcd.has_normals() else estimate_normals(xyz)
    labels = read_labels(cloud, len(xyz))
    r = part_range(category)
    if ((labels < r.start) | (labels >= r.stop)).any():
        raise UserError(
            f"{cloud}: labels must be {category}'s global part ids {r.start}-{r.stop - 1}"
        )
    return np.concatenate([xyz, normals, labels[:, None]], 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tasks.partseg.convert", description=__doc__)
    ap.add_argument("clouds", nargs="+", type=Path)
    ap.add_argument("--category", required=True, choices=list(CATEGORIES))
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--split", default="train", choices=["train", "val", "test"])
    args = ap.parse_args(argv)
    try:
        syn = CATEGORIES[args.category][0]
        (args.out / syn).mkdir(parents=True, exist_ok=True)
        (args.out / "train_test_split").mkdir(exist_ok=True)
        index = args.out / "synsetoffset2category.txt"
        lines = index.read_text().splitlines() if index.is_file() else []
        if not any(line.split()[-1:] == [syn] for line in lines):
            index.write_text("\n".join([*lines, f"{args.category}\t{syn}"]) + "\n")
        for split in ("train", "val", "test"):
            f = args.out / "train_test_split" / f"shuffled_{split}_file_list.json"
            if not f.is_file():
                f.write_text("[]")
        split_file = args.out / "train_test_split" / f"shuffled_{args.split}_file_list.json"
        entries = json.loads(split_file.read_text())
        for cloud in args.clouds:
            write_shape(args.out / syn / f"{cloud.stem}.txt", convert_cloud(cloud, args.category))
            entry = f"shape_data/{syn}/{cloud.stem}"
            if entry not in entries:
                entries.append(entry)
        split_file.write_text(json.dumps(entries))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(args.clouds)} shapes to {args.out / syn} ({args.split})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
