"""The two VAE baselines of the NeurIPS study as generator families (SPEC.md 2.4, 2.5): vae-stn and vae-ns
train (the loss falls), resume bit for bit, save and reload, sample seeded drawings, and compute their KL
terms as by hand; the CLI lists their options and refuses the ones they lack."""

import json
import math

import numpy as np
import pytest
import torch

from drawgap.data.formats import read_samples, write_dataset
from drawgap.models import load_generator
from drawgap.data.formats import read_dataset
from drawgap.models import create_generator, generator_class
from drawgap.models.training import TrainOptions, run_training, train
from drawgap.models.vae_ns import VAENS, AugmentedClassSets
from drawgap.models.vae_stn import VAESTN, kl_standard_normal
from tests.conftest import make_dataset

SIZE = 12
TINY = {
    "vae-stn": {"time_steps": 3, "z_size": 4, "lstm_size": 32, "glimpse": 5},
    "vae-ns": {"context": 3, "z_dim": 4, "c_dim": 8, "hidden_dim": 16, "conv_channels": "4,4,8,8"},
}


@pytest.fixture
def data_file(tmp_path):
    return write_dataset(make_dataset(n_classes=4, per_class=3, size=SIZE), tmp_path / "train.npz")


@pytest.fixture
def exemplars():
    return torch.from_numpy(make_dataset(n_classes=3, size=SIZE, seed=1).images[:3]).float() / 255


