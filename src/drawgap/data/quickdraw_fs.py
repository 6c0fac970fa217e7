"""QuickDraw-FS, rebuilt from Quick, Draw! strokes (SPEC.md 1.2). A documented RECONSTRUCTION.

The authors' file (`all_qd_fs_shuffled.npz`: 665 classes x 500 drawings at 48x48, split 550 / 115 by
class) was made by a procedure the papers do not publish. What is known: the classes are visually
homogeneous sub-categories of Quick, Draw! categories ("quickdraw_clust"), each with 500 drawings, and
each with an exemplar ("prototype"). This module rebuilds a dataset of that shape:

1. every chosen category (simplified ndjson) is rendered at 48x48 (`quickdraw.rasterize`, the official
   numpy_bitmap recipe), optionally keeping only recognized drawings and at most K per category;
2. each category is embedded: a critic's `.features(images)` when one is given, else the critic-free
   embedding `pixel_embedding` (Gaussian-blurred pixels pooled to 24x24, PCA to 32 dimensions fitted on
   the category), and clustered by k-means (scipy's kmeans2, k-means++ start, best of 10 seeded starts),
   with k given per category or floor(n / N);
3. clusters with at least N drawings (default 500) are kept; of each, N drawings are taken: those closest
   to the cluster centre in the embedding (default: the most typical drawings, which is what makes the
   sub-categories homogeneous) or N at random (seeded); a class is named `<category>/<j>`, j counting
   kept clusters of the category by decreasing size;
4. the classes are shuffled (seeded) and split by class into train and test (test fraction 115/665 by
   default, the paper's 550/115), so sub-categories of one category may fall on both sides, as they may
   in the authors' shuffled file;
5. each class's exemplar follows Eq. 1 (`drawgap.data.exemplars.with_exemplars`: the critic's features
   when given, else blurred pixels).

Images are stored as uint8 ink coverage (0-255), not binarized: the critics and models binarize at
threshold 0.3 themselves (SPEC.md 1.2). Every parameter is recorded in each file's meta.

A **split record** (`split_record`, JSON) says which sub-categories of a build are its test classes, with the
build's settings, the SHA-256 of each source file that holds a test class and of each test class's drawings.
drawgap ships the record of the QuickDraw-FS its QuickDraw models were trained on (`SHIPPED_SPLIT`), so that
`rebuild_test_split` can remake that test split from the categories that hold it alone (a fraction of the
build's time): every category keeps its own random stream (seeded by its index in the build's category list),
so its clusters, drawings and Eq. 1 exemplars are those of the full build, and each rebuilt class is checked
against the recorded hash.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from drawgap.errors import InputError

PAPER_TEST_FRACTION = 115 / 665  # the authors' file: 550 train and 115 test classes
RECONSTRUCTION_NOTE = (
    "Reconstruction of QuickDraw-FS (Boutin et al. 2022/2023): the authors' clustering procedure is not "
    "published; categories are split into sub-categories by k-means in a feature space and clusters of at "
    "least min_cluster drawings are kept (SPEC.md 1.2). Classes and drawings differ from the authors' file."
)
BINARIZATION_NOTE = "uint8 ink coverage 0-255, not binarized; critics and models binarize at threshold 0.3 (SPEC.md 1.2)"
EMBED_BLUR_SIGMA = 1.0  # pixels at 48 px, before pooling to 24x24
EMBED_DIMS = 32
SPLIT_FORMAT = "drawgap.quickdraw-fs-split/1"
# The split of the QuickDraw-FS the shipped quickdraw-* critics and generators were trained on (455 train / 95
# test sub-categories of 150 drawings, from the 300-category development files: ../shared/data/quickdraw).
SHIPPED_SPLIT = Path(__file__).resolve().parent / "splits" / "quickdraw-fs-150.json"


@dataclass
class QuickDrawFSConfig:
    """Every parameter of a build; recorded in the files' meta."""

    categories: list[str]
    image_size: int = 48
    min_cluster: int = 500  # N: a kept cluster has at least N drawings, and N of them are taken
    clusters_per_category: int | None = None  # k; None: floor(n / min_cluster)
    selection: str = "closest"  # "closest" to the cluster centre, or "random"
    test_fraction: float = PAPER_TEST_FRACTION
    seed: int = 0
    max_per_category: int | None = None
    recognized_only: bool = False
    on_error: str = "skip"
    critic: str | None = None  # name or path of the critic whose features cluster (and choose exemplars)
    embedding: dict = field(default_factory=lambda: {"blur_sigma": EMBED_BLUR_SIGMA, "pool": 2, "pca_dims": EMBED_DIMS})
    kmeans_iterations: int = 30
    kmeans_restarts: int = 10

    def check(self) -> "QuickDrawFSConfig":
        if self.min_cluster < 2:
            raise InputError(f"expected min_cluster >= 2, got {self.min_cluster}", field="min_cluster")
        if self.clusters_per_category is not None and self.clusters_per_category < 1:
            raise InputError(f"expected clusters_per_category >= 1, got {self.clusters_per_category}", field="clusters_per_category")
        if self.selection not in ("closest", "random"):
            raise InputError(f"expected 'closest' or 'random', got {self.selection!r}", field="selection")
        if not 0.0 < self.test_fraction < 1.0:
            raise InputError(f"expected a test fraction strictly between 0 and 1, got {self.test_fraction}", field="test_fraction")
        if self.max_per_category is not None and self.max_per_category < self.min_cluster:
            raise InputError(
                f"expected max_per_category >= min_cluster ({self.min_cluster}), got {self.max_per_category}",
                field="max_per_category",
            )
        return self


