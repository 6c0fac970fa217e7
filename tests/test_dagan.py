"""The DA-GAN baselines (dagan-un, dagan-rn; SPEC.md 2.6): the gradient penalty against hand-computed values,
the WGAN losses moving the right way, exact resume, save/load, seeded sampling and the CLI."""

import json

import pytest
import torch
from torch import nn

from drawgap.data.formats import read_samples, write_dataset
from drawgap.errors import InputError
from drawgap.models import create_generator, load_generator
from drawgap.models.dagan import DAGANOptions, PairCritic, gradient_penalty, level_sizes
from drawgap.models.training import latest_checkpoint, run_training
from tests.conftest import make_dataset

TINY = dict(z_size=4, widths="3,3,4,4", critic_inner_layers=1, critic_dense=6)  # the CLI's / run_training's form
TINY_CONFIG = {**TINY, "widths": [3, 3, 4, 4]}  # the constructor's


@pytest.fixture
def data_file(tmp_path):
    return write_dataset(make_dataset(n_classes=4, per_class=3), tmp_path / "train.npz")


def tiny(name="dagan-un", seed=0):
    return create_generator(name, seed=seed, image_size=8, **TINY_CONFIG)


# ------------------------------------------------------------------------------------- gradient penalty


def test_gradient_penalty_of_a_linear_critic_is_the_squared_gap_of_its_weight_norm_to_one():
    # D(x) = w . x has gradient w everywhere: with |w| = |(3, 4)| = 5 the penalty is (5 - 1)^2 = 16 whatever
    # the pairs and the interpolation, and its gradient in w is 2 (|w| - 1) w / |w| = 8 (0.6, 0.8) = (4.8, 6.4)
    critic = nn.Sequential(nn.Flatten(), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        critic[1].weight.copy_(torch.tensor([[3.0, 4.0]]))
    real, fake = torch.rand(5, 2, 1, 1), torch.rand(5, 2, 1, 1)
    gp = gradient_penalty(critic, real, fake, torch.rand(5))
    assert gp.item() == pytest.approx(16.0)
    gp.backward()  # the penalty trains the critic: its gradient reaches the weights
    assert critic[1].weight.grad.tolist() == [pytest.approx([4.8, 6.4])]


def test_gradient_penalty_is_taken_at_the_interpolate_of_each_pair():
    # D(x) = |x|^2 / 2 has gradient x: real 0, fake (3, 4); u = 0.5 gives x = (1.5, 2), |x| = 2.5, (2.5 - 1)^2
    # = 2.25; u = 1 gives (3, 4), (5 - 1)^2 = 16; u = 0 gives 0, (0 - 1)^2 = 1; the mean is 19.25 / 3
    class Quadratic(nn.Module):
        def forward(self, x):
            return 0.5 * (x**2).flatten(1).sum(1)

    real = torch.zeros(3, 2, 1, 1)
    fake = torch.tensor([3.0, 4.0]).view(1, 2, 1, 1).repeat(3, 1, 1, 1)
    gp = gradient_penalty(Quadratic(), real, fake, torch.tensor([0.5, 1.0, 0.0]))
    assert gp.item() == pytest.approx((2.25 + 16.0 + 1.0) / 3)


# ------------------------------------------------------------------------------------- architecture


@pytest.mark.parametrize("name, skips, inner", [("dagan-un", True, 3), ("dagan-rn", False, 2)])
def test_the_two_families_differ_by_the_unet_skips_and_the_inner_layers(name, skips, inner):
    g = tiny(name)
    assert g.generator.skips is skips and g.config["inner_layers"] == inner
    assert all(len(block.convs) == inner for block in g.generator.up_blocks)
    # noise enters at the three deepest decoder levels with 8, 4, 2 channels: Linear(z -> d * d * k)
    sizes = level_sizes(8)  # 8 -> 4 -> 2 -> 1 -> 1
    assert [(m.in_features, m.out_features) for m in g.generator.noise] == [(4, sizes[4] ** 2 * 8), (4, sizes[3] ** 2 * 4), (4, sizes[2] ** 2 * 2)]
    x = torch.rand(3, 1, 8, 8)
    out = g.generator(x, torch.randn(3, 4))
    assert out.shape == (3, 1, 8, 8) and 0 <= out.min() and out.max() <= 1
    assert g.critic(torch.rand(3, 2, 8, 8)).shape == (3,)


def test_the_critic_scores_each_pair_alone():
    # layer norms, no batch norm: a pair's score does not depend on the rest of the batch (the penalty's premise)
    critic = PairCritic(8, [3, 3, 4, 4], 1, 6)
    pairs = torch.rand(4, 2, 8, 8)
    assert torch.allclose(critic(pairs)[:1], critic(pairs[:1]), atol=1e-6)


def test_options_are_checked_by_name():
    with pytest.raises(InputError, match="four positive integers"):
        DAGANOptions(widths="4,4,8")
    with pytest.raises(InputError) as err:
        DAGANOptions(n_critic=0)
    assert err.value.field == "n_critic"


# ------------------------------------------------------------------------------------- training


def test_training_pairs_are_a_drawing_and_its_class_exemplar_not_binarised():
    data = make_dataset(n_classes=2, per_class=3)
    data.images[4] = 77  # a grey drawing of class 1 (its exemplar: drawing 3)
    pairs = tiny().training_set(data)
    item = pairs[4]
    assert torch.allclose(item["images"], torch.full((1, 8, 8), 77 / 255))  # grey stays grey (SPEC.md 2.6)
    assert torch.equal(item["exemplars"], torch.from_numpy(data.images[3]).float().div(255).unsqueeze(0))


def test_critic_steps_widen_the_wasserstein_gap_and_generator_steps_raise_the_fakes_score():
    # widths 8: at widths 3 the penalty alone holds the tiny critic near its start
    torch.manual_seed(0)
    g = create_generator("dagan-un", seed=0, image_size=8, z_size=4, widths=[8] * 4, critic_inner_layers=1, critic_dense=8)
    dataset = g.training_set(make_dataset(n_classes=4, per_class=3))
    batch = {k: torch.stack([dataset[i][k] for i in range(len(dataset))]) for k in ("images", "exemplars")}
    opt_g, opt_c = g.configure_optimizers(DAGANOptions(lr=1e-3), None)[0]

    def gap():  # D(real) - D(fake) on the batch, with the same noise and dropout each time
        torch.manual_seed(1)
        x1 = batch["images"]
        fake = torch.cat([x1, g.generator(x1, torch.randn(len(x1), 4))], 1)
        return g.critic(torch.cat([x1, batch["exemplars"]], 1)).mean().item() - g.critic(fake).mean().item()

    def generator_loss():
        torch.manual_seed(1)
        return g(batch, "generator").item()

    before = gap()
    for _ in range(100):
        g(batch, "critic", 10.0).backward()
        opt_c.step()
        opt_c.zero_grad()
        opt_g.zero_grad()
    after = gap()
    assert after > before + 0.5  # the critic learned to tell real pairs from made ones (measured: -0.24 -> 0.92)
    before = generator_loss()
    for _ in range(20):
        g(batch, "generator").backward()
        opt_g.step()
        opt_g.zero_grad()
        opt_c.zero_grad()
    assert generator_loss() < before - 0.3  # -D(fake) fell: the critic scores the drawings higher (0.92 -> 0.41)


def test_training_steps_the_critic_n_times_per_generator_step_with_the_papers_adam(tmp_path, data_file):
    run_training("dagan-rn", data_file, tmp_path / "r", steps=6, batch_size=4, n_critic=3, progress=False, **TINY)
    checkpoint = latest_checkpoint(tmp_path / "r")
    generator = torch.load(checkpoint / "optimizer.bin", weights_only=True)
    critic = torch.load(checkpoint / "optimizer_1.bin", weights_only=True)
    assert (int(generator["state"][0]["step"]), int(critic["state"][0]["step"])) == (2, 6)
    for opt in (generator, critic):
        assert opt["param_groups"][0]["lr"] == 1e-4 and tuple(opt["param_groups"][0]["betas"]) == (0.0, 0.9)
    recorded = json.loads((tmp_path / "r" / "train.json").read_text())["options"]
    assert recorded["n_critic"] == 3 and recorded["gp_weight"] == 10.0


def test_resume_continues_bit_for_bit_and_the_run_loads_back(tmp_path, data_file):
    common = dict(batch_size=4, checkpoint_every=2, log_every=1, progress=False, n_critic=2, **TINY)
    straight = run_training("dagan-un", data_file, tmp_path / "a", steps=6, **common)
    run_training("dagan-un", data_file, tmp_path / "b", steps=3, **common)
    resumed = run_training("dagan-un", data_file, tmp_path / "b", steps=6, resume=True, **common)
    assert straight.state.step == resumed.state.step == 6
    assert resumed.weights_sha256 == straight.weights_sha256
    a, b = load_generator(tmp_path / "a").state_dict(), load_generator(tmp_path / "b").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    g = load_generator(tmp_path / "a")
    assert g.name == "dagan-un" and g.config == {"image_size": 8, "inner_layers": 3, "dropout": 0.5, **TINY_CONFIG}


def test_save_load_round_trip_keeps_weights_buffers_and_drawings(tmp_path):
    g = tiny("dagan-rn", seed=3)
    g.train()
    g.generator(torch.rand(5, 1, 8, 8), torch.randn(5, 4))  # move the batch norms' running statistics
    exemplars = torch.rand(2, 1, 8, 8)
    g.save(tmp_path / "g")
    back = load_generator(tmp_path / "g")
    assert type(back).__name__ == "DAGANResNet" and back.config == g.config
    s, t = g.state_dict(), back.state_dict()
    assert s.keys() == t.keys() and all(torch.equal(s[k], t[k]) for k in s)
    assert torch.equal(g.sample(exemplars, 3, seed=4), back.sample(exemplars, 3, seed=4))


def test_a_shipping_export_keeps_the_generator_only_in_float16_and_draws_the_same(tmp_path):
    """export_for_shipping: no critic tensors, float16 storage, the record marked and hashed; it loads and draws
    what the run's weights rounded to float16 draw; a sampling copy with generator tensors missing is refused."""
    from safetensors.torch import load_file

    from drawgap.models.registry import export_for_shipping

    g = tiny("dagan-un", seed=3)
    g.save(tmp_path / "run")
    export_for_shipping(tmp_path / "run", tmp_path / "ship")
    tensors = load_file(str(tmp_path / "ship" / "weights.safetensors"))
    assert tensors and not any(k.startswith("critic.") for k in tensors)
    assert all(v.dtype == torch.float16 for v in tensors.values() if v.is_floating_point())
    record = json.loads((tmp_path / "ship" / "generator.json").read_text())
    assert record["weights_content"] == "sampling" and record["weights_storage"] == "float16"
    shipped = load_generator(tmp_path / "ship")
    rounded = tiny("dagan-un", seed=3)
    rounded.load_state_dict({k: v.half().float() if v.is_floating_point() else v for k, v in g.state_dict().items()})
    exemplars = torch.rand(2, 1, 8, 8)
    assert torch.equal(shipped.sample(exemplars, 3, seed=4), rounded.sample(exemplars, 3, seed=4))
    full = load_file(str(tmp_path / "run" / "weights.safetensors"))
    assert any(k.startswith("critic.") for k in full)  # the run keeps its critic: it is what training resumes from
    from safetensors.torch import save_file  # a generator tensor missing from a sampling copy is still an error
    save_file({k: v for k, v in tensors.items() if not k.startswith("generator.")}, str(tmp_path / "ship" / "weights.safetensors"))
    record.pop("weights_sha256")
    (tmp_path / "ship" / "generator.json").write_text(json.dumps(record))
    with pytest.raises(InputError, match="missing 'generator"):
        load_generator(tmp_path / "ship")


# ------------------------------------------------------------------------------------- sampling


def test_sampling_shape_range_and_seeds_whatever_the_batch_size():
    g = tiny(seed=1)
    exemplars = torch.rand(3, 1, 8, 8)
    a = g.sample(exemplars, 4, seed=7, batch_size=64)
    assert a.shape == (3, 4, 1, 8, 8) and a.min() >= 0 and a.max() <= 1
    assert g.training  # sampling ran in eval mode and put the mode back
    for batch_size in (1, 5):
        assert torch.allclose(g.sample(exemplars, 4, seed=7, batch_size=batch_size), a, atol=1e-6)
    # drawing (c, k) depends on (seed, c, k) only: fewer drawings per exemplar are the first ones
    assert torch.allclose(g.sample(exemplars, 2, seed=7), a[:, :2], atol=1e-6)
    b = g.sample(exemplars, 4, seed=8)
    assert not torch.allclose(a, b)  # another seed, other drawings
    assert not torch.allclose(a[:, 0], a[:, 1])  # z makes the drawings of one exemplar differ
    with pytest.raises(InputError, match="n >= 1"):
        g.sample(exemplars, 0, seed=7)


# ------------------------------------------------------------------------------------- CLI


def test_cli_trains_lists_options_samples_and_refuses_guidance(cli, tmp_path, data_file):
    r = cli("train", "dagan-un", "--help")
    assert r.code == 0
    for flag in ("--z-size", "--n-critic", "--gp-weight", "--widths", "--dropout", "--steps", "--resume"):
        assert flag in r.out, flag
    assert "--guidance" not in r.out and "--preset" not in r.out
    r = cli("train", "dagan-rn", "--data", data_file, "--out", tmp_path / "r", "--steps", 2, "--batch-size", 4,
            "--z-size", 4, "--widths", "3,3,4,4", "--critic-inner-layers", 1, "--critic-dense", 6)
    assert r.code == 0, r.err
    assert load_generator(tmp_path / "r").config["z_size"] == 4
    r = cli("train", "dagan-rn", "--data", data_file, "--out", tmp_path / "bad", "--steps", 1, "--widths", "3,3")
    assert r.code == 2 and "widths" in r.err and not (tmp_path / "bad" / "generator.json").exists()

    r = cli("sample", tmp_path / "r", "--exemplars", data_file, "--out", tmp_path / "s", "--per-exemplar", 2)
    assert r.code == 0, r.err
    assert "None" not in r.out  # no sampler, no "None xNone" in the summary
    (path,) = (tmp_path / "s").glob("*.npz")
    s = read_samples(path)
    assert s.samples.shape == (4, 2, 8, 8) and s.meta["generator"] == "dagan-rn" and s.meta["params"]["guidance"] is None
    r = cli("sample", tmp_path / "r", "--exemplars", data_file, "--out", tmp_path / "s2", "--guidance", "1")
    assert r.code == 2 and "dagan-rn has no guidance option" in r.err and "--guidance" in r.err
    assert not list(tmp_path.glob("s2/*.npz"))  # nothing written
