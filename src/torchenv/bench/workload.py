"""The training workload ``torchenv bench`` times: synthetic-but-realistic images, a CPU-heavy per-image
augmentation, a small CNN, and the loops that measure images/s. Needs torch (imported when used).

The images are the offline UCI digits (:mod:`torchenv.smoke.digits`) turned into 3x32x32 colour images
(upsampled, a random colour and background, pixel noise), stored as uint8 like decoded JPEGs. Each
``__getitem__`` then does what an ImageNet-style pipeline does per image, in plain torch ops:
random resized crop, horizontal flip, brightness/contrast/saturation jitter, Gaussian blur passes and
normalisation. That costs about a millisecond of one CPU per image, so the DataLoader's workers matter
the way they do on a real job, while the whole bench stays within a minute on two cores. Nothing is
downloaded.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from torchenv.bench.logic import CnnConfig
from torchenv.bench.records import CnnRun, SweepPoint, TorchObject, WorkloadInfo
from torchenv.smoke import digits as _data


@dataclass(frozen=True)
class Workload:
    """Sizes of the training workload (the bench picks CPU or GPU sizes)."""

    image_size: int = 32
    batch_size: int = 64
    width: int = 16  # channels of the first conv layer
    blur_passes: int = 4  # the per-image CPU cost of the transform (~1 ms of one core)
    stored_images: int = 2048
    length: int = 1 << 20  # the dataset's virtual length (indices wrap onto the stored images)
    seed: int = 0

    def to_dict(self) -> WorkloadInfo:
        return {
            "image_size": self.image_size,
            "batch_size": self.batch_size,
            "width": self.width,
            "blur_passes": self.blur_passes,
            "stored_images": self.stored_images,
            "model_parameters": None,
        }


def batch_bytes(w: Workload) -> int:
    """Bytes of one collated batch: float32 images (3 x size x size) and int64 labels."""
    return w.batch_size * (3 * w.image_size * w.image_size * 4 + 8)


CPU_WORKLOAD = Workload()
GPU_WORKLOAD = Workload(batch_size=256, width=32, stored_images=8192)


class AugmentedDigits:
    """A map-style dataset (what DataLoader needs: ``__len__`` and ``__getitem__``)."""

    def __init__(self, w: Workload) -> None:
        import torch
        import torch.nn.functional as F

        images, labels = _data.load_digits()
        g = torch.Generator().manual_seed(w.seed)
        pick = torch.randint(0, len(labels), (w.stored_images,), generator=g)
        s = w.image_size
        base = F.interpolate(images[pick], size=(s, s), mode="bilinear", align_corners=False)
        ink = torch.rand(w.stored_images, 3, 1, 1, generator=g) * 0.8 + 0.2
        paper = torch.rand(w.stored_images, 3, 1, 1, generator=g) * 0.3
        noisy = paper + base * ink + 0.05 * torch.randn(w.stored_images, 3, s, s, generator=g)
        self.images = (noisy.clamp(0, 1) * 255).round().to(torch.uint8)
        self.labels = labels[pick]
        self.w = w

    def __len__(self) -> int:
        return self.w.length

    def __getitem__(self, index: int) -> tuple[TorchObject, TorchObject]:
        import torch.nn.functional as F

        i = index % self.w.stored_images
        rng = random.Random(self.w.seed * 1_000_003 + index)
        s = self.w.image_size
        x = self.images[i].float().div(255)
        side = max(8, int(s * math.sqrt(rng.uniform(0.5, 1.0))))  # random resized crop
        top, left = rng.randint(0, s - side), rng.randint(0, s - side)
        x = F.interpolate(x[None, :, top : top + side, left : left + side], size=(s, s), mode="bilinear")[0]
        if rng.random() < 0.5:
            x = x.flip(-1)
        x = x * rng.uniform(0.7, 1.3)  # brightness
        mean = x.mean()
        x = (x - mean) * rng.uniform(0.7, 1.3) + mean  # contrast
        gray = x.mean(dim=0, keepdim=True)
        x = (x - gray) * rng.uniform(0.7, 1.3) + gray  # saturation
        for _ in range(self.w.blur_passes):
            x = _blur(_blur(x, -1), -2)
        x = (x.clamp(0, 1) - 0.5) / 0.25
        return x, self.labels[i]


#: A 5-tap binomial (Gaussian-like) kernel.
_TAPS = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)


def _blur(x: TorchObject, dim: int) -> TorchObject:
    """One 5-tap blur along ``dim`` with replicated edges, in elementwise ops on the small image.

    Deliberately not ``F.pad(mode="reflect")`` + ``conv2d``: those run on torch's intra-op threads even
    for a 3x32x32 image, and in the main process (num_workers=0) their fork/join costs more than the
    work, by orders of magnitude when the CPUs are shared. Elementwise ops this small stay on one
    thread, like the per-image Python of a real pipeline.
    """
    import torch

    n = x.shape[dim]
    first, last = x.narrow(dim, 0, 1), x.narrow(dim, n - 1, 1)
    padded = torch.cat((first, first, x, last, last), dim=dim)
    out = padded.narrow(dim, 0, n) * _TAPS[0]
    for k in range(1, 5):
        out = out + padded.narrow(dim, k, n) * _TAPS[k]
    return out


def make_model(width: int) -> TorchObject:
    from torch import nn

    w = width
    return nn.Sequential(
        nn.Conv2d(3, w, 3, padding=1, bias=False),
        nn.BatchNorm2d(w),
        nn.ReLU(inplace=True),
        nn.Conv2d(w, 2 * w, 3, padding=1, bias=False),
        nn.BatchNorm2d(2 * w),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(2 * w, 4 * w, 3, padding=1, bias=False),
        nn.BatchNorm2d(4 * w),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(4 * w, 4 * w, 3, padding=1, bias=False),
        nn.BatchNorm2d(4 * w),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * w, 10),
    )


def loader(dataset: AugmentedDigits, w: Workload, workers: int, pin_memory: bool) -> TorchObject:
    import torch
    from torch.utils.data import DataLoader

    with _quiet_worker_count():
        return DataLoader(
            dataset,
            batch_size=w.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(w.seed),
            num_workers=workers,
            pin_memory=pin_memory,
            persistent_workers=workers > 0,
            drop_last=True,
        )


@contextlib.contextmanager
def _quiet_worker_count() -> Iterator[None]:
    """DataLoader warns (on creation and on iteration) when its workers outnumber the CPUs; the sweep
    goes one past them on purpose and its table says so, so the warning is not repeated."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="This DataLoader will create")
        yield


