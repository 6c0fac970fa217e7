"""The DA-GAN baselines of the NeurIPS paper (SPEC.md 2.6, Antoniou et al. 2017): `dagan-un` (a U-Net of
densely connected conv blocks) and `dagan-rn` (the same without the U-Net skips), trained as WGAN-GP
critics of pairs (a drawing, its class exemplar).

- Generator G(x1, z): a dense conv encoder halving the size four times (widths [64, 64, 128, 128]; each
  block: `inner_layers` 3x3 convs, each fed the concatenation of the block's input and all earlier outputs,
  then a stride-2 conv with dropout 0.5), and a decoder back up, one dense block per level ending in an
  upsample + conv with dropout. `dagan-un` concatenates the encoder's map of the same size at each decoder
  level (the U-Net skips, the input drawing itself at the last level); `dagan-rn` does not. z ~ N(0, I)
  enters through `Linear(z -> d*d*k)` at the three deepest decoder levels (d the level's size, k = 8, 4, 2
  channels). Conv -> LeakyReLU(0.2) -> BatchNorm, as in [DVR]; the last conv is linear, then a sigmoid.
- Critic D(x1, x2): the pair as 2 channels, a dense conv encoder of the same shape (`critic_inner_layers`
  = 5 per block) with layer norms instead of batch norms (a batch norm would make the gradient penalty
  depend on the batch); the last map's global mean goes through Linear(-> 1024) + LeakyReLU, is
  concatenated with the flattened map, then Linear(-> 1), a WGAN critic (no sigmoid).
- Training (the loop's step is one critic step): real = (x1, x2), fake = (x1, G(x1, z)) with x1 a drawing
  and x2 its class exemplar, on non-binarised images. Critic loss D(fake) - D(real) + lambda GP, lambda 10;
  every `n_critic`-th step (5) also takes a generator step, loss -D(fake), on the same batch. Adam(1e-4,
  betas (0, 0.9)) for both networks. Test-time generation: G(exemplar, z) in eval mode ([DVR]
  `evaluation_tools.py` calls `gan_model.eval()`), so batch norm uses its running statistics and dropout
  is off: drawing (c, k) depends on its own z only, seeded from (seed, c, k).

Choices SPEC.md leaves open, and why:
- The gradient penalty interpolates whole pairs, lerp((x1, x2), (x1, G), u) with one u ~ U(0, 1) per item,
  and takes the gradient norm over both channels (Gulrajani et al.'s penalty on the critic's whole input;
  the x1 channel is the same in both pairs, so only the second channel moves).
- [DVR]'s encoder blocks also take a strided copy of the previous block's input and its decoder blocks a
  transposed-conv copy of the previous level's; drawgap's blocks are plain dense blocks (input + all
  earlier outputs), which keeps "densely connected" and the skips SPEC names, with fewer parameters.
- The critic's layer norm is `GroupNorm(1, C)`: a LayerNorm over (C, H, W) that does not need the map's
  size in advance, with a per-channel affine.
- On many processes (DDP) each process's batch norms normalise its own share of the batch, and their
  running statistics drift apart between forwards (DDP broadcasts process 0's at each forward, and the run
  saves process 0's): the parameters stay identical (checked with 2 CPU processes), the buffers do not.
  SyncBatchNorm would give the one-process statistics but runs on GPUs only.
- No EMA (the paper has none for its GANs). The generator step reuses the batch of the critic step it
  follows (one batch per loop step keeps the loop's data order and exact resume; [DVR] draws a fresh one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from drawgap.errors import InputError
from drawgap.models.base import Generator, item_seeds
from drawgap.models.diffusion.model import PairSet
from drawgap.options import option

NOISE_CHANNELS = (8, 4, 2)  # at the three deepest decoder levels, deepest first (SPEC.md 2.6)


def parse_widths(text: str, field: str = "widths") -> list[int]:
    """'64,64,128,128' -> [64, 64, 128, 128]; InputError unless four positive integers."""
    try:
        widths = [int(part) for part in str(text).split(",")]
    except ValueError:
        raise InputError(f"expected four comma-separated integers, got {text!r}", field=field) from None
    if len(widths) != 4 or min(widths) < 1:
        raise InputError(f"expected four positive integers, got {text!r}", field=field)
    return widths


@dataclass
class DAGANOptions:
    """`drawgap train dagan-un | dagan-rn` options (SPEC.md 2.6)."""

    z_size: int = option(128, "Size of the noise z (the paper's README: 128).", model=True)
    widths: str = option("64,64,128,128", "Channels of the four encoder levels, generator and critic.", model=True)
    inner_layers: int | None = option(None, "Convs per dense generator block [3 for dagan-un, 2 for dagan-rn].", model=True)
    critic_inner_layers: int = option(5, "Convs per dense critic block.", model=True)
    critic_dense: int = option(1024, "Width of the critic's dense layer on the map's global mean.", model=True)
    dropout: float = option(0.5, "Dropout after each generator block's resampling conv.", model=True)
    n_critic: int = option(5, "Critic steps per generator step (each loop step is one critic step).")
    gp_weight: float = option(10.0, "Weight lambda of the gradient penalty.")
    lr: float = option(1e-4, "Adam learning rate of both networks (betas 0, 0.9).")

    def __post_init__(self):
        parse_widths(self.widths)
        for field in ("z_size", "critic_inner_layers", "critic_dense", "n_critic"):
            if int(getattr(self, field)) < 1:
                raise InputError(f"expected an integer >= 1, got {getattr(self, field)}", field=field)
        if self.inner_layers is not None and self.inner_layers < 1:
            raise InputError(f"expected an integer >= 1, got {self.inner_layers}", field="inner_layers")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"expected a number in [0, 1), got {self.dropout}", field="dropout")
        if not self.gp_weight >= 0:
            raise InputError(f"expected a number >= 0, got {self.gp_weight}", field="gp_weight")
        if not self.lr > 0:
            raise InputError(f"expected a positive learning rate, got {self.lr}", field="lr")


def conv(c_in: int, c_out: int, stride: int = 1, norm: str | None = "batch", dropout: float = 0.0) -> nn.Sequential:
    """3x3 conv ("same" padding) -> LeakyReLU(0.2) -> norm (batch / layer / None: linear) -> dropout."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, stride, padding=1)]
    if norm is not None:
        layers += [nn.LeakyReLU(0.2), nn.BatchNorm2d(c_out) if norm == "batch" else nn.GroupNorm(1, c_out)]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class DenseBlock(nn.Module):
    """`n` convs, each on the concatenation of the input and every earlier output; returns that concatenation."""

    def __init__(self, c_in: int, growth: int, n: int, norm: str):
        super().__init__()
        self.convs = nn.ModuleList(conv(c_in + i * growth, growth, norm=norm) for i in range(n))
        self.out_channels = c_in + n * growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.convs:
            x = torch.cat([x, layer(x)], dim=1)
        return x


