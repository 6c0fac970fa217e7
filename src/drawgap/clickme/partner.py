"""The AI partner: recognizes a drawing from the parts a participant has revealed (SPEC.md 5.1).

The revealed image is the stimulus with only the painted squares visible (each painted point reveals a
`brush_px` square centred on it), the rest black. The partner is the ProtoNet critic with one exemplar per
category as support; it answers the category of the nearest prototype, and the drawing counts as recognized
when that top-1 answer is the drawing's true category.

"Nothing yet". Beside the C category prototypes the partner has one more: the critic's embedding of the blank
canvas (the revealed image before any ink is shown). It names a category only when the revealed image is
strictly nearer to that category's prototype than to the blank one (a tie answers "nothing yet"); otherwise it
answers "nothing yet" (`Guess.category` None), which is never correct. So the partner claims a recognition
only from evidence that looks more like a category than like an empty canvas; a blank canvas, or paint only
over background, sits on the blank prototype and can never be called recognized.

Why this rule and not a minimum amount of revealed ink: the critic scales each image to [0, 1] and binarizes
it, so a few revealed ink pixels become thin strokes, which the QuickDraw partner takes for a golf club. On the
real stimuli (`benchmarks/clickme_partner_evidence.py`, README "ClickMe on the real stimuli") it answered "golf
club" on 250 of 250 drawings with 5 random ink points revealed (5 % of the ink), 230 with 10 points (10 %) and
131 with 20 (20 %): a minimum fraction of ink would only move the false recognitions to just past it. With the
blank prototype it answers "nothing yet" on all 250 at 5 and 10 points and on 244 at 20; the rule has no free
parameter; and it recognizes the same 175 of 250 fully revealed drawings as before, because a whole drawing is
far nearer its own prototype than the blank (9 it named wrongly before now get "nothing yet"). The extra
prototype is embedded once per canvas shape, so a query costs what it did.
`GameConfig.partner_nothing_yet = False` restores the partner without it, for data collected with that one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from drawgap.critics.inference import inference_copy
from drawgap.errors import InputError


def reveal_mask(points: Sequence[Sequence[int]], size: int, brush_px: int) -> np.ndarray:
    """bool [size, size]: True inside the `brush_px` square around each (x, y[, t]) point, clipped to the canvas.

    An even brush covers x - brush/2 .. x + brush/2 - 1 (the square's top-left corner is x - brush // 2).
    A plain loop of slice assignments: faster than array tricks for the few hundred points of a trial.
    """
    mask = np.zeros((size, size), dtype=bool)
    half = brush_px // 2
    for p in points:
        x0, y0 = max(int(p[0]) - half, 0), max(int(p[1]) - half, 0)
        mask[y0 : max(int(p[1]) - half + brush_px, 0), x0 : max(int(p[0]) - half + brush_px, 0)] = True
    return mask


def reveal(image: np.ndarray, points: Sequence[Sequence[int]], brush_px: int) -> np.ndarray:
    """The stimulus as the partner sees it: uint8 [H, W] with everything outside the painted squares black."""
    return np.where(reveal_mask(points, image.shape[-1], brush_px), image, 0).astype(np.uint8)


def _fast_forward(critic):
    """A copy of the critic for inference only: each convolution's batch norm folded into it, weights in
    channels-last layout (oneDNN's fast path). About 4x faster on a CPU, which is what keeps the partner's
    latency low under load. Used only when it reproduces `critic.embed` on test drawings; otherwise None
    (the critic is used as it is).
    """
    if not (isinstance(critic, nn.Module) and hasattr(critic, "prepare") and hasattr(critic, "image_size")):
        return None
    fast = inference_copy(critic)
    size = int(critic.image_size)
    probe = (torch.rand(5, 1, size, size, generator=torch.Generator().manual_seed(0)) > 0.7).float()
    with torch.inference_mode():
        same = torch.allclose(fast(critic.prepare(probe)).float(), critic.embed(probe).float(), atol=1e-4, rtol=1e-4)
    return fast if same else None


@dataclass(frozen=True)
class Guess:
    """The partner's answer: category index and name (both None for "nothing yet"), the answer's probability
    (softmax over the answers it could give), and whether it is the true category."""

    category_index: int | None
    category: str | None
    probability: float
    correct: bool

    @property
    def nothing_yet(self) -> bool:
        return self.category is None

    def to_json(self) -> dict:
        """The answer as the API gives it: "guess" is the category's name, or null for "nothing yet"."""
        return {"guess": self.category, "probability": round(self.probability, 4), "correct": self.correct}


class Partner:
    """critic: anything with `embed(images) -> [N, D]` and `logits(query_emb, support_emb) -> [N, C]`;
    support: float [C, D] prototypes; classes: the C category names in the support's order."""

    def __init__(self, critic, support: torch.Tensor, classes: Sequence[str]):
        if support.ndim != 2 or support.shape[0] != len(classes):
            raise InputError(f"expected support [{len(classes)}, D], got {list(support.shape)}", field="support")
        self.critic = critic.eval() if hasattr(critic, "eval") else critic
        self.support = support.float()
        self.classes = [str(c) for c in classes]
        self._fast = _fast_forward(self.critic)
        self._blank: dict[tuple[int, int], torch.Tensor] = {}  # canvas shape -> the blank canvas's embedding [1, D]

    @classmethod
    def load(cls, stimuli_dir: str | os.PathLike) -> "Partner":
        """The partner saved in a stimuli directory (`partner/critic/` and `partner/support.npz`)."""
        from drawgap.critics import load_critic

        partner_dir = Path(stimuli_dir) / "partner"
        support_path = partner_dir / "support.npz"
        if not support_path.is_file():
            raise InputError("no such file (expected a stimuli directory written by `drawgap clickme stimuli`)",
                             path=support_path)
        with np.load(support_path, allow_pickle=False) as z:
            support, classes = torch.from_numpy(z["embeddings"].astype(np.float32)), [str(c) for c in z["classes"]]
            json.loads(str(z["meta"]))
        return cls(load_critic(partner_dir / "critic"), support, classes)

    @torch.inference_mode()
    def embed(self, images: np.ndarray) -> torch.Tensor:
        """The critic's embedding of uint8 [N, H, W] drawings (through the fused copy when there is one)."""
        if self._fast is None:
            return self.critic.embed(images)
        return self._fast(self.critic.prepare(images)).float()

    def blank_prototype(self, shape: tuple[int, int]) -> torch.Tensor:
        """[1, D]: the embedding of the all-black canvas of `shape`, through the same path as the queries (so a
        blank query lands exactly on it); computed once per canvas shape."""
        shape = (int(shape[0]), int(shape[1]))
        if shape not in self._blank:
            self._blank[shape] = self.embed(np.zeros((1, *shape), np.uint8)).float()
        return self._blank[shape]

    @torch.no_grad()
    def guess(self, revealed: np.ndarray, true_categories: Sequence[str], *, nothing_yet: bool = True) -> list[Guess]:
        """uint8 [N, H, W] revealed images and their true categories -> one `Guess` each (one batch).

        With `nothing_yet` (the default), the answer is "nothing yet" unless the nearest category prototype is
        strictly nearer than the blank canvas's (the module docstring says why); without it, the nearest
        category whatever the evidence (the partner before "nothing yet" existed)."""
        if len(revealed) == 0:
            return []
        queries = self.embed(revealed)
        support = torch.cat([self.support, self.blank_prototype(revealed.shape[1:])]) if nothing_yet else self.support
        logits = self.critic.logits(queries, support).float()
        probs = torch.softmax(logits, dim=1)
        n_classes = len(self.classes)
        top_i = logits[:, :n_classes].argmax(dim=1)  # the first of equally near categories, as argmax has always done
        if nothing_yet:
            # logits are negative squared distances: a category answers only when strictly nearer than the blank
            named = logits.gather(1, top_i[:, None])[:, 0] > logits[:, n_classes]
            top_i = torch.where(named, top_i, torch.full_like(top_i, n_classes))
        out = []
        for i, p, truth in zip(top_i.tolist(), probs.gather(1, top_i[:, None])[:, 0].tolist(), true_categories):
            if i == n_classes:
                out.append(Guess(None, None, float(p), False))
            else:
                out.append(Guess(i, self.classes[i], float(p), self.classes[i] == truth))
        return out

    def guess_points(self, queries: Sequence[tuple[np.ndarray, Sequence[Sequence[int]], str]], brush_px: int, *,
                     nothing_yet: bool = True) -> list[Guess]:
        """[(stimulus image, painted points, true category)] -> guesses, revealing and classifying in one batch."""
        if not queries:
            return []
        revealed = np.stack([reveal(image, points, brush_px) for image, points, _ in queries])
        return self.guess(revealed, [truth for _, _, truth in queries], nothing_yet=nothing_yet)
