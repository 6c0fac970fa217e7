"""Attribution for critics: RISE and Sobol on toy functions with a known answer, the sanity checks of
Adebayo et al. (2018) and Kindermans et al. (input shift), single-stroke drawings, options and the CLI."""

import numpy as np
import pytest
import torch
from torch import nn

from drawgap.critics.protonet import ProtoNetCritic
from drawgap.errors import InputError
from drawgap.importance.compare import ink_mass, spearman
from drawgap.importance.critic_attribution import (
    CriticAttribution,
    EpisodeLogits,
    critic_importance,
    episode_queries,
    parse_options,
)
from drawgap.importance.rise import RISE, rise_masks
from drawgap.importance.sobol import SobolAttribution, jansen_total_order, sobol_designs



SQUARE = (slice(4, 12), slice(12, 20))  # rows 4..11, columns 12..19 of a 24 x 24 image: 2 x 2 cells of 4 px


def square_sum(x: torch.Tensor) -> torch.Tensor:
    """Toy score: [sum of the pixels in SQUARE, a constant second class]."""
    s = x[:, 0, SQUARE[0], SQUARE[1]].sum(dim=(1, 2))
    return torch.stack([s, torch.ones_like(s)], dim=1)


def _inside_vs_outside(m: np.ndarray) -> tuple[float, float]:
    inside = np.zeros(m.shape, bool)
    inside[SQUARE] = True
    return float(m[inside].mean()), float(m[~inside].mean())


# ------------------------------------------------------------------------------------------ RISE and Sobol


def test_rise_recovers_the_square():
    x = torch.ones(1, 1, 24, 24)
    m = RISE(square_sum).attribute(x, target=0, n_masks=400, grid=6, seed=0)[0, 0].numpy()
    inside, outside = _inside_vs_outside(m)
    assert inside > 5 * abs(outside)
    r, c = np.unravel_index(np.argmax(m), m.shape)
    assert 4 <= r < 12 and 12 <= c < 20


def test_rise_masks_are_seeded_and_keep_about_p():
    a, b = rise_masks(50, 20, grid=5, p=0.3, seed=1), rise_masks(50, 20, grid=5, p=0.3, seed=1)
    assert torch.equal(a, b) and a.shape == (50, 1, 20, 20)
    assert 0.2 < a.mean() < 0.4 and a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a, rise_masks(50, 20, grid=5, p=0.3, seed=2))


def test_jansen_estimator_on_a_linear_function():
    # f = sum_i w_i X_i with X_i ~ U(0, 1) independent: ST_i = w_i^2 / sum_j w_j^2 (no interactions)
    w = np.array([3.0, 2.0, 1.0, 0.0])
    designs = sobol_designs(4, 1024, seed=0)
    st = jansen_total_order(designs @ w, 1024, 4)
    np.testing.assert_allclose(st, w ** 2 / (w ** 2).sum(), atol=0.02)
    assert st[3] == 0.0  # a variable the function ignores gets exactly zero
    assert np.all(jansen_total_order(np.ones(len(designs)), 1024, 4) == 0)  # constant score


def test_sobol_designs_layout_and_checks():
    d = sobol_designs(3, 8, seed=None)
    a, b, c = d[:8], d[8:16], d[16:].reshape(3, 8, 3)
    for i in range(3):
        np.testing.assert_array_equal(c[i][:, i], b[:, i])  # C_i takes column i from B
        np.testing.assert_array_equal(np.delete(c[i], i, axis=1), np.delete(a, i, axis=1))  # and the rest from A
    with pytest.raises(InputError, match="power of two"):
        sobol_designs(3, 12)


def test_sobol_recovers_the_square():
    x = torch.ones(1, 1, 24, 24)
    m = SobolAttribution(square_sum).attribute(x, target=0, grid=6, n_design=32, seed=0)[0, 0].numpy()
    assert m[8, 16] > 0.15  # the centre of the square: four equal cells share the variance
    assert m[20, 4] == 0.0 and m[2, 2] == 0.0  # cells far from it explain nothing
    inside, outside = _inside_vs_outside(m)
    assert inside > 10 * outside