def level_sizes(image_size: int, levels: int = 4) -> list[int]:
    """Map sizes from the image down, each the ceiling of half the one before: 48 -> [48, 24, 12, 6, 3]."""
    sizes = [image_size]
    for _ in range(levels):
        sizes.append((sizes[-1] + 1) // 2)
    return sizes


class DAGANGenerator(nn.Module):
    """G(x1, z) -> [B, 1, H, W] in (0, 1); `skips` makes it the U-Net (UN), without them the RN."""

    def __init__(self, image_size: int, widths: list[int], inner_layers: int, z_size: int, dropout: float, skips: bool):
        super().__init__()
        self.sizes, self.skips, self.z_size = level_sizes(image_size), skips, z_size
        w = widths
        # encoder: e1 = stem(x) at sizes[1]; block i takes e_i (w[i-1]) to e_{i+1} (w[i]) at sizes[i+1]
        self.stem = conv(1, w[0], stride=2)
        self.down_blocks = nn.ModuleList()
        self.downs = nn.ModuleList()
        for i in range(1, 4):
            block = DenseBlock(w[i - 1], w[i], inner_layers, "batch")
            self.down_blocks.append(block)
            self.downs.append(conv(block.out_channels, w[i], stride=2, dropout=dropout))
        # decoder level j = 0..4 works at sizes[4 - j]; its input is the level below's output (the deepest
        # encoder map at j = 0), the encoder map of its size (UN, j >= 1), and the noise (j < 3)
        encoder_channels = [1, w[0], w[1], w[2], w[3]]  # channels of e0 = x .. e4, by size index
        self.noise = nn.ModuleList(
            nn.Linear(z_size, self.sizes[4 - j] ** 2 * k) for j, k in enumerate(NOISE_CHANNELS)
        )
        self.up_blocks = nn.ModuleList()
        self.ups = nn.ModuleList()
        c = w[3]
        for j in range(5):
            index = 4 - j  # size index of this level
            c_in = c + (encoder_channels[index] if skips and j >= 1 else 0) + (NOISE_CHANNELS[j] if j < 3 else 0)
            out = w[max(index - 1, 0)]
            block = DenseBlock(c_in, out, inner_layers, "batch")
            self.up_blocks.append(block)
            if j < 4:  # upsample to the next size, then a conv with dropout
                self.ups.append(nn.Sequential(nn.Upsample(size=self.sizes[index - 1]), conv(block.out_channels, out, dropout=dropout)))
            c = out
        self.head = nn.Sequential(conv(self.up_blocks[-1].out_channels, w[0]), conv(w[0], w[0]), conv(w[0], 1, norm=None))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        encoded = [x, self.stem(x)]
        for block, down in zip(self.down_blocks, self.downs):
            encoded.append(down(block(encoded[-1])))
        h = encoded[-1]
        for j, block in enumerate(self.up_blocks):
            size = self.sizes[4 - j]
            parts = [h]
            if self.skips and j >= 1:
                parts.append(encoded[4 - j])
            if j < 3:
                parts.append(self.noise[j](z).view(len(z), NOISE_CHANNELS[j], size, size))
            h = block(torch.cat(parts, dim=1))
            if j < 4:
                h = self.ups[j](h)
        return torch.sigmoid(self.head(h))


class PairCritic(nn.Module):
    """D(x1, x2) -> [B] WGAN scores of the pairs, a dense conv encoder with layer norms (SPEC.md 2.6)."""

    def __init__(self, image_size: int, widths: list[int], inner_layers: int, dense: int):
        super().__init__()
        w = widths
        self.stem = conv(2, w[0], stride=2, norm="layer")
        self.blocks = nn.ModuleList()
        c = w[0]
        for i in range(1, 4):
            block = DenseBlock(c, w[i], inner_layers, "layer")
            self.blocks.append(nn.Sequential(block, conv(block.out_channels, w[i], stride=2, norm="layer")))
            c = w[i]
        size = level_sizes(image_size)[4]
        self.dense = nn.Sequential(nn.Linear(c, dense), nn.LeakyReLU(0.2))
        self.out = nn.Linear(dense + c * size * size, 1)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        h = self.stem(pairs)
        for block in self.blocks:
            h = block(h)
        features = torch.cat([self.dense(h.mean(dim=(2, 3))), h.flatten(1)], dim=1)
        return self.out(features).squeeze(1)


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """mean over items of (||grad_x D(x)|| - 1)^2 at x = real + u (fake - real), u [B] in [0, 1]; the
    gradient is kept in the graph (create_graph) so that the penalty trains the critic."""
    mix = torch.lerp(real, fake, u.view(-1, *[1] * (real.dim() - 1))).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mix).sum(), mix, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


