"""ClickMe's parts without a server: reveal, sequences, rate limit, token check, settings, stimuli
preparation, the CLI verbs, and the page sources (no inline scripts, no HTML built from data)."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from drawgap.clickme.config import GameConfig
from drawgap.clickme.partner import Partner, reveal, reveal_mask
from drawgap.clickme.security import RateLimiter, SharedRateLimiter, token_matches
from drawgap.clickme.sequence import balanced_sequence, participant_seed
from drawgap.clickme.stimuli import load_stimuli, prepare_stimuli
from drawgap.clickme.testing import make_test_dataset, make_test_stimuli
from drawgap.data.formats import write_dataset
from drawgap.errors import InputError

WEB = Path(__file__).parents[1] / "src" / "drawgap" / "clickme" / "web"


# ------------------------------------------------------------------------------------------ reveal


def test_reveal_mask_golden():
    # Brush 4 at (5, 2): columns 3..6, rows 0..3. At (0, 9) on a 10 px canvas: clipped to columns 0..1, rows 7..9.
    mask = reveal_mask([(5, 2, 0), (0, 9, 0)], size=10, brush_px=4)
    expected = np.zeros((10, 10), bool)
    expected[0:4, 3:7] = True
    expected[7:10, 0:2] = True
    np.testing.assert_array_equal(mask, expected)
    assert reveal_mask([], 8, 3).sum() == 0
    assert reveal_mask([(4, 4, 0)], 9, 3).sum() == 9  # odd brush: centred 3x3


def test_reveal_keeps_only_painted_ink():
    image = np.full((6, 6), 200, np.uint8)
    out = reveal(image, [(1, 1, 0)], brush_px=2)
    assert out.dtype == np.uint8 and out.sum() == 4 * 200 and (out[0:2, 0:2] == 200).all()


# ------------------------------------------------------------------------------------------ sequences


def test_balanced_sequence_golden_and_balance():
    stimuli = [(f"s{i}", f"c{i % 3}") for i in range(9)]
    shown = {f"s{i}": 1 for i in range(6)}  # s6, s7, s8 were never shown: they come first
    assert sorted(balanced_sequence(stimuli, shown, 3, seed=1)) == ["s6", "s7", "s8"]
    counts: dict[str, int] = {}
    for k in range(7):
        seq = balanced_sequence(stimuli, counts, 4, seed=k)
        assert len(set(seq)) == 4 and len({s[1:] and int(s[1:]) % 3 for s in seq}) == 3  # all categories
        for s in seq:
            counts[s] = counts.get(s, 0) + 1
        assert max(counts.values()) - min(counts.get(s, 0) for s, _ in stimuli) <= 1
    assert balanced_sequence(stimuli, {}, 4, seed=5) == balanced_sequence(stimuli, {}, 4, seed=5)
    assert balanced_sequence(stimuli, {}, 20, seed=0).__len__() == 9


def test_participant_seed_is_stable_and_distinct():
    assert participant_seed(0, "s", "p") == participant_seed(0, "s", "p")
    assert len({participant_seed(0, "s", "p"), participant_seed(1, "s", "p"), participant_seed(0, "s", "q"),
                participant_seed(0, "sp", "")}) == 4
    assert 0 <= participant_seed(0, "s", "p") < 2**63


# ------------------------------------------------------------------------------------------ guards


LIMITS = {"p": (2.0, 3), "total": (10.0, 4)}


def test_rate_limiter_golden():
    limiter = RateLimiter(LIMITS)
    assert [limiter.acquire([("p", "a")], now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire([("p", "a")], now=0.0) == pytest.approx(0.5)  # empty: one token every 0.5 s
    assert limiter.acquire([("p", "b")], now=0.0) == 0.0  # another participant has its own bucket
    assert limiter.acquire([("p", "a")], now=0.5) == 0.0
    assert limiter.acquire([("p", "a")], now=0.6) == pytest.approx(0.4)
    # Several buckets at once, all or nothing: "c" has tokens, the server's bucket (4) holds 1 after 3 costs 1...
    assert limiter.acquire([("p", "c"), ("total", None)], cost=3, now=1.0) == 0.0
    assert limiter.acquire([("p", "d"), ("total", None)], cost=2, now=1.0) == pytest.approx(0.1)  # total: 1 of 2
    assert limiter.acquire([("p", "d")], cost=3, now=1.0) == 0.0  # ...and the refusal spent nothing of d's
    assert limiter.acquire([("p", "e")], cost=9, now=1.0) == 0.0  # a cost over the burst is capped at the burst


def test_shared_rate_limiter_gives_every_process_one_budget(tmp_path):
    # Two limiters on one file, as two server processes map it: the golden sequence above, spread over both.
    a = SharedRateLimiter.create(tmp_path / "limits.bin", LIMITS, slots=64)
    b = SharedRateLimiter(tmp_path / "limits.bin", LIMITS)
    acq = lambda lim, key, now, cost=1: lim.acquire([("p", key)], cost, now=now)  # noqa: E731
    assert [acq(a, "a", 0.0), acq(b, "a", 0.0), acq(a, "a", 0.0)] == [0.0, 0.0, 0.0]
    assert acq(b, "a", 0.0) == pytest.approx(0.5)  # the bucket is empty for both
    assert acq(a, "b", 0.0) == 0.0
    assert acq(b, "a", 0.5) == 0.0 and acq(a, "a", 0.6) == pytest.approx(0.4)
    assert a.acquire([("p", "c"), ("total", None)], 3, now=1.0) == 0.0
    assert b.acquire([("p", "d"), ("total", None)], 2, now=1.0) == pytest.approx(0.1)
    assert b.acquire([("p", "d")], 3, now=1.0) == 0.0
    a.close(), b.close()
    # A restart writes a fresh file over the old one.
    fresh = SharedRateLimiter.create(tmp_path / "limits.bin", LIMITS, slots=64)
    assert acq(fresh, "a", 0.6) == 0.0
    fresh.close()

    # Real processes racing on one key: exactly `burst` requests get through at one instant.
    import multiprocessing as mp

    SharedRateLimiter.create(tmp_path / "race.bin", {"p": (1.0, 25)}).close()
    ctx = mp.get_context("fork")
    with ctx.Pool(4) as pool:
        allowed = sum(pool.map(_allowed_in_a_burst, [str(tmp_path / "race.bin")] * 4))
    assert allowed == 25  # 4 processes x 20 tries; separate limiters would have let 4 x 20 = 80 through


def _allowed_in_a_burst(path: str) -> int:
    limiter = SharedRateLimiter(path, {"p": (1.0, 25)})
    try:
        return sum(limiter.acquire([("p", "study/p")], now=1000.0) == 0.0 for _ in range(20))
    finally:
        limiter.close()


def test_token_matches():
    assert token_matches("tok", "Bearer tok") and token_matches("tok", "bearer tok")
    assert not token_matches("tok", None) and not token_matches("tok", "Bearer to")
    assert not token_matches("tok", "Basic tok") and not token_matches("tok", "Bearer")


def test_config_checks_ranges():
    assert GameConfig().public() == {"canvas_size": 256, "brush_px": 14, "time_limit_s": 7.0, "sample_interval_ms": 10,
                                     "points_per_query": 10, "max_points_per_trial": 3000}
    assert GameConfig().partner_nothing_yet is True
    with pytest.raises(InputError, match="partner_nothing_yet"):
        GameConfig(partner_nothing_yet="no")
    with pytest.raises(InputError, match="brush_px"):
        GameConfig(brush_px=0)
    with pytest.raises(InputError, match="time_limit_s"):
        GameConfig(time_limit_s=0.1)
    with pytest.raises(InputError, match="completion_code"):
        GameConfig(completion_code="<b>")


# ------------------------------------------------------------------------------------------ stimuli


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return make_test_stimuli(tmp_path_factory.mktemp("stimuli"), n_classes=4, per_class=5, per_category=3, practice=2)


def test_prepare_stimuli_writes_manifest_pngs_and_partner(prepared):
    manifest = json.loads((prepared / "manifest.json").read_text())
    assert manifest["format"] == "drawgap.clickme-stimuli/1" and manifest["canvas_size"] == 256
    assert manifest["categories"] == ["shape00", "shape01", "shape02", "shape03"]
    s = load_stimuli(prepared)
    assert len(s.stimuli) == 12 and len(s.practice) == 2
    for c in range(4):
        mine = [x for x in s.stimuli if x.category_index == c]
        assert mine[0].exemplar and mine[0].source_index == c * 5  # the exemplar first
        assert not any(x.exemplar for x in mine[1:]) and len({x.source_index for x in mine}) == 3
        assert all(c * 5 <= x.source_index < c * 5 + 5 for x in mine)
    used = {x.source_index for x in s.stimuli}
    assert all(p.source_index not in used for p in s.practice)  # practice drawings are never trials
    img = s.image("c000-00")
    assert img.shape == (256, 256) and img.dtype == np.uint8 and img.max() > 200 and img[0, 0] == 0  # white on black
    with Image.open(prepared / "images" / "c000-00.png") as im:
        assert im.size == (256, 256) and im.mode == "L"
    with np.load(prepared / "partner" / "support.npz") as z:
        assert z["embeddings"].shape == (4, 128) and list(z["classes"]) == manifest["categories"]
    assert (prepared / "partner" / "critic" / "model.safetensors").is_file()
    assert manifest["provenance"]["seed"] == 0 and "versions" in manifest["provenance"]
    # what the partner answers before anyone plays, recomputed from the saved partner
    from drawgap.clickme.partner import Partner

    partner = Partner.load(prepared)
    guesses = partner.guess(np.stack([s.image(x.id) for x in s.stimuli]), [x.category for x in s.stimuli])
    blank = partner.guess(np.zeros((1, 256, 256), np.uint8), [""])[0]
    check = manifest["partner_check"]
    assert check["fully_revealed_correct"] == sum(g.correct for g in guesses) and check["stimuli"] == 12
    assert check["exemplars_correct"] == 4 == check["exemplars"]  # an exemplar sits on its own prototype
    assert check["blank_canvas"] == {"guess": None, "probability": round(blank.probability, 4)} and blank.nothing_yet
    assert check["fully_revealed_nothing_yet"] == sum(g.nothing_yet for g in guesses) == 0


class FirstPixelCritic:
    """A critic whose embedding of a drawing is its top-left pixel's value (a 1-D embedding), with the ProtoNet's
    logits (minus squared distances): distances that can be worked out by hand."""

    @staticmethod
    def embed(images):
        import torch

        return torch.as_tensor(np.asarray(images, dtype=np.float32)[:, :1, 0])

    @staticmethod
    def logits(query, support):
        return -((query[:, None, :] - support[None, :, :]) ** 2).sum(-1)


def test_partner_names_a_category_only_when_strictly_nearer_than_the_blank_canvas_golden():
    import torch

    # The blank canvas embeds at 0; prototypes "near" at 2 and "far" at 10. A drawing at 1 is exactly halfway
    # between the blank and "near" (squared distances 1 and 1): a tie answers "nothing yet".
    partner = Partner(FirstPixelCritic(), torch.tensor([[2.0], [10.0]]), ["near", "far"])
    canvases = np.zeros((5, 4, 4), np.uint8)
    canvases[:, 0, 0] = [0, 1, 2, 6, 9]
    truth = ["near", "near", "near", "near", "far"]
    guesses = partner.guess(canvases, truth)
    assert [g.category for g in guesses] == [None, None, "near", "near", "far"]  # 6: a tie of categories, the first
    assert [g.correct for g in guesses] == [False, False, True, True, True]
    assert guesses[0].nothing_yet and guesses[0].category_index is None and not guesses[2].nothing_yet
    # the probability is the answer's softmax share among the categories and "nothing yet": at 1, logits -1
    # (near), -81 (far), -1 (blank)
    expected = np.exp(-1) / (2 * np.exp(-1) + np.exp(-81))
    assert guesses[1].probability == pytest.approx(expected, rel=1e-6)
    blank_share = 1 / (1 + np.exp(-4) + np.exp(-100))  # at 0: logits -4 (near), -100 (far), 0 (blank)
    assert guesses[0].to_json() == {"guess": None, "probability": round(blank_share, 4), "correct": False}
    # without the rule: the nearest category whatever the evidence (the blank canvas is "near")
    assert [g.category for g in partner.guess(canvases, truth, nothing_yet=False)] == ["near", "near", "near", "near", "far"]


def test_partner_gives_no_category_on_a_blank_or_background_only_canvas(prepared):
    s = load_stimuli(prepared)
    partner = Partner.load(prepared)
    blank = np.zeros((1, 256, 256), np.uint8)
    assert partner.guess(blank, ["shape00"], nothing_yet=False)[0].category is not None  # the flaw, without the rule
    assert partner.guess(blank, ["shape00"])[0].nothing_yet
    # Paint only where no stimulus has ink: what is revealed is the blank canvas, for every stimulus.
    ink = np.stack([s.image(x.id) for x in s.stimuli]).max(axis=0) > 0
    grid = [(x, y, 0) for y in range(7, 256, 14) for x in range(7, 256, 14)]
    points = [p for p in grid if not (reveal_mask([p], 256, 14) & ink).any()]
    assert len(points) >= 100
    guesses = partner.guess_points([(s.image(x.id), points, x.category) for x in s.stimuli], brush_px=14)
    assert all(g.nothing_yet and not g.correct for g in guesses)
    assert all(g.nothing_yet for g in partner.guess_points([(s.image(x.id), [], x.category) for x in s.stimuli], 14))


def test_partner_answers_fully_revealed_drawings_as_the_nearest_prototype_did(prepared):
    """The rule only withholds answers: on every fully revealed drawing the answer is the nearest category
    prototype, as it always was (the manifest's partner_check counts do not move)."""
    s = load_stimuli(prepared)
    partner = Partner.load(prepared)
    images = np.stack([s.image(x.id) for x in s.stimuli])
    nearest = partner.critic.logits(partner.critic.embed(images), partner.support).argmax(dim=1).tolist()
    guesses = partner.guess(images, [x.category for x in s.stimuli])
    assert [g.category for g in guesses] == [partner.classes[i] for i in nearest]
    assert sum(g.correct for g in guesses) == s.manifest["partner_check"]["fully_revealed_correct"] == 12
    assert s.manifest["partner_check"]["fully_revealed_nothing_yet"] == 0


def test_prepare_stimuli_refuses_bad_requests(tmp_path, prepared):
    dataset = write_dataset(make_test_dataset(3, 4), tmp_path / "d.npz")
    critic = prepared.parent / "critic"
    with pytest.raises(InputError, match="unknown"):
        prepare_stimuli(dataset, tmp_path / "a", categories=["shape00", "zebra"], critic=critic)
    with pytest.raises(InputError, match="at least 5 drawings"):
        prepare_stimuli(dataset, tmp_path / "b", per_category=5, critic=critic)
    with pytest.raises(InputError, match="new or empty directory"):
        prepare_stimuli(dataset, prepared, per_category=2, critic=critic)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind
    with pytest.raises(InputError, match="manifest.json"):
        load_stimuli(tmp_path)


# ------------------------------------------------------------------------------------------ CLI


def test_cli_stimuli_status_and_export(cli, tmp_path, prepared):
    dataset = write_dataset(make_test_dataset(3, 4), tmp_path / "d.npz")
    r = cli("clickme", "stimuli", dataset, "--out", tmp_path / "st", "--categories", "shape02,shape00",
            "--per-category", "2", "--critic", prepared.parent / "critic")
    assert r.code == 0, r
    assert "2 categories, 4 drawings + 1 practice" in r.out
    assert load_stimuli(tmp_path / "st").categories == ["shape02", "shape00"]

    # A database written by the server's store: one participant, one trial.
    from drawgap.clickme.db import make_engine
    from drawgap.clickme.store import ClickMeStore, TrialRecord

    db = tmp_path / "c.sqlite3"
    store = ClickMeStore(make_engine(db), load_stimuli(tmp_path / "st"), GameConfig(trials_per_participant=2))
    store.sync_stimuli()
    info, _ = store.create_participant("s", "p")
    store.create_participant("s", "never-played")
    store.record_trial(TrialRecord(str(uuid.uuid4()), "s", "p", False, 0, info.trials[0], [[1, 2, 3], [4, 5, 6]], [],
                                   "skipped", 0.0, 100), info)
    r = cli("clickme", "status", "--db", db)
    assert r.code == 0 and "1 participants played (0 completed; 2 started), 1 trials" in r.out
    status = json.loads(cli("clickme", "status", "--db", db, "--json").out)
    assert sum(s["done"] for s in status["stimuli"]) == 1 and sum(s["skipped"] for s in status["stimuli"]) == 1
    r = cli("clickme", "export", "--db", db, "--out", tmp_path / "clicks.npz")
    assert r.code == 0 and "1 trials, 2 points" in r.out
    with np.load(tmp_path / "clicks.npz") as z:
        assert z["x"].tolist() == [1, 4] and z["y"].tolist() == [2, 5] and z["t"].tolist() == [3, 6]

    r = cli("clickme", "status", "--db", tmp_path / "missing.sqlite3")
    assert r.code == 2 and "no such database file" in r.err
    r = cli("clickme", "stimuli", dataset, "--out", tmp_path / "x", "--per-category", "2", "--critic", tmp_path / "nope")
    assert r.code == 2 and "critic" in r.err
    (tmp_path / "empty.txt").write_text("# A title and nothing else\n")
    r = cli("clickme", "serve", tmp_path / "st", "--db", db, "--consent", tmp_path / "empty.txt")
    assert r.code == 2 and "empty.txt" in r.err and "consent" in r.err and "paragraph" in r.err
    # A database collected with another brush is not reused with different settings.
    with pytest.raises(InputError, match="brush_px=14"):
        ClickMeStore(make_engine(db), load_stimuli(tmp_path / "st"), GameConfig(brush_px=20)).sync_stimuli()


# ------------------------------------------------------------------------------------------ page sources


def test_page_has_no_inline_script_and_builds_no_html_from_data():
    html = (WEB / "src" / "index.html").read_text()
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, flags=re.S)
    assert scripts and all('src="' in attrs and body.strip() == "" for attrs, body in scripts)
    assert not re.search(r"\son[a-z]+\s*=", html), "inline event handler"
    for js in (WEB / "src").glob("*.js"):
        text = js.read_text()
        assert "innerHTML" not in text and "insertAdjacentHTML" not in text and "eval(" not in text, js.name
    lock = json.loads((WEB / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/jspsych"]["version"].startswith("8.")


def test_consent_text_file_and_its_checks(tmp_path):
    from drawgap.clickme.config import read_consent

    path = tmp_path / "consent.txt"
    path.write_text("# Étude 7: consent\n\nFirst paragraph,\nwrapped.\n\n\n<b>Second</b> one.\n", encoding="utf-8")
    text = read_consent(path)
    assert text == {"consent_title": "Étude 7: consent", "consent_paragraphs": ("First paragraph, wrapped.", "<b>Second</b> one.")}
    config = GameConfig(**text)
    assert config.consent()["paragraphs"] == ["First paragraph, wrapped.", "<b>Second</b> one."]
    assert GameConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config  # survives the settings table
    assert GameConfig().consent()["sha256"] != config.consent()["sha256"]
    path.write_text("no title, one paragraph")
    assert read_consent(path) == {"consent_title": "Consent to take part", "consent_paragraphs": ("no title, one paragraph",)}
    for bad, says in (("# Title only\n\n", "paragraph"), ("x" * 20_001, "20,000")):
        path.write_text(bad)
        with pytest.raises(InputError, match=says) as err:
            read_consent(path)
        assert "consent.txt" in str(err.value)
    path.write_bytes(b"\xff\xfe bad")
    with pytest.raises(InputError, match="UTF-8"):
        read_consent(path)
    with pytest.raises(InputError, match="consent"):
        GameConfig(consent_paragraphs=())


def test_a_database_of_another_schema_is_refused_before_serving(tmp_path, cli):
    import sqlite3

    from drawgap.clickme.db import make_engine

    db = tmp_path / "old.sqlite3"
    make_engine(db).dispose()
    with sqlite3.connect(db) as conn:  # a "settings" table as an older version might have made it
        conn.execute("DROP TABLE settings")
        conn.execute("CREATE TABLE settings (key VARCHAR(64) PRIMARY KEY)")
    before = db.read_bytes()
    with pytest.raises(InputError, match=r"table 'settings' lacks columns \['value'\]") as err:
        make_engine(db)
    assert "old.sqlite3" in str(err.value) and db.read_bytes() == before  # refused, and left as it was
    r = cli("clickme", "status", "--db", db)
    assert r.code == 2 and "lacks columns" in r.err


# ------------------------------------------------------------------------------------ stimuli from ndjson


def test_cli_stimuli_straight_from_quickdraw_ndjson(cli, tmp_path, prepared):
    """`--source DIR --categories clickme`: the paper's 25 categories from ndjson files, one class each, the Eq. 1
    exemplar first, the drawings kept as drawings.npz; a missing category stops before anything is written."""
    from drawgap.clickme.stimuli import CLICKME_CATEGORIES, upsample
    from drawgap.data.exemplars import pixel_space_exemplars
    from drawgap.data.formats import read_dataset
    from drawgap.data.quickdraw import NdjsonDrawings, rasterize
    from tests.test_quickdraw import SHAPES, write_ndjson

    assert len(CLICKME_CATEGORIES) == 25 and {"cat", "pizza"} <= set(CLICKME_CATEGORIES)
    assert "cat head" not in CLICKME_CATEGORIES and "pizza slice" not in CLICKME_CATEGORIES
    src = tmp_path / "ndjson"
    src.mkdir()
    for k, category in enumerate(CLICKME_CATEGORIES):  # 4 drawings of one shape per category
        write_ndjson(src / f"{category}.ndjson", category, [SHAPES[k % len(SHAPES)]], 4, seed=k)
    critic = prepared.parent / "critic"
    r = cli("clickme", "stimuli", "--source", src, "--categories", "clickme", "--per-category", 3, "--critic", critic,
            "--out", tmp_path / "st", "--workers", 1)
    assert r.code == 0, r
    assert "25 categories, 75 drawings + 1 practice" in r.out and "drawings.npz" in r.out
    assert "of 75 fully revealed drawings (25 of 25 exemplars; 0 answered 'nothing yet'); on a blank canvas it " \
           "answers 'nothing yet' (p " in r.out
    s = load_stimuli(tmp_path / "st")
    assert s.categories == list(CLICKME_CATEGORIES)
    drawings = read_dataset(tmp_path / "st" / "drawings.npz")
    assert list(drawings.classes) == list(CLICKME_CATEGORIES) and drawings.image_size == 48
    assert s.manifest["dataset"]["path"] == "drawings.npz" and s.manifest["dataset"]["source"] == str(src)
    # the pizza class holds the file's drawings rendered at 48 px, in file order; its exemplar is Eq. 1's
    pizza = CLICKME_CATEGORIES.index("pizza")
    rendered = rasterize(NdjsonDrawings(src / "pizza.ndjson"), 48)
    np.testing.assert_array_equal(drawings.images_of(pizza), rendered)
    eq1 = pixel_space_exemplars(rendered, np.zeros(4, np.int64))[0]
    first = next(x for x in s.stimuli if x.category == "pizza")
    assert first.exemplar and first.source_index == drawings.exemplars[pizza] == pizza * 4 + eq1
    np.testing.assert_array_equal(s.image(first.id), upsample(rendered[eq1:eq1 + 1], 256)[0])

    # the same names given one by one, in another order; and the default with --source is clickme
    r = cli("clickme", "stimuli", "--source", src, "--categories", "pizza,cat", "--per-category", 2, "--critic", critic,
            "--out", tmp_path / "two", "--workers", 1)
    assert r.code == 0 and load_stimuli(tmp_path / "two").categories == ["pizza", "cat"], r
    (src / "saw.ndjson").unlink()
    r = cli("clickme", "stimuli", "--source", src, "--per-category", 2, "--critic", critic, "--out", tmp_path / "x")
    assert r.code == 2 and "saw" in r.err and str(src) in r.err, r
    r = cli("clickme", "stimuli", tmp_path / "st" / "drawings.npz", "--source", src, "--critic", critic, "--out", tmp_path / "y")
    assert r.code == 2 and "--source" in r.err, r
    r = cli("clickme", "stimuli", "--source", src, "--categories", "cat", "--critic", tmp_path / "nope", "--out", tmp_path / "z")
    assert r.code == 2 and "critic" in r.err, r
    assert not any((tmp_path / d).exists() for d in ("x", "y", "z"))
