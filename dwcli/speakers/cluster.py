"""Speaker embeddings -> speakers: spectral clustering, the count from the eigengap.

The recipe of 3D-Speaker's diarization (after speechbrain's): cosine similarities between
sub-window embeddings, each row pruned to its strongest neighbours (so the graph links a
voice to itself, not to every voice a little), symmetrised; the unnormalised Laplacian's
smallest eigenvalues come in a cluster per speaker, so the count is where the gap after
them is largest (then held between ``min_speakers`` and ``max_speakers``) unless it is given;
k-means on the matching eigenvectors labels the sub-windows.  Two clean-ups follow, unless
the count was given: speakers whose mean voices are as alike as one voice is to itself are
one speaker (the eigengap alone over-counts a speaker whose voice drifts), and a "speaker"
of only a few sub-windows (a cough, a laugh) goes to the nearest real one.

Files too short for a graph (a few seconds of speech) are clustered by average linkage on
the same cosine distance.  Past ``_DENSE_LIMIT`` sub-windows (about 40 minutes of speech),
the pruned graph is sparse and only its smallest eigenvalues are computed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The row pruning: keep this share of each row's similarities, at least _MIN_NEIGHBOURS.
_KEEP_SHARE = 0.012
_MIN_NEIGHBOURS = 6
# Two speakers whose mean embeddings are at least this similar (cosine) are one.  On the tune
# conversations, clusters the eigengap cut out of one voice were 0.76-0.88 alike, different
# speakers (same-gender pairs included) at most 0.34: the threshold sits between.
MERGE_SIMILARITY = 0.55
# A cluster of fewer sub-windows than this (with shift 0.75 s: under ~3 s of speech) is
# not a speaker of its own, unless the count was given.
_MIN_CLUSTER = 4
# Below this many sub-windows there is no graph to speak of: average linkage instead.
_SMALL = 12
_DENSE_LIMIT = 4000  # sub-windows: beyond, a sparse eigensolver
DEFAULT_MAX_SPEAKERS = 10


@dataclass(frozen=True)
class SpeakerCount:
    """What is known of the number of speakers: exactly ``num``, or between the bounds."""

    num: int | None = None
    min: int = 1
    max: int = DEFAULT_MAX_SPEAKERS


def _normalised(embeddings: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings / np.maximum(norms, 1e-8)


def cluster(embeddings: np.ndarray, count: SpeakerCount = SpeakerCount()) -> np.ndarray:
    """A speaker index for each row of ``embeddings`` (0, 1, ...; not yet in any order)."""
    n = len(embeddings)
    if n == 0:
        return np.zeros(0, int)
    unit = _normalised(np.asarray(embeddings, np.float64))
    low, high = (count.num, count.num) if count.num else (count.min, count.max)
    high = min(high, n)
    low = min(low, high)
    if n < _SMALL:
        labels = _linkage(unit, low, high)
    else:
        labels = _spectral(unit, low, high)
    if count.num is None:
        labels = _merge_alike(unit, labels, low)
        labels = _absorb_small(unit, labels, low)
    return _compact(labels)


def _linkage(unit: np.ndarray, low: int, high: int) -> np.ndarray:
    from scipy.cluster.hierarchy import fcluster, linkage

    if len(unit) == 1:
        return np.zeros(1, int)
    tree = linkage(unit, method="average", metric="cosine")
    labels = fcluster(tree, t=1.0 - MERGE_SIMILARITY, criterion="distance") - 1
    found = len(set(labels))
    if found < low or found > high:
        labels = fcluster(tree, t=min(max(found, low), high), criterion="maxclust") - 1
    return labels


def _pruned_affinity(unit: np.ndarray):
    """Cosine similarities, each row keeping only its strongest neighbours, symmetrised;
    dense below ``_DENSE_LIMIT`` rows, else a sparse matrix (built block by block)."""
    from scipy import sparse

    n = len(unit)
    keep = min(n - 1, max(_MIN_NEIGHBOURS, int(np.ceil(_KEEP_SHARE * n))))
    rows, cols, values = [], [], []
    for first in range(0, n, 1024):
        block = unit[first : first + 1024] @ unit.T
        for offset in range(len(block)):
            block[offset, first + offset] = -np.inf  # no self-loops
        top = np.argpartition(-block, keep - 1, axis=1)[:, :keep]
        rows.append(np.repeat(np.arange(first, first + len(block)), keep))
        cols.append(top.ravel())
        values.append(np.maximum(np.take_along_axis(block, top, axis=1).ravel(), 0.0))
    affinity = sparse.csr_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
                                 shape=(n, n))
    affinity = 0.5 * (affinity + affinity.T)
    return affinity.toarray() if n <= _DENSE_LIMIT else affinity.tocsr()


def _smallest_eigen(affinity, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``count`` smallest eigenvalues and eigenvectors of the unnormalised Laplacian."""
    from scipy import sparse

    if isinstance(affinity, np.ndarray):
        laplacian = np.diag(affinity.sum(axis=1)) - affinity
        values, vectors = np.linalg.eigh(laplacian)
        return values[:count], vectors[:, :count]
    from scipy.sparse.linalg import eigsh

    laplacian = sparse.diags(np.asarray(affinity.sum(axis=1)).ravel()) - affinity
    # Shift-invert just below 0 (the Laplacian is positive semi-definite): the smallest ones.
    values, vectors = eigsh(laplacian.tocsc(), k=count, sigma=-1e-3, which="LM")
    order = np.argsort(values)
    return values[order], vectors[:, order]


