"""VAE-NS: the Neural Statistician (Edwards & Storkey 2016) as adapted in the NeurIPS 2022 study (SPEC.md 2.5,
[DVR] `model/NS`, itself from georgosgeorgos/hierarchical-few-shot-generative-models).

- **Shared conv encoder.** Four levels of three Conv3x3 + BatchNorm + ELU layers, the last of each with
  stride 2 (channels 32, 64, 128, 256 at the base: 50 px -> 4x4), then Linear(-> hidden) + BN + ELU.
- **Statistic network q(c|X).** Mean over the set of the encodings, 2 x [Linear + BN + ELU], Linear(-> 2 c_dim),
  BatchNorm1d(1) -> (mu_c, log sigma^2_c).
- **Prior p(z|c) and posterior q(z|h, c).** Linear embeddings (summed for the posterior), ELU, a residual
  block of 3 x (Linear + BN), Linear(-> 2 z_dim), BatchNorm1d(1).
- **Decoder p(x|z, c).** Linear(z) + Linear(c), ELU, Linear(-> the encoder's last map), then the encoder's
  levels mirrored (Conv3x3 + BN + ELU, ConvTranspose up to the encoder's size at that level), Conv1x1:
  Bernoulli logits. Xavier-normal initial weights.
- **Loss.** logpx (Bernoulli, p clamped to [1e-6, 1 - 1e-6]) and KL = KL(q(c|X) || N(0, I)) + KL(q(z) || p(z|c)),
  each summed and divided by batch x set size; loss = -(w logpx - beta KL / w), w = alpha + 1, alpha = 1
  halved every epoch (so w -> 1).
- **Optimiser.** Gradients clamped element-wise to [-1, 1]; Adam(1e-3, weight decay 1e-5);
  ReduceLROnPlateau(mode max, patience 10, factor 0.5) on the VLB = logpx - KL.
- **Training sets** (`AugmentedClassSets`): `context` drawings of one class; a set is augmented with
  probability (s - 1) / s (the authors keep each set and add s - 1 augmented copies) by one random
  horizontal flip, one vertical flip (each p 0.5) and one rotation U(0, 360) degrees shared by the whole set;
  then every pixel is binarised stochastically (Bernoulli of its grey level).
- **Generation.** The context is the exemplar alone: c = the posterior mean of q(c|exemplar), z ~ p(z|c)
  from the seed of drawing (c, k), the drawing is the Bernoulli mean. In eval mode (BatchNorm running
  statistics), so a drawing does not depend on the batch it was drawn in.

Choices where SPEC.md leaves one open:

- Sets are drawn like FSDM's (`ClassSets`: drawing i and `context - 1` others of its class, new each epoch)
  rather than the authors' fixed split of each class's 20 drawings into floor(20 / s) sets: the loop's items
  are drawings, and the sets still are class-homogeneous and of size s.
- The plateau schedule monitors the **training** VLB (drawgap's loop has no test set in it), stepped every
  `plateau_every` optimizer steps with that step's value. The alpha decay follows the loop's epochs.
- `conv_channels` sets the four encoder levels (base 32,64,128,256) so the tests can run tiny networks;
  the rotation is bilinear (kornia), then binarised, as the authors' PIL rotation of grey images was.
- The image size is the data's (SPEC: 50 px; the shipped drawgap data are 48 px). The base model has
  7,321,831 parameters at 50 px (the paper: base architectures of about 6-7 M).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from kornia.geometry.transform import rotate
from torch import nn
from torch.distributions import Normal, kl_divergence

from drawgap.errors import InputError
from drawgap.models.base import Generator, Schedule, item_seeds
from drawgap.models.diffusion.fsdm import ClassSets
from drawgap.options import option


@dataclass
class VAENSOptions:
    context: int = option(10, "Drawings per class-homogeneous training set (the context size; base 10).", model=True)
    z_dim: int = option(32, "Latent z size per drawing.", model=True)
    c_dim: int = option(512, "Context (statistic) c size.", model=True)
    hidden_dim: int = option(256, "Hidden width of the statistic, prior, posterior and decoder MLPs.", model=True)
    conv_channels: str = option("32,64,128,256", "Channels of the four encoder levels (3 convs each).", model=True)
    beta: float = option(1.0, "Weight of the KL term.")
    lr: float = option(1e-3, "Adam learning rate.")
    plateau_every: int = option(100, "Step ReduceLROnPlateau (mode max, patience 10, on the training VLB) every N steps.")

    def __post_init__(self):
        for name in ("context", "z_dim", "c_dim", "hidden_dim", "plateau_every"):
            if getattr(self, name) < 1:
                raise InputError(f"expected a positive integer, got {getattr(self, name)}", field=name)
        parse_channels(self.conv_channels)
        if self.beta < 0 or not self.lr > 0:
            raise InputError(f"expected beta >= 0 and lr > 0, got {self.beta}, {self.lr}", field="beta")


def parse_channels(text) -> list[int]:
    try:
        channels = [int(c) for c in (text.split(",") if isinstance(text, str) else text)]
    except ValueError:
        channels = []
    if len(channels) != 4 or min(channels) < 1:
        raise InputError(f"expected four positive integers such as 32,64,128,256, got {text!r}", field="conv_channels")
    return channels


def gaussian_kl(mu_q, logvar_q, mu_p, logvar_p) -> torch.Tensor:
    """KL(N(mu_q, exp(logvar_q)) || N(mu_p, exp(logvar_p))) elementwise, in float32 whatever the inputs' type
    (under bf16 autocast the heads give bfloat16: 8 bits of mantissa are too few for exp and the log-ratio)."""
    mu_q, logvar_q, mu_p, logvar_p = (t.float() for t in (mu_q, logvar_q, mu_p, logvar_p))
    return kl_divergence(Normal(mu_q, (0.5 * logvar_q).exp()), Normal(mu_p, (0.5 * logvar_p).exp()))


def bernoulli_log_likelihood(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sum of x log p + (1 - x) log(1 - p), p = sigmoid(logits) clamped to [1e-6, 1 - 1e-6] (the authors'),
    in float32: in bfloat16, 1 - 1e-6 rounds to 1, so a confident pixel gets p = 1, log(1 - p) = -inf, and
    0 x -inf = NaN for every ink pixel (what stopped `drawgap train vae-ns --bf16` at its first step)."""
    with torch.autocast(logits.device.type, enabled=False):
        p = torch.sigmoid(logits.float()).clamp(1e-6, 1 - 1e-6)
        x = x.float()
        return (x * p.log() + (1 - x) * (1 - p).log()).sum()


