"""The built-in dataset `strokes`: procedurally generated alphabets, drawn with motor noise.

In the spirit of Omniglot and of the generative model of characters of Lake, Salakhutdinov & Tenenbaum
(2015, "Human-level concept learning through probabilistic program induction"), in three levels:

  alphabet   a style: a subset of the stroke primitives (line, arc, hook, S-curve, loop, zig-zag, corner),
             its own variant of each primitive's shape, how many strokes its characters have, how their
             strokes relate, which orientations it prefers, a slant and an aspect ratio.
  character  a class (`alphabet03/character07`): 1-4 strokes. Each stroke is a primitive placed with a
             scale, a rotation and a mirror, and a relation to the earlier strokes: it starts on its own,
             at the start or at the end of an earlier stroke, or somewhere along it.
  drawing    the character drawn once more with motor noise: control points jittered, attachment points
             recomputed on the jittered parent stroke, pen width varied, a small affine jitter (rotation,
             shear, aspect, scale, translation); then scaled to fit the canvas with a margin and centred.

Strokes are clamped B-splines (cubic, or linear for the cornered primitives), evaluated with scipy's
B-spline basis: they pass through their first and last control points, so attachments are exact.

Rendering is anti-aliased and exact about strokes: each stroke is drawn binary at 4x with PIL (a thick
polyline with round joins and caps), then box-averaged down, so a pixel is inked iff one of its
sub-pixels is. The union of the per-stroke masks (`render_strokes(..., per_stroke=True)`) is therefore
exactly the inked part of the drawing: what a later step needs to know which strokes made which pixels.

Random streams: alphabet a draws from `default_rng([seed, 0, a])`, character c from `[seed, 1, c]` and
its drawings from `[seed, 2, c]`, so a class looks the same whatever `per_class` is, and the same seed
gives byte-identical images.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy.interpolate import BSpline

from drawgap.data.exemplars import with_exemplars
from drawgap.data.formats import Dataset
from drawgap.errors import InputError
from drawgap.io import atomic_path
from drawgap.provenance import provenance

RELATIONS = ("independent", "start", "end", "along")

# Primitive shapes in a unit frame: control points starting at (0, 0), about one unit long along x, and
# the B-spline degree (1 keeps the corners of the cornered shapes).
PRIMITIVES: dict[str, tuple[np.ndarray, int]] = {
    name: (np.asarray(points, dtype=np.float64), degree)
    for name, points, degree in [
        ("line", [[0, 0], [0.5, 0], [1, 0]], 2),
        ("arc", [[0, 0], [0.15, -0.35], [0.5, -0.5], [0.85, -0.35], [1, 0]], 3),
        ("hook", [[0, 0], [0.55, 0], [0.85, 0.05], [0.95, 0.3], [0.75, 0.42]], 3),
        ("s_curve", [[0, 0], [0.2, -0.4], [0.5, 0], [0.8, 0.4], [1, 0]], 3),
        ("loop", [[0, 0], [0.6, 0], [0.85, 0.4], [0.45, 0.6], [0.3, 0.25], [0.6, -0.1], [1, 0]], 3),
        ("zigzag", [[0, 0], [0.25, 0.35], [0.5, 0], [0.75, 0.35], [1, 0]], 1),
        ("corner", [[0, 0], [0.65, 0], [0.65, 0.65]], 1),
    ]
}

_CURVE_POINTS = 32  # points per stroke polyline: segments of about 1 pixel at 48x48


@dataclass(frozen=True)
class StrokesConfig:
    """How to generate the `strokes` dataset. Sizes in pixels are for `image_size`; widths scale with it."""

    n_classes: int = 300
    per_class: int = 20
    image_size: int = 48
    n_alphabets: int | None = None  # None: one alphabet per 20 characters
    test_fraction: float = 0.2  # of each alphabet's characters (its first ones, like Omniglot's weak split)
    seed: int = 0
    max_strokes: int = 4
    # motor noise of a drawing
    control_jitter: float = 0.07  # std of control-point jitter, in units of the stroke's size
    position_jitter: float = 0.05  # std of an independent stroke's start, in units of the character
    along_jitter: float = 0.05  # std of the attachment parameter of an "along" stroke (0..1)
    rotation_jitter: float = 6.0  # degrees
    shear_jitter: float = 0.08
    aspect_jitter: float = 0.06  # std of log aspect ratio
    scale_jitter: float = 0.08  # the drawing fills 1 - |N(0, s)| of the free canvas
    shift_jitter: float = 0.02  # std of translation, fraction of image_size (kept inside the margin)
    pen_width: float = 2.4  # mean pen width in pixels at 48x48
    width_jitter: float = 0.15  # std of log pen width across drawings
    margin: float = 0.08  # empty border, fraction of image_size
    supersample: int = 4

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, expected: str, got) -> None:
            if not ok:
                raise InputError(f"expected {expected}, got {got!r}", field=name)

        need(_is_int(self.n_classes) and self.n_classes >= 2, "n_classes", "an integer >= 2 (one class per split at least)", self.n_classes)
        need(_is_int(self.per_class) and self.per_class >= 2, "per_class", "an integer >= 2 (the exemplar and one more drawing)", self.per_class)
        need(_is_int(self.image_size) and self.image_size >= 16, "image_size", "an integer >= 16", self.image_size)
        need(_is_int(self.seed) and self.seed >= 0, "seed", "an integer >= 0", self.seed)
        need(0.0 < self.test_fraction < 1.0, "test_fraction", "a number strictly between 0 and 1", self.test_fraction)
        need(_is_int(self.max_strokes) and 1 <= self.max_strokes <= 8, "max_strokes", "an integer in 1..8", self.max_strokes)
        if self.n_alphabets is not None:
            need(
                _is_int(self.n_alphabets) and 1 <= self.n_alphabets <= self.n_classes // 2,
                "n_alphabets",
                f"an integer in 1..{self.n_classes // 2} (each alphabet needs a train and a test character)",
                self.n_alphabets,
            )
        need(_is_int(self.supersample) and 1 <= self.supersample <= 16, "supersample", "an integer in 1..16", self.supersample)
        need(0.0 <= self.margin < 0.3, "margin", "a fraction in [0, 0.3)", self.margin)
        need(self.pen_width > 0, "pen_width", "a positive width in pixels", self.pen_width)
        for name in ("control_jitter", "position_jitter", "along_jitter", "rotation_jitter", "shear_jitter",
                     "aspect_jitter", "scale_jitter", "shift_jitter", "width_jitter"):
            need(getattr(self, name) >= 0, name, "a number >= 0", getattr(self, name))

    @property
    def alphabets(self) -> int:
        """The number of alphabets (`n_alphabets`, or one per 20 characters)."""
        if self.n_alphabets is not None:
            return self.n_alphabets
        return int(min(max(1, round(self.n_classes / 20)), self.n_classes // 2))

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "n_alphabets": self.alphabets}


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


# ------------------------------------------------------------------------------------------ the model


@dataclass
class Alphabet:
    """A style shared by the characters of one alphabet."""

    primitives: list[str]
    weights: np.ndarray  # probability of each of `primitives`
    shapes: list[np.ndarray]  # this alphabet's variant of each primitive's control points
    stroke_counts: np.ndarray  # probability of 1..max_strokes strokes
    relations: np.ndarray  # probability of each of RELATIONS for strokes after the first
    rotation_step: float  # orientations snap to multiples of this (0: any orientation)
    stroke_scale: float
    slant: np.ndarray  # [2, 2] shear and aspect applied to its characters


@dataclass
class Stroke:
    """One stroke of a character: control points relative to its start, and where it starts."""

    primitive: str
    control: np.ndarray  # [M, 2], control[0] == (0, 0)
    degree: int
    size: float  # its scale in character units (motor noise is relative to it)
    relation: str  # one of RELATIONS
    parent: int = -1  # the earlier stroke it attaches to (relations other than "independent")
    along: float = 0.0  # where along the parent it starts ("along")
    position: np.ndarray = field(default_factory=lambda: np.zeros(2))  # its start ("independent")


@dataclass
class Character:
    name: str  # "alphabet03/character07"
    alphabet: int
    strokes: list[Stroke]


@dataclass
class Drawing:
    """One drawing: stroke polylines (x right, y down, in pixels of an image_size canvas) and a pen width."""

    strokes: list[np.ndarray]  # each [P, 2]
    width: float
    image_size: int

    def render(self, per_stroke: bool = False, supersample: int = 4) -> np.ndarray:
        return render_strokes(self.strokes, self.image_size, self.width, per_stroke=per_stroke, supersample=supersample)


def sample_alphabet(config: StrokesConfig, index: int) -> Alphabet:
    rng = np.random.default_rng([config.seed, 0, index])
    names = list(PRIMITIVES)
    chosen = sorted(rng.choice(len(names), size=int(rng.integers(3, 5)), replace=False))
    shapes = []
    for i in chosen:
        points, _ = PRIMITIVES[names[i]]
        variant = points + rng.normal(0.0, 0.1, points.shape)
        shapes.append(variant - variant[0])
    mean_strokes = rng.uniform(1.2, min(3.4, config.max_strokes + 0.4))
    k = np.arange(1, config.max_strokes + 1)
    stroke_counts = np.exp(-0.5 * ((k - mean_strokes) / 0.8) ** 2)
    slant = np.array([[1.0, rng.uniform(-0.3, 0.3)], [0.0, 1.0]])
    aspect = np.exp(rng.uniform(-0.25, 0.25))
    return Alphabet(
        primitives=[names[i] for i in chosen],
        weights=rng.dirichlet(np.full(len(chosen), 2.0)),
        shapes=shapes,
        stroke_counts=stroke_counts / stroke_counts.sum(),
        relations=rng.dirichlet([2.0, 1.0, 2.0, 2.0]),
        rotation_step=float(rng.choice([0.0, np.pi / 4, np.pi / 2])),
        stroke_scale=rng.uniform(0.55, 0.9),
        slant=slant @ np.diag([aspect, 1.0 / aspect]),
    )


def sample_character(config: StrokesConfig, index: int, name: str, alphabet_index: int, alphabet: Alphabet) -> Character:
    rng = np.random.default_rng([config.seed, 1, index])
    n_strokes = 1 + int(rng.choice(len(alphabet.stroke_counts), p=alphabet.stroke_counts))
    strokes: list[Stroke] = []
    for i in range(n_strokes):
        p = int(rng.choice(len(alphabet.primitives), p=alphabet.weights))
        control = alphabet.shapes[p] + rng.normal(0.0, 0.06, alphabet.shapes[p].shape)
        control = control - control[0]
        if rng.random() < 0.5:
            control = control * [1.0, -1.0]
        angle = rng.uniform(0.0, 2 * np.pi)
        if alphabet.rotation_step:
            angle = np.round(angle / alphabet.rotation_step) * alphabet.rotation_step
        size = alphabet.stroke_scale * rng.uniform(0.6, 1.2)
        control = control @ (_rotation(angle) * size).T @ alphabet.slant.T
        relation = "independent" if i == 0 else RELATIONS[int(rng.choice(len(RELATIONS), p=alphabet.relations))]
        strokes.append(
            Stroke(
                primitive=alphabet.primitives[p],
                control=control,
                degree=PRIMITIVES[alphabet.primitives[p]][1],
                size=size,
                relation=relation,
                parent=-1 if relation == "independent" else int(rng.integers(0, i)),
                along=float(rng.uniform(0.15, 0.85)),
                position=rng.uniform(-0.5, 0.5, 2),
            )
        )
    return Character(name=name, alphabet=alphabet_index, strokes=strokes)


def draw_character(character: Character, n: int, config: StrokesConfig, rng: np.random.Generator) -> list[Drawing]:
    """`n` drawings of a character with motor noise, fitted to the canvas (vectorised over drawings)."""
    curves: list[np.ndarray] = []  # each [n, P, 2]
    for s in character.strokes:
        control = s.control[None] + rng.normal(0.0, config.control_jitter * s.size, (n, *s.control.shape))
        curve = np.einsum("pm,nmd->npd", _basis(len(s.control), s.degree), control - control[:, :1])
        if s.relation == "independent":
            start = s.position + rng.normal(0.0, config.position_jitter, (n, 2))
        elif s.relation == "start":
            start = curves[s.parent][:, 0]
        elif s.relation == "end":
            start = curves[s.parent][:, -1]
        else:  # "along": recomputed on the jittered parent, as a person re-finds the junction
            t = np.clip(s.along + rng.normal(0.0, config.along_jitter, n), 0.0, 1.0)
            start = curves[s.parent][np.arange(n), np.rint(t * (_CURVE_POINTS - 1)).astype(int)]
        curves.append(curve + start[:, None])
    points = np.concatenate(curves, axis=1)  # [n, K*P, 2]

    # Affine jitter: rotation, shear, aspect.
    angle = np.deg2rad(rng.normal(0.0, config.rotation_jitter, n))
    shear = rng.normal(0.0, config.shear_jitter, n)
    aspect = np.exp(rng.normal(0.0, config.aspect_jitter, n))
    cos, sin = np.cos(angle), np.sin(angle)
    rotate = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    shear_aspect = np.zeros((n, 2, 2))
    shear_aspect[:, 0, 0], shear_aspect[:, 0, 1], shear_aspect[:, 1, 1] = aspect, shear, 1.0 / aspect
    points = np.einsum("nij,njk,npk->npi", rotate, shear_aspect, points)

    # Fit to the canvas: pen width and margin kept free, scale and shift jittered inside that room.
    size = config.image_size
    width = config.pen_width * size / 48 * np.exp(rng.normal(0.0, config.width_jitter, n))
    width = np.clip(width, 1.0, 0.15 * size)
    room = size * (1 - 2 * config.margin) - width  # [n]
    lo, hi = points.min(axis=1), points.max(axis=1)  # [n, 2]
    extent = np.maximum(hi - lo, 1e-6)
    fill = np.clip(1.0 - np.abs(rng.normal(0.0, config.scale_jitter, n)), 0.6, 1.0)
    scale = room * fill / extent.max(axis=1)
    slack = np.maximum((room[:, None] - extent * scale[:, None]) / 2, 0.0)
    shift = np.clip(rng.normal(0.0, config.shift_jitter * size, (n, 2)), -slack, slack)
    centre = size / 2 + shift
    points = (points - (lo + hi)[:, None] / 2) * scale[:, None, None] + centre[:, None]

    bounds = np.cumsum([0] + [c.shape[1] for c in curves])
    return [
        Drawing([points[i, a:b] for a, b in zip(bounds[:-1], bounds[1:])], float(width[i]), size)
        for i in range(n)
    ]


@functools.lru_cache(maxsize=64)
def _basis(n_control: int, degree: int) -> np.ndarray:
    """[P, M] clamped uniform B-spline basis at P evenly spaced parameters: curve = basis @ control."""
    k = min(degree, n_control - 1)
    knots = np.r_[np.zeros(k), np.linspace(0.0, 1.0, n_control - k + 1), np.ones(k)]
    u = np.linspace(0.0, 1.0, _CURVE_POINTS)
    return BSpline.design_matrix(u, knots, k).toarray()


def _rotation(angle: float) -> np.ndarray:
    return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


# ----------------------------------------------------------------------------------------- rendering


def render_strokes(
    strokes: list[np.ndarray], image_size: int, width: float, *, per_stroke: bool = False, supersample: int = 4
) -> np.ndarray:
    """Anti-aliased uint8 drawing (ink 255) of stroke polylines, [H, W]; or one mask per stroke, [K, H, W].

    strokes: [P, 2] arrays of (x, y) in pixels of the image_size canvas, (0, 0) its top-left corner.
    Each stroke is drawn binary at `supersample` times the size (PIL: a thick polyline, with a disc at
    every vertex for round joins and caps: PIL's wide segments alone leave notches at every joint, and
    its `joint="curve"` is 5x slower), then box-averaged.
    A pixel of the drawing is inked iff a pixel of one of the per-stroke masks is.
    """
    ss = int(supersample)
    big = image_size * ss
    radius = width * ss / 2
    line_width = max(1, int(round(width * ss)))

    def draw(canvas: ImageDraw.ImageDraw, polyline: np.ndarray) -> None:
        pts = np.asarray(polyline, dtype=np.float64) * ss - 0.5  # pixel centres at integer coordinates
        if len(pts) > 1:
            canvas.line(pts.ravel().tolist(), fill=255, width=line_width)
        for x, y in pts.tolist():
            canvas.ellipse((x - radius, y - radius, x + radius, y + radius), fill=255)

    def reduce(image: Image.Image) -> np.ndarray:
        return np.asarray(image.reduce(ss) if ss > 1 else image, dtype=np.uint8)

    if per_stroke:
        masks = []
        for polyline in strokes:
            image = Image.new("L", (big, big))
            draw(ImageDraw.Draw(image), polyline)
            masks.append(reduce(image))
        return np.stack(masks) if masks else np.zeros((0, image_size, image_size), np.uint8)
    image = Image.new("L", (big, big))
    canvas = ImageDraw.Draw(image)
    for polyline in strokes:
        draw(canvas, polyline)
    return reduce(image)



# ------------------------------------------------------------------------------------------ the dataset


def sample_characters(config: StrokesConfig) -> list[tuple[Character, str]]:
    """Every character with its split ("train" or "test"), alphabet by alphabet.

    Alphabets share the characters as evenly as possible; the first round(test_fraction * n) characters
    of each alphabet (at least 1, at most n - 1) are test classes, like Omniglot's weak split.
    """
    n_alpha = config.alphabets
    sizes = [config.n_classes // n_alpha + (a < config.n_classes % n_alpha) for a in range(n_alpha)]
    digits_a, digits_c = max(2, len(str(n_alpha))), max(2, len(str(max(sizes))))
    out, index = [], 0
    for a, n_chars in enumerate(sizes):
        alphabet = sample_alphabet(config, a)
        n_test = min(max(int(np.floor(config.test_fraction * n_chars + 0.5)), 1), n_chars - 1)
        for j in range(n_chars):
            name = f"alphabet{a + 1:0{digits_a}d}/character{j + 1:0{digits_c}d}"
            out.append((sample_character(config, index, name, a, alphabet), "test" if j < n_test else "train"))
            index += 1
    return out


def generate_drawings(config: StrokesConfig) -> dict[str, list[tuple[Character, list[Drawing]]]]:
    """The geometry behind `build_strokes(config)`: per split, each class (in file order) and its drawings."""
    splits: dict[str, list] = {"train": [], "test": []}
    for index, (character, split) in enumerate(sample_characters(config)):
        rng = np.random.default_rng([config.seed, 2, index])
        splits[split].append((character, draw_character(character, config.per_class, config, rng)))
    return splits


def split_drawings(config: StrokesConfig, split: str) -> list[Drawing]:
    """The drawing behind each image of `build_strokes(config)[split]`, in the same order."""
    if split not in ("train", "test"):
        raise InputError(f"expected 'train' or 'test', got {split!r}", field="split")
    return [d for _, drawings in generate_drawings(config)[split] for d in drawings]


def build_strokes(config: StrokesConfig | None = None, progress: bool = False) -> dict[str, Dataset]:
    """The `strokes` dataset: {"train", "test"} Datasets, split by class.

    Exemplars: SPEC.md Eq. 1 without a critic, the drawing closest to its class mean in pixel space after
    a Gaussian blur (`drawgap.data.exemplars.pixel_space_exemplars`).
    """
    from tqdm.auto import tqdm

    config = config or StrokesConfig()
    geometry = generate_drawings(config)
    size = config.image_size
    datasets = {}
    with tqdm(total=config.n_classes * config.per_class, desc="strokes", unit="drawing", disable=not progress) as bar:
        for split, classes in geometry.items():
            images = np.empty((len(classes) * config.per_class, size, size), np.uint8)
            for c, (_, drawings) in enumerate(classes):
                for i, d in enumerate(drawings):
                    images[c * config.per_class + i] = d.render(supersample=config.supersample)
                bar.update(len(drawings))
            labels = np.repeat(np.arange(len(classes), dtype=np.int64), config.per_class)
            meta = {
                "name": "strokes",
                "split": split,
                "source": "built-in",
                "license": "MIT",  # generated by drawgap's own code (MIT), no third-party data
                "image_size": size,
                "config": config.to_dict(),
                "seed": config.seed,
                "generator": f"drawgap.data.strokes: alphabets of 1-{config.max_strokes} B-spline strokes with relations, drawn with motor noise (after Lake et al. 2015)",
                "provenance": provenance(config.to_dict(), config.seed),
            }
            names = np.array([ch.name for ch, _ in classes])
            # Critic-free Eq. 1 exemplars; with_exemplars records the rule in meta["exemplars"].
            datasets[split] = with_exemplars(Dataset(images, labels, names, np.zeros(0, np.int64), meta))
    return datasets


# ------------------------------------------------------------------------------------------- preview


def preview_rows(dataset: Dataset, n_classes: int = 10, per_class: int = 10) -> tuple[np.ndarray, list[list[int]]]:
    """(class indices, image indices per class): classes spread over the dataset, exemplar first."""
    picked = np.unique(np.linspace(0, dataset.n_classes - 1, min(n_classes, dataset.n_classes)).round().astype(int))
    rows = []
    for c in picked:
        others = [int(i) for i in np.flatnonzero(dataset.labels == c) if i != dataset.exemplars[c]]
        rows.append([int(dataset.exemplars[c]), *others[: per_class - 1]])
    return picked, rows


def write_preview(dataset: Dataset, path: str | os.PathLike, n_classes: int = 10, per_class: int = 10) -> Path:
    """A PNG grid drawn as the report draws drawings (black ink on white): one row per class, labelled with its
    alphabet and character, the exemplar first; written atomically."""
    from matplotlib.figure import Figure

    from drawgap.report.figures import save_figure

    picked, rows = preview_rows(dataset, n_classes, per_class)
    cols = max(len(r) for r in rows)
    fig = Figure(figsize=(0.62 * cols + 1.3, 0.62 * len(rows) + 0.4), layout="constrained")
    axes = np.asarray(fig.subplots(len(rows), cols, squeeze=False))
    for r, (c, row) in enumerate(zip(picked, rows)):
        for j in range(cols):
            ax = axes[r, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(row):
                ax.imshow(dataset.images[row[j]], cmap="gray_r", vmin=0, vmax=255, interpolation="nearest")
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel(str(dataset.classes[c]).replace("/", "\n"), fontsize=6, rotation=0, ha="right", va="center")
    axes[0, 0].set_title("exemplar", fontsize=7)
    for j in range(1, cols):
        axes[0, j].set_title(f"drawing {j}", fontsize=7)
    return save_figure(fig, Path(path) if Path(path).suffix else Path(path).with_suffix(".png"))
