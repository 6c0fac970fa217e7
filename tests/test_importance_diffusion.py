"""Diffusion importance maps: the three formulas against hand-computed values on fake denoisers, the
trajectories against the generator's own samples, options, and `drawgap importance maps diffusion`."""

import numpy as np
import pytest
import torch

from drawgap.errors import InputError
from drawgap.importance.diffusion_maps import KINDS, DiffusionImportance
from drawgap.models.diffusion.samplers import make_scheduler
from drawgap.models.diffusion.schedule import PaperLinearScheduler




SCHEDULE = PaperLinearScheduler(500)


def _exemplars(c=2, size=8, seed=0):
    return (torch.rand(c, 1, size, size, generator=torch.Generator().manual_seed(seed)) > 0.7).float()


def affine_in_condition(x_t, t, cond):
    """eps = 0.5 c + 0.1 whatever x_t and t: eps_c - eps_u = 0.5 c, eps_u = 0.1."""
    return 0.5 * cond + 0.1 + 0 * x_t


def result_line(out: str, name: str) -> str:
    return next(line for line in out.splitlines() if name in line)


@pytest.mark.parametrize("g", [1.0, 2.0])
def test_guided_and_implicit_maps_match_the_formulas(g):
    ex = _exemplars()
    di = DiffusionImportance(affine_in_condition, SCHEDULE, guidance=g, sampler="ddim", steps=4, n_trajectories=3,
                             kinds=("guided", "implicit"))
    maps = di.attribute(ex)
    ts = [int(t) for t in make_scheduler("ddim", SCHEDULE, 4).timesteps]
    m = torch.sqrt(1 - SCHEDULE.alphas_cumprod[ts]).numpy()
    c = ex[:, 0].numpy()
    # (a): sum_t m_t |(1 + g)(0.5 c + 0.1) - g 0.1| = sum_t m_t (0.5 (1 + g) c + 0.1)
    np.testing.assert_allclose(maps["guided"], m.sum() * (0.5 * (1 + g) * c + 0.1), rtol=1e-5)
    # (b): sum_t |0.5 c| / m_t
    np.testing.assert_allclose(maps["implicit"], (1 / m).sum() * 0.5 * c, rtol=1e-5)
    assert maps["guided"].dtype == np.float32 and maps["guided"].shape == (2, 8, 8)


def test_t_range_keeps_only_its_timesteps():
    ex = _exemplars()
    ts = [int(t) for t in make_scheduler("ddim", SCHEDULE, 4).timesteps]
    lo = ts[1]  # keep the two noisiest steps
    di = DiffusionImportance(affine_in_condition, SCHEDULE, sampler="ddim", steps=4, n_trajectories=2,
                             t_range=(lo, 500), kinds=("implicit",))
    m = torch.sqrt(1 - SCHEDULE.alphas_cumprod[ts[:2]]).numpy()
    np.testing.assert_allclose(di.attribute(ex)["implicit"], (1 / m).sum() * 0.5 * ex[:, 0].numpy(), rtol=1e-5)
    with pytest.raises(InputError, match="t_range"):
        DiffusionImportance(affine_in_condition, SCHEDULE, sampler="ddim", steps=4, t_range=(ts[0] + 0, ts[0] - 1))
    with pytest.raises(InputError, match="no timestep"):
        DiffusionImportance(affine_in_condition, SCHEDULE, sampler="ddim", steps=2, t_range=(2, 3)).attribute(ex)


def test_loss_gradient_lives_where_the_exemplar_acts():
    def top_left_only(x_t, t, cond):
        mask = torch.zeros_like(cond)
        mask[..., :4, :4] = 1.0
        return 0.2 * x_t + (cond * mask) ** 2

    ex = torch.ones(1, 1, 8, 8)
    m = DiffusionImportance(top_left_only, SCHEDULE, sampler="ddim", steps=3, n_trajectories=4,
                            kinds=("loss_grad",), grad_steps=2).attribute(ex)["loss_grad"][0]
    assert (m[:4, :4] > 0).all() and (m[4:] == 0).all() and (m[:, 4:] == 0).all()
    # a denoiser that ignores the exemplar has no gradient anywhere
    zero = DiffusionImportance(lambda x, t, c: 0.3 * x + 0 * c, SCHEDULE, sampler="ddim", steps=3, n_trajectories=2,
                               kinds=("loss_grad",)).attribute(ex)["loss_grad"]
    assert (zero == 0).all()