def _spectral(unit: np.ndarray, low: int, high: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    affinity = _pruned_affinity(unit)
    # The count is estimated over the whole usual range, then held to the bounds: with more
    # voices than ``high``, the gaps below ``high`` are all noise, and ``high`` is right.
    search = max(high, DEFAULT_MAX_SPEAKERS)
    values, vectors = _smallest_eigen(affinity, min(search + 1, len(unit) - 1))
    if low == high:
        speakers = low
    else:
        gaps = np.diff(values)
        speakers = min(max(int(np.argmax(gaps)) + 1 if len(gaps) else 1, low), high)
    if speakers == 1:
        return np.zeros(len(unit), int)
    return KMeans(n_clusters=speakers, n_init=10, random_state=0).fit_predict(vectors[:, :speakers])


def _centroids(unit: np.ndarray, labels: np.ndarray) -> dict[int, np.ndarray]:
    return {label: _normalised(unit[labels == label].mean(axis=0, keepdims=True))[0] for label in set(labels.tolist())}


def _merge_alike(unit: np.ndarray, labels: np.ndarray, low: int) -> np.ndarray:
    """Join the two most alike speakers while their mean voices are at least
    ``MERGE_SIMILARITY`` alike and more than ``low`` speakers remain."""
    labels = labels.copy()
    while True:
        centroids = _centroids(unit, labels)
        if len(centroids) <= low:
            return labels
        names = sorted(centroids)
        best, pair = -1.0, None
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                similarity = float(centroids[a] @ centroids[b])
                if similarity > best:
                    best, pair = similarity, (a, b)
        if pair is None or best < MERGE_SIMILARITY:
            return labels
        labels[labels == pair[1]] = pair[0]


def _absorb_small(unit: np.ndarray, labels: np.ndarray, low: int) -> np.ndarray:
    """Sub-windows of a cluster too small to be a speaker join the nearest large one."""
    labels = labels.copy()
    sizes = {label: int((labels == label).sum()) for label in set(labels.tolist())}
    large = [label for label, size in sizes.items() if size >= _MIN_CLUSTER]
    small = [label for label in sizes if label not in large]
    if not large or not small or len(large) < low:
        return labels
    centroids = _centroids(unit, labels)
    matrix = np.stack([centroids[label] for label in large])
    for label in small:
        rows = np.flatnonzero(labels == label)
        labels[rows] = np.asarray(large)[np.argmax(unit[rows] @ matrix.T, axis=1)]
    return labels


def _compact(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 0..k-1 (in order of first occurrence)."""
    mapping: dict[int, int] = {}
    return np.array([mapping.setdefault(int(label), len(mapping)) for label in labels], int)