@dataclass
class SubCategory:
    """One kept cluster: its drawings (uint8 [N, S, S]) and where it came from."""

    name: str
    category: str
    cluster_size: int
    images: np.ndarray


def build_quickdraw_fs(config: QuickDrawFSConfig, *, source=None, critic=None, progress: bool = True,
                       workers: int = 1) -> dict:
    """{"train": Dataset, "test": Dataset} of QuickDraw-FS sub-categories (see the module doc).

    `source`: a folder of `<category>.ndjson` files (offline); None downloads into the cache.
    `critic`: an object with `.features(images)` (e.g. `drawgap.critics.load_critic(config.critic)`).
    `workers`: processes rendering categories while this one clusters (the result does not depend on it).
    """
    from drawgap.data.quickdraw import _check_categories, _progress, fetch_category, render_categories

    config.check()
    _check_categories(config.categories)
    for category in config.categories:  # every file is there (or downloaded) before any work starts
        fetch_category(category, "simplified", source=source, progress=progress)
    classes: list[SubCategory] = []
    rendered = render_categories(config.categories, workers=workers, progress=progress, source=source,
                                 size=config.image_size, max_per_category=config.max_per_category,
                                 recognized_only=config.recognized_only, on_error=config.on_error)
    for c, (category, images) in enumerate(zip(config.categories, _progress(rendered, "categories", progress,
                                                                            len(config.categories)))):
        classes += split_category(category, images, config, critic, category_rng(config, c))
    if len(classes) < 2:
        raise InputError(
            f"kept {len(classes)} sub-categories (clusters of >= {config.min_cluster} drawings); need at least 2 "
            "to split into train and test: add categories or drawings, or lower min_cluster",
            field="min_cluster",
        )
    return _split(classes, config, source, critic)


def category_rng(config: QuickDrawFSConfig, index: int) -> np.random.Generator:
    """The random stream of the category at `index` in config.categories: one stream per category, so that adding
    a category changes no other, and a category's sub-categories can be rebuilt without the others."""
    return np.random.default_rng([config.seed, index])


def split_category(category: str, images: np.ndarray, config: QuickDrawFSConfig, critic, rng) -> list[SubCategory]:
    """Cluster one category's drawings and return its kept sub-categories (N drawings each)."""
    n_keep = config.min_cluster
    k = config.clusters_per_category or len(images) // n_keep
    if k < 1 or len(images) < n_keep:
        return []
    features = category_features(images, critic, config)
    centres, assignment = kmeans(features, min(k, len(images)), rng, config.kmeans_iterations, config.kmeans_restarts)
    sizes = np.bincount(assignment, minlength=len(centres))
    kept = [j for j in np.argsort(-sizes, kind="stable") if sizes[j] >= n_keep]
    out = []
    for rank, j in enumerate(kept):
        members = np.flatnonzero(assignment == j)
        if config.selection == "closest":
            distance = ((features[members] - centres[j]) ** 2).sum(1)
            chosen = members[np.argsort(distance, kind="stable")[:n_keep]]
        else:
            chosen = rng.choice(members, size=n_keep, replace=False)
        out.append(SubCategory(f"{category}/{rank}", category, int(sizes[j]), images[chosen]))
    return out


