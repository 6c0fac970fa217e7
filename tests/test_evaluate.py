import copy
import json
import re
import threading

import numpy as np
import pytest
import torch

from drawgap.critics import ProtoNetCritic, SimCLRCritic, save_critic
from drawgap.data.formats import Samples, write_samples
from drawgap.errors import InputError
from drawgap.metrics import compare, distance_to_human, evaluate, read_metrics, write_metrics
from drawgap.metrics.comparison import format_table
from drawgap.metrics.metrics_file import METRICS_FORMAT

SIZE, C, S = 16, 6, 10
FAST = dict(queries=20, bootstrap=100)


@pytest.fixture(scope="module")
def critics():
    torch.manual_seed(0)
    return SimCLRCritic("omniglot", image_size=SIZE), ProtoNetCritic("omniglot", image_size=SIZE)


@pytest.fixture(scope="module")
def critic_dirs(critics, tmp_path_factory):
    root = tmp_path_factory.mktemp("critics")
    return save_critic(critics[0], root / "simclr"), save_critic(critics[1], root / "protonet")


def _exemplars(seed=0, size=SIZE):
    return (np.random.default_rng(seed).random((C, size, size)) > 0.7).astype(np.uint8) * 255


def _noisy(exemplars, flip, seed, generator):
    """S drawings per class: the exemplar with a share `flip` of its pixels inverted."""
    rng = np.random.default_rng(seed)
    mask = rng.random((C, S, *exemplars.shape[1:])) < flip
    rows = np.where(mask, 255 - exemplars[:, None], exemplars[:, None]).astype(np.uint8)
    return Samples(rows, exemplars, np.array([f"class{c}" for c in range(C)]), {"generator": generator})


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_copies_of_the_exemplar_golden_values(critics, precision):
    ex = _exemplars()
    s = Samples(np.repeat(ex[:, None], S, axis=1), ex, np.array([f"c{i}" for i in range(C)]), {"generator": "copier"})
    with pytest.warns(UserWarning, match="6-way"):
        m = evaluate(s, simclr=critics[0], protonet=critics[1], precision=precision, **FAST)
    assert m["recognizability"] == 100.0
    # zero up to float rounding: a drawing's features depend slightly on the batch it is computed in
    assert m["diversity_raw"] == pytest.approx(0.0, abs=1e-6) and m["diversity"] == pytest.approx(0.0, abs=1e-5)
    assert m["originality"] == pytest.approx(0.0, abs=1e-5)
    assert m["vendi"] == pytest.approx(1.0)
    assert m["generalization_curve"]["recognizability"] == [100.0] * 10
    assert m["ci95"]["recognizability"] == [100.0, 100.0]
    assert m["protocol"]["ways"] == 6 and m["protocol"]["bins"] == 10 and m["samples_per_class"] == S
    assert m["protocol"]["precision"] == precision


class _Counting:
    """Delegates to a critic and counts the drawings it embeds."""

    def __init__(self, critic, method):
        # an eval-mode copy: the runner calls a non-module critic from several threads as it is
        critic = copy.deepcopy(critic).eval()
        self.critic, self.method, self.seen, self.lock = critic, method, 0, threading.Lock()
        self.image_size, self.threshold, self.name, self.weights_hash = critic.image_size, critic.threshold, None, None

    def _run(self, images, batch_size=1024):
        with self.lock:  # evaluate may call from several threads
            self.seen += len(images)
        return getattr(self.critic, self.method)(images)

    def features(self, images, batch_size=1024):
        return self._run(images)

    def embed(self, images, batch_size=1024):
        return self._run(images)


def test_each_drawing_is_embedded_once_per_critic(critics):
    simclr, protonet = _Counting(critics[0], "features"), _Counting(critics[1], "embed")
    s = _noisy(_exemplars(), 0.1, 1, "noisy")
    with pytest.warns(UserWarning):
        m = evaluate(s, simclr=simclr, protonet=protonet, batch_images=25, **FAST)  # 2 classes per batch
    assert simclr.seen == protonet.seen == C * (S + 1)
    assert 0.0 < m["originality"] and 0.0 < m["diversity"]
    lo, hi = m["ci95"]["diversity"]
    assert lo <= m["diversity"] <= hi


