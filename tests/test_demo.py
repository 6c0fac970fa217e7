"""`drawgap demo` end to end at a tiny scale: the built-in dataset, the shipped strokes critics, tiny
"shipped" generators (untrained, a few thousand parameters), 3 classes x 3 drawings, 2 sampler steps."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from drawgap.data.formats import read_dataset
from drawgap.errors import InputError
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
            "--queries", 10, "--bootstrap", 20, "--importance-classes", 2)
    assert r.code == 0, r
    assert "report:" in r.out and "drawgap demo: results" in r.out and "CFGDM g=2" in r.out
    for f in ("data/train.npz", "data/test.npz", "data/human.npz", "generators/cfgdm/weights.safetensors",
              "samples/ddpm.npz", "samples/cfgdm_g0.npz", "samples/cfgdm_g2.npz", "metrics/human.json",
              "metrics/cfgdm_g2.json", "figures/plane.pdf", "figures/guidance_cfgdm.png", "report.html",
              "importance/cfgdm.implicit.npz", "importance/simclr_ink.json", "figures/importance.png"):
        assert (out / f).is_file(), f
    record = json.loads((out / "demo.json").read_text())
    assert [s["stage"] for s in record["stages"]] == ["data", "generators", "sample", "evaluate", "importance", "report"]
    assert "6/6 report" in r.out
    assert record["generators"]["cfgdm"]["source"] == "shipped"
    assert any(c.startswith("drawgap sample") and "--guidance 0,2" in c for c in record["commands"])
    results = load_results(out)
    assert [s["name"] for s in results.systems] == ["human", "CFGDM g=0", "CFGDM g=2", "DDPM"]
    human = json.loads((out / "metrics" / "human.json").read_text())
    assert human["n_classes"] == 3 and human["samples_per_class"] == 3
    test = read_dataset(out / "data" / "test.npz")  # whether each class's exemplar is among its 3 drawings
    rows = sum(test.exemplars[c] in np.flatnonzero(test.labels == c)[:3] for c in range(3))
    assert human["samples_meta"]["exemplar_rows"] == rows and human["samples_meta"]["exemplar_included"] == (rows == 3)
    assert json.loads((out / "metrics" / "ddpm.json").read_text())["per_class"]["classes"] == human["per_class"]["classes"]
    html = (out / "report.html").read_text()
    assert "drawgap sample" in html and "is closest to humans" in html
    # the importance section: a row per source of maps (the shipped critics' names), from the ink reports
    assert len(results.ink) == 5
    rows = re.findall(r'<tr class="source(?: noise)?" data-source="([^"]*)"', html)
    assert rows == ["CFGDM g=1 guided score (cond - uncond, accumulated)", "CFGDM g=1 implicit classifier",
                    "CFGDM g=1 loss gradient", "strokes-protonet saliency", "strokes-simclr saliency"]
    assert html.count("split-half over trajectories") >= 3 and "deterministic" in html  # a reliability per source
    assert "Settings: 3 classes x 3 drawings per system; drawn with dpm++, 2 steps, seed 0." in html
    assert "drawgap importance maps diffusion" in html and 'id="fig-importance"' in html

    # a stage re-run alone with its recorded CLI command gives the same file
    before = (out / "metrics" / "cfgdm_g2.json").read_text()
    command = next(c for c in record["commands"] if c.startswith("drawgap evaluate") and "cfgdm_g2.npz" in c)
    assert cli(*command.split()[1:]).code == 0
    after = json.loads((out / "metrics" / "cfgdm_g2.json").read_text())
    assert after["recognizability"] == json.loads(before)["recognizability"]


def test_demo_draws_with_every_generator_shipped_for_the_dataset(cli, shipped, tmp_path, monkeypatch):
    """A generator added to the shipped table (`<data>-<family>`) joins the demo's samples, tables and plane with
    no edit to the demo: sampled once (no guidance, no sampler), evaluated, in the results; one listed but not
    installed is left out with a note; `--train` trains ddpm and cfgdm only, and `--generators` says otherwise."""
    from drawgap import shipped as table

    tiny = {"vae-ns": dict(context=2, z_dim=2, c_dim=4, hidden_dim=8, conv_channels="2,2,2,2"),
            "dagan-un": dict(z_size=2, widths=[2, 2, 2, 2], critic_inner_layers=1, critic_dense=4)}
    for family, config in tiny.items():
        create_generator(family, seed=0, image_size=48, **config).save(shipped / f"strokes-{family}")
    kept = {name: s for name, s in table.SHIPPED.items()  # the diffusion models and critics; the baselines as below
            if not name.startswith("strokes-") or name.split("-", 1)[1] in ("ddpm", "cfgdm", "simclr", "protonet")}
    monkeypatch.setattr(table, "SHIPPED", kept)
    for family in (*tiny, "vae-stn"):  # vae-stn: in the table, its weights not installed
        monkeypatch.setitem(table.SHIPPED, f"strokes-{family}", table.Shipped("generator", f"{family} on strokes"))
    assert demo.demo_generators(demo.DemoConfig(out=tmp_path)) == ["ddpm", "cfgdm", "vae-ns", "dagan-un", "vae-stn"]
    assert demo.demo_generators(demo.DemoConfig(out=tmp_path, train=True)) == ["ddpm", "cfgdm"]
    assert demo.demo_generators(demo.DemoConfig(out=tmp_path, train=True, generators=("vae-ns",))) == ["vae-ns"]

    out = tmp_path / "demo"
    r = cli("demo", "--out", out, "--classes", 3, "--per-exemplar", 3, "--sampler-steps", 2, "--guidance", "1",
            "--queries", 10, "--bootstrap", 20, "--importance-classes", 0)
    assert r.code == 0, r
    assert "strokes-vae-stn is listed as shipped but its weights are not installed: left out" in " ".join(r.out.split())
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["cfgdm_g1.npz", "dagan-un.npz", "ddpm.npz", "vae-ns.npz"]
    record = json.loads((out / "demo.json").read_text())
    assert record["generators"]["vae-ns"]["source"] == "shipped" and "vae-stn" not in record["generators"]
    (command,) = [c for c in record["commands"] if c.startswith("drawgap sample") and "generators/vae-ns" in c]
    assert "--sampler" not in command and "--guidance" not in command and "--steps" not in command
    names = [s["name"] for s in load_results(out).systems]
    assert {"VAE-NS", "DA-GAN-UN", "DDPM", "CFGDM g=1", "human"} <= set(names), names  # the families' display names
    assert (out / "figures" / "plane.pdf").is_file()
    # the recorded command redraws the same samples
    before = (out / "samples" / "vae-ns.npz").read_bytes()
    assert cli(*command.split()[1:]).code == 0
    from drawgap.data.formats import read_samples

    assert np.array_equal(read_samples(out / "samples" / "vae-ns.npz").samples, read_samples(_bytes_file(tmp_path, before)).samples)


def _bytes_file(tmp_path, data: bytes):
    path = tmp_path / "before.npz"
    path.write_bytes(data)
    return path


def test_demo_generators_option_is_checked(tmp_path):
    with pytest.raises(InputError, match="--generators: unknown generator 'gan'; expected one of"):
        demo.DemoConfig(out=tmp_path, generators=("ddpm", "gan")).check()
    with pytest.raises(InputError, match="--generators: expected at least one"):
        demo.DemoConfig(out=tmp_path, generators=()).check()


def test_demo_trains_when_no_generator_is_shipped(tmp_path, monkeypatch):
    from rich.console import Console

    from tests.conftest import make_dataset
    from drawgap.data.formats import write_dataset

    from drawgap.models import training

    monkeypatch.setattr(demo, "SHIPPED_GENERATORS_DIR", tmp_path / "none")
    real = training.run_training  # the real training loop, on a tiny network and batch
    monkeypatch.setattr(training, "run_training", lambda *a, **k: real(*a, generator_config={"denoiser": TINY_DENOISER}, batch_size=8, **k))
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
    ({"generators": "ddpm,gan"}, "--generators"),
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


# ------------------------------------------------------------------------------------- importance stage


@pytest.fixture(scope="module")
def tiny_importance_inputs(tmp_path_factory):
    """A tiny strokes dataset (2 test classes of 16 px drawings), a tiny untrained cfgdm run directory and
    tiny untrained critics."""
    import torch

    from drawgap.critics import ProtoNetCritic, SimCLRCritic
    from drawgap.data.formats import write_dataset
    from drawgap.data.strokes import StrokesConfig, build_strokes

    root = tmp_path_factory.mktemp("importance")
    test = write_dataset(build_strokes(StrokesConfig(n_classes=10, per_class=3, image_size=16, seed=3))["test"],
                         root / "test.npz")
    run = root / "cfgdm"
    create_generator("cfgdm", seed=0, image_size=16, denoiser=TINY_DENOISER).save(run)
    torch.manual_seed(0)
    critics = (SimCLRCritic("omniglot", image_size=16), ProtoNetCritic("omniglot", image_size=16))
    return test, run, critics


def _run_stage(tmp_path, inputs, data="strokes"):
    from rich.console import Console

    test, run, critics = inputs
    cfg = demo.DemoConfig(out=tmp_path / "out", data=data, importance_classes=2, sampler_steps=2)
    record = demo.DemoRecord(config={})
    paths = demo.compute_importance(cfg, record, Console(quiet=True), {"cfgdm": run}, test, critics)
    return cfg, record, paths


def test_importance_stage_on_strokes(tmp_path, tiny_importance_inputs, cli):
    from drawgap.data.formats import read_dataset
    from drawgap.importance.compare import INK_FORMAT
    from drawgap.importance.maps_file import read_maps

    cfg, record, paths = _run_stage(tmp_path, tiny_importance_inputs)
    sources = ["cfgdm.guided_diff", "cfgdm.implicit", "cfgdm.loss_grad", "protonet", "simclr"]
    assert [p.name for p in paths] == [f"{s}.npz" for s in sources] + [f"{s}_ink.json" for s in sources]
    test = read_dataset(tiny_importance_inputs[0])
    guided = read_maps(cfg.out / "importance" / "cfgdm.guided_diff.npz")
    for s in sources:  # every source records its reliability
        r = read_maps(cfg.out / "importance" / f"{s}.npz").meta["reliability"]
        assert r["method"].startswith("split-half over trajectories" if s.startswith("cfgdm") else "deterministic"), s
        assert len(r["per_map"]) == 2 and (r["spearman"] == 1.0 if s in ("protonet", "simclr") else -1 <= r["spearman"] <= 1)
    assert guided.maps.shape == (2, 16, 16) and list(guided.image_ids) == [str(i) for i in test.exemplars]
    assert guided.meta["options"]["n_trajectories"] == demo.IMPORTANCE_TRAJECTORIES and guided.meta["options"]["steps"] == 2
    critic = read_maps(cfg.out / "importance" / "protonet.npz")
    assert len(critic) == test.n_classes and critic.method == "critic-saliency"  # one drawing per test class
    assert not set(critic.image_ids.astype(int)) & set(test.exemplars)  # never the exemplar itself

    ink = json.loads((cfg.out / "importance" / "protonet_ink.json").read_text())
    assert ink["format"] == INK_FORMAT and len(ink["per_map"]["mass_on_ink"]) == test.n_classes
    assert 0 <= ink["mean"]["mass_on_ink"] <= 1 and ink["mean"]["ink_enrichment"] > 0
    # the strokes are known: each map's mass per stroke, one value per stroke of the drawing it explains
    strokes = ink["per_map"]["mass_per_stroke"]
    assert all(len(s) >= 1 and 0 <= sum(s) for s in strokes)

    # each recorded command rewrites the same files (diffusion maps and ink reports; the critic command
    # names the shipped critic, these tiny ones are not)
    commands = [c for c in record.commands if c.startswith("drawgap importance")]
    assert sum(c.startswith("drawgap importance maps critic") for c in commands) == 2
    assert sum(c.startswith("drawgap importance ink") and "--strokes" in c for c in commands) == 5
    diffusion = next(c for c in commands if "maps diffusion" in c)
    assert "--classes 2 " in diffusion and "--steps 2 " in diffusion and "--guidance 1 " in diffusion
    before = {s: read_maps(cfg.out / "importance" / f"{s}.npz").maps for s in sources[:3]}
    ink_before = (cfg.out / "importance" / "cfgdm.implicit_ink.json").read_text()
    for command in [diffusion, next(c for c in commands if "ink" in c and "cfgdm.implicit.npz" in c)]:
        assert cli(*command.split()[1:]).code == 0, command
    for s in sources[:3]:
        np.testing.assert_array_equal(read_maps(cfg.out / "importance" / f"{s}.npz").maps, before[s])
    assert json.loads(ink_before)["per_map"] == json.loads((cfg.out / "importance" / "cfgdm.implicit_ink.json").read_text())["per_map"]


def test_importance_stage_without_strokes(tmp_path, tiny_importance_inputs):
    """Omniglot has no stroke masks: the same maps and ink reports, without the per-stroke part."""
    cfg, record, paths = _run_stage(tmp_path, tiny_importance_inputs, data="omniglot")
    ink = json.loads((cfg.out / "importance" / "cfgdm.loss_grad_ink.json").read_text())
    assert "mass_per_stroke" not in ink["per_map"] and len(ink["per_map"]["mass_on_ink"]) == 2
    assert not any("--strokes" in c for c in record.commands)
    assert len(paths) == 10


def test_importance_classes_option_is_checked(tmp_path):
    cfg = demo.DemoConfig(out=tmp_path, importance_classes=-1)
    with pytest.raises(InputError, match="expected an integer >= 0") as err:
        cfg.check()
    assert err.value.field == "--importance-classes"
    demo.DemoConfig(out=tmp_path, importance_classes=0).check()


def test_recorded_commands_take_their_flags_from_the_cli():
    from drawgap.options import cli_command

    assert cli_command(["sample"], "runs/a b", per_exemplar=2, guidance="0,1", steps=None) == \
        "drawgap sample 'runs/a b' --per-exemplar 2 --guidance 0,1"
    assert cli_command(["train", "cfgdm"], data="d.npz", minutes=2.5, bf16=False, lr=1e-4) == \
        "drawgap train cfgdm --data d.npz --minutes 2.5 --no-bf16 --lr 0.0001"  # the family's own flags too
    assert cli_command(["importance", "maps", "diffusion"], "r", kind=["guided", "implicit"]) == \
        "drawgap importance maps diffusion r --kind guided --kind implicit"
    with pytest.raises(ValueError, match="has no option for 'per_drawing'"):
        cli_command(["sample"], "r", per_drawing=2)  # a renamed flag fails where the command is written
    with pytest.raises(ValueError, match="has no option for 'set_size'"):
        cli_command(["train", "cfgdm"], set_size=3)


# ------------------------------------------------------------------------------------------ quickdraw


@pytest.fixture
def quickdraw_stand_ins(tmp_path, monkeypatch):
    """Synthetic ndjson, the split record of its QuickDraw-FS build where drawgap keeps the shipped one, tiny
    untrained quickdraw-ddpm / quickdraw-cfgdm run directories and tiny untrained critics in the shipped ones' place."""
    import torch

    from drawgap.critics import ProtoNetCritic, SimCLRCritic
    from drawgap.data import quickdraw_fs
    from drawgap.data.quickdraw_fs import build_quickdraw_fs, quickdraw_fs_config, split_record
    from drawgap.io import write_json_atomic
    from tests.test_quickdraw import write_ndjson

    src = tmp_path / "ndjson"
    src.mkdir()
    shapes = {"a": ("circle", "cross"), "b": ("square", "zigzag"), "c": ("triangle", "circle"), "d": ("cross", "square"),
              "e": ("zigzag", "triangle")}
    for seed, (category, pair) in enumerate(shapes.items()):
        write_ndjson(src / f"{category}.ndjson", category, pair, 30, seed=seed)
    config = quickdraw_fs_config(["e", "c", "a", "d", "b"], min_cluster=25, test_fraction=0.3, seed=4)
    full = build_quickdraw_fs(config, source=src, progress=False)
    record = tmp_path / "split.json"
    write_json_atomic(record, split_record(full["test"], src))
    monkeypatch.setattr(quickdraw_fs, "SHIPPED_SPLIT", record)
    root = tmp_path / "shipped"
    for name in ("ddpm", "cfgdm"):
        create_generator(name, seed=0, image_size=48, denoiser=TINY_DENOISER).save(root / f"quickdraw-{name}")
    monkeypatch.setattr(demo, "SHIPPED_GENERATORS_DIR", root)
    torch.manual_seed(0)
    critics = (SimCLRCritic("omniglot", image_size=48), ProtoNetCritic("omniglot", image_size=48))
    asked = []
    monkeypatch.setattr(demo, "load_critics", lambda data: asked.append(data) or critics)
    return src, full, root, asked


