"""The CNN notebook (``examples/cnn_single_gpu.ipynb``): the site guide's steps, written for people.

The notebook is rendered from the cells below (pure: no Jupyter needed), so it travels inside
torchenv's wheel and ``torchenv check --notebook`` can run it in any image; the committed
``examples/cnn_single_gpu.ipynb`` is this rendering, without outputs, kept equal by a unit test.
Regenerate it with ``python -m torchenv.check.cnn_notebook examples/cnn_single_gpu.ipynb``.

The steps and defaults are those of the smoke suite's CNN check (:mod:`torchenv.smoke.cnn`): same
offline digits, split, network, optimizer and schedule, so on CPU the notebook reaches exactly the
accuracy ``cnn.train[cpu]`` reports. Its last cell displays the result twice: as text for people
and as ``application/vnd.torchenv.result+json`` for :mod:`torchenv.check.notebook` to read back.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TypedDict

from torchenv.spec.model import NOTEBOOK_PACKAGES, notebook_promised

NAME = "cnn_single_gpu"
RESULT_MIME = "application/vnd.torchenv.result+json"
#: What running the notebook headless needs (defined with the spec: a variant's packages promise it).
PACKAGES = NOTEBOOK_PACKAGES
promised = notebook_promised


# (cell id, kind, source). Ids are stable so a re-render gives the same file.
CELLS: list[tuple[str, str, str]] = [
    (
        "intro",
        "markdown",
        """\
# A small CNN on one GPU (or on the CPU): handwritten digits with PyTorch

This notebook goes through the classic steps of training a neural network with PyTorch:

1. import PyTorch and pick the device
2. read the data
3. prepare it: **a** scale, **b** split, **c** turn it into tensors, **d** serve it in batches with a `DataLoader`
4. design the network
5. define the learning process: loss, optimizer, learning-rate schedule
6. train
7. test on images the network has never seen
8. look at the results

The data are 1,797 handwritten digits of 8x8 pixels (the UCI "Optical Recognition of Handwritten Digits"
test set, E. Alpaydin and C. Kaynak, CC BY 4.0), shipped with torchenv: nothing is downloaded. The whole
notebook runs in well under a minute on two CPU cores, and in seconds on a GPU.

`torchenv check --notebook` runs this notebook headless and fails when a cell fails or the test accuracy
is below 97%.""",
    ),
    (
        "step-1-md",
        "markdown",
        """\
## 1. PyTorch and the device

The computation runs on a CUDA GPU when PyTorch sees one, otherwise on the CPU. Everything below moves the
model and the data to `device`, so the same code runs on both.""",
    ),
    (
        "step-1",
        "code",
        """\
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} CPU threads"
print(f"PyTorch {torch.__version__} on {device} ({where})")""",
    ),
    (
        "settings-md",
        "markdown",
        """\
The settings worth changing. With these defaults the network gets about 98-99% of the test digits right.""",
    ),
    (
        "settings",
        "code",
        """\
