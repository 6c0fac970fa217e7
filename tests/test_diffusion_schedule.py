"""The paper's schedule, its ancestral step, the fast samplers' mapping onto it, and guidance."""

import math

import numpy as np
import pytest
import torch

from drawgap.errors import InputError
from drawgap.models.diffusion.guidance import combine, g_from_guidance_scale, guidance_scale_from_g, guided_noise
from drawgap.models.diffusion.samplers import make_scheduler, sample_loop, drawing_generators
from drawgap.models.diffusion.schedule import PaperLinearScheduler


def test_schedule_has_T_plus_1_entries_and_alphabar_includes_beta0():
    s = PaperLinearScheduler()  # T = 500, beta 1e-4 .. 0.02
    assert len(s.betas) == 501
    assert s.betas[0] == pytest.approx(1e-4)
    assert s.betas[500] == pytest.approx(0.02)
    assert s.betas[250] == pytest.approx(1e-4 + 0.0199 * 0.5)
    beta1 = 1e-4 + 0.0199 / 500
    assert s.alphas_cumprod[0] == pytest.approx(1 - 1e-4, rel=1e-12)
    assert s.alphas_cumprod[1] == pytest.approx((1 - 1e-4) * (1 - beta1), rel=1e-12)
    # log alphabar_T = sum of log(1 - beta_t) over 501 terms
    expected = sum(math.log(1 - (1e-4 + 0.0199 * t / 500)) for t in range(501))
    assert math.log(s.alphas_cumprod[500]) == pytest.approx(expected, rel=1e-10)


def test_add_noise_and_training_timesteps():
    s = PaperLinearScheduler(num_train_timesteps=10)
    x0, noise = torch.ones(2, 1, 2, 2), torch.full((2, 1, 2, 2), 2.0)
    t = torch.tensor([0, 10])
    xt = s.add_noise(x0, noise, t)
    for i, ti in enumerate([0, 10]):
        a = float(s.alphas_cumprod[ti])
        assert torch.allclose(xt[i], torch.full((1, 2, 2), math.sqrt(a) + 2 * math.sqrt(1 - a)))
    ts = s.sample_training_timesteps(4000, generator=torch.Generator().manual_seed(0))
    assert ts.min() == 1 and ts.max() == 9  # randint(1, T): t = T is never trained


def test_ancestral_step_by_hand():
    s = PaperLinearScheduler(num_train_timesteps=4, beta_start=0.1, beta_end=0.5)
    # betas = [0.1, 0.2, 0.3, 0.4, 0.5]; alphabar_2 = 0.9 * 0.8 * 0.7
    x, eps = torch.tensor([1.0]), torch.tensor([0.5])
    out = s.step(eps, 2, x, generator=torch.Generator().manual_seed(0)).prev_sample
    mean = (1.0 - 0.5 * 0.3 / math.sqrt(1 - 0.9 * 0.8 * 0.7)) / math.sqrt(0.7)
    z = torch.randn(1, generator=torch.Generator().manual_seed(0))
    assert out.item() == pytest.approx(mean + math.sqrt(0.3) * z.item(), rel=1e-6)
    # last step (i = 1): no noise
    last = s.step(eps, 1, x).prev_sample
    assert last.item() == pytest.approx((1.0 - 0.5 * 0.2 / math.sqrt(1 - 0.9 * 0.8)) / math.sqrt(0.8), rel=1e-6)


def test_ancestral_runs_all_T_steps_and_config_round_trips(tmp_path):
    s = PaperLinearScheduler(num_train_timesteps=20, beta_start=2e-4, beta_end=0.03)
    s.save_config(tmp_path)
    back = PaperLinearScheduler.from_config(PaperLinearScheduler.load_config(tmp_path))
    assert back.config.num_train_timesteps == 20 and back.config.beta_start == 2e-4
    assert torch.equal(back.betas, s.betas)
    sched = make_scheduler("ancestral", s)
    assert sched.timesteps.tolist() == list(range(20, 0, -1))
    with pytest.raises(InputError, match="ancestral sampling runs all T = 20 steps"):
        make_scheduler("ancestral", s, steps=5)