@pytest.fixture(scope="module")
def tiny_cfgdm():
    from drawgap.models import create_generator

    torch.manual_seed(0)
    return create_generator("cfgdm", image_size=8, denoiser={"block_out_channels": [8, 8], "norm_num_groups": 4,
                                                             "attention_head_dim": 4}).eval()


def test_trajectories_are_the_generators_samples_and_batching_does_not_matter(tiny_cfgdm):
    from drawgap.importance.diffusion_maps import for_generator

    ex = _exemplars(3)
    opts = dict(sampler="ddim", steps=3, n_trajectories=2, precision="fp32", kinds=KINDS)  # fp32: the sampler's drawings
    a = for_generator(tiny_cfgdm, batch_size=2, **opts).attribute(ex, seed=7, return_samples=True)
    b = for_generator(tiny_cfgdm, batch_size=64, **opts).attribute(ex, seed=7)
    for k in KINDS:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-5)
        assert (a[k] >= 0).all()
    drawn = tiny_cfgdm.sample(ex, 2, seed=7, sampler="ddim", steps=3)[:, :, 0].numpy()
    np.testing.assert_allclose(a["samples"], drawn, atol=1e-5)
    c = for_generator(tiny_cfgdm, **opts).attribute(ex, seed=8)
    assert not np.allclose(a["guided"], c["guided"])


@pytest.mark.parametrize("precision", ["auto", "fp32", "bf16"])
def test_same_seed_same_maps(tiny_cfgdm, precision):
    from drawgap.importance.diffusion_maps import for_generator

    ex = _exemplars(3)
    make = lambda: for_generator(tiny_cfgdm, sampler="dpm++", steps=3, n_trajectories=2, precision=precision, kinds=KINDS)
    a, b = make().attribute(ex, seed=3), make().attribute(ex, seed=3)
    for k in KINDS:
        np.testing.assert_array_equal(a[k], b[k])


def test_auto_precision_follows_the_hardware(tiny_cfgdm, monkeypatch):
    from drawgap.importance.diffusion_maps import for_generator, resolve_precision

    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert resolve_precision("auto", "cpu") == "fp32"
    di = for_generator(tiny_cfgdm, sampler="ddim", steps=2, n_trajectories=1, kinds=("implicit",))
    assert di.options["precision"] == "auto"
    fp32 = for_generator(tiny_cfgdm, sampler="ddim", steps=2, n_trajectories=1, kinds=("implicit",), precision="fp32")
    np.testing.assert_array_equal(di.attribute(_exemplars(1))["implicit"], fp32.attribute(_exemplars(1))["implicit"])
    assert di.options["precision"] == "fp32"  # what was used, for the maps' meta
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert resolve_precision("auto", "cpu") == "bf16"
    di.attribute(_exemplars(1))
    assert di.options["precision"] == "bf16"


def test_ddpm_cannot_give_guided_maps(tiny_cfgdm):
    from drawgap.importance.diffusion_maps import for_generator
    from drawgap.models import create_generator

    ddpm = create_generator("ddpm", image_size=8, denoiser={"block_out_channels": [8, 8], "norm_num_groups": 4,
                                                            "attention_head_dim": 4})
    with pytest.raises(InputError, match="without dropping the condition"):
        for_generator(ddpm)
    for_generator(ddpm, kinds=("loss_grad",), guidance=0.0)  # the loss gradient needs no unconditional model
    with pytest.raises(InputError, match="kinds"):
        for_generator(tiny_cfgdm, kinds=("saliency",))


