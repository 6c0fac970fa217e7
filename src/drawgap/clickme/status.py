"""Progress of a running experiment: per stimulus, how often it was assigned, played and recognized."""

from __future__ import annotations

from sqlalchemy import case, func, select
from sqlalchemy.engine import Engine

from drawgap.clickme.db import AssignmentRow, ParticipantRow, StimulusRow, TrialRow


def stimulus_progress(engine: Engine) -> list[dict]:
    """One dict per (non-practice) stimulus: id, category, exemplar, assigned, done, recognized, timeout,
    skipped, mean_score (None before any trial), mean_points."""
    assigned = (select(AssignmentRow.stimulus_id, func.count().label("n")).where(AssignmentRow.practice.is_(False))
                .group_by(AssignmentRow.stimulus_id).subquery())

    def outcome(name):
        return func.coalesce(func.sum(case((TrialRow.outcome == name, 1), else_=0)), 0)

    played = (select(TrialRow.stimulus_id, func.count().label("done"), outcome("recognized").label("recognized"),
                     outcome("timeout").label("timeout"), outcome("skipped").label("skipped"),
                     func.avg(TrialRow.score).label("mean_score"), func.avg(TrialRow.n_points).label("mean_points"))
              .where(TrialRow.practice.is_(False)).group_by(TrialRow.stimulus_id).subquery())
    query = (select(StimulusRow.id, StimulusRow.category, StimulusRow.exemplar,
                    func.coalesce(assigned.c.n, 0), func.coalesce(played.c.done, 0),
                    func.coalesce(played.c.recognized, 0), func.coalesce(played.c.timeout, 0),
                    func.coalesce(played.c.skipped, 0), played.c.mean_score, played.c.mean_points)
             .outerjoin(assigned, assigned.c.stimulus_id == StimulusRow.id)
             .outerjoin(played, played.c.stimulus_id == StimulusRow.id)
             .where(StimulusRow.practice.is_(False)).order_by(StimulusRow.id))
    keys = ("id", "category", "exemplar", "assigned", "done", "recognized", "timeout", "skipped", "mean_score",
            "mean_points")
    with engine.connect() as conn:
        rows = [dict(zip(keys, r)) for r in conn.execute(query)]
    for r in rows:
        for k in ("assigned", "done", "recognized", "timeout", "skipped"):
            r[k] = int(r[k])
        r["exemplar"] = bool(r["exemplar"])
        for k in ("mean_score", "mean_points"):
            r[k] = None if r[k] is None else round(float(r[k]), 2)
    return rows


def totals(engine: Engine) -> dict:
    """participants: those who stored at least one trial (practice included); registered: every participant
    started, including those who never played (a start is free, so it says little); completed: every
    required trial stored; trials: non-practice trials stored."""
    with engine.connect() as conn:
        registered = conn.scalar(select(func.count()).select_from(ParticipantRow))
        played = conn.scalar(select(func.count(func.distinct(TrialRow.participant_pk))))
        completed = conn.scalar(select(func.count()).select_from(ParticipantRow).where(ParticipantRow.completed_at.is_not(None)))
        trials = conn.scalar(select(func.count()).select_from(TrialRow).where(TrialRow.practice.is_(False)))
    return {"participants": int(played), "registered": int(registered), "completed": int(completed), "trials": int(trials)}


def format_status(rows: list[dict], total: dict) -> str:
    """A plain-text table, one line per stimulus, and a summary line."""
    head = f"{'stimulus':<12} {'category':<24} {'assigned':>8} {'done':>5} {'recog':>5} {'timeout':>7} {'skip':>5} {'score':>6}"
    lines = [head]
    for r in rows:
        score = "-" if r["mean_score"] is None else f"{r['mean_score']:.1f}"
        mark = "*" if r["exemplar"] else " "
        lines.append(f"{r['id']:<11}{mark} {r['category'][:24]:<24} {r['assigned']:>8} {r['done']:>5} "
                     f"{r['recognized']:>5} {r['timeout']:>7} {r['skipped']:>5} {score:>6}")
    lines.append(f"{total['participants']} participants played ({total['completed']} completed; {total['registered']} "
                 f"started), {total['trials']} trials; "
                 "* = category exemplar")
    return "\n".join(lines)
