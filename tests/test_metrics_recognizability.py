import math

import numpy as np
import pytest
import torch

from drawgap.errors import InputError
from drawgap.metrics import Recognizability, binned_recognizability, class_recognizability, evaluation_tasks
from drawgap.metrics.recognizability import PAD


def reference_tasks(nb_class, nb_test, k, seed=44):
    """The reference generate_evaluation_task ([DVR]/[LM]), global seed and all, for comparison."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        label_extended = torch.arange(nb_class).repeat(nb_test)
        range1 = (nb_class // k) * k
        tasks = []
        n_chunks = int(math.ceil(label_extended.size(0) / range1))
        for i in range(n_chunks):
            part = label_extended[i * range1 :] if i == n_chunks - 1 else label_extended[i * range1 : (i + 1) * range1]
            part = part[torch.randperm(part.size(0))]
            assert part.size(0) % k == 0
            tasks += [part[j * k : (j + 1) * k] for j in range(part.size(0) // k)]
        return torch.stack(tasks)


@pytest.mark.parametrize("nb_class, nb_test", [(115, 20), (150, 2), (40, 3)])
def test_task_list_is_the_reference_one(nb_class, nb_test):
    tasks = evaluation_tasks(nb_class, nb_test, ways=20, seed=44)
    assert torch.equal(tasks, reference_tasks(nb_class, nb_test, 20))


def test_task_list_counts_and_distinct_classes():
    tasks = evaluation_tasks(115, 7, ways=20, seed=3)  # 805 labels: the last episode is 5 short
    assert torch.equal(tasks, evaluation_tasks(115, 7, ways=20, seed=3))  # deterministic
    assert not torch.equal(tasks, evaluation_tasks(115, 7, ways=20, seed=4))
    counts = torch.bincount(tasks[tasks != PAD], minlength=115)
    assert counts.tolist() == [7] * 115  # every class a query exactly nb_test times
    for episode in tasks:
        real = episode[episode != PAD]
        assert len(real.unique()) == len(real)  # an episode never holds a class twice
    assert int((tasks == PAD).sum()) == 15 and bool((tasks[-1, -15:] == PAD).all())


def test_equal_to_exemplar_is_fully_recognizable():
    exemplar = torch.randn(30, 16, generator=torch.Generator().manual_seed(0))
    samples = exemplar.unsqueeze(1).repeat(1, 4, 1)
    acc = class_recognizability(samples, exemplar, nb_test=10, ways=20)
    assert acc.tolist() == [1.0] * 30


def test_noise_is_recognized_at_chance():
    # 40 classes x 500 queries, 20-way, samples unrelated to their exemplar: accuracy ~ 1/20.
    g = torch.Generator().manual_seed(1)
    exemplar, samples = torch.randn(40, 8, generator=g), torch.randn(40, 50, 8, generator=g)
    acc = float(class_recognizability(samples, exemplar, nb_test=500, ways=20).mean())
    sd = math.sqrt(0.05 * 0.95 / (40 * 500))  # binomial std of the mean, ~0.0015
    assert abs(acc - 0.05) < 5 * sd


def test_fewer_classes_than_ways_warns_and_uses_all():
    g = torch.Generator().manual_seed(2)
    exemplar = torch.randn(5, 4, generator=g)
    samples = exemplar.unsqueeze(1) + 0.01 * torch.randn(5, 3, 4, generator=g)
    with pytest.warns(UserWarning, match="5-way instead of 20-way"):
        acc = class_recognizability(samples, exemplar, nb_test=6)
    assert acc.tolist() == [1.0] * 5


def test_short_last_episode_counts_its_queries():
    exemplar = torch.eye(30)
    samples = exemplar.unsqueeze(1).repeat(1, 2, 1)
    acc = class_recognizability(samples, exemplar, nb_test=1, ways=20)  # 30 labels: episodes of 20 and 10
    assert acc.tolist() == [1.0] * 30


def test_binned_recognizability_draws_from_each_bin():
    # class c's samples: 2 copies of its exemplar (recognized), then 2 of its opposite (farther from its own
    # exemplar, 20, than from any other, sqrt(200): never recognized)
    exemplar = torch.eye(25) * 10
    samples = torch.stack([exemplar, exemplar, -exemplar, -exemplar], dim=1)
    order = torch.arange(4).repeat(25, 1)
    acc = binned_recognizability(samples, exemplar, order, torch.tensor([0, 2, 4]), nb_test=8, ways=20)
    assert acc.shape == (25, 2)
    assert acc[:, 0].tolist() == [1.0] * 25 and acc[:, 1].tolist() == [0.0] * 25


class _RowMeanEmbedding:
    """A ProtoNet-like critic: the embedding of an image is its row means."""

    def __init__(self):
        self.calls = 0

    def embed(self, images, batch_size=1024):
        self.calls += 1
        return torch.as_tensor(images).float().mean(-1)


def test_accumulator_matches_function_and_embeds_once():
    rng = np.random.default_rng(0)
    exemplars = (rng.random((24, 8, 8)) > 0.5).astype(np.uint8) * 255
    samples = np.repeat(exemplars[:, None], 3, axis=1)
    critic = _RowMeanEmbedding()
    metric = Recognizability(critic, nb_test=5, ways=20, seed=44)
    metric.update(samples[:10], exemplars[:10])
    metric.update(samples[10:], exemplars[10:])
    out = metric.compute()
    assert critic.calls == 4  # samples and exemplars of each batch, once each
    emb = torch.as_tensor(samples).float().mean(-1)
    expected = class_recognizability(emb, torch.as_tensor(exemplars).float().mean(-1), nb_test=5)
    np.testing.assert_allclose(out["per_class"], 100 * expected.numpy())
    assert out["recognizability"] == pytest.approx(100.0)


def test_constructor_and_input_errors():
    with pytest.raises(InputError, match="integer >= 1"):
        Recognizability(nb_test=0)
    with pytest.raises(InputError, match="integer >= 2"):
        Recognizability(ways=1)
    with pytest.raises(TypeError, match="ProtoNet critic"):
        Recognizability(critic=object())
    metric = Recognizability(_RowMeanEmbedding())
    with pytest.raises(InputError, match="exemplars of the samples' size"):
        metric.update(np.zeros((3, 2, 8, 8), np.uint8), np.zeros((3, 6, 6), np.uint8))
    with pytest.raises(InputError, match="at least 2 samples"):
        metric.update(np.zeros((3, 1, 8, 8), np.uint8), np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(InputError, match="NaN"):
        metric.update(np.full((3, 2, 8, 8), np.nan, np.float32), np.zeros((3, 8, 8), np.float32))
    with pytest.raises(InputError, match="at least 2 classes"):
        class_recognizability(torch.zeros(1, 3, 4), torch.zeros(1, 4))
