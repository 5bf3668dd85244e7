"""Group "torchvision": torchvision loads, its compiled operators run, and it pairs with torch.

The classic breakage is a torchvision built for another torch (or another CUDA): importing it or
calling ``ops.nms`` fails with "operator torchvision::nms does not exist". Such a failure is
reported as the "torch-torchvision-mismatch" breakage with both versions, not as a traceback.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from types import ModuleType

import torch

from torchenv.smoke import _support
from torchenv.spec import compat
from torchenv.spec.model import VariantSpec, version_matches

#: A failed import of torchvision, remembered: a second import attempt after a half-done one can
#: fail differently (operators already registered) and would hide the real cause.
_import_failure: list[str] = []


def _torchvision() -> ModuleType:
    """torchvision via ``need_module`` (skip if absent and optional); any other import error is a
    torch/torchvision mismatch."""
    if _import_failure:
        _support.fail(_import_failure[0], "torch-torchvision-mismatch", **_support.mismatch_context())
    try:
        with warnings.catch_warnings():
            # torchvision warns at import about optional extensions (image, video decoders); that is
            # not this check's business, and must not turn into an error under -W error.
            warnings.simplefilter("ignore")
            return _support.need_module("torchvision")
    except _support.CheckFailed:
        raise
    except ModuleNotFoundError as exc:  # torchvision is there; something it imports is not
        _support.fail(
            f"import torchvision failed: it needs {exc.name!r}, which is not installed",
            "missing-package",
            package=exc.name or str(exc),
        )
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        message = f"import torchvision failed: {type(exc).__name__}: {first}"[:500]
        _import_failure.append(message)
        _support.fail(message, "torch-torchvision-mismatch", **_support.mismatch_context())


def _op(tv: ModuleType, name: str, device: str, *args: object, **kwargs: object) -> torch.Tensor:
    """Call ``torchvision.ops.<name>``; a missing compiled operator is a mismatch diagnosis."""
    try:
        result: torch.Tensor = getattr(tv.ops, name)(*args, **kwargs)
    except (RuntimeError, NotImplementedError) as exc:
        text = str(exc)
        if re.search(r"torchvision::|custom C\+\+ ops|Could not run", text):
            first = text.strip().splitlines()[0]
            _support.fail(
                f"torchvision.ops.{name} on {device} failed: {first}"[:500],
                "torch-torchvision-mismatch",
                **_support.mismatch_context(),
            )
        raise
    return result


def _norm_cuda(value: object) -> str | None:
    """A CUDA version as "major.minor"; None for a CPU build.

    ``torchvision.version.cuda`` is an int like 13000 (or 12080) in some builds, a string in
    others, absent or -1 for CPU builds; ``torch.version.cuda`` is a string ("13.0") or None.
    """
    if value is None:
        return None
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        number = int(text)
        if number <= 0:
            return None
        if number >= 1000:
            return f"{number // 1000}.{(number % 1000) // 10}"
        return text
    parts = text.split(".")
    return ".".join(parts[:2])


# Boxes (x1, y1, x2, y2) and scores whose overlaps are known exactly (IoU with box 0 or box 2):
BOXES = [
    [0.0, 0.0, 10.0, 10.0],  # 0: score 0.90
    [1.0, 1.0, 11.0, 11.0],  # 1: IoU with 0 = 81/119 = 0.68
    [20.0, 20.0, 30.0, 30.0],  # 2: no overlap with 0
    [0.0, 0.0, 10.0, 4.0],  # 3: highest score; IoU with 0 = 40/100 = 0.40
    [21.0, 21.0, 31.0, 31.0],  # 4: IoU with 2 = 81/119 = 0.68
    [100.0, 100.0, 110.0, 110.0],  # 5: alone
]
SCORES = [0.90, 0.80, 0.70, 0.95, 0.60, 0.10]


def test_nms(device: str) -> None:
    tv = _torchvision()
    boxes = torch.tensor(BOXES, device=device)
    scores = torch.tensor(SCORES, device=device)
    # kept indices, by decreasing score: IoU > threshold with a KEPT box suppresses a box (at 0.3,
    # box 3 suppresses box 0, so box 1 survives: it overlaps 0 but only 27/113 of box 3)
    for threshold, expected in (
        (0.5, [3, 0, 2, 5]),
        (0.7, [3, 0, 1, 2, 4, 5]),
        (0.3, [3, 1, 2, 5]),
    ):
        keep = _op(tv, "nms", device, boxes, scores, threshold)
        assert keep.dtype == torch.int64, f"nms returned {keep.dtype}, expected int64"
        assert keep.device == boxes.device, f"nms on {device} returned indices on {keep.device}"
        assert keep.tolist() == expected, (
            f"nms(iou_threshold={threshold}) on {device} kept {keep.tolist()}, expected {expected}"
        )
    # batched_nms: boxes of different classes never suppress each other
    classes = torch.tensor([0, 1, 0, 0, 0, 0], device=device)
    keep = _op(tv, "batched_nms", device, boxes, scores, classes, 0.5)
    assert keep.tolist() == [3, 0, 1, 2, 5], (
        f"batched_nms(0.5) on {device} kept {keep.tolist()}, expected [3, 0, 1, 2, 5] (box 1 is alone in its class)"
    )


def test_roi_align(device: str) -> None:
    """Bilinear sampling of a linear ramp is exact: each bin is the ramp at the bin centre."""
    tv = _torchvision()
    h, w = 16, 16
    ys = torch.arange(h, dtype=torch.float32).view(h, 1)
    xs = torch.arange(w, dtype=torch.float32).view(1, w)
    ramp = xs + 10.0 * ys + 0.5  # feature[i, j] = j + 10 i + 0.5
    features = torch.stack(
        [
            torch.stack([ramp, torch.full((h, w), 3.0)]),  # image 0: ramp, constant 3
            torch.stack([-ramp, torch.full((h, w), 7.0)]),  # image 1: negated ramp, constant 7
        ]
    ).to(device)
    rois = torch.tensor([[0, 2.0, 3.0, 10.0, 7.0], [1, 2.0, 3.0, 10.0, 7.0]], device=device)
    out = _op(
        tv,
        "roi_align",
        device,
        features,
        rois,
        output_size=(2, 2),
        spatial_scale=1.0,
        sampling_ratio=2,
        aligned=True,
    )
    assert out.shape == (2, 2, 2, 2), f"roi_align output shape {tuple(out.shape)}, expected (2, 2, 2, 2)"
    assert out.device == features.device, f"roi_align on {device} returned a tensor on {out.device}"
    # aligned=True: continuous coordinates shift by -0.5; bins are 4 wide and 2 high, so the bin
    # centres are x in (3.5, 7.5) and y in (3.5, 5.5) in pixel-index coordinates.
    bins = [[cx + 10.0 * cy + 0.5 for cx in (3.5, 7.5)] for cy in (3.5, 5.5)]
    expected = torch.tensor(
        [
            [bins, [[3.0, 3.0], [3.0, 3.0]]],
            [[[-v for v in row] for row in bins], [[7.0, 7.0], [7.0, 7.0]]],
        ]
    )
    err = (out.cpu() - expected).abs().max().item()
    if err > 1e-4:
        _support.fail(
            f"roi_align on {device} gave {out.cpu().tolist()}, expected {expected.tolist()} (max error {err:.2e})",
            "wrong-result",
            detail=f"torchvision.ops.roi_align on {device} gives wrong values",
        )


def test_cuda_version_matches_torch(record_property: Callable[[str, object], None]) -> None:
    tv = _torchvision()
    raw = getattr(tv.version, "cuda", None)
    vision_cuda = _norm_cuda(raw)
    torch_cuda = _norm_cuda(torch.version.cuda)
    record_property("torch_cuda", torch_cuda)
    record_property("torchvision_cuda", vision_cuda)
    if vision_cuda != torch_cuda:
        _support.fail(
            f"torchvision {tv.__version__} is built for CUDA {vision_cuda or 'none (CPU build)'} "
            f"(torchvision.version.cuda = {raw!r}) but torch {torch.__version__} for CUDA "
            f"{torch_cuda or 'none (CPU build)'}",
            "torch-torchvision-mismatch",
            # what the loaded torchvision reports beats what its version tag suggests
            **{
                **_support.mismatch_context(),
                "torchvision_version": str(tv.__version__),
                "torchvision_cuda": vision_cuda,
            },
        )


def test_version_pairs_with_torch(variant: VariantSpec, record_property: Callable[[str, object], None]) -> None:
    tv = _torchvision()
    installed = str(tv.__version__)
    ok, note = compat.check_pair(torch.__version__, installed)
    if note:
        record_property("pairing_note", note)
        print(note)
    if not ok:
        _support.fail(
            f"torchvision {installed} does not pair with torch {torch.__version__}: {note}",
            "torch-torchvision-mismatch",
            **{**_support.mismatch_context(), "torchvision_version": installed},
        )
    expected = variant.torchvision
    if expected and not version_matches(expected, installed):
        _support.fail(
            f"torchvision {installed} is installed, but variant '{variant.name}' pins {expected}",
            "version-mismatch",
            detail=f"torchvision {installed} is installed where the spec pins {expected}",
            fix_hint=f"rebuild the '{variant.name}' environment from the spec, or "
            f"pip install 'torchvision=={expected}' from the same index as torch",
        )
