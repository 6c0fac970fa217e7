"""A new metric is one class: a toy metric defined here alone runs inside `evaluate`'s single embedding
pass and lands in metrics.json with its per-class values and its bootstrap interval."""

import numpy as np
import pytest
import torch

from drawgap.critics import ProtoNetCritic, SimCLRCritic
from drawgap.data.formats import Samples
from drawgap.metrics import METRICS, CriticOutputs, Metric, Report, evaluate
from drawgap.metrics.bootstrap import bootstrap_ci

SIZE, C, S = 16, 5, 4


class ExemplarDistance(Metric):
    """Mean Euclidean distance of a class's samples to its exemplar, in SimCLR feature space."""

    scalars = ("exemplar_distance",)

    def __init__(self):
        self.reset()

    def reset(self):
        self.per_class = []

    def update_outputs(self, outputs: CriticOutputs):
        gaps = outputs.features - outputs.exemplar_features[:, None]
        self.per_class.append(gaps.double().norm(dim=-1).mean(dim=1))

    def compute(self):
        per_class = torch.cat(self.per_class)
        return {"mean": float(per_class.mean()), "per_class": per_class.numpy()}

    def report(self, result, ci):
        return Report(values={"exemplar_distance": result["mean"]}, per_class={"exemplar_distance": result["per_class"]},
                      ci95={"exemplar_distance": ci(result["per_class"])})


@pytest.fixture(scope="module")
def critics():
    torch.manual_seed(0)
    return SimCLRCritic("omniglot", image_size=SIZE).eval(), ProtoNetCritic("omniglot", image_size=SIZE).eval()


def test_a_metric_defined_outside_drawgap_is_reported_with_its_interval(critics):
    rng = np.random.default_rng(0)
    exemplars = (rng.random((C, SIZE, SIZE)) > 0.7).astype(np.uint8) * 255
    rows = np.where(rng.random((C, S, SIZE, SIZE)) < 0.2, 255 - exemplars[:, None], exemplars[:, None]).astype(np.uint8)
    samples = Samples(rows, exemplars, np.array([f"c{i}" for i in range(C)]), {"generator": "noisy"})

    # batch_images=10: the metric is fed three batches of classes (2, 2, 1), as the built-in ones are
    m = evaluate(samples, simclr=critics[0], protonet=critics[1], queries=10, ways=5, bootstrap=200, bins=2,
                 batch_images=10, metrics=(*METRICS, ExemplarDistance))

    # by hand: the critic's features of each class's drawings and exemplar, distances averaged per class
    with torch.no_grad():
        f = critics[0].features(torch.as_tensor(rows.reshape(C * S, SIZE, SIZE))).double().view(C, S, -1)
        fe = critics[0].features(torch.as_tensor(exemplars)).double()
    expected = (f - fe[:, None]).norm(dim=-1).mean(dim=1).numpy()
    np.testing.assert_allclose(m["per_class"]["exemplar_distance"], expected, rtol=1e-4)
    assert m["exemplar_distance"] == pytest.approx(expected.mean(), rel=1e-4)
    low, high = m["ci95"]["exemplar_distance"]
    assert low < m["exemplar_distance"] < high
    assert [low, high] == pytest.approx(bootstrap_ci(m["per_class"]["exemplar_distance"], n_resamples=200, seed=44))
    # the built-in metrics are still there, and the default list does not hold the toy
    assert {"diversity", "recognizability", "originality", "vendi"} <= set(m)
    plain = evaluate(samples, simclr=critics[0], protonet=critics[1], queries=10, ways=5, bootstrap=200, bins=2)
    assert "exemplar_distance" not in plain and plain["diversity"] == pytest.approx(m["diversity"], rel=1e-5)


def test_reset_forgets_the_updates():
    metric = ExemplarDistance()
    outputs = CriticOutputs(torch.ones(2, 3, 4), torch.zeros(2, 4), torch.zeros(2, 3, 2), torch.zeros(2, 2))
    metric.update(outputs)
    assert metric.compute()["mean"] == pytest.approx(2.0)
    metric.reset()
    metric.update(CriticOutputs(torch.zeros(1, 3, 4), torch.zeros(1, 4), torch.zeros(1, 3, 2), torch.zeros(1, 2)))
    assert metric.compute()["mean"] == 0.0
