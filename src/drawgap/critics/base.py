"""What every critic shares: its config, the papers' preprocessing (SPEC.md 4, "equalize statistics"),
batched no-grad inference, and the identity of its weights and training data."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from drawgap.critics.backbones import DEFAULT_IMAGE_SIZE, check_arch
from drawgap.data.transforms import equalize


class Critic(nn.Module):
    """A network that judges drawings. Subclasses set `kind` and build their layers.

    config: the constructor's arguments and `kind`, enough to rebuild the network (saved with the weights).
    name: the shipped name it was loaded under, or None. weights_hash: sha256 of its safetensors file, or
    None when not loaded from disk. data_hash: sha256 of the dataset file it was trained on, or None.
    """

    kind: str = ""

    def __init__(self, arch: str, image_size: int | None, threshold: float, **dims: int):
        super().__init__()
        check_arch(arch)
        self.image_size = int(image_size or DEFAULT_IMAGE_SIZE[arch])
        self.threshold = float(threshold)
        self.config = {"kind": self.kind, "arch": arch, "image_size": self.image_size, "threshold": self.threshold, **dims}
        self.name: str | None = None
        self.weights_hash: str | None = None
        self.data_hash: str | None = None

    @property
    def arch(self) -> str:
        return self.config["arch"]

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def prepare(self, images) -> torch.Tensor:
        """Any drawings (uint8 [N,H,W], float [N,H,W] or [N,1,H,W] in [0,1], any size) -> binary [N,1,S,S]:
        resize to the critic's size, per-image min-max scaling, binarize at the critic's threshold."""
        return equalize(images, self.image_size, self.threshold)

    @torch.no_grad()
    def _infer(self, fn: Callable[[torch.Tensor], torch.Tensor], images, batch_size: int) -> torch.Tensor:
        """Run `fn` on prepared batches in eval mode, without gradients; float32 [N, D] on the CPU."""
        was_training = self.training
        self.eval()
        try:
            out = []
            for start in range(0, len(images), batch_size):
                batch = self.prepare(images[start : start + batch_size]).to(self.device)
                out.append(fn(batch).float().cpu())
            if not out:
                return torch.empty(0, self._out_dim())
            return torch.cat(out)
        finally:
            self.train(was_training)

    def _out_dim(self) -> int:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.items() if k != "kind")