@pytest.mark.parametrize("sampler", ["ddim", "dpm++"])
def test_fast_samplers_use_the_paper_alphabar(sampler):
    paper = PaperLinearScheduler()
    sched = make_scheduler(sampler, paper, steps=20)
    assert len(sched.alphas_cumprod) == 501
    np.testing.assert_allclose(sched.alphas_cumprod.double().numpy(), paper.alphas_cumprod.numpy(), rtol=2e-6)
    ts = sched.timesteps.tolist()
    assert len(ts) == 20 and ts[0] == 500  # starts where ancestral sampling starts
    assert all(a > b for a, b in zip(ts, ts[1:])) and ts[-1] >= 0


def test_unknown_sampler_and_bad_steps():
    with pytest.raises(InputError, match="sampler"):
        make_scheduler("euler", PaperLinearScheduler())
    with pytest.raises(InputError, match="step count"):
        make_scheduler("ddim", PaperLinearScheduler(num_train_timesteps=10), steps=11)


def test_sample_loop_is_seeded_per_drawing():
    s = PaperLinearScheduler(num_train_timesteps=5)
    noise = lambda x, t: 0.1 * x  # noqa: E731
    a = sample_loop(noise, make_scheduler("ancestral", s), drawing_generators([1, 2, 3]), (1, 2, 2))
    b = sample_loop(noise, make_scheduler("ancestral", s), drawing_generators([3]), (1, 2, 2))
    assert torch.equal(a[2], b[0])
    assert not torch.equal(a[0], a[1])


def test_guidance_formula_and_scale_mapping():
    ec, eu = torch.tensor([1.0, 2.0]), torch.tensor([0.5, -1.0])
    assert combine(ec, eu, 2.0).tolist() == [3 * 1.0 - 2 * 0.5, 3 * 2.0 + 2 * 1.0]
    assert guidance_scale_from_g(2.0) == 3.0 and g_from_guidance_scale(1.5) == 0.5
    # diffusers' form eps_u + s (eps_c - eps_u) with s = g + 1 equals the paper's form
    g = 0.7
    assert torch.allclose(eu + guidance_scale_from_g(g) * (ec - eu), combine(ec, eu, g))


def test_guided_noise_is_one_doubled_batch():
    calls = []

    def denoise(x, t, c):
        calls.append(len(x))
        return x + c  # cond adds c, null condition adds 0

    x, t, c = torch.zeros(3, 1, 2, 2), torch.ones(3, dtype=torch.long), torch.ones(3, 1, 2, 2)
    out = guided_noise(denoise, x, t, c, g=2.0)
    assert calls == [6]
    assert torch.allclose(out, torch.full_like(x, 3.0))  # (1 + 2) * 1 - 2 * 0
    calls.clear()
    assert torch.equal(guided_noise(denoise, x, t, c, g=0.0), x + c) and calls == [3]


def test_sample_loop_combines_the_pair_and_shows_each_step_to_the_hook():
    s = PaperLinearScheduler(num_train_timesteps=6)
    pair = lambda x, t: (0.1 * x, -0.2 * x)  # noqa: E731
    seen = []
    hook = lambda t, x_t, eps_c, eps_u: seen.append((t, x_t.clone(), eps_c, eps_u))  # noqa: E731
    a = sample_loop(pair, make_scheduler("ddim", s, 3), drawing_generators([1, 2]), (1, 2, 2), on_step=hook, guidance=0.5)
    b = sample_loop(lambda x, t: combine(0.1 * x, -0.2 * x, 0.5), make_scheduler("ddim", s, 3), drawing_generators([1, 2]), (1, 2, 2))
    assert torch.equal(a, b)
    assert [t for t, *_ in seen] == [int(t) for t in make_scheduler("ddim", s, 3).timesteps]
    t0, x0, ec, eu = seen[0]
    assert torch.equal(ec, 0.1 * x0) and torch.equal(eu, -0.2 * x0)
    # a plain eps is eps_cond, with no unconditional prediction
    sample_loop(lambda x, t: 0.1 * x, make_scheduler("ddim", s, 2), drawing_generators([1]), (1, 2, 2), on_step=hook)
    assert seen[-1][3] is None
