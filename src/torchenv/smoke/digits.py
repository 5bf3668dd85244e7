"""The offline data set of the CNN checks: the UCI optical handwritten digits, 8x8 pixels.

``torchenv/data/digits.csv.gz`` holds the 1,797 test-set images of "Optical Recognition of
Handwritten Digits" (E. Alpaydin, C. Kaynak, UCI Machine Learning Repository, 1998; CC BY 4.0), as
distributed with scikit-learn: 64 pixel values 0..16 and the label per row. No numpy needed.
"""

from __future__ import annotations

import csv
import gzip
from typing import TYPE_CHECKING

from torchenv import paths

if TYPE_CHECKING:  # for the annotations only: torch is imported where it is used (untyped where mypy runs)
    import torch

DIGITS = paths.DATA / "digits.csv.gz"


def read_digits() -> tuple[list[list[float]], list[int]]:
    """Step 2 of the guide: read the data. Returns (pixels 0..16 per image, labels)."""
    pixels: list[list[float]] = []
    labels: list[int] = []
    with gzip.open(DIGITS, "rt", encoding="ascii") as fh:
        for row in csv.reader(fh):
            pixels.append([float(v) for v in row[:64]])
            labels.append(int(row[64]))
    return pixels, labels


def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """(images float32 [N,1,8,8] scaled to 0..1, labels int64 [N]) as torch tensors."""
    import torch

    pixels, labels = read_digits()
    images = torch.tensor(pixels, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0  # 3a. scale
    return images, torch.tensor(labels, dtype=torch.int64)
