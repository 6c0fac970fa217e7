"""DDPM / CFGDM / FSDM behind the Generator interface: denoisers, sampling, seeds, save/load, bad input."""

import json
import math

import numpy as np
import pytest
import torch

from drawgap.errors import InputError
from drawgap.models import create_generator, load_generator
from drawgap.models.diffusion.model import channels_last
from drawgap.models.diffusion.paper_unet import PaperUNet, SinusoidalEmbedding
from tests.conftest import make_dataset

LEAN = {"block_out_channels": [8, 16], "norm_num_groups": 4, "attention_head_dim": 4}
PAPER = {"n_feat": 12, "attn_heads": 1, "attn_dim_head": 8}
FSDM = {"context_dim": 16, "encoder_widths": [4, 8], "set_size": 3}


def tiny(name, preset="default", **config):
    config = {**(FSDM if name == "fsdm" else {}), "num_train_timesteps": 10, **config}
    return create_generator(name, seed=0, image_size=8, preset=preset, denoiser=LEAN if preset == "default" else PAPER, **config)


@pytest.fixture(scope="module")
def exemplars():
    return make_dataset(n_classes=3, per_class=2).exemplar_images()  # uint8 [3, 8, 8]


# ---------------------------------------------------------------------------------------------- denoisers


@pytest.mark.parametrize("n_feat, count", [(48, 8_488_721), (60, 13_123_221)])
def test_paper_denoiser_parameter_count(n_feat, count):
    assert sum(p.numel() for p in PaperUNet(n_feat=n_feat).parameters()) == count


def test_paper_denoiser_shape_and_stacked_input():
    m = PaperUNet(**PAPER)
    assert m.init_conv.in_channels == 2  # noisy image + exemplar
    assert m.init_conv.out_channels == 8  # (12 // 3) * 2
    assert len(m.ups) == 2  # two up levels: the full-resolution skip is never used
    out = m(torch.randn(3, 2, 8, 8), torch.tensor([1, 5, 10]))
    assert out.shape == (3, 1, 8, 8)


def test_sinusoidal_embedding_by_hand():
    e = SinusoidalEmbedding(4)(torch.tensor([0.5]))
    # half = 2, freqs = exp(-log(1e4) * k / 1) = [1, 1e-4]
    expected = [math.sin(0.5), math.sin(0.5e-4), math.cos(0.5), math.cos(0.5e-4)]
    assert e[0].tolist() == pytest.approx(expected, rel=1e-6)


def test_paper_denoiser_sees_t_over_T():
    m = PaperUNet(**PAPER, num_train_timesteps=10)
    seen = []
    m.time_mlp[0].register_forward_hook(lambda mod, inp, out: seen.append(inp[0].tolist()))
    m(torch.zeros(2, 2, 8, 8), torch.tensor([5, 10]))
    assert seen == [[0.5, 1.0]]


def test_fsdm_paper_denoiser_takes_the_context_by_film(exemplars):
    f = tiny("fsdm", preset="paper")
    assert f.denoiser.init_conv.in_channels == 1 and f.denoiser.mid_block1.film is not None
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 3])
    ctx = f.context(torch.rand(2, 3, 1, 8, 8))
    assert ctx.shape == (2, 16)
    assert not torch.allclose(f.predict_noise(x, t, ctx), f.predict_noise(x, t, ctx.flip(0)))
    assert f.sample(exemplars, 1, sampler="ddim", steps=2).shape == (3, 1, 1, 8, 8)


def test_lean_denoiser_stacks_the_exemplar():
    g = tiny("cfgdm")
    assert g.denoiser.unet.config.in_channels == 2 and g.denoiser.unet.config.out_channels == 1
    f = tiny("fsdm")
    assert f.denoiser.unet.config.in_channels == 1  # FSDM: context by FiLM only
    assert f.denoiser.unet.config.resnet_time_scale_shift == "scale_shift"


# ------------------------------------------------------------------------------------------------ training


def _captured_conditions(g, batch):
    seen = {}
    original = g.predict_noise

    def spy(x_t, t, cond):
        seen["t"], seen["cond"] = t.clone(), cond.clone()
        return original(x_t, t, cond)

    g.predict_noise = spy
    torch.manual_seed(0)
    loss = g(batch)
    return loss, seen