def category_features(images: np.ndarray, critic, config: QuickDrawFSConfig) -> np.ndarray:
    """float64 [n, D]: the critic's features, else the critic-free `pixel_embedding`."""
    if critic is None:
        e = config.embedding
        return pixel_embedding(images, e["blur_sigma"], e["pool"], e["pca_dims"])
    from drawgap.data.exemplars import critic_features

    return critic_features(critic, images).double().numpy()


def pixel_embedding(images: np.ndarray, blur_sigma: float = EMBED_BLUR_SIGMA, pool: int = 2, dims: int = EMBED_DIMS) -> np.ndarray:
    """Critic-free embedding of uint8 drawings [n, S, S] -> float64 [n, <= dims].

    Blurred (a stroke moved by a pixel stays nearly the same feature), mean-pooled by `pool` (48 -> 24),
    then projected on the top `dims` principal components of these drawings (PCA by an eigen-decomposition
    of their covariance, or of their Gram matrix when there are fewer drawings than pooled pixels; memory
    grows with n only through the [n, 576] matrix itself).
    """
    from scipy.ndimage import gaussian_filter

    x = gaussian_filter(images.astype(np.float32) / 255.0, sigma=(0, blur_sigma, blur_sigma), mode="constant")
    n, s = len(x), x.shape[-1] // pool * pool
    x = x[:, :s, :s].reshape(n, s // pool, pool, s // pool, pool).mean(axis=(2, 4)).reshape(n, -1).astype(np.float64)
    x -= x.mean(axis=0)
    k = min(dims, *x.shape)
    if n < x.shape[1]:  # fewer drawings than pixels: the n x n Gram matrix gives the same projections, cheaper
        eigenvalues, u = np.linalg.eigh(x @ x.T)
        top = np.argsort(eigenvalues)[::-1][:k]
        return u[:, top] * np.sqrt(np.maximum(eigenvalues[top], 0.0))
    eigenvalues, eigenvectors = np.linalg.eigh(x.T @ x)
    return x @ eigenvectors[:, np.argsort(eigenvalues)[::-1][:k]]


def kmeans(features: np.ndarray, k: int, rng, iterations: int = 30, restarts: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(centres [k, D], assignment [n]): the best of `restarts` runs of scipy's kmeans2 (k-means++ start,
    seeded by `rng`), by within-cluster sum of squares; several starts because one run often merges two
    well-separated groups and splits a third (a local minimum)."""
    import warnings

    from scipy.cluster.vq import kmeans2

    if k == 1:
        return features.mean(axis=0, keepdims=True), np.zeros(len(features), np.int64)
    best = None
    for _ in range(max(1, restarts)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "one of the clusters is empty": then it keeps none
            try:
                centres, assignment = kmeans2(features, k, iter=iterations, minit="++", rng=rng)
            except TypeError:  # scipy < 1.15 names the generator `seed`
                centres, assignment = kmeans2(features, k, iter=iterations, minit="++", seed=rng)
        inertia = float(((features - centres[assignment]) ** 2).sum())
        if best is None or inertia < best[0]:
            best = (inertia, centres, assignment.astype(np.int64))
    return best[1], best[2]


def _split(classes: list[SubCategory], config: QuickDrawFSConfig, source, critic) -> dict:
    from drawgap.data.exemplars import with_exemplars

    order = np.random.default_rng([config.seed, len(config.categories)]).permutation(len(classes))  # apart from the categories' streams
    n_test = min(max(1, round(len(classes) * config.test_fraction)), len(classes) - 1)
    parts = {"train": order[: len(classes) - n_test], "test": order[len(classes) - n_test :]}
    return {split: with_exemplars(_dataset([classes[i] for i in members], config, source, split, len(classes)), critic,
                                  critic_name=config.critic)
            for split, members in parts.items()}


def _dataset(chosen: list[SubCategory], config: QuickDrawFSConfig, source, split: str, n_total: int):
    """A Dataset of sub-categories (exemplars still to be chosen), with the meta every QuickDraw-FS file carries."""
    from drawgap.data.formats import Dataset
    from drawgap.data.quickdraw import BUCKET_URL, CITATION, LICENSE, rasterizer_config
    from drawgap.provenance import provenance

    record = {**asdict(config), "rasterizer": rasterizer_config()}
    meta = {
        "name": "quickdraw-fs",
        "split": split,
        "reconstruction": True,
        "note": RECONSTRUCTION_NOTE,
        "binarization": BINARIZATION_NOTE,
        "source": os.fspath(source) if source is not None else BUCKET_URL,
        "license": LICENSE,
        "citation": CITATION,
        "image_size": config.image_size,
        "sub_categories": [{"class": s.name, "category": s.category, "cluster_size": s.cluster_size} for s in chosen],
        "n_sub_categories_total": n_total,
        "provenance": provenance(record, config.seed),
    }
    return Dataset(
        images=np.concatenate([s.images for s in chosen]),
        labels=np.repeat(np.arange(len(chosen), dtype=np.int64), [len(s.images) for s in chosen]),
        classes=np.array([s.name for s in chosen]),
        exemplars=np.zeros(len(chosen), np.int64),
        meta=meta,
    )


# ------------------------------------------------------------------------------------------ split records


def class_sha256(images: np.ndarray) -> str:
    """SHA-256 of a class's drawings (uint8 [n, S, S], C order): what a rebuilt class is checked against."""
    return hashlib.sha256(np.ascontiguousarray(images, dtype=np.uint8).tobytes()).hexdigest()


def split_record(test, source, build_command: str | None = None) -> dict:
    """The split record of a QuickDraw-FS build (see the module doc) from its test Dataset and the folder of
    ndjson files it was built from."""
    from drawgap.data.quickdraw import fetch_category
    from drawgap.weights import file_sha256

    prov = test.meta.get("provenance") or {}
    config = {k: v for k, v in (prov.get("config") or {}).items() if k != "rasterizer"}
    if test.meta.get("name") != "quickdraw-fs" or test.meta.get("split") != "test" or "categories" not in config:
        raise InputError("expected the test.npz of a `drawgap data quickdraw-fs` build (its meta records the build)",
                         field="meta")
    QuickDrawFSConfig(**config).check()
    categories = sorted({s["category"] for s in test.meta["sub_categories"]}, key=config["categories"].index)
    classes = []
    for c, name in enumerate(test.classes):
        members = np.flatnonzero(test.labels == c)
        classes.append({"class": str(name), "sha256": class_sha256(test.images[members]),
                        "exemplar": int(np.flatnonzero(members == test.exemplars[c])[0])})
    return {
        "format": SPLIT_FORMAT,
        "config": config,
        "rasterizer": (prov.get("config") or {}).get("rasterizer"),
        "exemplars": test.meta.get("exemplars"),
        "n_sub_categories_total": test.meta.get("n_sub_categories_total"),
        "build_command": build_command or prov.get("command"),
        "test_classes": classes,
        "files": {category: file_sha256(fetch_category(category, "simplified", source=source, progress=False))
                  for category in categories},
    }


def read_split_record(path: str | os.PathLike = SHIPPED_SPLIT) -> dict:
    from drawgap.weights import read_record

    record = read_record(path, SPLIT_FORMAT)
    for key in ("config", "test_classes", "files"):
        if key not in record:
            raise InputError("missing field", path=path, field=key)
    return record


def rebuild_test_split(record: dict, source, *, critic=None, progress: bool = True, workers: int = 1):
    """The test split of a split record, rebuilt from the categories that hold its classes: the same classes,
    drawings and exemplars as the full build. Each source file is checked against the recorded SHA-256 before
    any work, and each rebuilt class against its recorded hash after; a difference is an `InputError`."""
    from drawgap.data.exemplars import with_exemplars
    from drawgap.data.quickdraw import _progress, fetch_category, render_categories
    from drawgap.weights import file_sha256

    config = QuickDrawFSConfig(**record["config"]).check()
    if config.critic is not None and critic is None:
        from drawgap.data.exemplars import load_feature_critic

        critic = load_feature_critic(config.critic)
    wanted = [c["class"] for c in record["test_classes"]]
    categories = list(record["files"])
    for category, expected in record["files"].items():
        path = fetch_category(category, "simplified", source=source, progress=progress)
        if file_sha256(path) != expected:
            raise InputError(f"expected the file this QuickDraw-FS split was built from (sha256 {expected}), got other "
                             "drawings: its test classes cannot be rebuilt from them", path=path)
    rendered = render_categories(categories, workers=workers, progress=progress, source=source, size=config.image_size,
                                 max_per_category=config.max_per_category, recognized_only=config.recognized_only,
                                 on_error=config.on_error)
    found = {}
    for category, images in zip(categories, _progress(rendered, "categories", progress, len(categories))):
        rng = category_rng(config, config.categories.index(category))
        found.update((s.name, s) for s in split_category(category, images, config, critic, rng))
    missing = [name for name in wanted if name not in found]
    if missing:
        raise InputError(f"the rebuild kept no sub-category {missing[0]!r} ({len(missing)} of {len(wanted)} test classes "
                         "missing)", field="test_classes")
    ds = _dataset([found[name] for name in wanted], config, source, "test", record.get("n_sub_categories_total") or 0)
    ds = with_exemplars(ds, critic, critic_name=config.critic)
    ds.meta["rebuilt_from_split"] = {"categories": len(categories), "classes": len(wanted),
                                     "build_command": record.get("build_command")}
    differ = [c["class"] for k, c in enumerate(record["test_classes"])
              if class_sha256(ds.images_of(k)) != c["sha256"]
              or int(np.flatnonzero(np.flatnonzero(ds.labels == k) == ds.exemplars[k])[0]) != c["exemplar"]]
    if differ:
        raise InputError(f"{len(differ)} of {len(wanted)} rebuilt test classes differ from the split record (first: "
                         f"{differ[0]!r}): this install does not reproduce the build (numpy / scipy versions?); "
                         "build QuickDraw-FS in full with `drawgap data quickdraw-fs`", field="test_classes")
    return ds


def write_sub_category_preview(splits: dict, categories: Sequence[str], path: str | os.PathLike, per_class: int = 10):
    """A PNG of the sub-categories of `categories` (both splits), one row each, exemplar first, drawn as the
    report draws drawings: how the clustering split a category (e.g. analog and digital alarm clocks)."""
    from drawgap.data.formats import Dataset
    from drawgap.data.strokes import write_preview

    wanted = set(categories)
    images, labels, names, exemplars = [], [], [], []
    for ds in splits.values():
        for c, name in enumerate(ds.classes):
            if str(name).rsplit("/", 1)[0] in wanted:
                members = np.flatnonzero(ds.labels == c)
                exemplars.append(sum(len(x) for x in images) + int(np.flatnonzero(members == ds.exemplars[c])[0]))
                images.append(ds.images[members])
                labels.append(np.full(len(members), len(names)))
                names.append(str(name))
    missing = wanted - {n.rsplit("/", 1)[0] for n in names}
    if missing:
        raise InputError(f"no sub-category of {sorted(missing)} was kept", field="--preview-category")
    order = np.argsort(names, kind="stable")  # a category's sub-categories side by side
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    subset = Dataset(images=np.concatenate(images), labels=rank[np.concatenate(labels)],
                     classes=np.array(names)[order], exemplars=np.array(exemplars)[order], meta={"name": "quickdraw-fs"})
    return write_preview(subset, path, n_classes=len(names), per_class=per_class)


def quickdraw_fs_config(categories: Sequence[str], **options) -> QuickDrawFSConfig:
    """A checked config from a list of categories and keyword options (the CLI's path)."""
    return QuickDrawFSConfig(categories=list(categories), **options).check()
