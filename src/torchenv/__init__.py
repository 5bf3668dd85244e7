"""torchenv: reproducible, validated PyTorch environments for GPU clusters."""

__version__ = "0.1.0"