def test_cli_evaluate_writes_the_metrics_file(cli, critic_dirs, tmp_path):
    ex = _exemplars()
    model = write_samples(_noisy(ex, 0.15, 1, "model"), tmp_path / "model.npz")
    human = write_samples(_noisy(ex, 0.05, 2, "human"), tmp_path / "human.npz")
    out = tmp_path / "metrics.json"
    r = cli("evaluate", model, "--simclr", critic_dirs[0], "--protonet", critic_dirs[1], "--human", human,
            "--queries", 20, "--bootstrap", 100, "--out", out)
    assert r.code == 0, r
    assert "wrote metrics" in r.out and "drawgap: warning: only 6 classes" in r.err
    m = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert m == read_metrics(out)
    for key in ("diversity", "diversity_raw", "diversity_normalized", "recognizability", "originality",
                "generalization_curve", "vendi", "per_class", "ci95", "n_classes", "samples_per_class", "critics",
                "protocol", "samples_meta", "distance_to_human", "curve_gap", "provenance"):
        assert key in m, key
    assert m["format"] == METRICS_FORMAT and m["system"] == "model" and m["n_classes"] == C
    assert m["diversity"] == m["diversity_normalized"]
    assert len(m["per_class"]["recognizability"]) == C and len(m["per_class"]["curve_recognizability"][0]) == 10
    assert m["critics"]["simclr"]["weights_hash"] and m["critics"]["protonet"]["weights_hash"]
    assert m["protocol"]["seed"] == 44 and m["protocol"]["nb_test"] == 20
    assert m["provenance"]["config"]["queries"] == 20 and "torch" in m["provenance"]["versions"]
    # z-scored over {model, human}: the trivial 2 sqrt 2 when both coordinates differ
    assert m["distance_to_human"]["value"] == pytest.approx(2 * np.sqrt(2))
    assert m["distance_to_human"]["delta"]["diversity"] == pytest.approx(m["diversity"] - m["human"]["diversity"])
    assert len(m["distance_to_human"]["per_class"]) == C


@pytest.fixture(scope="module")
def three_systems(critics):
    """Metrics of humans and two models of growing noise (evaluated once for the compare tests)."""
    ex = _exemplars()
    with pytest.warns(UserWarning):
        return [evaluate(_noisy(ex, flip, seed, name), simclr=critics[0], protonet=critics[1], **FAST)
                for name, flip, seed in (("human", 0.05, 2), ("model-a", 0.15, 1), ("model-b", 0.3, 3))]


def test_cli_compare_table_and_figure(cli, three_systems, tmp_path):
    files = [write_metrics(m, tmp_path / f"{m['system']}.json") for m in three_systems]
    fig = tmp_path / "cmp.png"
    r = cli("compare", *files, "--out", fig)
    assert r.code == 0, r
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = r.out.splitlines()
    assert lines[0].startswith("system") and lines[2].startswith("human *") and "wrote figure" in lines[-1]
    loaded = [read_metrics(f) for f in files]
    expected = distance_to_human({m["system"]: (m["diversity"], m["recognizability"]) for m in loaded}, "human")
    result = compare(loaded)
    assert [row["distance_to_human"] for row in result["systems"]] == pytest.approx([expected[n] for n in ("human", "model-a", "model-b")])
    assert result["systems"][0]["distance_to_human"] == 0.0 and result["systems"][0]["curve_gap"] == 0.0
    assert f"{expected['model-b']:.3f}" in lines[4]


