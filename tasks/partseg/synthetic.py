"""Procedural stand-in for ShapeNet-part, written in the real on-disk layout (tiny profile).

Four categories with named parts and real synset ids/global part ids: Table (top 47, legs 48),
Lamp (base 24, shade 26, pole 27), Mug (handle 36, body 37), Airplane (body 0, wings 1, tail 2).
Shape parameters vary per instance; normals come from open3d's estimator, as they would for a
scanned cloud, oriented outwards from the shape centre. y is up, as in ShapeNet.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gapbench.task import generate_once
from tasks.partseg.categories import CATEGORIES

FOLDER = "shapenetcore_partanno_segmentation_benchmark_v0_normal"
TINY_CATEGORIES = ("Airplane", "Lamp", "Mug", "Table")
SPLIT_SIZES = {"train": 64, "val": 8, "test": 24}  # shapes per category (the v1 records' set)
POINTS_PER_SHAPE = 1024
VERSION = "1"


def _box(rng, n, center, size):
    """Points on the surface of an axis-aligned box, faces chosen by area."""
    size = np.asarray(size, float)
    areas = np.array([size[1] * size[2], size[0] * size[2], size[0] * size[1]]).repeat(2)
    face = rng.choice(6, n, p=areas / areas.sum())
    pts = rng.uniform(-0.5, 0.5, (n, 3))
    axis = face // 2
    pts[np.arange(n), axis] = np.where(face % 2 == 0, -0.5, 0.5)
    return pts * size + np.asarray(center)


def _cylinder(rng, n, center, radius, height, r_top=None):
    """Side of a (possibly conical) y-axis cylinder plus its two caps."""
    r_top = radius if r_top is None else r_top
    h = rng.uniform(-0.5, 0.5, n)
    r = radius + (r_top - radius) * (h + 0.5)
    cap = rng.random(n) < 0.2
    r = np.where(cap, r * np.sqrt(rng.random(n)), r)
    h = np.where(cap, np.where(rng.random(n) < 0.5, -0.5, 0.5), h)
    t = rng.uniform(0, 2 * np.pi, n)
    return np.stack([r * np.cos(t), h * height, r * np.sin(t)], 1) + np.asarray(center)


def _table(rng, n):
    w, d, h = rng.uniform(0.8, 1.4), rng.uniform(0.5, 0.9), rng.uniform(0.5, 0.9)
    t, leg = rng.uniform(0.04, 0.1), rng.uniform(0.04, 0.08)
    n_top = n // 2
    parts = [(_box(rng, n_top, (0, h, 0), (w, t, d)), 47)]
    per = (n - n_top) // 4
    for i, (sx, sz) in enumerate([(-1, -1), (-1, 1), (1, -1), (1, 1)]):
        k = per if i < 3 else n - n_top - 3 * per
        c = (sx * (w / 2 - leg), h / 2, sz * (d / 2 - leg))
        parts.append((_box(rng, k, c, (leg, h, leg)), 48))
    return parts


def _lamp(rng, n):
    hb, rb = rng.uniform(0.04, 0.1), rng.uniform(0.2, 0.35)
    hp = rng.uniform(0.6, 1.2)
    hs, rs = rng.uniform(0.2, 0.4), rng.uniform(0.2, 0.4)
    a, b = n // 3, n // 4
    return [
        (_cylinder(rng, a, (0, hb / 2, 0), rb, hb), 24),
        (_cylinder(rng, b, (0, hb + hp / 2, 0), 0.03, hp), 27),
        (_cylinder(rng, n - a - b, (0, hb + hp, 0), rs, hs, r_top=rs * rng.uniform(0.3, 0.7)), 26),
    ]


def _mug(rng, n):
    r, h = rng.uniform(0.3, 0.45), rng.uniform(0.6, 1.0)
    k = n // 5
    t = rng.uniform(-np.pi / 2, np.pi / 2, k)
    rad, tube = h * rng.uniform(0.25, 0.35), 0.04
    phi = rng.uniform(0, 2 * np.pi, k)
    ring = rad + tube * np.cos(phi)
    handle = np.stack([r + ring * np.cos(t), h / 2 + ring * np.sin(t), tube * np.sin(phi)], 1)
    return [(_cylinder(rng, n - k, (0, h / 2, 0), r, h), 37), (handle, 36)]


def _airplane(rng, n):
    length, rad = rng.uniform(1.4, 2.0), rng.uniform(0.08, 0.14)
    span, chord = rng.uniform(1.2, 2.0), rng.uniform(0.25, 0.4)
    a, b = n // 2, n // 3
    body = _cylinder(rng, a, (0, 0, 0), rad, length)[:, [1, 0, 2]]  # along x
    wing = _box(rng, b, (rng.uniform(-0.1, 0.15), 0, 0), (chord, 0.03, span))
    tx = -length / 2 + 0.1
    k = n - a - b
    fin = _box(rng, k // 2, (tx, rad + 0.12, 0), (0.18, 0.25, 0.03))
    stab = _box(rng, k - k // 2, (tx, 0, 0), (0.15, 0.03, span * 0.35))
    return [(body, 0), (wing, 1), (np.concatenate([fin, stab]), 2)]


MAKERS = {"Table": _table, "Lamp": _lamp, "Mug": _mug, "Airplane": _airplane}


def estimate_normals(xyz: np.ndarray) -> np.ndarray:
    """open3d normals from 16 neighbours, flipped to point away from the cloud's centre."""
    import open3d as o3d  # imported lazily: it is slow to load and only needed here

    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz.astype(np.float64)))
    pcd.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(16))
    normals = np.asarray(pcd.normals)
    outward = xyz - xyz.mean(0)
    flip = (normals * outward).sum(1) < 0
    normals[flip] *= -1
    return normals


