"""`drawgap demo` end to end at a tiny scale: the built-in dataset, the shipped strokes critics, tiny
"shipped" generators (untrained, a few thousand parameters), 3 classes x 3 drawings, 2 sampler steps."""

from __future__ import annotations

import json

import numpy as np
import pytest

from drawgap.models import create_generator
from drawgap.pipelines import demo
from drawgap.report.results import load_results

TINY_DENOISER = {"block_out_channels": [8, 16], "norm_num_groups": 4, "attention_head_dim": 4}


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """Tiny untrained strokes-ddpm and strokes-cfgdm run directories where the demo looks for shipped ones."""
    root = tmp_path / "shipped"
    for name in ("ddpm", "cfgdm"):
        create_generator(name, seed=0, image_size=48, denoiser=TINY_DENOISER).save(root / f"strokes-{name}")
    monkeypatch.setattr(demo, "SHIPPED_GENERATORS_DIR", root)
    return root


def test_demo_end_to_end_with_shipped_generators(cli, shipped, tmp_path):
    out = tmp_path / "demo"
    r = cli("demo", "--out", out, "--classes", 3, "--per-exemplar", 3, "--sampler-steps", 2, "--guidance", "0,2",
            "--queries", 10, "--bootstrap", 20)
    assert r.code == 0, r
    assert "report:" in r.out and "drawgap demo: results" in r.out and "CFGDM g=2" in r.out
    for f in ("data/train.npz", "data/test.npz", "data/human.npz", "generators/cfgdm/weights.safetensors",
              "samples/ddpm.npz", "samples/cfgdm_g0.npz", "samples/cfgdm_g2.npz", "metrics/human.json",
              "metrics/cfgdm_g2.json", "figures/plane.pdf", "figures/guidance_cfgdm.png", "report.html"):
        assert (out / f).is_file(), f
    record = json.loads((out / "demo.json").read_text())
    assert [s["stage"] for s in record["stages"]] == ["data", "generators", "sample", "evaluate", "report"]
    assert record["generators"]["cfgdm"]["source"] == "shipped"
    assert any(c.startswith("drawgap sample") and "--guidance 0,2" in c for c in record["commands"])
    results = load_results(out)
    assert [s["name"] for s in results.systems] == ["human", "CFGDM g=0", "CFGDM g=2", "DDPM"]
    human = json.loads((out / "metrics" / "human.json").read_text())
    assert human["n_classes"] == 3 and human["samples_per_class"] == 3
    assert json.loads((out / "metrics" / "ddpm.json").read_text())["per_class"]["classes"] == human["per_class"]["classes"]
    html = (out / "report.html").read_text()
    assert "drawgap sample" in html and "is closest to humans" in html

    # a stage re-run alone with its recorded CLI command gives the same file
    before = (out / "metrics" / "cfgdm_g2.json").read_text()
    command = next(c for c in record["commands"] if c.startswith("drawgap evaluate") and "cfgdm_g2.npz" in c)
    assert cli(*command.split()[1:]).code == 0
    after = json.loads((out / "metrics" / "cfgdm_g2.json").read_text())
    assert after["recognizability"] == json.loads(before)["recognizability"]


def test_demo_trains_when_no_generator_is_shipped(tmp_path, monkeypatch):
    from rich.console import Console

    from tests.conftest import make_dataset
    from drawgap.data.formats import write_dataset

    from drawgap.models import training

    monkeypatch.setattr(demo, "SHIPPED_GENERATORS_DIR", tmp_path / "none")
    real = training.run_training  # the real training loop, on a tiny network and batch
    monkeypatch.setattr(training, "run_training", lambda *a, **k: real(*a, denoiser=TINY_DENOISER, batch_size=8, **k))
    data = write_dataset(make_dataset(n_classes=4, per_class=4, size=48), tmp_path / "train.npz")
    cfg = demo.DemoConfig(out=tmp_path / "out", train_steps=1)
    record = demo.DemoRecord(config={})
    console = Console(record=True, width=200)
    runs = demo.prepare_generators(cfg, record, console, data)
    text = console.export_text()
    assert "drawgap ships no strokes-ddpm generator yet" in text and "trained 1 steps" in text
    assert set(runs) == {"ddpm", "cfgdm"} and all((d / "weights.safetensors").is_file() for d in runs.values())
    assert record.generators["cfgdm"]["source"] == "trained" and record.generators["cfgdm"]["steps"] == 1
    assert any(c.startswith("drawgap train cfgdm") and "--steps 1" in c for c in record.commands)


@pytest.mark.parametrize("options, field", [
    ({"data": "mnist"}, "--data"),
    ({"source": "x"}, "--source"),
    ({"budget": 0}, "--budget"),
    ({"per_exemplar": 1}, "--per-exemplar"),
])
def test_demo_bad_options(cli, tmp_path, options, field):
    args = []
    for k, v in options.items():
        args += [f"--{k.replace('_', '-')}", v]
    r = cli("demo", "--out", tmp_path / "o", *args)
    assert r.code == 2 and field in r.err, r
    assert not (tmp_path / "o").exists()  # checked before anything is written


def test_human_reference_keeps_the_sampled_classes(tmp_path):
    from rich.console import Console

    cfg = demo.DemoConfig(out=tmp_path, classes=4, per_exemplar=5)
    paths = demo.build_data(cfg, demo.DemoRecord(config={}), Console(quiet=True))
    from drawgap.data.formats import read_dataset, read_samples

    human, test = read_samples(paths["human"]), read_dataset(paths["test"])
    assert human.samples.shape[:2] == (4, 5) and list(human.classes) == list(test.classes[:4])
    assert np.array_equal(human.exemplars, test.exemplar_images()[:4])
    assert np.array_equal(human.samples[1], test.images_of(1)[:5])