def test_cli_compare_draws_the_papers_points_beside_the_systems(cli, three_systems, tmp_path):
    """--paper omniglot adds ICML Fig. 2's eight points (hollow, labelled) to the plane; a dataset without
    points, or --paper without a figure, is one line and exit 2 with nothing written."""
    from drawgap.report.figures import plot_diversity_recognizability
    from drawgap.report.paper_points import PAPER_POINTS

    files = [write_metrics(m, tmp_path / f"{m['system']}.json") for m in three_systems]
    r = cli("compare", *files, "--out", tmp_path / "p.png", "--paper", "omniglot")
    assert r.code == 0 and "with the paper's omniglot points" in r.out, r
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ax = plot_diversity_recognizability(compare([read_metrics(f) for f in files])["systems"], paper=PAPER_POINTS["omniglot"]).axes[0]
    labels = [t.get_text() for t in ax.texts]
    assert "paper DA-GAN-UN" in labels and len(labels) == 8
    drawn = {tuple(np.round(line.get_xydata()[0], 3)) for line in ax.lines if len(line.get_xydata())}
    assert (0.092, 88.4) in drawn and (0.39, 97.6) in drawn  # DA-GAN-UN and the paper's humans, where the paper puts them
    bad = cli("compare", *files, "--out", tmp_path / "q.png", "--paper", "mnist")
    assert bad.code == 2 and "--paper" in bad.err and "omniglot, quickdraw" in bad.err and not (tmp_path / "q.png").exists()
    assert cli("compare", *files, "--paper", "omniglot").code == 2


def _raw_samples(path, samples, exemplars):
    meta = np.array(json.dumps({"format": "drawgap.samples/1", "generator": "raw"}))
    np.savez(path, samples=samples, exemplars=exemplars, classes=np.array([f"c{i}" for i in range(len(samples))]), meta=meta)
    return path


@pytest.mark.parametrize("case, words", [
    ("sizes", "exemplars: expected exemplars of the samples' size 16"),
    ("one_sample", "samples: expected at least 2 samples per class, got 1"),
    ("nan", "samples: expected finite values, found NaN or inf"),
    ("too_big", "samples: expected drawings within 2x of the critic"),
])
def test_cli_evaluate_bad_samples_exit_2(cli, critic_dirs, tmp_path, case, words):
    ex = _exemplars()
    samples, exemplars = np.repeat(ex[:, None], 3, axis=1), ex
    if case == "sizes":
        exemplars = ex[:, :12, :12].copy()
    elif case == "one_sample":
        samples = samples[:, :1]
    elif case == "nan":
        samples, exemplars = samples.astype(np.float32) / 255, exemplars.astype(np.float32) / 255
        samples[0, 0, 0, 0] = np.nan
    elif case == "too_big":
        samples, exemplars = np.zeros((C, 3, 40, 40), np.uint8), np.zeros((C, 40, 40), np.uint8)
    path = _raw_samples(tmp_path / "bad.npz", samples, exemplars)
    out = tmp_path / "m.json"
    r = cli("evaluate", path, "--simclr", critic_dirs[0], "--protonet", critic_dirs[1], "--out", out)
    assert r.code == 2, r
    assert words in r.err and len(r.err.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_evaluate_bad_options_exit_2(cli, critic_dirs, tmp_path):
    s = write_samples(_noisy(_exemplars(), 0.1, 1, "m"), tmp_path / "s.npz")
    r = cli("evaluate", s, "--critics", "no-such", "--out", tmp_path / "m.json")
    assert r.code == 2 and "no-such-simclr" in r.err
    r = cli("evaluate", s, "--critics", "omniglot", "--simclr", critic_dirs[0], "--out", tmp_path / "m.json")
    assert r.code == 2 and "not both" in r.err
    r = cli("evaluate", s, "--simclr", critic_dirs[0], "--protonet", critic_dirs[1], "--queries", 0, "--out", tmp_path / "m.json")
    assert r.code == 2 and "queries" in r.err
    r = cli("evaluate", s, "--simclr", critic_dirs[0], "--protonet", critic_dirs[1], "--precision", "fp8", "--out", tmp_path / "m.json")
    assert r.code == 2 and "precision" in r.err
    assert not (tmp_path / "m.json").exists()


def test_cli_compare_bad_inputs_exit_2(cli, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    r = cli("compare", bad)
    assert r.code == 2 and "bad.json" in r.err
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something/1"}))
    assert cli("compare", other).code == 2
    assert cli("compare", tmp_path / "missing.json").code == 2


def test_compare_refuses_mixed_critics_and_unknown_human(three_systems):
    a = three_systems[1]
    b = json.loads(json.dumps(a))
    b["critics"]["simclr"]["weights_hash"] = "other"
    with pytest.raises(InputError, match="same critics"):
        compare([a, b])
    with pytest.raises(InputError, match="--human"):
        compare([a, a], human="nobody")
    result = compare([a, a])  # no human: no distances, no error; names made distinct
    assert result["human"] is None and [r["name"] for r in result["systems"]] == ["model-a", "model-a-2"]


def test_inference_copy_keeps_the_critic_and_its_features():
    from drawgap.critics.inference import inference_copy

    simclr = SimCLRCritic("omniglot", image_size=SIZE)
    with torch.no_grad():  # give the batch norms non-trivial statistics to fold
        for m in simclr.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0), m.weight.uniform_(0.5, 1.5)
    images = torch.as_tensor(_exemplars())
    before = simclr.features(images)
    fast = inference_copy(simclr)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in simclr.modules())  # the original is untouched
    torch.testing.assert_close(fast.features(images), before, rtol=1e-4, atol=1e-5)
    assert fast.name == simclr.name and fast.weights_hash == simclr.weights_hash


