"""The 16 ShapeNet-part categories: synset ids and their fixed global part-label ranges."""

from __future__ import annotations

# name -> (synset, first global part id, number of parts); the standard benchmark assignment.
CATEGORIES: dict[str, tuple[str, int, int]] = {
    "Airplane": ("02691156", 0, 4),
    "Bag": ("02773838", 4, 2),
    "Cap": ("02954340", 6, 2),
    "Car": ("02958343", 8, 4),
    "Chair": ("03001627", 12, 4),
    "Earphone": ("03261776", 16, 3),
    "Guitar": ("03467517", 19, 3),
    "Knife": ("03624134", 22, 2),
    "Lamp": ("03636649", 24, 4),
    "Laptop": ("03642806", 28, 2),
    "Motorbike": ("03790512", 30, 6),
    "Mug": ("03797390", 36, 2),
    "Pistol": ("03948459", 38, 3),
    "Rocket": ("04099429", 41, 3),
    "Skateboard": ("04225987", 44, 3),
    "Table": ("04379243", 47, 3),
}
NUM_CATEGORIES = len(CATEGORIES)
NUM_PARTS = 50
SYNSET_TO_NAME = {syn: name for name, (syn, _, _) in CATEGORIES.items()}
# Category index (0..15) used for the one-hot input, in the benchmark's alphabetical order.
CATEGORY_INDEX = {name: i for i, name in enumerate(CATEGORIES)}


def part_range(name: str) -> range:
    """Global part ids owned by a category."""
    _, first, count = CATEGORIES[name]
    return range(first, first + count)
