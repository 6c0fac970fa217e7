"""Whether a participant who finished the sequence played it: the condition of the completion code.

On a paid platform a completion code is money, so it is given only when every required trial (practice
included) is stored and the trials show plausible effort (thresholds in `GameConfig`, recorded in the
export's meta):

- a trial counts as played when it is not skipped, has at least `effort_min_points` points and, unless the
  partner recognized it (which can take well under a second), lasted at least `effort_min_trial_ms` (or the
  time limit, if shorter); at most `effort_max_skipped_fraction` of the required trials may be skipped or not
  played;
- the trials' durations, as the page reports them, must fit in the time the server saw the session last
  (consent to last trial, by the server's clock, with TIME_SLACK_MS and 5 % to spare): a client that claims
  long trials must also take that long.
"""

from __future__ import annotations

from dataclasses import dataclass

from drawgap.clickme.config import GameConfig
from drawgap.clickme.schemas import TIME_SLACK_MS

CLOCK_TOLERANCE = 1.05  # the page's clock (performance.now) and the server's may run a little apart


@dataclass(frozen=True)
class TrialEffort:
    outcome: str
    n_points: int
    duration_ms: int


def effort_problem(trials: list[TrialEffort], elapsed_ms: float, config: GameConfig) -> str | None:
    """Why these required trials (all of them, practice included) do not earn the completion code, or None."""
    if not trials:
        return None
    min_ms = min(config.effort_min_trial_ms, config.time_limit_ms)
    played = sum(t.outcome != "skipped" and t.n_points >= config.effort_min_points
                 and (t.outcome == "recognized" or t.duration_ms >= min_ms) for t in trials)
    idle = len(trials) - played
    if idle > config.effort_max_skipped_fraction * len(trials):
        return (f"{idle} of {len(trials)} drawings were skipped or barely played (fewer than "
                f"{config.effort_min_points} points, or unrecognized in under {min_ms} ms); at most "
                f"{config.effort_max_skipped_fraction:.0%} may be")
    claimed = sum(t.duration_ms for t in trials)
    if claimed > elapsed_ms * CLOCK_TOLERANCE + TIME_SLACK_MS:
        return f"the drawings took {claimed / 1000:.1f} s of play, but the session lasted {elapsed_ms / 1000:.1f} s"
    return None