def test_cli_diffusion_maps(tmp_path, cli, tiny_cfgdm):
    from drawgap.data.formats import write_dataset
    from drawgap.importance.maps_file import read_maps
    from tests.conftest import make_dataset

    tiny_cfgdm.save(tmp_path / "run")
    data = write_dataset(make_dataset(n_classes=3, per_class=2, size=8), tmp_path / "d.npz")
    r = cli("importance", "maps", "diffusion", tmp_path / "run", "--exemplars", data, "--out", tmp_path / "m.npz",
            "--kind", "guided", "--kind", "loss_grad", "--trajectories", "2", "--steps", "3", "--classes", "2")
    assert r.code == 0, r
    guided = read_maps(tmp_path / "m.guided.npz")
    assert guided.maps.shape == (2, 8, 8) and guided.method == "diffusion-guided"
    assert list(guided.image_ids) == ["0", "2"]  # dataset indices of the exemplars
    assert guided.meta["options"]["n_trajectories"] == 2 and guided.meta["seed"] == 0
    assert read_maps(tmp_path / "m.loss_grad.npz").images.shape == (2, 8, 8)
    rel = guided.meta["reliability"]  # split-half over trajectories: one trajectory per half here
    assert rel["method"].startswith("split-half over trajectories") and rel["per_half"] == 1 and len(rel["per_map"]) == 2
    assert "reliability" in result_line(r.out, "m.guided.npz")
    r = cli("importance", "maps", "diffusion", tmp_path / "run", "--exemplars", data, "--out", tmp_path / "one.npz",
            "--trajectories", "1", "--steps", "3", "--classes", "2")
    assert r.code == 0, r  # default kind: guided_diff; one trajectory: no halves, reliability not measured
    one = read_maps(tmp_path / "one.npz")
    assert one.method == "diffusion-guided_diff" and one.meta["reliability"]["spearman"] is None
    assert one.meta["reliability"]["method"].startswith("not measured")
    r = cli("importance", "maps", "diffusion", tmp_path / "run", "--exemplars", data, "--out", tmp_path / "x.npz",
            "--kind", "nope")
    assert r.code == 2 and "kinds" in r.err


def test_bf16_maps_rank_like_fp32(tiny_cfgdm):
    from drawgap.importance.compare import spearman
    from drawgap.importance.diffusion_maps import for_generator

    ex = _exemplars(2)
    opts = dict(sampler="ddim", steps=3, n_trajectories=2, kinds=("guided", "implicit"))
    a = for_generator(tiny_cfgdm, precision="fp32", **opts).attribute(ex)
    b = for_generator(tiny_cfgdm, precision="bf16", **opts).attribute(ex)
    for k in a:
        assert not np.array_equal(a[k], b[k])  # bf16 did run
        assert min(spearman(x, y) for x, y in zip(a[k], b[k])) > 0.9
    with pytest.raises(InputError, match="precision"):
        for_generator(tiny_cfgdm, precision="fp16")
    with pytest.raises(InputError, match="batch size"):
        for_generator(tiny_cfgdm, batch_size=0)


def test_guided_diff_accumulates_the_condition_with_its_sign_and_halves_split_the_trajectories():
    def sign_flips(x_t, t, cond):
        """eps_c - eps_u = 0.5 c at t >= 250 and -0.5 c below: the signed sum cancels where the m_t are equal."""
        s = torch.where(t >= 250, 1.0, -1.0).float()[:, None, None, None]
        return 0.5 * cond * s + 0.1 + 0 * x_t

    ex = _exemplars()
    di = DiffusionImportance(sign_flips, SCHEDULE, sampler="ddim", steps=4, n_trajectories=4, kinds=("guided_diff", "implicit"))
    maps = di.attribute(ex, return_halves=True)
    ts = [int(t) for t in make_scheduler("ddim", SCHEDULE, 4).timesteps]
    m = torch.sqrt(1 - SCHEDULE.alphas_cumprod[ts]).numpy()
    sign = np.where(np.array(ts) >= 250, 1.0, -1.0)
    c = ex[:, 0].numpy()
    # | sum_t m_t s_t 0.5 c |: the sign is kept along the trajectory, the magnitude taken at the end
    np.testing.assert_allclose(maps["guided_diff"], abs((m * sign).sum()) * 0.5 * c, rtol=1e-5)
    assert abs((m * sign).sum()) < 0.9 * m.sum()  # the signs did cancel part of it
    # the denoiser ignores x_t: every trajectory, hence each half, gives the same map
    for k in ("guided_diff", "implicit"):
        np.testing.assert_allclose(maps[f"{k}/a"], maps[k], rtol=1e-5)
        np.testing.assert_allclose(maps[f"{k}/b"], maps[k], rtol=1e-5)
    assert set(di.attribute(ex)) == {"guided_diff", "implicit"}  # halves only when asked