SEED = 0  # makes the split, the initial weights and the batch order repeatable
TEST_FRACTION = 0.2  # share of the images held out for the test
BATCH_SIZE = 64  # images per training step
EPOCHS = 10  # passes over the training images
MAX_LR = 1e-2  # peak learning rate of the one-cycle schedule
NUM_WORKERS = 0  # DataLoader worker processes; 0 loads batches in this process (right for small data)""",
    ),
    (
        "step-2-md",
        "markdown",
        """\
## 2. Read the data

Each line of `digits.csv.gz` is one image: 64 pixel values, row by row, from 0 (white) to 16 (black),
then the digit it shows.""",
    ),
    (
        "step-2",
        "code",
        """\
import gzip
from importlib.resources import files

import matplotlib.pyplot as plt
import numpy as np

digits_file = files("torchenv") / "data" / "digits.csv.gz"  # ships inside the torchenv package
with digits_file.open("rb") as raw, gzip.open(raw, "rt") as fh:
    data = np.loadtxt(fh, delimiter=",")
pixels = data[:, :64]
labels = data[:, 64].astype(np.int64)
print(f"{len(labels)} images of 8x8 pixels, digits 0-9: {np.bincount(labels).tolist()} of each")

fig, axes = plt.subplots(1, 10, figsize=(10, 1.4))
for ax, image, label in zip(axes, pixels[:10], labels[:10], strict=True):
    ax.imshow(image.reshape(8, 8), cmap="gray_r")
    ax.set_title(str(label))
    ax.axis("off")
plt.show()""",
    ),
    (
        "step-3a-md",
        "markdown",
        """\
## 3. Prepare the data

**3a. Scale.** Networks learn best from small inputs of similar size: dividing by 16 puts every pixel in 0..1.""",
    ),
    (
        "step-3a",
        "code",
        """\
pixels = pixels / 16.0
print(f"pixel values now from {pixels.min()} to {pixels.max()}")""",
    ),
    (
        "step-3b-md",
        "markdown",
        """\
**3b. Split.** Hold out a random (but, with `SEED`, repeatable) fifth of the images. The network never
trains on them, so they show how well it does on digits it has not seen.""",
    ),
    (
        "step-3b",
        "code",
        """\
order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SEED))
n_test = int(len(labels) * TEST_FRACTION)
test_idx, train_idx = order[:n_test], order[n_test:]
print(f"{len(train_idx)} images to train on, {len(test_idx)} held out for the test")""",
    ),
    (
        "step-3c-md",
        "markdown",
        """\
**3c. Tensors.** Convolution layers take a batch shaped `[images, channels, height, width]` of float32;
the loss takes the labels as int64 class indices.""",
    ),
    (
        "step-3c",
        "code",
        """\
images = torch.tensor(pixels, dtype=torch.float32).reshape(-1, 1, 8, 8)
targets = torch.tensor(labels, dtype=torch.int64)
print(f"images {tuple(images.shape)} {images.dtype}, targets {tuple(targets.shape)} {targets.dtype}")""",
    ),
    (
        "step-3d-md",
        "markdown",
        """\
**3d. DataLoader.** It serves the training images in shuffled mini-batches. `pin_memory` makes copies to a GPU
faster. When loading is the slow part of a real job, raise `NUM_WORKERS` to the CPUs the job got (for
example `$SLURM_CPUS_PER_TASK`); in a container, workers also need a large `/dev/shm`.""",
    ),
    (
        "step-3d",
        "code",
        """\
train_set = TensorDataset(images[train_idx], targets[train_idx])
loader = DataLoader(
    train_set,
    batch_size=BATCH_SIZE,
    shuffle=True,
    num_workers=NUM_WORKERS,
    generator=torch.Generator().manual_seed(SEED),
    pin_memory=device.type == "cuda",
)
print(f"{len(loader)} batches of up to {BATCH_SIZE} images per epoch")""",
    ),
    (
        "step-4-md",
        "markdown",
        """\
## 4. Design the network

Two 3x3 convolutions learn strokes and their combinations, max-pooling halves the 8x8 map to 4x4, and two
fully connected layers turn what was found into 10 scores (logits), one per digit.""",
    ),
    (
        "step-4",
        "code",
        """\
torch.manual_seed(SEED)  # repeatable initial weights
model = nn.Sequential(
    nn.Conv2d(1, 16, kernel_size=3, padding=1),
    nn.ReLU(),
    nn.Conv2d(16, 32, kernel_size=3, padding=1),
    nn.ReLU(),
    nn.MaxPool2d(2),  # 8x8 -> 4x4
    nn.Flatten(),
    nn.Linear(32 * 4 * 4, 64),
    nn.ReLU(),
    nn.Linear(64, 10),
).to(device)
print(model)
print(f"{sum(p.numel() for p in model.parameters()):,} parameters")""",
    ),
    (
        "step-5-md",
        "markdown",
        """\
## 5. The learning process

- the **loss**, cross-entropy, measures how far the scores are from the true digit;
- the **optimizer**, Adam, moves every weight against its gradient;
- the **schedule**, one-cycle, warms the learning rate up to `MAX_LR` and anneals it back down, which trains
  small networks quickly and reliably.""",
    ),
    (
        "step-5",
        "code",
        """\
loss_fn = nn.CrossEntropyLoss()
optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=MAX_LR, epochs=EPOCHS, steps_per_epoch=len(loader))""",
    ),
    (
        "step-6-md",
        "markdown",
        """\
## 6. Train

An epoch is one pass over the training batches: predict, measure the loss, backpropagate, step.
`non_blocking=True` lets the copy to a GPU overlap with the computation.""",
    ),
    (
        "step-6",
        "code",
        """\
losses = []
started = time.perf_counter()
model.train()
for epoch in range(EPOCHS):
    total = 0.0
    for batch_images, batch_targets in loader:
        x = batch_images.to(device, non_blocking=True)
        y = batch_targets.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        schedule.step()
        total += loss.item() * len(y)
    losses.append(total / len(train_set))
    print(f"epoch {epoch + 1:2d}/{EPOCHS}: mean training loss {losses[-1]:.4f}")
train_seconds = time.perf_counter() - started
print(f"trained in {train_seconds:.1f} s")""",
    ),
    (
        "step-7-md",
        "markdown",
        """\
## 7. Test

In evaluation mode and without gradient tracking, score the held-out images: the digit with the highest
score is the network's answer.""",
    ),
    (
        "step-7",
        "code",
        """\
model.eval()
with torch.no_grad():
    logits = model(images[test_idx].to(device))
predicted = logits.argmax(dim=1).cpu()
truth = targets[test_idx]
correct = int((predicted == truth).sum())
accuracy = correct / len(truth)
print(f"test accuracy {accuracy:.1%}: {correct} of {len(truth)} held-out digits right")""",
    ),
    (
        "step-8-md",
        "markdown",
        """\
## 8. Results

Left, the training loss per epoch: it should fall steadily. Right, the confusion matrix: how often each
true digit (row) got each answer (column); everything off the diagonal is a mistake.""",
    ),
    (
        "step-8",
        "code",
        """\
confusion = torch.bincount(truth * 10 + predicted, minlength=100).reshape(10, 10).numpy()

fig, (ax_loss, ax_conf) = plt.subplots(1, 2, figsize=(11, 4))
ax_loss.plot(range(1, EPOCHS + 1), losses, marker="o")
ax_loss.set(xlabel="epoch", ylabel="mean training loss", yscale="log", title="Training")
ax_conf.imshow(confusion, cmap="Blues")
for (true_digit, answer), count in np.ndenumerate(confusion):
    if count:
        color = "white" if count > confusion.max() / 2 else "black"
        ax_conf.text(answer, true_digit, count, ha="center", va="center", color=color, fontsize=8)
ax_conf.set(xlabel="answer", ylabel="true digit", xticks=range(10), yticks=range(10))
ax_conf.set_title(f"Test: {accuracy:.1%} right")
plt.tight_layout()
plt.show()""",
    ),
    (
        "mistakes-md",
        "markdown",
        """\
The held-out digits the network got wrong (red: its answer, then the true digit), followed by some it got
right. Some mistakes are digits a person would hesitate over too.""",
    ),
    (
        "mistakes",
        "code",
        """\
wrong = (predicted != truth).nonzero().flatten().tolist()
right = (predicted == truth).nonzero().flatten().tolist()
shown = (wrong + right)[:24]
fig, axes = plt.subplots(2, 12, figsize=(12, 2.8))
for ax, i in zip(axes.flat, shown, strict=True):
    ax.imshow(images[test_idx[i], 0], cmap="gray_r")
    if i in wrong:
        ax.set_title(f"{int(predicted[i])} (is {int(truth[i])})", color="red", fontsize=9)
    else:
        ax.set_title(str(int(predicted[i])), fontsize=9)
    ax.axis("off")
plt.show()""",
    ),
    (
        "summary-md",
        "markdown",
        """\
## Summary

The last cell shows the result as text, and also as data (`application/vnd.torchenv.result+json`) that
`torchenv check --notebook` reads to compare the accuracy with its 97% floor.

Where to go from here: mixed precision with `torch.autocast`, more `DataLoader` workers for real data sets,
several GPUs with `DistributedDataParallel`, and `torchenv check` to prove an environment before a long job.""",
    ),
    (
        "summary",
        "code",
        """\
from IPython.display import display

result = {
    "accuracy": accuracy,
    "device": str(device),
    "epochs": EPOCHS,
    "train_seconds": round(train_seconds, 3),
    "torch": torch.__version__,
}
summary = f"test accuracy {accuracy:.1%} on {device} after {EPOCHS} epochs ({train_seconds:.1f} s of training)"
display({"application/vnd.torchenv.result+json": result, "text/plain": summary}, raw=True)""",
    ),
]


