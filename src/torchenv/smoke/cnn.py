"""The classic steps of the site guide, as one function the CNN checks (and the notebook) share.

1 import torch, 2 read the data, 3 preprocess (3a scale, 3b split, 3c tensors, 3d DataLoader),
4 design the network, 5 define the learning process, 6 train, 7 evaluate on held-out data,
8 report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from torchenv.smoke import digits as _data

if TYPE_CHECKING:  # for the annotations only: torch is imported where it is used (untyped where mypy runs)
    import torch

ACCURACY_FLOOR = 0.97


@dataclass
class TrainResult:
    accuracy: float
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    device: str = "cpu"
    amp: str | None = None


def make_model() -> torch.nn.Module:
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 8x8 -> 4x4
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def split(n: int, seed: int, test_fraction: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """3b. A seeded shuffle split into train and held-out test indices."""
    import torch

    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = int(n * test_fraction)
    return order[n_test:], order[:n_test]


def train_digits(
    device: str = "cpu",
    *,
    seed: int = 0,
    epochs: int = 10,
    batch_size: int = 64,
    num_workers: int = 0,
    amp: str | None = None,  # None, "bf16" or "fp16" (fp16 uses a GradScaler)
) -> TrainResult:
    import time

    import torch
    from torch.utils.data import DataLoader, TensorDataset

    started = time.perf_counter()
    torch.manual_seed(seed)
    images, labels = _data.load_digits()  # 2, 3a, 3c
    train_idx, test_idx = split(len(labels), seed)  # 3b
    train_set = TensorDataset(images[train_idx], labels[train_idx])
    loader = DataLoader(  # 3d
        train_set,
        batch_size=batch_size,
        shuffle=True,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
        pin_memory=device.startswith("cuda"),
    )
    model = make_model().to(device)  # 4
    loss_fn = torch.nn.CrossEntropyLoss()  # 5
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, epochs=epochs, steps_per_epoch=len(loader))
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp or "")
    scaler = torch.amp.GradScaler(device_type, enabled=amp == "fp16")
    losses: list[float] = []
    model.train()
    for _ in range(epochs):  # 6
        total = 0.0
        for x, y in loader:
            inputs = x.to(device, non_blocking=True)
            targets = y.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = loss_fn(model(inputs), targets)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            total += float(loss.detach()) * len(targets)
        losses.append(total / len(train_set))
    model.eval()  # 7
    with torch.no_grad(), torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None):
        logits = model(images[test_idx].to(device))
    correct = (logits.argmax(dim=1).cpu() == labels[test_idx]).sum().item()
    return TrainResult(  # 8
        accuracy=correct / len(test_idx),
        losses=losses,
        seconds=time.perf_counter() - started,
        device=device,
        amp=amp,
    )