def test_cfgdm_drops_the_condition_to_zeros_and_ddpm_never():
    batch = {"images": torch.rand(400, 1, 8, 8), "exemplars": torch.ones(400, 1, 8, 8)}
    loss, seen = _captured_conditions(tiny("cfgdm", cond_drop_prob=0.5), batch)
    assert loss.ndim == 0 and loss > 0
    per_item = seen["cond"].flatten(1)
    dropped = (per_item == 0).all(1)
    assert ((per_item == 1).all(1) | dropped).all()  # each item: the exemplar (+c) or all zeros
    assert 150 < int(dropped.sum()) < 250
    assert seen["t"].min() >= 1 and seen["t"].max() <= 9
    _, seen = _captured_conditions(tiny("ddpm"), batch)
    assert (seen["cond"] == 1).all()


def test_fsdm_training_sets_are_class_homogeneous():
    ds = make_dataset(n_classes=3, per_class=4)
    g = tiny("fsdm")
    sets = g.training_set(ds, seed=1)
    item = sets[5]["sets"]
    assert item.shape == (3, 1, 8, 8)
    expected = torch.from_numpy(ds.images_of(ds.labels[5])).float() / 255
    for drawing in item:  # every member is a drawing of class 1
        assert any(torch.equal(drawing[0], e) for e in expected)
    assert torch.equal(item[0, 0], torch.from_numpy(ds.images[5]).float() / 255)  # drawing i first
    assert torch.equal(sets[5]["sets"], item)  # reproducible
    loss = g(torch.utils.data.default_collate([sets[i] for i in range(4)]))
    assert loss.ndim == 0 and torch.isfinite(loss)


# ------------------------------------------------------------------------------------------------ sampling


@pytest.mark.parametrize("name", ["ddpm", "cfgdm", "fsdm"])
def test_sample_shape_range_and_seed(name, exemplars):
    g = tiny(name)
    a = g.sample(exemplars, 2, seed=3, sampler="ddim", steps=3)
    assert a.shape == (3, 2, 1, 8, 8) and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, g.sample(exemplars, 2, seed=3, sampler="ddim", steps=3))
    assert not torch.equal(a, g.sample(exemplars, 2, seed=4, sampler="ddim", steps=3))


def test_drawing_depends_only_on_seed_class_and_index(exemplars):
    g = tiny("cfgdm", num_train_timesteps=4)
    full = g.sample(exemplars, 3, seed=7, sampler="ancestral", guidance=0.5, batch_size=4)
    one_at_a_time = g.sample(exemplars, 3, seed=7, sampler="ancestral", guidance=0.5, batch_size=1)
    torch.testing.assert_close(full, one_at_a_time, atol=1e-5, rtol=1e-5)
    fewer = g.sample(exemplars, 2, seed=7, sampler="ancestral", guidance=0.5)
    torch.testing.assert_close(full[:, :2], fewer, atol=1e-5, rtol=1e-5)


# Golden values in diffusers' style: a fixed tiny model, a fixed seed, a full sampling loop.
# Recomputed only when a change is meant to alter sampling (then say so in the change).
GOLDEN = {
    ("cfgdm", "ancestral"): 140.932373,
    ("cfgdm", "ddim"): 136.184540,
    ("cfgdm", "dpm++"): 137.406525,  # SDE-DPM-Solver++ since the sampler agreement check (samplers.py)
    ("cfgdm", "dpm++ode"): 135.999542,
    ("fsdm", "dpm++"): 149.665894,
}


@pytest.mark.parametrize("name, sampler", list(GOLDEN))
def test_golden_sampling_loop(name, sampler, exemplars):
    g = tiny(name, preset="paper") if name == "cfgdm" else tiny(name)
    options = {"guidance": 1.0} if name == "cfgdm" else {}
    x = g.sample(exemplars, 2, seed=0, sampler=sampler, steps=None if sampler == "ancestral" else 4, **options)
    assert float(x.sum()) == pytest.approx(GOLDEN[(name, sampler)], rel=1e-4)