def test_demo_on_quickdraw_rebuilds_the_shipped_test_split(cli, quickdraw_stand_ins, tmp_path):
    import shlex
    import shutil

    src, full, root, asked = quickdraw_stand_ins
    shutil.copytree(src, tmp_path / "every")
    for f in src.iterdir():  # the rebuild reads only the categories that hold test classes
        if not any(str(c).startswith(f"{f.stem}/") for c in full["test"].classes):
            f.unlink()
    out = tmp_path / "demo"
    r = cli("demo", "--data", "quickdraw", "--source", src, "--out", out, "--classes", 2, "--per-exemplar", 3,
            "--sampler-steps", 2, "--guidance", "0,2", "--queries", 10, "--bootstrap", 20, "--importance-classes", 1)
    assert r.code == 0, r
    assert asked == ["quickdraw"]  # the dataset's shipped critic pair, by its prefix
    assert "quickdraw: 7 train classes (not built" in r.out and "3 test classes" in r.out
    test = read_dataset(out / "data" / "test.npz")
    assert test.content_sha256() == full["test"].content_sha256()
    np.testing.assert_array_equal(test.exemplars, full["test"].exemplars)
    assert not (out / "data" / "train.npz").exists()
    record = json.loads((out / "demo.json").read_text())
    assert [s["stage"] for s in record["stages"]] == ["data", "generators", "sample", "evaluate", "importance", "report"]
    assert record["generators"]["cfgdm"] == {"source": "shipped", "name": "quickdraw-cfgdm",
                                             "dir": str(out / "generators" / "cfgdm")}
    build = next(c for c in record["commands"] if c.startswith("drawgap data quickdraw-fs"))
    assert "--categories e,c,a,d,b" in build and "--min-cluster 25" in build and "--seed 4" in build
    assert "--test-fraction 0.3" in build and "--selection" not in build  # the settings that differ from the CLI's defaults
    assert any(c.startswith("# human.npz") and "`drawgap data quickdraw-fs ... --as-samples`" in c for c in record["commands"])
    assert any(c.startswith("drawgap evaluate") and "--critics quickdraw" in c for c in record["commands"])
    assert [s["name"] for s in load_results(out).systems] == ["human", "CFGDM g=0", "CFGDM g=2", "DDPM"]
    human = json.loads((out / "metrics" / "human.json").read_text())
    assert human["per_class"]["classes"] == [str(c) for c in test.classes[:2]]
    # the recorded build command, with every category file back, writes the same test.npz (and a train.npz)
    shutil.copytree(tmp_path / "every", src, dirs_exist_ok=True)
    assert cli(*shlex.split(build)[1:]).code == 0
    assert read_dataset(out / "data" / "test.npz").content_sha256() == full["test"].content_sha256()
    assert read_dataset(out / "data" / "train.npz").content_sha256() == full["train"].content_sha256()