def _losses(run_dir):
    return [json.loads(line)["loss"] for line in (run_dir / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("family", ["vae-stn", "vae-ns"])
def test_training_lowers_the_loss(tmp_path, data_file, family):
    logged = []
    cls = generator_class(family)
    generator = create_generator(family, seed=0, image_size=SIZE, **TINY[family])
    opts = TrainOptions(steps=24, batch_size=3, log_every=1)
    train(generator, read_dataset(data_file), tmp_path / "r", opts, family_options=cls.Options(lr=3e-3, **TINY[family]),
          progress=False, callback=lambda state: logged.append(dict(state.logged)))
    if family == "vae-ns":
        # its loss weights logpx by w = 1 + 0.5^epoch (4 steps an epoch here), so it falls with w as well:
        # the bound on log p(x) rises instead
        vlb = [line["vlb"] for line in logged]
        assert np.mean(vlb[-4:]) > np.mean(vlb[:4]) + 10, vlb
        assert [line["alpha"] for line in logged[::4]] == [1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125]
    else:
        losses = _losses(tmp_path / "r")
        assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 5, losses
        assert all(line["loss"] == pytest.approx(line["bce"] + line["kl"], rel=1e-5) for line in logged)  # beta 1


@pytest.mark.parametrize("family", ["vae-stn", "vae-ns"])
def test_resume_continues_bit_for_bit_and_the_run_reloads(tmp_path, data_file, family, exemplars):
    common = dict(batch_size=3, checkpoint_every=2, log_every=1, progress=False, **TINY[family])
    straight = run_training(family, data_file, tmp_path / "a", steps=6, **common)
    run_training(family, data_file, tmp_path / "b", steps=3, **common)
    resumed = run_training(family, data_file, tmp_path / "b", steps=6, resume=True, **common)
    assert resumed.weights_sha256 == straight.weights_sha256
    a, b = load_generator(tmp_path / "a"), load_generator(tmp_path / "b")
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")

    # save / load round trip: the same class, config, weights and drawings
    a.save(tmp_path / "copy")
    c = load_generator(tmp_path / "copy")
    assert type(c) is type(a) and c.config == a.config == {"image_size": SIZE, **TINY[family]}
    assert all(torch.equal(v, c.state_dict()[k]) for k, v in sa.items())
    assert torch.equal(a.sample(exemplars, 2, seed=3), c.sample(exemplars, 2, seed=3))


@pytest.mark.parametrize("cls, family", [(VAESTN, "vae-stn"), (VAENS, "vae-ns")])
def test_sampling_shape_range_and_seeds(cls, family, exemplars):
    torch.manual_seed(0)
    g = cls(image_size=SIZE, **TINY[family])
    if family == "vae-ns":  # running statistics other than BatchNorm's initial ones
        g.train()
        g.terms(torch.rand(4, 3, 1, SIZE, SIZE).bernoulli())
    full = g.sample(exemplars, 4, seed=7, batch_size=64)
    assert full.shape == (3, 4, 1, SIZE, SIZE)
    assert full.min() >= 0 and full.max() <= 1
    one_at_a_time = g.sample(exemplars, 4, seed=7, batch_size=1)
    torch.testing.assert_close(full, one_at_a_time, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(full[:, :2], g.sample(exemplars, 2, seed=7), atol=1e-5, rtol=1e-5)
    other = g.sample(exemplars, 4, seed=8)
    assert (other - full).abs().max() > 1e-3
    assert (full[:, 0] - full[:, 1]).abs().max() > 1e-3  # two drawings of one exemplar differ


def test_vae_stn_kl_against_hand_values():
    # KL(N(mu, s2) || N(0, 1)) = 0.5 (mu^2 + s2 - 1 - ln s2)
    mu = torch.tensor([[1.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)]])
    hand = [0.5 * (1 + 1 - 1 - 0), 0.5 * (0 + 2 - 1 - math.log(2.0))]  # 0.5, 0.1534264
    torch.testing.assert_close(kl_standard_normal(mu, logvar), torch.tensor([hand]))

    # the loss's KL term is that KL summed over steps and dims, mean over the batch: with the posterior
    # MLPs' last layers fixed, every step of every drawing has the same (mu, logvar)
    torch.manual_seed(0)
    g = VAESTN(image_size=SIZE, **TINY["vae-stn"])
    with torch.no_grad():
        for head, value in ((g.posterior_mu, 1.0), (g.posterior_logvar, math.log(2.0))):
            head[-1].weight.zero_()
            head[-1].bias.fill_(value)
    x = torch.rand(2, 1, SIZE, SIZE).bernoulli()
    terms = g.terms({"images": x, "exemplars": x})
    per_dim = 0.5 * (1 + 2 - 1 - math.log(2.0))  # mu 1, variance 2
    assert terms["kl"].item() == pytest.approx(3 * 4 * per_dim, rel=1e-6)  # 3 steps x 4 dims


def test_vae_ns_kl_against_hand_values():
    # KL(N(mq, sq2) || N(mp, sp2)) = 0.5 (ln(sp2 / sq2) + (sq2 + (mq - mp)^2) / sp2 - 1)
    kl = VAENS.kl_divergence(torch.tensor([1.0, 0.5]), torch.tensor([0.0, math.log(0.25)]),
                             torch.tensor([0.0, 0.5]), torch.tensor([math.log(4.0), 0.0]))
    hand = 0.5 * (math.log(4.0) + (1 + 1) / 4 - 1) + 0.5 * (math.log(1 / 0.25) + 0.25 - 1)  # 0.4431 + 0.3181
    assert kl.item() == pytest.approx(hand, rel=1e-6)
    assert VAENS.kl_divergence(torch.tensor([2.0]), torch.tensor([0.0])).item() == pytest.approx(2.0)


def test_vae_ns_sets_are_augmented_per_set_binarised_and_reproducible():
    ds = make_dataset(n_classes=2, per_class=6, size=SIZE)
    sets = AugmentedClassSets(ds, 4, seed=0)
    items = [sets[i]["sets"] for i in range(len(sets))]
    assert all(s.shape == (4, 1, SIZE, SIZE) for s in items)
    assert all(set(s.unique().tolist()) <= {0.0, 1.0} for s in items)
    assert all(torch.equal(a, sets[i]["sets"]) for i, a in enumerate(items))  # same (seed, epoch, i)
    sets.set_epoch(1)
    assert any(not torch.equal(a, sets[i]["sets"]) for i, a in enumerate(items))
    # the first member is drawing i itself, or its augmented copy: with no augmentation drawn it is
    # exactly the drawing (binary data stay binary under Bernoulli binarisation)
    sets.set_epoch(0)
    kept = [i for i in range(len(sets)) if torch.equal(items[i][0, 0], torch.from_numpy(ds.images[i]).float() / 255)]
    assert 0 < len(kept) < len(sets)  # some sets augmented (p 3/4), some not


def test_cli_lists_options_and_refuses_guidance(cli, tmp_path, data_file):
    r = cli("train", "vae-ns", "--help")
    assert r.code == 0 and "--context" in r.out and "--beta" in r.out and "--z-dim" in r.out
    r = cli("train", "vae-stn", "--help")
    assert r.code == 0 and "--time-steps" in r.out and "--anneal-steps" in r.out
    args = [x for k, v in TINY["vae-stn"].items() for x in (f"--{k.replace('_', '-')}", v)]
    r = cli("train", "vae-stn", "--data", data_file, "--out", tmp_path / "r", "--steps", 2, "--batch-size", 3, *args)
    assert r.code == 0, r.err
    r = cli("sample", tmp_path / "r", "--exemplars", data_file, "--per-exemplar", 1, "--guidance", "1", "--out", tmp_path / "s")
    assert r.code == 2 and "guidance" in r.err and "vae-stn" in r.err
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())
    r = cli("sample", tmp_path / "r", "--exemplars", data_file, "--per-exemplar", 2, "--seed", 1, "--out", tmp_path / "s")
    assert r.code == 0, r.err
    s = read_samples(next((tmp_path / "s").iterdir()))
    assert s.samples.shape == (4, 2, SIZE, SIZE) and s.meta["generator"] == "vae-stn"


def test_vae_ns_refuses_one_set_per_step(cli, tmp_path):
    from drawgap.data.formats import write_dataset
    from drawgap.data.strokes import StrokesConfig, build_strokes

    data = write_dataset(build_strokes(StrokesConfig(n_classes=6, per_class=6, image_size=16))["train"], tmp_path / "d.npz")
    r = cli("train", "vae-ns", "--data", data, "--out", tmp_path / "run", "--steps", 2, "--batch-size", 1, "--context", 2,
            "--conv-channels", "4,4,4,4", "--z-dim", 2, "--c-dim", 4, "--hidden-dim", 8)
    assert r.code == 2 and r.err.strip().splitlines()[-1].startswith("drawgap: error: ") and "--batch-size" in r.err, r


def test_vae_ns_terms_are_finite_under_bf16_autocast():
    """Under bf16 autocast a confident decoder (p = sigmoid(20) rounds to 1 in bfloat16) made log(1 - p) = -inf
    and 0 x -inf = NaN for every ink pixel: `train vae-ns --bf16` died at its first step. The likelihood and
    the KL are now computed in float32 (the likelihood equal to the fp32 model's, the clamp deciding it here)."""
    torch.manual_seed(0)
    model = VAENS(image_size=SIZE, **TINY["vae-ns"]).train()
    with torch.no_grad():
        model.dec_out.bias.fill_(20.0)  # every pixel inked with p = 1 - 2e-9, clamped to 1 - 1e-6
    sets = (torch.rand(2, 3, 1, SIZE, SIZE) > 0.5).float()
    torch.manual_seed(1)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        t16 = model.terms(sets)
    torch.manual_seed(1)
    with torch.no_grad():
        t32 = model.terms(sets)
    assert t16["logpx"].dtype == torch.float32 and t16["kl"].dtype == torch.float32
    assert torch.isfinite(t16["logpx"]) and torch.isfinite(t16["kl"])
    # the blank pixels each cost log(1e-6) (the clamp), the ink pixels log(1 - 1e-6) ~ 0
    blank = float((1 - sets).sum()) / 6
    assert float(t16["logpx"]) == pytest.approx(blank * math.log(1e-6), rel=1e-3)
    assert float(t16["logpx"]) == pytest.approx(float(t32["logpx"]), rel=1e-3)


def test_options_and_run_directories_of_another_family_are_refused_by_name(cli, tmp_path, data_file):
    """Issue 14's bad input: an option a family lacks (one line naming it, exit 2), and a run directory of one
    family given to another, with or without --resume (both families named, the run left as it was)."""
    r = cli("train", "ddpm", "--data", data_file, "--out", tmp_path / "d", "--steps", 1, "--context", 5)
    assert r.code == 2 and r.err.strip().splitlines() == [
        "drawgap: error: --context: `drawgap train ddpm` has no such option (see `drawgap train ddpm --help`)"], r
    assert not (tmp_path / "d").exists()
    stn = [x for k, v in TINY["vae-stn"].items() for x in (f"--{k.replace('_', '-')}", v)]
    run = tmp_path / "stn"
    assert cli("train", "vae-stn", "--data", data_file, "--out", run, "--steps", 1, "--batch-size", 3, *stn).code == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    ns = [x for k, v in TINY["vae-ns"].items() for x in (f"--{k.replace('_', '-')}", v)]
    for extra, says in ((["--resume"], "`drawgap train vae-ns --resume` cannot continue it"),
                        ([], "`drawgap train vae-ns` neither continues nor overwrites it")):
        r = cli("train", "vae-ns", "--data", data_file, "--out", run, "--steps", 2, "--batch-size", 3, *ns, *extra)
        assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r
        assert "holds a vae-stn run, not a vae-ns one" in r.err and says in r.err, r.err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
