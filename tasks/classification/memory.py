"""The embedded image sets held in memory as tensors, with torchvision's augmentation replayed.

Why: on the 20 px shapes set, decoding a PNG and running the PIL transforms costs about 350 us an
image, a third of a training epoch on one core. The embedded sets are a few MB, so each image is
decoded, resized and converted once; an epoch then only crops and flips tensors.

The random crop and flip draw the same random numbers, in the same order, as
`RandomCrop(size, padding)` and `RandomHorizontalFlip()`, and normalisation is the same
element-wise arithmetic done before the crop instead of after, so every sample is bit-identical to
the PIL pipeline's (tests/test_classification.py). Real data sets (`--data-root`) keep the PIL
pipeline: they need not fit in memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision import datasets, transforms


class InMemoryImages(Dataset):
    """An ImageFolder's images as one normalised tensor; `padding` > 0 adds the random crop of
    `RandomCrop(size, padding=padding)` (zero fill) and `flip` the random horizontal flip."""

    def __init__(
        self,
        folder: datasets.ImageFolder,
        size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        padding: int = 0,
        flip: bool = False,
    ) -> None:
        decode = transforms.Compose([transforms.Resize(size), transforms.ToTensor()])
        images = torch.stack([decode(folder.loader(path)) for path, _ in folder.samples])
        if images.shape[-2:] != (size, size):
            raise ValueError(f"InMemoryImages needs square images; got {tuple(images.shape[-2:])}")
        if padding:  # zero fill before normalising, as RandomCrop pads the PIL image with black
            images = F.pad(images, (padding,) * 4, value=0.0)
        self.images = transforms.Normalize(mean, std)(images)
        self.targets = torch.tensor(folder.targets)
        self.classes = folder.classes
        self.size, self.padding, self.flip = size, padding, flip

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        if self.padding:  # RandomCrop.get_params: row, then column, each uniform over the slack
            slack = 2 * self.padding + 1
            top = int(torch.randint(0, slack, size=(1,)).item())
            left = int(torch.randint(0, slack, size=(1,)).item())
            image = image[:, top : top + self.size, left : left + self.size]
        if self.flip and torch.rand(1) < 0.5:  # RandomHorizontalFlip(p=0.5)
            image = image.flip(-1)
        return image, int(self.targets[index])
