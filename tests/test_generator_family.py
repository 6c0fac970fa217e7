"""A generator family is one class: two toy families defined here alone, a VAE (gradient clipping,
ReduceLROnPlateau on the logged loss) and a WGAN-GP (two optimizers, n critic steps per generator step,
gradient penalty), train, resume exactly, save, reload and sample through drawgap's Python API and CLI,
with no edit to any drawgap module."""

import json
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from drawgap.data.formats import read_samples, write_dataset
from drawgap.errors import InputError
from drawgap.models import load_generator
from drawgap.models.base import Generator, Schedule
from drawgap.models.sampling import sample_to_files
from drawgap.models.training import latest_checkpoint, run_training
from drawgap.options import option
from tests.conftest import make_dataset


def drawings(dataset):
    """Training items: each drawing as float [1, H, W] in [0, 1]."""
    images = torch.from_numpy(dataset.images).float().div(255).unsqueeze(1)
    return [{"images": x} for x in images]


class ToyFamily(Generator):
    """What both toys share: a decoder from a latent, sampling with a seed."""

    def training_set(self, dataset, seed=0):
        return drawings(dataset)

    def sample(self, exemplars, n, *, seed=None, batch_size=64, progress=False):
        x = self.check_exemplars(exemplars)
        z = torch.randn(len(x) * n, self.config["width"], generator=torch.Generator().manual_seed(seed or 0))
        with torch.no_grad():
            return torch.sigmoid(self.decoder(z)).view(len(x), n, 1, self.image_size, self.image_size)


@dataclass
class VAEOptions:
    width: int = option(4, "Latent width of the toy VAE.", model=True)
    lr: float = option(1e-2, "Adam learning rate.")
    clip: float = option(0.5, "Gradient norm clip.")