def batches(dl: TorchObject) -> Iterator[tuple[TorchObject, TorchObject]]:
    """Start the loader (and its workers)."""
    with _quiet_worker_count():
        return iter(dl)


class _Tf32:
    """TF32 for FP32 matmul (cuBLAS) on for the block, restored after. cuDNN convolutions already allow
    TF32 by default, so the naive run keeps torch's defaults and this knob adds the matmul side."""

    def __init__(self, on: bool) -> None:
        self.on = on
        self.saved: str | None = None

    def __enter__(self) -> None:
        import torch

        self.saved = torch.get_float32_matmul_precision()
        if self.on:
            torch.set_float32_matmul_precision("high")

    def __exit__(self, *exc: object) -> None:
        import torch

        if self.saved is not None:
            torch.set_float32_matmul_precision(self.saved)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def train(
    cfg: CnnConfig,
    w: Workload,
    dataset: AugmentedDigits,
    device: str,
    seconds: float,
    *,
    warmup_steps: int = 2,
    min_steps: int = 3,
    steps: int | None = None,
    step_context: Callable[[int], contextlib.AbstractContextManager[None]] | None = None,
) -> CnnRun:
    """Train ``cfg`` on ``device`` for ``seconds`` after warm-up (or exactly ``steps`` steps); images/s over
    the timed window. ``step_context(i)`` wraps each step (profiler ranges). The loss of every step is
    kept on the device and read once at the end, so no step waits for it."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(w.seed)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = make_model(w.width).to(device=device, memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp or "")
    scaler = torch.amp.GradScaler(device_type, enabled=cfg.amp == "fp16")
    dl = loader(dataset, w, cfg.workers, cfg.pin_memory)
    started = time.perf_counter()

    def step(x: TorchObject, y: TorchObject) -> TorchObject:
        x = x.to(device, non_blocking=cfg.pin_memory, memory_format=fmt)
        y = y.to(device, non_blocking=cfg.pin_memory)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss.detach()

    it = batches(dl)
    curve: list[TorchObject] = []  # the losses, kept on the device
    images = done = 0
    with _Tf32(cfg.tf32):
        model.train()
        for _ in range(0 if steps is not None else warmup_steps):
            x, y = next(it)
            curve.append(step(x, y))
        _sync(device)
        t0 = time.perf_counter()
        while True:
            x, y = next(it)
            with step_context(done) if step_context else contextlib.nullcontext():
                curve.append(step(x, y))
            done += 1
            images += len(y)
            if steps is not None:
                if done >= steps:
                    break
            elif done >= min_steps and time.perf_counter() - t0 >= seconds:
                break
        _sync(device)
        elapsed = time.perf_counter() - t0
    del it, dl
    losses = [float(v) for v in torch.stack(curve).float().cpu()]
    return {
        "name": cfg.name,
        "images": images,
        "steps": done,
        "seconds": round(elapsed, 4),
        "images_per_s": images / elapsed,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "loss_curve": losses,
        "wall_seconds": round(time.perf_counter() - started, 3),
    }


def load_only(dataset: AugmentedDigits, w: Workload, workers: int, seconds: float) -> SweepPoint:
    """Images/s of the DataLoader alone (no model) with ``workers`` workers, after its queue has drained."""
    dl = loader(dataset, w, workers, pin_memory=False)
    started = time.perf_counter()
    it = batches(dl)
    for _ in range(2 * workers + 2):  # start the workers, drain what they prefetched meanwhile
        next(it)
    t0 = time.perf_counter()
    images = done = 0
    while done < 3 or time.perf_counter() - t0 < seconds:
        _, y = next(it)
        images += len(y)
        done += 1
    elapsed = time.perf_counter() - t0
    del it, dl
    return {
        "workers": workers,
        "images": images,
        "seconds": round(elapsed, 4),
        "images_per_s": images / elapsed,
        "wall_seconds": round(time.perf_counter() - started, 3),
    }
