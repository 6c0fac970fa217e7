"""Fast critic inference for batches of drawings: batch norms folded into the convolutions, channels-last
copies, and a runner that splits the drawings over threads (used by `drawgap evaluate` and the ClickMe
partner)."""

from __future__ import annotations

import contextlib
import copy
from concurrent.futures import ThreadPoolExecutor

import torch

# Drawings per critic forward pass. On a CPU, small batches keep a layer's activations in the caches
# (32 x 64 x 50 x 50 floats = 20 MB at the first layer): 1,270 drawings per CPU-second at 32 against 760
# at 128 and 650 at 512 (Omniglot critic, one AVX-512 core). GPUs want large batches.
CRITIC_BATCH = {"cpu": 32}
DEFAULT_CRITIC_BATCH = 1024


def fold_batch_norms(module: torch.nn.Module) -> torch.nn.Module:
    """Fold every eval-mode BatchNorm2d that directly follows a Conv2d in a Sequential into the conv
    (`torch.nn.utils.fusion.fuse_conv_bn_eval`); same function up to float rounding, one full-resolution
    pass over the activations fewer. In place; returns the module."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for seq in [m for m in module.modules() if isinstance(m, torch.nn.Sequential)]:
        names = list(seq._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = seq._modules[first], seq._modules[second]
            if isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d) and bn.track_running_stats:
                seq._modules[first] = fuse_conv_bn_eval(conv, bn)
                seq._modules[second] = torch.nn.Identity()
    return module


def inference_copy(critic):
    """A copy of the critic for fast CPU inference: eval mode, BatchNorms folded into the convolutions,
    channels-last memory layout (oneDNN's fast path for convolutions and pooling). The caller's critic is
    left as it is; the copy keeps its name and weights hash. Non-module critics are returned unchanged."""
    if not isinstance(critic, torch.nn.Module):
        return critic
    fast = fold_batch_norms(copy.deepcopy(critic).eval())
    return fast.to(memory_format=torch.channels_last)


def critic_batch(critic) -> int:
    device = getattr(critic, "device", torch.device("cpu"))
    return CRITIC_BATCH.get(torch.device(device).type, DEFAULT_CRITIC_BATCH)


class CriticRunner:
    """Runs both critics on batches of drawings: `with CriticRunner(...) as run: features, embeddings = run(images)`.

    On the CPU the drawings are split over `workers` Python threads, each running the critics with one
    intra-op thread (torch releases the GIL inside its ops), instead of one stream of ops each split over
    the cores: small convolutions scale better that way, and far better on a shared machine where
    OpenMP's barriers wait on descheduled threads (2,048 drawings, 2 cores, loaded machine: 386-875
    drawings/s against 100-141). The process's intra-op thread count is set to 1 inside the `with` block
    and restored after it. Inference mode and autocast are thread-local, so each worker enters them.
    The critics run as `inference_copy`s: in eval mode, which also makes the threads safe (a critic's
    `features` switches it to eval and back, and a shared critic in training mode would see its batch
    norms flip to batch statistics under another thread). A critic that is not a torch module is used as
    it is and must be safe to call from several threads.
    """

    def __init__(self, simclr, protonet, precision: str = "fp32", workers: int | None = None):
        self.simclr, self.protonet, self.precision = inference_copy(simclr), inference_copy(protonet), precision
        self.device_type = torch.device(getattr(simclr, "device", "cpu")).type
        on_cpu = all(torch.device(getattr(c, "device", "cpu")).type == "cpu" for c in (simclr, protonet))
        self.workers = max(1, workers or torch.get_num_threads()) if on_cpu else 1
        self._pool: ThreadPoolExecutor | None = None
        self._threads = torch.get_num_threads()

    def __enter__(self) -> "CriticRunner":
        if self.workers > 1:
            torch.set_num_threads(1)
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="drawgap-critic")
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
            torch.set_num_threads(self._threads)

    def _embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bf16 = self.precision == "bf16"
        autocast = torch.autocast(self.device_type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            features = self.simclr.features(images, batch_size=critic_batch(self.simclr))
            embeddings = self.protonet.embed(images, batch_size=critic_batch(self.protonet))
        return features.float(), embeddings.float()

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._pool is None or len(images) < 2 * self.workers:
            return self._embed(images)
        parts = list(self._pool.map(self._embed, torch.tensor_split(images, self.workers)))
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