def _conv(c_in, c_out, stride=1):
    return [nn.Conv2d(c_in, c_out, 3, stride, 1), nn.BatchNorm2d(c_out), nn.ELU()]


def _dense(a, b):
    return [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ELU()]


class FCResBlock(nn.Module):
    """x + 3 x (Linear + BN, ELU between), then ELU."""

    def __init__(self, dim: int):
        super().__init__()
        self.body = nn.Sequential(*_dense(dim, dim), *_dense(dim, dim), nn.Linear(dim, dim), nn.BatchNorm1d(dim))

    def forward(self, x):
        return F.elu(x + self.body(x))


class GaussianHead(nn.Module):
    """hidden -> (mu, logvar) through Linear(-> 2 dim) and BatchNorm1d(1), as the authors' code."""

    def __init__(self, hidden: int, dim: int):
        super().__init__()
        self.linear, self.norm = nn.Linear(hidden, 2 * dim), nn.BatchNorm1d(1)

    def forward(self, h):
        return self.norm(self.linear(h).unsqueeze(1)).squeeze(1).chunk(2, dim=-1)


class AugmentedClassSets(ClassSets):
    """FSDM's class-homogeneous sets, augmented per set and stochastically binarised (module docstring);
    the randomness comes from (seed, epoch, i), so the sets are reproducible and resume exactly."""

    def __getitem__(self, i: int) -> dict:
        sets = super().__getitem__(i)["sets"]  # [K, 1, H, W] in [0, 1]
        rng = np.random.default_rng((self.seed, self.epoch, i, 1))
        k = len(sets)
        if rng.random() < (k - 1) / k:
            if rng.random() < 0.5:
                sets = sets.flip(-1)
            if rng.random() < 0.5:
                sets = sets.flip(-2)
            sets = rotate(sets, torch.full((k,), float(rng.uniform(0.0, 360.0)))).clamp(0, 1)
        g = torch.Generator().manual_seed(int(rng.integers(2**62)))
        return {"sets": torch.bernoulli(sets, generator=g)}


