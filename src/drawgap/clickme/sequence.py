"""Which stimuli a participant sees, in which order: balanced across participants, random within them.

Each new participant gets the `n` stimuli shown least so far (counts over every earlier sequence), with ties
broken first towards categories not yet in this sequence, then at random; the chosen stimuli are then
shuffled. Assigned one after another, participants keep every stimulus's count within one of the others'
(a running Latin-square-like balance), and each sequence spreads over as many categories as it can.
All randomness comes from the participant's seed, so a sequence can be rebuilt from it.
"""

from __future__ import annotations

import hashlib
from typing import Mapping, Sequence

import numpy as np


def participant_seed(server_seed: int, study_id: str, participant_id: str) -> int:
    """A stable 63-bit seed for one participant of one study (same ids, same seed, across restarts)."""
    digest = hashlib.sha256(f"{server_seed}\x00{study_id}\x00{participant_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def balanced_sequence(stimuli: Sequence[tuple[str, str]], shown: Mapping[str, int], n: int, seed: int) -> list[str]:
    """Ids of `n` stimuli (or all, if fewer) for one participant.

    stimuli: (id, category) pairs; shown: how many earlier sequences hold each id (missing = 0).
    """
    rng = np.random.default_rng(seed)
    n = min(n, len(stimuli))
    tie_break = rng.permutation(len(stimuli))
    per_category: dict[str, int] = {}
    remaining = list(range(len(stimuli)))
    chosen = []
    for _ in range(n):
        best = min(remaining, key=lambda k: (shown.get(stimuli[k][0], 0), per_category.get(stimuli[k][1], 0), tie_break[k]))
        remaining.remove(best)
        chosen.append(stimuli[best][0])
        per_category[stimuli[best][1]] = per_category.get(stimuli[best][1], 0) + 1
    order = rng.permutation(len(chosen))
    return [chosen[i] for i in order]