class DAGAN(Generator):
    """What dagan-un and dagan-rn share (see the module docstring); `skips` and `default_inner_layers` differ."""

    Options = DAGANOptions
    class_keys = ("images", "exemplars")
    find_unused_parameters = True  # a critic step leaves the generator without gradients
    training_only_prefixes = ("critic.",)  # a shipped DA-GAN samples with its generator alone
    skips: bool = True
    default_inner_layers: int = 3

    def __init__(self, image_size: int = 48, z_size: int = 128, widths: list[int] | tuple = (64, 64, 128, 128),
                 inner_layers: int | None = None, critic_inner_layers: int = 5, critic_dense: int = 1024,
                 dropout: float = 0.5):
        widths = [int(w) for w in widths]
        inner_layers = self.default_inner_layers if inner_layers is None else int(inner_layers)
        super().__init__(image_size=image_size, z_size=z_size, widths=widths, inner_layers=inner_layers,
                         critic_inner_layers=critic_inner_layers, critic_dense=critic_dense, dropout=dropout)
        self.generator = DAGANGenerator(image_size, widths, inner_layers, z_size, dropout, self.skips)
        self.critic = PairCritic(image_size, widths, critic_inner_layers, critic_dense)

    @classmethod
    def config_from_options(cls, options, image_size: int) -> dict:
        return {"image_size": image_size, "z_size": options.z_size, "widths": parse_widths(options.widths),
                "inner_layers": options.inner_layers, "critic_inner_layers": options.critic_inner_layers,
                "critic_dense": options.critic_dense, "dropout": options.dropout}

    @property
    def z_size(self) -> int:
        return int(self.config["z_size"])

    # -------------------------------------------------------------------------------------- training

    def training_set(self, dataset, seed: int = 0) -> torch.utils.data.Dataset:
        return PairSet(dataset)  # (drawing, its class exemplar), float in [0, 1], not binarised

    def forward(self, batch: dict, part: str = "critic", gp_weight: float = 10.0) -> torch.Tensor:
        """The critic's loss (part "critic") or the generator's ("generator") on one batch of pairs."""
        x1, x2 = batch["images"], batch["exemplars"]
        made = self.generator(x1, torch.randn(len(x1), self.z_size, device=x1.device))
        fake = torch.cat([x1, made], dim=1)
        if part == "generator":
            return -self.critic(fake).mean()
        real, fake = torch.cat([x1, x2], dim=1), fake.detach()
        gp = gradient_penalty(self.critic, real, fake, torch.rand(len(x1), device=x1.device))
        self.last_gp = gp.detach()  # for the log
        return self.critic(fake).mean() - self.critic(real).mean() + gp_weight * gp

    def configure_optimizers(self, options, state):
        self.n_critic, self.gp_weight = int(options.n_critic), float(options.gp_weight)
        adam = dict(lr=options.lr, betas=(0.0, 0.9))
        return [torch.optim.Adam(self.generator.parameters(), **adam), torch.optim.Adam(self.critic.parameters(), **adam)], []

    def training_step(self, batch: dict, run) -> dict:
        opt_g, opt_c = run.optimizers
        loss_c = run.model(batch, "critic", self.gp_weight)
        run.backward(loss_c)
        opt_c.step()
        opt_c.zero_grad(set_to_none=True)
        opt_g.zero_grad(set_to_none=True)  # the critic step ran the generator (its output detached): no grads
        logs = {"loss": loss_c, "critic": loss_c, "gp": self.last_gp}
        if (run.state.step + 1) % self.n_critic == 0:
            loss_g = run.model(batch, "generator")
            run.backward(loss_g)
            opt_g.step()
            opt_g.zero_grad(set_to_none=True)
            opt_c.zero_grad(set_to_none=True)  # the generator's loss left gradients on the critic too
            logs["generator"] = loss_g
        return logs

    # -------------------------------------------------------------------------------------- sampling

    @torch.no_grad()
    def sample(self, exemplars, n: int, *, seed: int | None = None, batch_size: int = 64, progress: bool = False) -> torch.Tensor:
        """[C, n, 1, H, W] drawings G(exemplar, z) in [0, 1]; drawing (c, k) depends only on (seed, c, k)."""
        if n < 1:
            raise InputError(f"expected n >= 1 drawings per exemplar, got {n}", field="n")
        if batch_size < 1:
            raise InputError(f"expected a batch size >= 1, got {batch_size}", field="batch_size")
        x = self.check_exemplars(exemplars)
        seed = int(np.random.SeedSequence().entropy % 2**63) if seed is None else int(seed)
        seeds = item_seeds(seed, len(x), n).reshape(-1)
        z = torch.stack([torch.randn(self.z_size, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
        cond = x.repeat_interleave(n, dim=0)
        was_training = self.training
        self.eval()
        try:
            out = torch.cat([
                self.generator(cond[i:i + batch_size], z[i:i + batch_size].to(x.device))
                for i in range(0, len(cond), batch_size)
            ])
        finally:
            self.train(was_training)
        return out.view(len(x), n, 1, self.image_size, self.image_size)


class DAGANUNet(DAGAN):
    """DA-GAN-UN: the U-Net generator, 3 convs per dense block (SPEC.md 2.6)."""

    name = "dagan-un"
    display_name = "DA-GAN-UN"
    skips = True
    default_inner_layers = 3


class DAGANResNet(DAGAN):
    """DA-GAN-RN: the same generator without the U-Net skips, 2 convs per dense block (SPEC.md 2.6)."""

    name = "dagan-rn"
    display_name = "DA-GAN-RN"
    skips = False
    default_inner_layers = 2