class VAENS(Generator):
    """The Neural Statistician: a set's statistic c, per-drawing z, Bernoulli decoder."""

    name = "vae-ns"
    display_name = "VAE-NS"
    class_keys = ("sets",)
    Options = VAENSOptions

    def __init__(self, image_size: int = 50, context: int = 10, z_dim: int = 32, c_dim: int = 512, hidden_dim: int = 256,
                 conv_channels: str = "32,64,128,256"):
        super().__init__(image_size=image_size, context=context, z_dim=z_dim, c_dim=c_dim, hidden_dim=hidden_dim,
                         conv_channels=conv_channels)
        channels = parse_channels(conv_channels)
        layers, c_in, self.sizes = [], 1, [image_size]
        for c in channels:
            layers += _conv(c_in, c) + _conv(c, c) + _conv(c, c, stride=2)
            c_in = c
            self.sizes.append((self.sizes[-1] - 1) // 2 + 1)
        self.encoder = nn.Sequential(*layers, nn.Flatten())
        last = channels[-1] * self.sizes[-1] ** 2
        self.pre_proj = nn.Sequential(*_dense(last, hidden_dim))
        self.post_pool = nn.Sequential(*_dense(hidden_dim, hidden_dim), *_dense(hidden_dim, hidden_dim))
        self.q_c = GaussianHead(hidden_dim, c_dim)
        self.post_h, self.post_c = nn.Linear(hidden_dim, hidden_dim), nn.Linear(c_dim, hidden_dim)
        self.post_body, self.q_z = FCResBlock(hidden_dim), GaussianHead(hidden_dim, z_dim)
        self.prior_c = nn.Linear(c_dim, hidden_dim)
        self.prior_body, self.p_z = FCResBlock(hidden_dim), GaussianHead(hidden_dim, z_dim)
        self.dec_z, self.dec_c = nn.Linear(z_dim, hidden_dim), nn.Linear(c_dim, hidden_dim)
        self.dec_fc = nn.Linear(hidden_dim, last)
        self.dec_levels = nn.ModuleList()
        self.dec_up = nn.ModuleList()
        rev = channels[::-1]
        for i, c in enumerate(rev):
            c_out = rev[i + 1] if i + 1 < len(rev) else rev[-1]
            self.dec_levels.append(nn.Sequential(*_conv(c, c), *_conv(c, c)))
            self.dec_up.append(nn.ConvTranspose2d(c, c_out, 3, stride=2, padding=1))
        self.dec_norm = nn.ModuleList(nn.Sequential(nn.BatchNorm2d(m.out_channels), nn.ELU()) for m in self.dec_up)
        self.dec_out = nn.Conv2d(rev[-1], 1, 1)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------------------------ parts

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 1, H, W] -> [N, hidden]."""
        return self.pre_proj(self.encoder(x))

    def statistic(self, h: torch.Tensor):
        """[B, K, hidden] -> q(c|X) as (mu, logvar), each [B, c_dim]."""
        return self.q_c(self.post_pool(h.mean(dim=1)))

    def prior(self, c: torch.Tensor):
        return self.p_z(self.prior_body(F.elu(self.prior_c(c))))

    def posterior(self, h: torch.Tensor, c: torch.Tensor):
        return self.q_z(self.post_body(F.elu(self.post_h(h) + self.post_c(c))))

    def decode(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """-> Bernoulli logits [N, 1, H, W]."""
        channels = parse_channels(self.config["conv_channels"])
        x = self.dec_fc(F.elu(self.dec_z(z) + self.dec_c(c))).view(len(z), channels[-1], self.sizes[-1], self.sizes[-1])
        for level, up, norm, size in zip(self.dec_levels, self.dec_up, self.dec_norm, self.sizes[-2::-1]):
            x = norm(up(level(x), output_size=[size, size]))
        return self.dec_out(x)

    @staticmethod
    def kl_divergence(mu_q, logvar_q, mu_p=None, logvar_p=None) -> torch.Tensor:
        """KL(q || p) summed over everything; p = N(0, I) when not given."""
        mu_p = torch.zeros_like(mu_q) if mu_p is None else mu_p
        logvar_p = torch.zeros_like(logvar_q) if logvar_p is None else logvar_p
        return gaussian_kl(mu_q, logvar_q, mu_p, logvar_p).sum()

    # ------------------------------------------------------------------------------------ training

    def training_set(self, dataset, seed: int = 0) -> torch.utils.data.Dataset:
        return AugmentedClassSets(dataset, self.config["context"], seed)

    def terms(self, sets: torch.Tensor) -> dict:
        """`logpx` and `kl` of [B, K, 1, H, W] sets, each divided by B x K (the authors' normalisation)."""
        b, k = sets.shape[:2]
        x = sets.flatten(0, 1)
        h = self.encode(x)
        mu_c, logvar_c = self.statistic(h.view(b, k, -1))
        c = (mu_c + torch.randn_like(mu_c) * (0.5 * logvar_c).exp()).repeat_interleave(k, dim=0)
        mu_q, logvar_q = self.posterior(h, c)
        z = mu_q + torch.randn_like(mu_q) * (0.5 * logvar_q).exp()
        mu_p, logvar_p = self.prior(c)
        logpx = bernoulli_log_likelihood(self.decode(z, c), x)
        kl = self.kl_divergence(mu_c, logvar_c) + self.kl_divergence(mu_q, logvar_q, mu_p, logvar_p)
        return {"logpx": logpx / (b * k), "kl": kl / (b * k)}

    def forward(self, batch: dict, beta: float = 1.0, alpha: float = 0.0) -> torch.Tensor:
        """-(w logpx - beta KL / w), w = alpha + 1; the terms stay in `last_terms` (detached) for the log."""
        t = self.terms(batch["sets"])
        self.last_terms = {k: v.detach() for k, v in t.items()}
        w = alpha + 1.0
        return -(w * t["logpx"] - beta * t["kl"] / w)

    def configure_optimizers(self, options, state):
        self.beta = options.beta
        optimizer = torch.optim.Adam(self.parameters(), lr=options.lr, weight_decay=1e-5)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=10)
        return [optimizer], [Schedule(plateau, every=options.plateau_every, monitor="vlb")]

    def training_step(self, batch: dict, run) -> dict:
        (optimizer,) = run.optimizers
        n_sets = len(next(iter(batch.values())))
        if n_sets < 2:  # the statistic network's batch norm needs two sets to normalise over
            raise InputError(f"vae-ns trains on at least 2 sets per step and process, got {n_sets}", field="--batch-size")
        alpha = 0.5 ** run.state.epoch  # 1, halved after every epoch
        loss = run.model(batch, self.beta, alpha)
        run.backward(loss)
        for p in self.parameters():
            if p.grad is not None:
                p.grad.clamp_(-1.0, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t = self.last_terms
        return {"loss": loss, "logpx": t["logpx"], "kl": t["kl"], "vlb": t["logpx"] - t["kl"], "alpha": alpha}

    # ------------------------------------------------------------------------------------ sampling

    @torch.no_grad()
    def sample(self, exemplars, n: int, *, seed: int | None = None, batch_size: int = 64, progress: bool = False) -> torch.Tensor:
        """[C, n, 1, H, W] in [0, 1]: c = posterior mean of q(c | exemplar), z ~ p(z | c) from the seed of
        drawing (c, k), the drawing the Bernoulli mean."""
        if n < 1:
            raise InputError(f"expected n >= 1 drawings per exemplar, got {n}", field="n")
        ex = self.check_exemplars(exemplars)
        seed = int(torch.seed() % 2**63) if seed is None else int(seed)
        seeds = item_seeds(seed, len(ex), n).reshape(-1)
        z_dim = self.config["z_dim"]
        eps = torch.stack([torch.randn(z_dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
        was_training = self.training
        self.eval()
        try:
            c = self.statistic(self.encode(ex).unsqueeze(1))[0].repeat_interleave(n, dim=0)
            out = []
            for start in range(0, len(c), batch_size):
                cb = c[start : start + batch_size]
                mu_p, logvar_p = self.prior(cb)
                z = mu_p + eps[start : start + batch_size].to(self.device) * (0.5 * logvar_p).exp()
                out.append(torch.sigmoid(self.decode(z, cb)))
        finally:
            self.train(was_training)
        s = self.image_size
        return torch.cat(out).view(len(ex), n, 1, s, s)