def _lines(text: str) -> list[str]:
    """nbformat's on-disk form of a source: a list of lines, each but the last ending in a newline."""
    return text.splitlines(keepends=True)


# The nbformat 4.5 document notebook() writes (no outputs yet: an executed copy is plain JSON,
# engines.jupyter.NotebookJSON). Python 3.10 has no NotRequired, hence the total=False half.


class _CellRequired(TypedDict):
    cell_type: str  # markdown | code
    id: str
    metadata: dict[str, list[str]]  # {} or {"tags": [...]}
    source: list[str]  # nbformat's on-disk lines (_lines)


class Cell(_CellRequired, total=False):
    """One cell; ``execution_count`` and ``outputs`` for code cells only."""

    execution_count: int | None
    outputs: list[dict[str, object]]


class KernelSpecMetadata(TypedDict):
    display_name: str
    language: str
    name: str


class NotebookMetadata(TypedDict):
    kernelspec: KernelSpecMetadata
    language_info: dict[str, str]


class Notebook(TypedDict):
    cells: list[Cell]
    metadata: NotebookMetadata
    nbformat: int
    nbformat_minor: int


def notebook() -> Notebook:
    """The notebook as an nbformat 4.5 document, without outputs."""
    cells: list[Cell] = []
    for cell_id, kind, source in CELLS:
        cell: Cell = {"cell_type": kind, "id": cell_id, "metadata": {}, "source": _lines(source)}
        if cell_id == "settings":
            cell["metadata"] = {"tags": ["parameters"]}  # papermill's convention for the defaults cell
        if kind == "code":
            cell["execution_count"] = None
            cell["outputs"] = []
        cells.append(cell)
    return {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def render() -> str:
    """The .ipynb text, written the way nbformat writes it (indent 1, sorted keys), so that opening
    and saving the file in Jupyter leaves it unchanged."""
    return json.dumps(notebook(), indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m torchenv.check.cnn_notebook OUTPUT.ipynb", file=sys.stderr)
        return 2
    Path(argv[0]).write_text(render(), encoding="utf-8")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