def test_critic_runner_splits_over_threads_and_restores_the_thread_count(critics):
    from drawgap.critics.inference import CriticRunner

    images = torch.as_tensor(np.concatenate([_exemplars(seed) for seed in range(4)]))
    assert critics[0].training  # a fresh module: the runner must not run it in training mode from threads
    threads = torch.get_num_threads()
    with CriticRunner(*critics, workers=3) as run:
        assert torch.get_num_threads() == 1
        features, embeddings = run(images)
    assert torch.get_num_threads() == threads
    torch.testing.assert_close(features, critics[0].features(images), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(embeddings, critics[1].embed(images), rtol=1e-4, atol=1e-5)
    assert critics[0].training and critics[1].training  # left as they were


def test_human_reference_as_metrics_equals_human_samples(critics, three_systems):
    ex = _exemplars()
    model = _noisy(ex, 0.15, 1, "model-a")
    with pytest.warns(UserWarning):
        from_samples = evaluate(model, simclr=critics[0], protonet=critics[1], human=_noisy(ex, 0.05, 2, "human"), **FAST)
        from_metrics = evaluate(model, simclr=critics[0], protonet=critics[1], human=three_systems[0], **FAST)
    assert from_samples["distance_to_human"]["delta"] == pytest.approx(from_metrics["distance_to_human"]["delta"])
    assert from_samples["curve_gap"] == from_metrics["curve_gap"]
    other = json.loads(json.dumps(three_systems[0]))
    other["critics"]["protonet"]["weights_hash"] = "different"
    with pytest.raises(InputError, match="same critics"):  # checked before any work: no warning either
        evaluate(model, simclr=critics[0], protonet=critics[1], human=other, **FAST)


@pytest.mark.parametrize("field, text", [("diversity", "NaN"), ("recognizability", "-Infinity"), ("ci95.diversity[0]", "1e400")])
def test_cli_compare_refuses_non_finite_numbers(cli, three_systems, tmp_path, field, text):
    """json reads NaN, Infinity and 1e400 (inf); compare used to report distance 0.000 from them."""
    files = [write_metrics(m, tmp_path / f"{m['system']}.json") for m in three_systems]
    bad = json.loads(files[1].read_text())
    if field == "ci95.diversity[0]":
        bad["ci95"]["diversity"][0] = "@"
    else:
        bad[field] = "@"
    files[1].write_text(json.dumps(bad).replace('"@"', text))
    r = cli("compare", *files)
    assert r.code == 2, r
    assert r.err.strip().splitlines() == [f"drawgap: error: {files[1]}: {field}: expected a finite number, found NaN or infinity"]


def _cfgdm(guidance):
    return {"generator": "cfgdm", "params": {"guidance": guidance, "sampler": "dpm++", "steps": 20, "per_exemplar": S}}


@pytest.fixture(scope="module")
def two_cfgdms(critics):
    """Metrics of a CFGDM sampled at g = 0 and at g = 2 (drawings of different noise), and of humans."""
    ex = _exemplars()
    out = []
    with pytest.warns(UserWarning):
        for meta, flip, seed in ((_cfgdm(0.0), 0.3, 1), (_cfgdm(2.0), 0.1, 2), ({"generator": "human"}, 0.05, 3)):
            s = _noisy(ex, flip, seed, meta["generator"])
            s.meta = meta
            out.append(evaluate(s, simclr=critics[0], protonet=critics[1], **FAST))
    return out


def test_two_cfgdm_guidances_get_distinct_names_whatever_the_order(two_cfgdms, tmp_path, cli):
    g0, g2, human = two_cfgdms
    assert (g0["system"], g2["system"]) == ("cfgdm g=0", "cfgdm g=2")
    old_g0, old_g2 = ({**m, "system": "cfgdm"} for m in (g0, g2))  # metrics from before names said more
    for systems in ([human, g0, g2], [human, g2, g0], [human, old_g0, old_g2], [human, old_g2, old_g0]):
        rows = {r["name"]: r for r in compare(systems)["systems"]}
        assert set(rows) == {"human", "cfgdm g=0", "cfgdm g=2"}
        assert rows["cfgdm g=0"]["diversity"] == g0["diversity"] and rows["cfgdm g=2"]["diversity"] == g2["diversity"]
    files = [write_metrics(m, tmp_path / f"{i}.json") for i, m in enumerate((human, old_g2, old_g0))]
    r = cli("compare", *files)
    assert r.code == 0, r
    assert "cfgdm g=0 " in r.out and "cfgdm g=2 " in r.out and "cfgdm-2" not in r.out


def test_compare_warns_and_marks_systems_evaluated_on_other_classes_or_counts(two_cfgdms, tmp_path, cli):
    g0, g2, human = two_cfgdms
    fewer = json.loads(json.dumps(g2))
    fewer["per_class"]["classes"] = fewer["per_class"]["classes"][:4]  # as if evaluated on the first 4 classes
    fewer["samples_per_class"] = 5
    with pytest.warns(UserWarning, match=r"cfgdm g=2 was evaluated on 4 classes against the human reference's 6 \(4 shared\); "
                                         r"5 drawings per class against the human reference's 10"):
        result = compare([human, g0, fewer])
    rows = {r["name"]: r for r in result["systems"]}
    assert rows["cfgdm g=0"]["reference_mismatch"] is None and rows["cfgdm g=2"]["reference_mismatch"]
    text = format_table(result)
    assert "cfgdm g=2 !" in text and "! cfgdm g=2: evaluated on 4 classes" in text and "cfgdm g=0 !" not in text
    files = [write_metrics(m, tmp_path / f"{i}.json") for i, m in enumerate((human, g0, fewer))]
    r = cli("compare", *files)
    assert r.code == 0 and "drawgap: warning: cfgdm g=2 was evaluated on 4 classes" in r.err


def test_cli_evaluate_a_dataset_file_says_so_and_how_to_make_samples(cli, tmp_path):
    from drawgap.data.formats import write_dataset
    from tests.conftest import make_dataset

    path = write_dataset(make_dataset(), tmp_path / "test.npz")
    r = cli("evaluate", path, "--critics", "strokes", "--out", tmp_path / "m.json")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1
    assert "expected a samples file, got a dataset file" in r.err and "--as-samples" in r.err
    assert "drawgap sample RUN --exemplars" in r.err and not (tmp_path / "m.json").exists()


# ------------------------------------------------------------------ several critic pairs (issue 16 item 4)


@pytest.fixture(scope="module")
def critics_b():
    """A second, independently initialised critic pair."""
    torch.manual_seed(1)
    return SimCLRCritic("omniglot", image_size=SIZE), ProtoNetCritic("omniglot", image_size=SIZE)


@pytest.fixture(scope="module")
def pair_prefixes(critics, critics_b, tmp_path_factory):
    """Two critic pairs saved as <prefix>-simclr / <prefix>-protonet, named on the CLI by their prefixes."""
    root = tmp_path_factory.mktemp("pairs")
    for prefix, (simclr, protonet) in (("a", critics), ("b", critics_b)):
        save_critic(simclr, root / f"{prefix}-simclr")
        save_critic(protonet, root / f"{prefix}-protonet")
    return str(root / "a"), str(root / "b")


def _without_provenance(m):
    return {k: v for k, v in m.items() if k not in ("provenance", "by_critics", "agreement")}


def test_correlation_golden_values():
    from drawgap.metrics.agreement import correlation

    # deviations (-1.5, -.5, .5, 1.5) and (-1.5, .5, -.5, 1.5): sum of products 4, sums of squares 5 -> 0.8;
    # the values are their own ranks, so Spearman is 0.8 too
    c = correlation([1, 2, 3, 4], [1, 3, 2, 4])
    assert c["n"] == 4 and c["pearson"] == pytest.approx(0.8) and c["spearman"] == pytest.approx(0.8)
    assert 0 < c["pearson_p"] < 1 and 0 < c["spearman_p"] < 1
    # every class scored alike by one critic: no correlation to speak of, recorded as None (JSON null)
    assert correlation([100.0] * 5, [1, 2, 3, 4, 5])["pearson"] is None
    assert correlation([1, 2], [2, 1])["spearman"] is None


def test_several_critic_pairs_first_pair_unchanged_and_agreement_is_scipys(critics, critics_b):
    from scipy import stats

    s = _noisy(_exemplars(), 0.0, 1, "model")
    # classes of growing noise, so that per-class scores vary and the critics have something to agree on
    rng = np.random.default_rng(5)
    flip = np.linspace(0.02, 0.35, C)[:, None, None, None]
    mask = rng.random(s.samples.shape) < flip
    s = Samples(np.where(mask, 255 - s.samples, s.samples).astype(np.uint8), s.exemplars, s.classes, s.meta)
    with pytest.warns(UserWarning):
        alone_a = evaluate(s, simclr=critics[0], protonet=critics[1], **FAST)
        alone_b = evaluate(s, simclr=critics_b[0], protonet=critics_b[1], **FAST)
        both = evaluate(s, critics={"a": critics, "b": critics_b}, **FAST)
    assert _without_provenance(both) == _without_provenance(alone_a)  # every top-level number unchanged
    assert list(both["by_critics"]) == ["a", "b"]
    for pair, alone in (("a", alone_a), ("b", alone_b)):
        entry = both["by_critics"][pair]
        for key in ("diversity", "diversity_raw", "recognizability", "originality", "vendi", "generalization_curve"):
            assert entry[key] == alone[key], (pair, key)
        assert entry["ci95"] == alone["ci95"] and entry["critics"] == alone["critics"]
    assert alone_a["recognizability"] != alone_b["recognizability"]  # the two critics do differ
    [agreement] = both["agreement"]
    assert agreement["critics"] == ["a", "b"]
    for key in ("diversity", "recognizability", "originality"):
        x, y = np.array(alone_a["per_class"][key]), np.array(alone_b["per_class"][key])
        pearson, spearman = stats.pearsonr(x, y), stats.spearmanr(x, y)
        got = agreement[key]
        assert got["n"] == C
        assert got["pearson"] == pytest.approx(pearson.statistic) and got["pearson_p"] == pytest.approx(pearson.pvalue)
        assert got["spearman"] == pytest.approx(spearman.statistic) and got["spearman_p"] == pytest.approx(spearman.pvalue)


def test_cli_evaluate_with_two_critic_pairs_then_compare_and_report(cli, pair_prefixes, tmp_path):
    from drawgap.report.html import build_report

    a, b = pair_prefixes
    ex = _exemplars()
    model = write_samples(_noisy(ex, 0.15, 1, "model"), tmp_path / "model.npz")
    human = write_samples(_noisy(ex, 0.05, 2, "human"), tmp_path / "human.npz")
    runs = tmp_path / "runs"
    runs.mkdir()
    opts = ("--queries", 20, "--bootstrap", 100)
    r = cli("evaluate", model, "--critics", f"{a},{b}", "--human", human, *opts, "--out", runs / "model.json")
    assert r.code == 0, r
    assert f"{a}: diversity" in r.out and f"{b}: diversity" in r.out and f"agreement {a} vs {b} over {C} classes" in r.out
    both = read_metrics(runs / "model.json")
    r = cli("evaluate", model, "--critics", a, "--human", human, *opts, "--out", tmp_path / "alone.json")
    assert r.code == 0 and "agreement" not in r.out
    alone = read_metrics(tmp_path / "alone.json")
    assert "by_critics" not in alone and _without_provenance(both) == _without_provenance(alone)
    assert both["by_critics"][a]["curve_gap"] == alone["curve_gap"]
    assert both["provenance"]["config"]["critics"] == f"{a},{b}"

    # the human reference as a metrics file evaluated with both pairs serves each pair
    r = cli("evaluate", human, "--critics", f"{a},{b}", *opts, "--out", runs / "human.json")
    assert r.code == 0, r
    r = cli("evaluate", model, "--critics", f"{a},{b}", "--human", runs / "human.json", *opts, "--out", tmp_path / "m2.json")
    assert r.code == 0, r
    again = read_metrics(tmp_path / "m2.json")
    for pair in (a, b):
        assert again["by_critics"][pair]["curve_gap"] == both["by_critics"][pair]["curve_gap"]
        assert again["by_critics"][pair]["human"] == both["by_critics"][pair]["human"]

    r = cli("compare", runs / "model.json", runs / "human.json")
    assert r.code == 0, r
    lines = r.out.splitlines()
    assert sum(line.strip().startswith(f"critics {a}") for line in lines) == 2
    b_line = next(line for line in lines if line.strip().startswith(f"critics {b}"))  # the model's, listed first
    assert f"{both['by_critics'][b]['recognizability']:.1f}" in b_line
    gap = both["by_critics"][b]["curve_gap"]["gap"]
    assert b_line.split()[-1] == ("-" if gap is None else f"{gap:+.2f}")
    assert f"critic agreement of model, {a} vs {b} over {C} classes" in r.out

    html = build_report(runs)
    rows = {(of, pair): cells for of, pair, cells in
            re.findall(r'<tr class="critics" data-of="([^"]*)" data-critics="([^"]*)">(.*?)</tr>', html, re.S)}
    assert set(rows) == {(of, pair) for of in ("human", "model") for pair in (a, b)}
    assert f"<td>{both['by_critics'][b]['recognizability']:.1f} " in rows["model", b]
    assert "Critic agreement of model, per-class" in html and "Critic agreement of human, per-class" in html


def test_cli_evaluate_refuses_a_critic_pair_by_its_name(cli, pair_prefixes, tmp_path):
    s = write_samples(_noisy(_exemplars(), 0.1, 1, "m"), tmp_path / "s.npz")
    out = tmp_path / "m.json"
    for critics in (f"{pair_prefixes[0]},omniglot-zz", "omniglot-zz", f"{pair_prefixes[0]},{pair_prefixes[0]}",
                    f"{pair_prefixes[0]},"):
        r = cli("evaluate", s, "--critics", critics, "--out", out)
        assert r.code == 2, (critics, r)
        assert len(r.err.strip().splitlines()) == 1 and "critics" in r.err
        assert "omniglot-zz" in r.err or "distinct" in r.err or "comma-separated" in r.err
        assert not out.exists()
    r = cli("evaluate", s, "--critics", f"{pair_prefixes[0]},omniglot-zz", "--out", out)
    assert "shipped critic pair (omniglot, omniglot-b, quickdraw, strokes)" in r.err and "got 'omniglot-zz'" in r.err


def test_metrics_without_by_critics_read_and_compare_as_before(three_systems):
    assert not any("by_critics" in m for m in three_systems)
    result = compare(three_systems)
    assert not any("by_critics" in row or "agreement" in row for row in result["systems"])
    text = format_table(result)
    assert "critics" not in text and len(text.splitlines()) == 2 + 3 + 1
