"""Export of the game's clicks to one `.npz` file, the input of human importance maps.

Format `drawgap.clicks/1` (written by `export_clicks`, read back and checked by `read_clicks`). P painted
points, T trials; practice trials are left out unless asked for.

Per point, in trial order then painting order:
    x, y         int16 [P]  pixel of the point on the canvas (0 .. canvas_size - 1; origin top-left)
    t            int32 [P]  milliseconds since the drawing appeared
    trial        int32 [P]  row of the point's trial in the per-trial arrays
    participant  int32 [P]  index into `participant_ids`
    image        int32 [P]  index into `image_ids`
    category     int32 [P]  index into `categories`
Per trial:
    trial_ids str [T] (the client's UUIDs), trial_participant / trial_image / trial_category int32 [T] (same
    indices as above), trial_outcome str [T] (recognized | timeout | skipped), trial_score float32 [T],
    trial_duration_ms int32 [T], trial_n_points int32 [T], trial_practice bool [T]
Lookup tables:
    participant_ids str [Np]  "<study_id>/<participant_id>" (pseudonymous platform ids, nothing else)
    participant_consent int32 [Np]  index into meta "consent_versions" of the text each agreed to (-1:
                              unknown; absent in files from before it was added)
    image_ids str [Ni]        stimulus ids of the stimuli directory (`images/<id>.png`)
    image_category int32 [Ni], image_source_index int64 [Ni] (index of the drawing in the source dataset
                              file), image_exemplar bool [Ni] (the category's exemplar)
    categories str [Nc]
meta: JSON {"format": "drawgap.clicks/1", "canvas_size", "brush_px", "time_limit_s", "n_points",
            "n_trials", "include_practice", "database" (URL without password), "game" (server settings
            when known), "consent_versions" (every consent text shown, oldest first, each with its sha256
            and the time a server first showed it), "effort" (the plausible-effort thresholds of the
            completion code, when known), "provenance"}

A map for image i: the points with `image == i`; each point revealed a `brush_px` square around (x, y).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.engine import Engine

from drawgap.clickme.db import ClickRow, ParticipantRow, SettingRow, StimulusRow, TrialRow
from drawgap.errors import InputError
from drawgap.io import savez_atomic
from drawgap.provenance import provenance

CLICKS_FORMAT = "drawgap.clicks/1"
POINT_KEYS = ("x", "y", "t", "trial", "participant", "image", "category")
TRIAL_KEYS = ("trial_ids", "trial_participant", "trial_image", "trial_category", "trial_outcome", "trial_score",
              "trial_duration_ms", "trial_n_points", "trial_practice")
TABLE_KEYS = ("participant_ids", "image_ids", "image_category", "image_source_index", "image_exemplar", "categories")


def collect_clicks(engine: Engine, include_practice: bool = False) -> dict[str, np.ndarray]:
    """The arrays of the format above (without meta), read from the database in one snapshot."""
    with engine.connect() as conn, conn.begin():
        stimuli = conn.execute(select(StimulusRow.id, StimulusRow.category, StimulusRow.source_index,
                                      StimulusRow.exemplar).order_by(StimulusRow.id)).all()
        trial_query = (select(TrialRow.id, ParticipantRow.study_id, ParticipantRow.participant_id, TrialRow.stimulus_id,
                              TrialRow.outcome, TrialRow.score, TrialRow.duration_ms, TrialRow.n_points,
                              TrialRow.practice)
                       .join(ParticipantRow, ParticipantRow.pk == TrialRow.participant_pk)
                       .order_by(TrialRow.received_at, TrialRow.id))
        if not include_practice:
            trial_query = trial_query.where(TrialRow.practice.is_(False))
        trials = conn.execute(trial_query).all()
        click_query = (select(ClickRow.trial_id, ClickRow.x, ClickRow.y, ClickRow.t_ms)
                       .join(TrialRow, TrialRow.id == ClickRow.trial_id).order_by(ClickRow.trial_id, ClickRow.idx))
        if not include_practice:
            click_query = click_query.where(TrialRow.practice.is_(False))
        clicks = conn.execute(click_query).all()

    categories = sorted({s.category for s in stimuli})
    cat_index = {c: i for i, c in enumerate(categories)}
    image_index = {s.id: i for i, s in enumerate(stimuli)}
    participants = sorted({f"{t.study_id}/{t.participant_id}" for t in trials})
    part_index = {p: i for i, p in enumerate(participants)}
    row_of = {t.id: k for k, t in enumerate(trials)}
    stim_category = {s.id: cat_index[s.category] for s in stimuli}

    t_part = np.array([part_index[f"{t.study_id}/{t.participant_id}"] for t in trials], dtype=np.int32)
    t_image = np.array([image_index[t.stimulus_id] for t in trials], dtype=np.int32)
    t_cat = np.array([stim_category[t.stimulus_id] for t in trials], dtype=np.int32)

    # Points grouped by trial, trials in export order.
    by_trial: dict[str, list] = {}
    for c in clicks:
        by_trial.setdefault(c.trial_id, []).append(c)
    ordered = [c for t in trials for c in by_trial.get(t.id, [])]
    point_trial = np.array([row_of[c.trial_id] for c in ordered], dtype=np.int32)
    return {
        "x": np.array([c.x for c in ordered], dtype=np.int16),
        "y": np.array([c.y for c in ordered], dtype=np.int16),
        "t": np.array([c.t_ms for c in ordered], dtype=np.int32),
        "trial": point_trial,
        "participant": t_part[point_trial] if len(point_trial) else np.zeros(0, np.int32),
        "image": t_image[point_trial] if len(point_trial) else np.zeros(0, np.int32),
        "category": t_cat[point_trial] if len(point_trial) else np.zeros(0, np.int32),
        "trial_ids": np.array([t.id for t in trials], dtype=str),
        "trial_participant": t_part,
        "trial_image": t_image,
        "trial_category": t_cat,
        "trial_outcome": np.array([t.outcome for t in trials], dtype=str),
        "trial_score": np.array([t.score for t in trials], dtype=np.float32),
        "trial_duration_ms": np.array([t.duration_ms for t in trials], dtype=np.int32),
        "trial_n_points": np.array([t.n_points for t in trials], dtype=np.int32),
        "trial_practice": np.array([bool(t.practice) for t in trials], dtype=bool),
        "participant_ids": np.array(participants, dtype=str),
        "image_ids": np.array([s.id for s in stimuli], dtype=str),
        "image_category": np.array([cat_index[s.category] for s in stimuli], dtype=np.int32),
        "image_source_index": np.array([s.source_index for s in stimuli], dtype=np.int64),
        "image_exemplar": np.array([bool(s.exemplar) for s in stimuli], dtype=bool),
        "categories": np.array(categories, dtype=str),
    }


def stored_game(engine: Engine) -> dict:
    """The game settings the server recorded in the database (empty before any server ran on it)."""
    with engine.connect() as conn:
        value = conn.scalar(select(SettingRow.value).where(SettingRow.key == "game"))
    return dict(value or {})


def effort_thresholds(game: dict) -> dict | None:
    """The completion code's plausible-effort thresholds of the server's settings (None before they existed)."""
    if "effort_min_trial_ms" not in game:
        return None
    from drawgap.clickme.config import GameConfig

    return GameConfig.from_dict(game).effort()


def stored_consents(engine: Engine) -> list[dict]:
    """Every consent text shown with this database, oldest first: title, paragraphs, sha256, first_served."""
    with engine.connect() as conn:
        value = conn.scalar(select(SettingRow.value).where(SettingRow.key == "consent_versions"))
    return list((value or {}).get("versions", []))


def consent_of_participants(engine: Engine, participant_ids, versions: list[dict]) -> np.ndarray:
    """For each "<study>/<participant>", the index in `versions` of the consent text they agreed to: the
    newest one first shown before their `consented_at` (-1 when none was recorded, e.g. an older database)."""
    def utc(t: dt.datetime) -> dt.datetime:
        return t.replace(tzinfo=dt.timezone.utc) if t.tzinfo is None else t  # SQLite returns naive UTC

    shown = [utc(dt.datetime.fromisoformat(v["first_served"])) for v in versions]
    with engine.connect() as conn:
        consented = {f"{r.study_id}/{r.participant_id}": utc(r.consented_at) for r in conn.execute(
            select(ParticipantRow.study_id, ParticipantRow.participant_id, ParticipantRow.consented_at))}
    index = [max((k for k, t in enumerate(shown) if t <= consented[p]), default=-1) for p in participant_ids]
    return np.array(index, dtype=np.int32)


def export_clicks(engine: Engine, out: str | os.PathLike, *, include_practice: bool = False) -> dict:
    """Write the clicks file; return its meta."""
    arrays = collect_clicks(engine, include_practice)
    versions = stored_consents(engine)
    arrays["participant_consent"] = consent_of_participants(engine, arrays["participant_ids"], versions)
    game = stored_game(engine)
    meta = {
        "format": CLICKS_FORMAT,
        "canvas_size": game.get("canvas_size", 256),
        "brush_px": game.get("brush_px", 14),
        "time_limit_s": game.get("time_limit_s", 7.0),
        "n_points": int(len(arrays["x"])),
        "n_trials": int(len(arrays["trial_ids"])),
        "include_practice": include_practice,
        "database": engine.url.render_as_string(hide_password=True),
        "game": game,
        "consent_versions": versions,
        "effort": effort_thresholds(game),
        "provenance": provenance({"include_practice": include_practice}, None),
    }
    savez_atomic(out, meta=np.array(json.dumps(meta, sort_keys=True)), **arrays)
    return meta


def read_clicks(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, meta) of a clicks file, checked: keys present, lengths agree, indices in range."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path=path)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    for k in (*POINT_KEYS, *TRIAL_KEYS, *TABLE_KEYS, "meta"):
        if k not in arrays:
            raise InputError("missing key", path=path, field=k)
    meta = json.loads(str(arrays.pop("meta")))
    if meta.get("format") != CLICKS_FORMAT:
        raise InputError(f"expected format {CLICKS_FORMAT!r}, got {meta.get('format')!r}", path=path, field="meta.format")
    n_points, n_trials = len(arrays["x"]), len(arrays["trial_ids"])
    for k in POINT_KEYS:
        if len(arrays[k]) != n_points:
            raise InputError(f"expected {n_points} values (one per point), got {len(arrays[k])}", path=path, field=k)
    for k in TRIAL_KEYS:
        if len(arrays[k]) != n_trials:
            raise InputError(f"expected {n_trials} values (one per trial), got {len(arrays[k])}", path=path, field=k)
    if "participant_consent" in arrays and len(arrays["participant_consent"]) != len(arrays["participant_ids"]):
        raise InputError(f"expected {len(arrays['participant_ids'])} values (one per participant), got "
                         f"{len(arrays['participant_consent'])}", path=path, field="participant_consent")
    bounds = {"trial": n_trials, "participant": len(arrays["participant_ids"]), "image": len(arrays["image_ids"]),
              "category": len(arrays["categories"])}
    for k, n in bounds.items():
        if n_points and (arrays[k].min() < 0 or arrays[k].max() >= n):
            raise InputError(f"expected indices in 0..{n - 1}", path=path, field=k)
    size = int(meta.get("canvas_size", 256))
    for k in ("x", "y"):
        if n_points and (arrays[k].min() < 0 or arrays[k].max() >= size):
            raise InputError(f"expected pixels in 0..{size - 1}", path=path, field=k)
    return arrays, meta