def test_demo_on_quickdraw_refuses_what_it_cannot_do(cli, quickdraw_stand_ins, tmp_path):
    src, _, root, _ = quickdraw_stand_ins
    no_source = cli("demo", "--data", "quickdraw", "--out", tmp_path / "a")
    assert no_source.code == 2 and "--source" in no_source.err, no_source
    train = cli("demo", "--data", "quickdraw", "--source", src, "--train", "--out", tmp_path / "b")
    assert train.code == 2 and "--train" in train.err, train
    (root / "quickdraw-ddpm" / "weights.safetensors").unlink()
    unshipped = cli("demo", "--data", "quickdraw", "--source", src, "--out", tmp_path / "c")
    assert unshipped.code == 2 and "quickdraw-ddpm" in unshipped.err, unshipped
    from drawgap.data import quickdraw_fs

    held = next(iter(quickdraw_fs.read_split_record(quickdraw_fs.SHIPPED_SPLIT)["files"]))
    other = src / f"{held}.ndjson"  # other drawings than the split was built from, in a file that holds test classes
    other.write_text(other.read_text().replace('"recognized": true', '"recognized": false', 1))
    (root / "quickdraw-ddpm").rename(root / "x")
    create_generator("ddpm", seed=0, image_size=48, denoiser=TINY_DENOISER).save(root / "quickdraw-ddpm")
    changed = cli("demo", "--data", "quickdraw", "--source", src, "--out", tmp_path / "d")
    assert changed.code == 2 and str(other) in changed.err and "built from" in changed.err, changed
    assert not any((tmp_path / d).exists() for d in "abc")