class ToyVAE(ToyFamily):
    """A toy VAE: gradient clipping, and ReduceLROnPlateau on the logged loss."""

    name = "toy-vae"
    Options = VAEOptions

    def __init__(self, image_size=8, width=4):
        super().__init__(image_size=image_size, width=width)
        self.encoder = nn.Linear(image_size**2, 2 * width)
        self.decoder = nn.Linear(width, image_size**2)

    def forward(self, batch):
        x = batch["images"].flatten(1)
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        kl = -0.5 * (1 + logvar - mu**2 - logvar.exp()).mean()
        return F.binary_cross_entropy_with_logits(self.decoder(z), x) + 1e-3 * kl

    def configure_optimizers(self, options, state):
        self.clip = options.clip
        opt = torch.optim.Adam(self.parameters(), lr=options.lr)
        # threshold 0.5: the loss never falls by half in a step, so the LR halves after each patience-1 plateau
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=1, threshold=0.5)
        return [opt], [Schedule(plateau, monitor="loss")]

    def training_step(self, batch, run):
        (opt,) = run.optimizers
        loss = run.model(batch)
        run.backward(loss)
        run.clip_grad_norm_(self.parameters(), self.clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return {"loss": loss}


@dataclass
class GANOptions:
    width: int = option(4, "Latent width.", model=True)
    n_critic: int = option(2, "Critic steps per generator step.")
    penalty: float = option(10.0, "Gradient penalty weight.")


class ToyGAN(ToyFamily):
    """A toy WGAN-GP: two optimizers, n critic steps per generator step, gradient penalty."""

    name = "toy-gan"
    Options = GANOptions
    find_unused_parameters = True

    def __init__(self, image_size=8, width=4):
        super().__init__(image_size=image_size, width=width)
        self.decoder = nn.Linear(width, image_size**2)
        self.critic = nn.Sequential(nn.Linear(image_size**2, 8), nn.Tanh(), nn.Linear(8, 1))

    def forward(self, batch, part="critic", penalty=10.0):
        real = batch["images"].flatten(1)
        fake = torch.sigmoid(self.decoder(torch.randn(len(real), self.config["width"])))
        if part == "generator":
            return -self.critic(fake).mean()
        fake = fake.detach()
        mix = torch.lerp(real, fake, torch.rand(len(real), 1)).requires_grad_(True)
        (grad,) = torch.autograd.grad(self.critic(mix).sum(), mix, create_graph=True)
        gp = ((grad.norm(dim=1) - 1) ** 2).mean()
        return self.critic(fake).mean() - self.critic(real).mean() + penalty * gp

    def configure_optimizers(self, options, state):
        self.n_critic, self.penalty = options.n_critic, options.penalty
        return [torch.optim.Adam(self.decoder.parameters(), 1e-3), torch.optim.Adam(self.critic.parameters(), 1e-3)], []

    def training_step(self, batch, run):
        opt_g, opt_c = run.optimizers
        loss_c = run.model(batch, "critic", self.penalty)
        run.backward(loss_c)
        opt_c.step()
        opt_c.zero_grad(set_to_none=True)
        logs = {"loss": loss_c, "critic": loss_c}
        if (run.state.step + 1) % self.n_critic == 0:
            loss_g = run.model(batch, "generator")
            run.backward(loss_g)
            opt_g.step()
            opt_g.zero_grad(set_to_none=True)
            opt_c.zero_grad(set_to_none=True)  # the generator's loss left gradients on the critic too
            logs["generator"] = loss_g
        return logs


@pytest.fixture
def data_file(tmp_path):
    return write_dataset(make_dataset(n_classes=4, per_class=3), tmp_path / "train.npz")


def _weights(run_dir):
    return {k: v.clone() for k, v in load_generator(run_dir).state_dict().items()}


@pytest.mark.parametrize("family, options", [("toy-vae", {"clip": 0.25}), ("toy-gan", {"n_critic": 2})])
def test_a_family_defined_outside_drawgap_trains_resumes_saves_and_samples(tmp_path, data_file, family, options):
    common = dict(batch_size=4, checkpoint_every=2, log_every=1, progress=False, **options)
    straight = run_training(family, data_file, tmp_path / "a", steps=6, **common)
    run_training(family, data_file, tmp_path / "b", steps=3, **common)  # stopped at 3 ...
    resumed = run_training(family, data_file, tmp_path / "b", steps=6, resume=True, **common)  # ... continued to 6
    assert straight.state.step == resumed.state.step == 6 and straight.stopped_by == "steps"
    assert resumed.weights_sha256 == straight.weights_sha256
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the family's options are its recipe, recorded, and kept on resume
    recorded = json.loads((tmp_path / "a" / "train.json").read_text())["options"]
    assert all(recorded[k] == v for k, v in options.items()) and "width" not in recorded
    with pytest.raises(InputError, match="keeps its recipe"):
        run_training(family, data_file, tmp_path / "b", steps=8, resume=True, **{**common, **{k: v * 2 for k, v in options.items()}})

    generator = load_generator(tmp_path / "a")
    assert type(generator).__name__ in ("ToyVAE", "ToyGAN") and generator.config == {"image_size": 8, "width": 4}
    paths = sample_to_files(tmp_path / "a", data_file, tmp_path / "s", per_exemplar=3, seed=5)
    s = read_samples(paths[0])
    assert s.samples.shape == (4, 3, 8, 8) and s.meta["generator"] == family
    assert s.meta["params"] == {"guidance": None, "sampler": None, "steps": None, "per_exemplar": 3, "seed": 5}
    with pytest.raises(InputError, match=f"{family} has no guidance option"):
        sample_to_files(tmp_path / "a", data_file, tmp_path / "s2", per_exemplar=1, guidance=[1.0])
    with pytest.raises(InputError, match="has no sampler option"):
        sample_to_files(tmp_path / "a", data_file, tmp_path / "s2", per_exemplar=1, sampler="dpm++")


def test_vae_lr_follows_its_plateau_schedule_and_gan_steps_its_critic_n_times(tmp_path, data_file):
    run_training("toy-vae", data_file, tmp_path / "vae", steps=6, batch_size=4, log_every=1, progress=False)
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "vae" / "log.jsonl").read_text().splitlines()]
    # the loss of step 1 is the best; steps 2 and 3 are two bad ones (> patience 1), so step 4 runs at half
    # the LR; steps 4 and 5 are two more, so step 6 runs at a quarter
    assert lrs == pytest.approx([1e-2, 1e-2, 1e-2, 5e-3, 5e-3, 2.5e-3])

    run_training("toy-gan", data_file, tmp_path / "gan", steps=6, batch_size=4, n_critic=3, progress=False)
    checkpoint = latest_checkpoint(tmp_path / "gan")
    generator_steps = torch.load(checkpoint / "optimizer.bin", weights_only=True)["state"][0]["step"]
    critic_steps = torch.load(checkpoint / "optimizer_1.bin", weights_only=True)["state"][0]["step"]
    assert (int(generator_steps), int(critic_steps)) == (2, 6)


def test_train_help_is_built_from_the_family_options(cli, tmp_path, data_file):
    r = cli("train", "toy-vae", "--help")
    assert r.code == 0 and "--clip" in r.out and "Gradient norm clip" in r.out and "--width" in r.out
    assert "--lr-schedule" not in r.out and "--preset" not in r.out  # the diffusion family's, not this one's
    assert "--steps" in r.out and "--resume" in r.out  # the loop's
    r = cli("train", "toy-vae", "--data", data_file, "--out", tmp_path / "r", "--steps", 2, "--batch-size", 4, "--width", 3)
    assert r.code == 0, r.err
    assert load_generator(tmp_path / "r").config["width"] == 3
    r = cli("train", "toy-vae", "--data", data_file, "--out", tmp_path / "r2", "--steps", 1, "--set-size", 3)
    assert r.code == 2 and "--set-size" in r.err  # fsdm's option, not the toy's
