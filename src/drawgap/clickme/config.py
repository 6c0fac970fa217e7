"""The game's settings (SPEC.md 5.1): canvas, brush, time limit, partner cadence, and the server's limits.

The defaults are the original ClickMe-QuickDraw game's: a 256 px canvas, a 14 px reveal brush sampled every
10 ms, the partner queried every 10 painted points, 7 s per drawing. One is not: the partner answers "nothing
yet" while the revealed image is no nearer to a category than to the blank canvas (partner.py says why).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from drawgap.errors import InputError

# Participant and study ids come from the URL (PROLIFIC_PID, STUDY_ID, ...): short, URL-safe tokens only.
ID_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"
_ID_RE = re.compile(ID_PATTERN)


def check_id(value: str, field: str) -> str:
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise InputError(f"expected 1-64 characters of A-Z a-z 0-9 _ . -, got {value!r}", field=field)
    return value


# The consent page shown when no --consent file is given; a study replaces it with the text its ethics board
# approved. Plain text only: the page writes it as text, never as HTML.
DEFAULT_CONSENT_TITLE = "Consent to take part"
DEFAULT_CONSENT = (
    "This study is about how people recognize drawings. You will see drawings, one at a time, and paint over "
    "the parts that matter to help an AI partner recognize them. It takes about ten minutes.",
    "We record where and when you paint, your partner's answers and your score, with the anonymous participant "
    "and study identifiers of the link you followed. No other personal information is collected. You may stop "
    "at any time by closing this page.",
    "You must be 18 or older to take part. Do you agree to take part?",
)
MAX_CONSENT_CHARS = 20_000
MAX_TIME_LIMIT_MS = 600_000  # time_limit_s is at most 600
MAX_POINTS = 100_000  # the schemas' static bound on points per trial (the config's limit is at most this)
# The token buckets (GameConfig.rate_limits), each set by two fields: NAME_rate_per_s and NAME_burst.
LIMIT_NAMES = ("partner", "address_partner", "total_partner", "address_join", "total_join")
LIMIT_FIELDS = tuple(f"{name}_{part}" for name in LIMIT_NAMES for part in ("rate_per_s", "burst"))


def parse_limits(texts: list[str]) -> dict:
    """`--limit NAME=RATE/BURST` values -> GameConfig fields, e.g. "address-join=1/50" -> {address_join_rate_per_s:
    1.0, address_join_burst: 50}: a study behind one router (a lab, a campus) may need more than one address's
    default share. InputError (field --limit) naming the limits there are, or what a value must be."""
    found: dict = {}
    for text in texts:
        name, sep, value = str(text).partition("=")
        key = name.strip().replace("-", "_")
        if not sep or key not in LIMIT_NAMES:
            raise InputError(f"expected NAME=RATE/BURST with NAME one of {', '.join(n.replace('_', '-') for n in LIMIT_NAMES)}, "
                             f"got {text!r}", field="--limit")
        rate, slash, burst = value.partition("/")
        try:
            rate_value, burst_value = float(rate), int(burst)
        except ValueError:
            rate_value = burst_value = None
        if not slash or rate_value is None or not (math.isfinite(rate_value) and rate_value > 0) or burst_value < 1:
            raise InputError(f"expected RATE/BURST for {key.replace('_', '-')}: requests per second > 0 and a bucket of at "
                             f"least 1 (e.g. 0.5/20), got {value!r}", field="--limit")
        found.update({f"{key}_rate_per_s": rate_value, f"{key}_burst": burst_value})
    return found


@dataclass(frozen=True)
class GameConfig:
    """Settings of one run of the game; the public part is sent to the page, all of it goes in the export."""

    canvas_size: int = 256
    brush_px: int = 14
    time_limit_s: float = 7.0
    sample_interval_ms: int = 10
    points_per_query: int = 10
    # The partner answers "nothing yet" unless the revealed image is nearer to a category than to the blank
    # canvas (partner.py). False: the partner before this rule, which names a category even on a blank canvas;
    # only to go on with a database collected with it.
    partner_nothing_yet: bool = True
    trials_per_participant: int = 20
    practice_trials: int = 1
    seed: int = 0
    # A platform's study-wide completion code (e.g. Prolific's); when unset each participant gets a random one.
    completion_code: str | None = None
    # Limits. 7 s at one point per 10 ms is 700 points; interpolation between far samples adds some.
    max_points_per_trial: int = 3000
    max_partner_answers: int = 400
    max_body_bytes: int = 256_000
    partner_rate_per_s: float = 20.0  # per participant
    partner_burst: int = 20
    partner_max_batch: int = 64
    # Abuse limits, shared by the server's processes: partner queries per client address and in total (a query
    # costs one token per `time_limit_ms / sample_interval_ms` points, so a 3,000-point query costs five), and new
    # participants per client address and in total. One address may be a lab behind one router: keep room.
    address_partner_rate_per_s: float = 20.0
    address_partner_burst: int = 40
    total_partner_rate_per_s: float = 400.0
    total_partner_burst: int = 400
    address_join_rate_per_s: float = 0.2
    address_join_burst: int = 10
    total_join_rate_per_s: float = 5.0
    total_join_burst: int = 200
    body_timeout_s: float = 10.0  # a request body that takes longer to arrive is refused (408)
    max_cached_participants: int = 10_000  # the server's in-memory participant cache (LRU)
    # Plausible effort, for the completion code: a trial counts as played when it is not skipped, has at least
    # `effort_min_points` points and, unless recognized, lasted at least `effort_min_trial_ms` (or the time
    # limit); at most `effort_max_skipped_fraction` of the required trials (practice included) may be skipped
    # or not played (effort.py).
    effort_min_trial_ms: int = 1000
    effort_min_points: int = 5
    effort_max_skipped_fraction: float = 0.5
    # The consent page: a title and paragraphs of plain text (`read_consent` reads them from a file).
    consent_title: str = DEFAULT_CONSENT_TITLE
    consent_paragraphs: tuple[str, ...] = DEFAULT_CONSENT

    def __post_init__(self):
        # from JSON (the settings table, the workers' environment) the paragraphs come back as a list
        object.__setattr__(self, "consent_paragraphs", tuple(self.consent_paragraphs))
        checks = {
            "canvas_size": 16 <= self.canvas_size <= 2048,
            "brush_px": 1 <= self.brush_px <= self.canvas_size,
            "time_limit_s": 0.5 <= self.time_limit_s <= 600,
            "sample_interval_ms": 1 <= self.sample_interval_ms <= 1000,
            "points_per_query": 1 <= self.points_per_query <= 10_000,
            "partner_nothing_yet": isinstance(self.partner_nothing_yet, bool),
            "trials_per_participant": self.trials_per_participant >= 1,
            "practice_trials": self.practice_trials >= 0,
            "max_points_per_trial": 1 <= self.max_points_per_trial <= MAX_POINTS,
            "max_partner_answers": self.max_partner_answers >= 1,
            "max_body_bytes": self.max_body_bytes >= 1024,
            "partner_max_batch": self.partner_max_batch >= 1,
            **{name: getattr(self, name) > 0 for name in LIMIT_FIELDS},
            "body_timeout_s": 0.1 <= self.body_timeout_s <= 600,
            "max_cached_participants": self.max_cached_participants >= 1,
            "effort_min_trial_ms": self.effort_min_trial_ms >= 0,
            "effort_min_points": self.effort_min_points >= 0,
            "effort_max_skipped_fraction": 0 <= self.effort_max_skipped_fraction <= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise InputError(f"value {getattr(self, name)!r} is out of range", field=name)
        if self.completion_code is not None:
            check_id(self.completion_code, "completion_code")
        check_consent(self.consent_title, self.consent_paragraphs)

    @property
    def time_limit_ms(self) -> int:
        return int(round(self.time_limit_s * 1000))

    def rate_limits(self) -> dict[str, tuple[float, float]]:
        """The server's token buckets: name -> (tokens per second, bucket size)."""
        return {
            "partner": (self.partner_rate_per_s, self.partner_burst),  # per participant
            "address_partner": (self.address_partner_rate_per_s, self.address_partner_burst),
            "total_partner": (self.total_partner_rate_per_s, self.total_partner_burst),
            "address_join": (self.address_join_rate_per_s, self.address_join_burst),
            "total_join": (self.total_join_rate_per_s, self.total_join_burst),
        }

    def partner_cost(self, n_points: int) -> int:
        """Tokens a partner query of `n_points` points costs: one per the most points an honest trial paints."""
        per_token = max(1, self.time_limit_ms // self.sample_interval_ms)
        return max(1, -(-n_points // per_token))

    def effort(self) -> dict:
        """The plausible-effort thresholds of the completion code (recorded in the export's meta)."""
        return {"min_trial_ms": self.effort_min_trial_ms, "min_points": self.effort_min_points,
                "max_skipped_fraction": self.effort_max_skipped_fraction, "practice_required": True}

    def public(self) -> dict:
        """What the page needs to run a trial."""
        keys = ("canvas_size", "brush_px", "time_limit_s", "sample_interval_ms", "points_per_query",
                "max_points_per_trial")
        return {k: getattr(self, k) for k in keys}

    def consent(self) -> dict:
        """The consent page, with the sha256 that names this version of it."""
        text = {"title": self.consent_title, "paragraphs": list(self.consent_paragraphs)}
        digest = hashlib.sha256(json.dumps(text, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        return {**text, "sha256": digest}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GameConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def read_consent(path: str | os.PathLike) -> dict:
    """{"consent_title", "consent_paragraphs"} from a UTF-8 text file: an optional first line "# Title", then
    paragraphs separated by blank lines (a paragraph's line breaks become spaces). Plain text, not HTML."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("no such file", path=path) from None
    except UnicodeDecodeError as exc:
        raise InputError(f"expected UTF-8 text ({exc.reason} at byte {exc.start})", path=path, field="consent") from None
    lines = text.strip().splitlines()
    title = DEFAULT_CONSENT_TITLE
    if lines and lines[0].startswith("# "):
        title, lines = lines[0][2:].strip(), lines[1:]
    paragraphs = [" ".join(block.split()) for block in re.split(r"\n\s*\n", "\n".join(lines))]
    paragraphs = tuple(p for p in paragraphs if p)
    check_consent(title, paragraphs, path)
    return {"consent_title": title, "consent_paragraphs": paragraphs}


def check_consent(title: str, paragraphs: tuple[str, ...], path: str | os.PathLike | None = None) -> None:
    """A title and at least one paragraph, none empty, at most MAX_CONSENT_CHARS in all."""
    texts = [title, *paragraphs]
    if not paragraphs or not all(isinstance(t, str) and t.strip() for t in texts):
        raise InputError("expected a title and at least one paragraph, none of them empty", path=path, field="consent")
    total = sum(map(len, texts))
    if total > MAX_CONSENT_CHARS:
        raise InputError(f"expected at most {MAX_CONSENT_CHARS:,} characters, got {total:,}", path=path, field="consent")
