"""Request bodies of the game's API (pydantic) and the checks that depend on the game's settings.

Types are strict (a coordinate must be a JSON integer, not "12" or 12.5); unknown fields are refused.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StringConstraints

from drawgap.clickme.config import ID_PATTERN, MAX_POINTS, MAX_TIME_LIMIT_MS, GameConfig

Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
StimulusId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
# Clocks differ a little between page and server; a trial may end this long after the limit.
TIME_SLACK_MS = 2000
Point = tuple[StrictInt, StrictInt, StrictInt]  # x, y (canvas pixels), t (ms since the drawing appeared)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParticipantIn(_Body):
    study_id: Id
    participant_id: Id
    consent: Literal[True] = Field(description="the participant agreed to the consent form")


class PartnerIn(_Body):
    study_id: Id
    participant_id: Id
    trial_id: uuid.UUID
    stimulus_id: StimulusId
    points: list[Point]


class PartnerAnswer(_Body):
    # Static bounds (no more points than any config allows, no later than the longest time limit); the
    # game's own limits are checked in `trial_problems`.
    n_points: Annotated[int, Field(ge=0, le=MAX_POINTS, strict=True)]
    t: Annotated[int, Field(ge=0, le=MAX_TIME_LIMIT_MS + TIME_SLACK_MS, strict=True)]
    guess: Annotated[str, StringConstraints(max_length=256)] | None  # None: the partner answered "nothing yet"
    correct: StrictBool
    proof: Annotated[str, StringConstraints(max_length=64)] | None = None  # the server's signature on a correct answer


class TrialIn(_Body):
    trial_id: uuid.UUID
    study_id: Id
    participant_id: Id
    practice: StrictBool = False
    position: Annotated[int, Field(ge=0, strict=True)]
    stimulus_id: StimulusId
    points: list[Point]
    partner: list[PartnerAnswer]
    outcome: Literal["recognized", "timeout", "skipped"]
    score: Annotated[float, Field(ge=0, le=100)]
    duration_ms: Annotated[int, Field(ge=0, strict=True)]




def point_problems(points: list, config: GameConfig, max_t_ms: int) -> str | None:
    """Why these points are not acceptable, or None: count, canvas bounds, time range and order."""
    if len(points) > config.max_points_per_trial:
        return f"points: at most {config.max_points_per_trial} points per trial, got {len(points)}"
    size = config.canvas_size
    last_t = 0
    for i, (x, y, t) in enumerate(points):
        if not (0 <= x < size and 0 <= y < size):
            return f"points[{i}]: ({x}, {y}) is outside the {size}x{size} canvas"
        if not (0 <= t <= max_t_ms):
            return f"points[{i}]: t={t} ms is outside 0..{max_t_ms} ms"
        if t < last_t:
            return f"points[{i}]: t={t} ms is earlier than the point before ({last_t} ms)"
        last_t = t
    return None


def trial_problems(trial: TrialIn, config: GameConfig) -> str | None:
    """Why this finished trial is not acceptable, or None."""
    limit = config.time_limit_ms + TIME_SLACK_MS
    if trial.duration_ms > limit:
        return f"duration_ms: {trial.duration_ms} is over the time limit ({config.time_limit_ms} ms + {TIME_SLACK_MS} ms)"
    problem = point_problems(trial.points, config, trial.duration_ms + TIME_SLACK_MS)
    if problem:
        return problem
    if len(trial.partner) > config.max_partner_answers:
        return f"partner: at most {config.max_partner_answers} answers, got {len(trial.partner)}"
    for i, answer in enumerate(trial.partner):
        if answer.n_points > len(trial.points):
            return f"partner[{i}].n_points: {answer.n_points} is more than the trial's {len(trial.points)} points"
        if answer.t > trial.duration_ms + TIME_SLACK_MS:
            return f"partner[{i}].t: {answer.t} ms is after the trial's end ({trial.duration_ms} ms)"
        if answer.correct and answer.guess is None:
            return f"partner[{i}].guess: a correct answer names a category, got null (\"nothing yet\")"
    if trial.outcome == "recognized" and not any(a.correct for a in trial.partner):
        return "outcome: 'recognized' needs a correct partner answer"
    if trial.outcome != "recognized" and trial.score != 0:
        return f"score: expected 0 for outcome {trial.outcome!r}, got {trial.score}"
    return None