def test_maps_files_record_their_reliability(tiny_cfgdm):
    """Split halves that agree give a high reliability, halves of pure noise a noise-level one."""
    from drawgap.importance import reliability
    from drawgap.importance.diffusion_maps import diffusion_importance

    rng = np.random.default_rng(0)
    signal = rng.random((3, 8, 8))
    same = reliability.split_half(signal + 0.01 * rng.random((3, 8, 8)), signal + 0.01 * rng.random((3, 8, 8)), "trajectories", 2)
    noise = reliability.split_half(rng.random((3, 8, 8)), rng.random((3, 8, 8)), "trajectories", 2)
    assert same["spearman"] > 0.99 and not same["noise_level"]
    assert abs(noise["spearman_half"]) < 0.3 and noise["noise_level"] == (noise["spearman"] < reliability.NOISE_SPEARMAN)
    # golden: halves with Spearman r = 0.5 exactly -> Spearman-Brown 2r / (1 + r) = 2/3
    a = np.arange(4.0).reshape(1, 2, 2)
    b = np.array([1.0, 0.0, 3.0, 2.0]).reshape(1, 2, 2)  # rank r: 1 - 6 * 4 / (4 * 15) = 0.6
    assert reliability.split_half(a, b, "trajectories", 1)["spearman"] == pytest.approx(2 * 0.6 / 1.6)
    out = diffusion_importance(tiny_cfgdm, _exemplars(2)[:, 0].numpy(), ["a", "b"], sampler="ddim", steps=2,
                               n_trajectories=4, kinds=KINDS, precision="fp32")
    for kind, m in out.items():
        r = m.meta["reliability"]
        assert r["per_half"] == 2 and len(r["per_map"]) == 2 and -1 <= r["spearman"] <= 1, kind


def test_cli_diffusion_maps_check_sampling_options_as_sample_does(tmp_path, cli, tiny_cfgdm):
    """Sampler, steps and guidance are the family's to check: a wrong one is refused with `drawgap sample`'s message."""
    from drawgap.data.formats import write_dataset
    from drawgap.models import create_generator
    from tests.conftest import make_dataset

    tiny_cfgdm.save(tmp_path / "cfgdm")
    ddpm = create_generator("ddpm", image_size=8, denoiser={"block_out_channels": [8, 8], "norm_num_groups": 4,
                                                            "attention_head_dim": 4})
    ddpm.save(tmp_path / "ddpm")
    data = write_dataset(make_dataset(n_classes=2, per_class=2, size=8), tmp_path / "d.npz")

    def both(run, *options):
        maps = cli("importance", "maps", "diffusion", tmp_path / run, "--exemplars", data, "--out", tmp_path / "m.npz",
                   "--kind", "loss_grad", "--trajectories", "1", "--steps", "2", *options)
        drawn = cli("sample", tmp_path / run, "--exemplars", data, "--out", tmp_path / "s", "--per-exemplar", "1",
                    "--steps", "2", *options)
        return maps, drawn

    for run, options, message in [("cfgdm", ["--sampler", "euler"], "sampler"),
                                  ("ddpm", ["--guidance", "1"], "without dropping the condition")]:
        maps, drawn = both(run, *options)
        assert maps.code == drawn.code == 2 and message in maps.err, (options, maps.err)
        assert maps.err.strip().splitlines()[-1] == drawn.err.strip().splitlines()[-1]
        assert not (tmp_path / "m.npz").exists()
    # `sample` reads a comma-separated list of guidance values itself; the maps take one, checked by the family
    maps, drawn = both("cfgdm", "--guidance", "-1")
    assert maps.code == drawn.code == 2 and "guidance: expected a finite number >= 0" in maps.err, maps.err
    assert not (tmp_path / "m.npz").exists()
    # without --guidance, the family's default: ddpm's 0, which the loss gradient needs
    r = cli("importance", "maps", "diffusion", tmp_path / "ddpm", "--exemplars", data, "--out", tmp_path / "m.npz",
            "--kind", "loss_grad", "--trajectories", "1", "--steps", "2")
    assert r.code == 0, r
    from drawgap.importance.maps_file import read_maps

    assert read_maps(tmp_path / "m.npz").meta["options"]["guidance"] == 0.0