def make_shape(rng: np.random.Generator, category: str, n: int = POINTS_PER_SHAPE) -> np.ndarray:
    """Rows (n, 7) `x y z nx ny nz part` of one random instance of a category."""
    parts = MAKERS[category](rng, n)
    xyz = np.concatenate([p for p, _ in parts])
    labels = np.concatenate([np.full(len(p), lab) for p, lab in parts])
    xyz = xyz + rng.normal(0, 0.005, xyz.shape)
    a = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    xyz = xyz @ rot.T
    xyz = xyz - xyz.mean(0)
    xyz = xyz / np.linalg.norm(xyz, axis=1).max()
    return np.concatenate([xyz, estimate_normals(xyz), labels[:, None]], 1)


def write_shape(path: Path, rows: np.ndarray) -> None:
    """One shape file in the ShapeNet-part text format."""
    np.savetxt(path, rows, fmt=["%.6f"] * 6 + ["%d"])


def set_name(splits: dict[str, int] | None = None) -> str:
    """The generated set's name: version and shapes per category of train/val/test."""
    splits = splits or SPLIT_SIZES
    return f"twin-v{VERSION}-" + "-".join(str(splits[s]) for s in SPLIT_SIZES)


def ensure_tiny(cache_dir: Path, seed: int = 0, splits: dict[str, int] | None = None) -> Path:
    """Generate the twin once into cache_dir and return its root. `splits`: shapes per category
    of train, val and test. The default sizes live in cache_dir/FOLDER (the v1 records' set);
    any other sizes are another set (every shape after the first changes with them), in
    cache_dir/twin-v<VERSION>-<train>-<val>-<test>/FOLDER."""
    splits = dict(splits or SPLIT_SIZES)
    if set(splits) != set(SPLIT_SIZES) or min(splits.values()) < 1:
        raise ValueError(f"splits needs train, val and test counts >= 1, got {splits}")
    parent = Path(cache_dir) if splits == SPLIT_SIZES else Path(cache_dir) / set_name(splits)
    root = parent / FOLDER
    stamp = root / ".complete"
    done = lambda: stamp.is_file() and stamp.read_text() == VERSION  # noqa: E731
    return generate_once(root, done, lambda: _write(root, seed, splits))


def _write(root: Path, seed: int, splits: dict[str, int]) -> None:
    stamp = root / ".complete"
    rng = np.random.default_rng(seed)
    split_dir = root / "train_test_split"
    split_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    lists: dict[str, list[str]] = {s: [] for s in SPLIT_SIZES}
    for cat in TINY_CATEGORIES:
        syn = CATEGORIES[cat][0]
        lines.append(f"{cat}\t{syn}")
        (root / syn).mkdir(exist_ok=True)
        k = 0
        for split in SPLIT_SIZES:  # fixed split order: the RNG stream
            for _ in range(splits[split]):
                sid = f"tiny{k:05d}"
                write_shape(root / syn / f"{sid}.txt", make_shape(rng, cat))
                lists[split].append(f"shape_data/{syn}/{sid}")
                k += 1
    (root / "synsetoffset2category.txt").write_text("\n".join(lines) + "\n")
    for split, entries in lists.items():
        order = np.random.default_rng(seed + 1).permutation(len(entries))
        shuffled = [entries[i] for i in order]
        (split_dir / f"shuffled_{split}_file_list.json").write_text(json.dumps(shuffled))
    stamp.write_text(VERSION)