# ------------------------------------------------------------------------------------------ input shift


class TinyNet(nn.Module):
    """Conv without padding -> ReLU -> Linear: a constant input shift c is absorbed exactly by the conv
    bias (b - c sum(w)), the construction of Kindermans et al. (2017)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 10 * 10, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def test_shift_invariance_saliency_and_ig_with_shifted_baseline():
    c = 0.3
    f1 = TinyNet()
    f2 = TinyNet()
    with torch.no_grad():
        f2.conv.bias -= c * f2.conv.weight.sum(dim=(1, 2, 3))
    x = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(f2(x + c), f1(x))
    target = torch.tensor([0, 2])
    sal = lambda f, inp: CriticAttribution(f, "saliency").attribute(inp, target)  # noqa: E731
    torch.testing.assert_close(sal(f2, x + c), sal(f1, x))
    ig = lambda f, inp, base: CriticAttribution(f, "integrated_gradients", baseline=base, n_steps=16).attribute(inp, target)  # noqa: E731
    torch.testing.assert_close(ig(f2, x + c, c), ig(f1, x, 0.0), atol=1e-5, rtol=1e-4)
    # with the unshifted baseline, IG is not invariant: the baseline has to move with the input
    assert not torch.allclose(ig(f2, x + c, 0.0), ig(f1, x, 0.0), atol=1e-3)


def test_black_box_maps_ignore_a_constant_offset_of_the_score():
    x = torch.rand(1, 1, 24, 24, generator=torch.Generator().manual_seed(0))
    shifted = lambda inp: square_sum(inp) + 100.0  # noqa: E731
    scaled = lambda inp: 3.0 * square_sum(inp)  # noqa: E731
    for method, opts in (("rise", dict(n_masks=200, grid=6)), ("sobol", dict(grid=6, n_design=16))):
        base = CriticAttribution(square_sum, method, **opts).attribute(x, 0, seed=3)
        torch.testing.assert_close(CriticAttribution(shifted, method, **opts).attribute(x, 0, seed=3), base,
                                   atol=1e-3 * float(base.max()), rtol=1e-3)
    base = CriticAttribution(square_sum, "sobol", grid=6, n_design=16).attribute(x, 0, seed=3)
    torch.testing.assert_close(CriticAttribution(scaled, "sobol", grid=6, n_design=16).attribute(x, 0, seed=3), base)


# ------------------------------------------------------------------------------------------ critics

S = 16


def _draw(k: int, o: int) -> np.ndarray:
    """Four toy classes: a horizontal bar, a vertical bar, a diagonal, a square; o shifts the drawing."""
    x = np.zeros((S, S), np.float32)
    if k == 0:
        x[4 + o, 2:14] = 1
    elif k == 1:
        x[2:14, 4 + o] = 1
    elif k == 2:
        np.fill_diagonal(x[1 + max(o, 0):, 1:], 1)
    else:
        x[8 + o:12 + o, 8:12] = 1
    return x


@pytest.fixture(scope="module")
def trained_and_initial():
    """A tiny ProtoNet trained for 10 episodes on the toy classes, and its initial weights."""
    torch.manual_seed(0)
    critic = ProtoNetCritic("omniglot", image_size=S)
    initial = {k: v.clone() for k, v in critic.state_dict().items()}
    opt = torch.optim.Adam(critic.parameters(), 3e-3)
    rng = np.random.default_rng(0)
    for _ in range(10):
        x = np.stack([_draw(k, int(rng.integers(-1, 2))) for k in range(4) for _ in range(3)])
        emb = critic(torch.from_numpy(x)[:, None]).view(4, 3, -1)
        support, queries = emb[:, 0], emb[:, 1:].reshape(8, -1)
        logits = -(queries[:, None] - support[None]).pow(2).sum(-1)
        loss = nn.functional.cross_entropy(logits, torch.arange(4).repeat_interleave(2))
        opt.zero_grad()
        loss.backward()
        opt.step()
    reset = ProtoNetCritic("omniglot", image_size=S)
    reset.load_state_dict(initial)
    return critic.eval(), reset.eval()


def _episode_maps(critic, method="saliency", **opts):
    support = np.stack([_draw(k, 0) for k in range(4)])
    queries = torch.from_numpy(np.stack([_draw(k, 1) for k in range(4)]))[:, None]
    return CriticAttribution(EpisodeLogits(critic, support), method, **opts).attribute(queries, torch.arange(4))[:, 0].numpy()


def test_randomized_weights_change_the_maps(trained_and_initial):
    trained, reset = trained_and_initial
    base = _episode_maps(trained)
    randomized = _episode_maps(reset)
    rho_random = np.mean([spearman(a, b) for a, b in zip(base, randomized)])
    # a small perturbation of the trained weights keeps the maps: the drop is due to randomization
    nudged = ProtoNetCritic("omniglot", image_size=S)
    g = torch.Generator().manual_seed(0)
    nudged.load_state_dict({k: v + 0.01 * v.std() * torch.randn(v.shape, generator=g) if v.is_floating_point() and v.numel() > 1 else v
                            for k, v in trained.state_dict().items()})
    rho_nudged = np.mean([spearman(a, b) for a, b in zip(base, _episode_maps(nudged.eval()))])
    assert rho_nudged > 0.9
    assert rho_random < 0.5


def test_single_stroke_maps_put_their_mass_on_the_stroke(trained_and_initial):
    trained, _ = trained_and_initial
    support = np.stack([_draw(k, 0) for k in range(4)])
    stroke = np.zeros((1, 1, S, S), np.float32)
    stroke[0, 0, 10, 3:13] = 1.0  # one horizontal stroke
    ink = stroke[0, 0] > 0
    forward = EpisodeLogits(trained, support)
    for method, opts, dilate, want in (
        ("integrated_gradients", dict(n_steps=16), 0, 0.999),  # x - baseline is zero off the ink: all mass on it
        ("occlusion", dict(window=3, stride=1), 2, 0.999),  # windows without ink change nothing
        ("sobol", dict(grid=8, n_design=16), 2, 0.999),  # cells without ink have no variance to explain
    ):
        m = CriticAttribution(forward, method, **opts).attribute(torch.from_numpy(stroke), 0)[0, 0].numpy()
        assert ink_mass(m, ink, dilate=dilate)["mass_on_ink"] >= want, method
    # RISE's smooth masks blur its map and Monte Carlo noise spreads over the background: the stroke is
    # still where the mass concentrates, at twice the density of a uniform map
    m = CriticAttribution(forward, "rise", n_masks=300, grid=4).attribute(torch.from_numpy(stroke), 0)[0, 0].numpy()
    assert ink_mass(m, ink, dilate=2)["ink_enrichment"] > 1.6


def test_smoothgrad_is_seeded_and_leaves_global_rng_alone(trained_and_initial):
    trained, _ = trained_and_initial
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = _episode_maps(trained, "smoothgrad", nt_samples=4)
    assert torch.equal(torch.get_rng_state(), state)
    np.testing.assert_array_equal(a, _episode_maps(trained, "smoothgrad", nt_samples=4))
    forward = EpisodeLogits(trained, np.stack([_draw(k, 0) for k in range(4)]))
    x = torch.from_numpy(np.stack([_draw(k, 1) for k in range(4)]))[:, None]
    other = CriticAttribution(forward, "smoothgrad", nt_samples=4).attribute(x, torch.arange(4), seed=9)[:, 0].numpy()
    assert not np.allclose(a, other)


def test_methods_and_options_are_checked():
    with pytest.raises(InputError, match="method"):
        CriticAttribution(square_sum, "gradcam")
    with pytest.raises(InputError, match="n_step"):
        CriticAttribution(square_sum, "integrated_gradients", n_step=3)
    assert parse_options(["n_steps=64", "baseline=0.5"], "integrated_gradients") == {"n_steps": 64, "baseline": 0.5}
    with pytest.raises(InputError, match="--option"):
        parse_options(["window"], "occlusion")
    with pytest.raises(InputError, match="int"):
        parse_options(["window=big"], "occlusion")


def test_episode_queries_dataset_and_samples(tiny_dataset):
    drawings, targets, support, ids, cats = episode_queries(tiny_dataset, per_class=2, seed=0)
    assert drawings.shape == (8, 8, 8) and list(targets) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert not set(ids.astype(int)) & set(tiny_dataset.exemplars.tolist())  # never an exemplar
    np.testing.assert_array_equal(tiny_dataset.labels[ids.astype(int)], targets)
    assert list(cats[:2]) == [tiny_dataset.classes[0]] * 2
    np.testing.assert_allclose(support, tiny_dataset.exemplar_images() / 255.0)
    with pytest.raises(InputError, match="per_class"):
        episode_queries(tiny_dataset, per_class=3)
    s = tiny_dataset.to_samples()
    drawings, targets, support, ids, _ = episode_queries(s, per_class=2)
    assert list(ids[:3]) == ["0:0", "0:1", "1:0"] and list(targets[:3]) == [0, 0, 1]


def test_episode_queries_of_the_first_classes_are_those_of_all(tiny_dataset):
    full = episode_queries(tiny_dataset, per_class=2, seed=5)
    first = episode_queries(tiny_dataset, per_class=2, seed=5, classes=2)
    assert list(first[1]) == [0, 0, 1, 1] and list(first[3]) == list(full[3][:4])  # same picks, same order
    np.testing.assert_array_equal(first[2], full[2])  # the support keeps all 4 exemplars
    _, targets, support, ids, _ = episode_queries(tiny_dataset.to_samples(), per_class=1, classes=3)
    assert list(ids) == ["0:0", "1:0", "2:0"] and len(support) == 4
    with pytest.raises(InputError, match="classes"):
        episode_queries(tiny_dataset, classes=-1)


def test_critic_importance_and_cli(tmp_path, cli, tiny_dataset, trained_and_initial):
    from drawgap.critics import save_critic
    from drawgap.data.formats import write_dataset
    from drawgap.importance.maps_file import read_maps

    trained, _ = trained_and_initial
    m = critic_importance(trained, tiny_dataset, "saliency", per_class=1, seed=0)
    assert m.maps.shape == (4, S, S) and m.images.shape == (4, S, S) and m.method == "critic-saliency"
    assert m.meta["options"]["episode_way"] == 4 and (m.maps >= 0).all()

    save_critic(trained, tmp_path / "critic")
    data = write_dataset(tiny_dataset, tmp_path / "d.npz")
    r = cli("importance", "maps", "critic", tmp_path / "critic", "--data", data, "--out", tmp_path / "m.npz",
            "--method", "occlusion", "--option", "window=4", "--option", "stride=2")
    assert r.code == 0, r
    back = read_maps(tmp_path / "m.npz")
    assert back.method == "critic-occlusion" and back.meta["options"]["window"] == 4 and len(back) == 4
    r = cli("importance", "maps", "critic", tmp_path / "critic", "--data", data, "--out", tmp_path / "m2.npz",
            "--method", "occlusion", "--option", "window=4", "--option", "stride=2", "--classes", "2")
    assert r.code == 0, r
    two = read_maps(tmp_path / "m2.npz")
    assert list(two.image_ids) == list(back.image_ids[:2]) and two.meta["options"]["classes"] == 2
    np.testing.assert_allclose(two.maps, back.maps[:2], atol=1e-6)  # the same maps, fewer of them
    r = cli("importance", "maps", "critic", tmp_path / "critic", "--data", data, "--out", tmp_path / "x.npz", "--method", "lime")
    assert r.code == 2 and "method" in r.err and not (tmp_path / "x.npz").exists()