@pytest.mark.parametrize("preset", ["default", "paper"])
def test_sampling_runs_channels_last_with_the_same_noise_and_restores_the_weights(preset, exemplars):
    g = tiny("cfgdm", preset=preset).eval()
    x, t, c = torch.randn(3, 1, 8, 8), torch.tensor([2, 5, 9]), torch.rand(3, 1, 8, 8).round()
    eps_nchw = 2.0 * g.predict_noise(x, t, c) - g.predict_noise(x, t, torch.zeros_like(c))
    with torch.no_grad(), channels_last(g.denoiser):
        conv_weights = [p for p in g.denoiser.parameters() if p.dim() == 4]
        assert all(w.is_contiguous(memory_format=torch.channels_last) for w in conv_weights)
        torch.testing.assert_close(g.guided_noise(x, t, c, 1.0), eps_nchw, atol=1e-5, rtol=1e-4)

    seen = []
    g.denoiser.register_forward_pre_hook(
        lambda m, args: seen.append((args[0].is_contiguous(memory_format=torch.channels_last), args[0].is_contiguous()))
    )
    before = {k: v.clone() for k, v in g.state_dict().items()}
    g.sample(exemplars, 1, seed=0, sampler="dpm++", steps=2)
    assert seen == [(True, False)] * 2  # NHWC network input at every step
    assert all(p.is_contiguous() for p in g.parameters())  # NCHW again after sampling: safetensors can save it
    assert all(torch.equal(g.state_dict()[k], v) for k, v in before.items())


# ------------------------------------------------------------------------------------------- persistence


@pytest.mark.parametrize("name, preset", [("cfgdm", "paper"), ("ddpm", "default"), ("fsdm", "default")])
def test_save_load_round_trip(tmp_path, name, preset, exemplars):
    g = tiny(name, preset=preset)
    g.save(tmp_path)
    back = load_generator(tmp_path)
    assert type(back) is type(g) and back.config == g.config
    for k, v in g.state_dict().items():
        assert torch.equal(back.state_dict()[k], v)
    kw = {"sampler": "dpm++", "steps": 3, "seed": 1}
    assert torch.equal(back.sample(exemplars, 1, **kw), g.sample(exemplars, 1, **kw))
    record = json.loads((tmp_path / "generator.json").read_text())
    assert record["generator"] == name and record["config"]["preset"] == preset


def test_load_errors(tmp_path):
    with pytest.raises(InputError, match="generator.json: no such file"):
        load_generator(tmp_path)
    tiny("cfgdm").save(tmp_path)
    (tmp_path / "weights.safetensors").unlink()
    with pytest.raises(InputError, match="weights.safetensors: no such file"):
        load_generator(tmp_path)
    tiny("cfgdm").save(tmp_path)
    record = json.loads((tmp_path / "generator.json").read_text())
    record["config"]["denoiser"]["block_out_channels"] = [8, 32]
    (tmp_path / "generator.json").write_text(json.dumps(record))
    with pytest.raises(InputError, match="weights do not match the config"):
        load_generator(tmp_path)
    (tmp_path / "weights.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(InputError, match="expected a safetensors file"):
        load_generator(tmp_path)


def test_bad_sampling_input(exemplars):
    g = tiny("cfgdm")
    with pytest.raises(InputError, match="expected 8x8 exemplars"):
        g.sample(np.zeros((2, 12, 12), np.uint8), 1)
    with pytest.raises(InputError, match="sampler"):
        g.sample(exemplars, 1, sampler="heun")
    with pytest.raises(InputError, match="guidance: expected a number"):
        g.sample(exemplars, 1, guidance="strong")
    with pytest.raises(InputError, match="without dropping the condition"):
        tiny("ddpm").sample(exemplars, 1, guidance=1.0)
    with pytest.raises(InputError, match="fsdm has no guidance"):
        tiny("fsdm").sample(exemplars, 1, guidance=1.0)
    with pytest.raises(ValueError, match="ddpm never drops"):
        create_generator("ddpm").__class__(cond_drop_prob=0.1)
