"""A post's nearest training stories, and the vote of their tags on what the post is about.

The topic models generalize from the training stories; their nearest neighbours remember them. Averaging
the two ranks better than either (docs/performance.md): a story much like a few tagged ones is likely
tagged like them, whatever the models learned in general.

How alike two stories are: the mean of two cosines, two readings of title and host: the fine-tuned
encoder's sentence vectors (what a story means) and the TF-IDF of the classifier's words (its vocabulary
and IDF: which title words, host and URL path words it shares). The :data:`NEIGHBOURS` most alike vote,
each by ``exp(SHARPNESS x similarity)``. ``topics-neighbours.npz`` holds the training stories in both
forms (vectors as 8 bits, TF-IDF rows sparse) and their tags; ``hnpal.relevance.train_encoder`` writes it from
the shipped models, and it names the models it was written with (a retrained model reads differently).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from threadpoolctl import ThreadpoolController

HERE = Path(__file__).resolve().parent
NEIGHBOURS_FILE = HERE / "topics-neighbours.npz"
NEIGHBOURS = 10  # training stories that vote on a post's topics
SHARPNESS = 10.0  # a neighbour's vote: exp(SHARPNESS x similarity), normalized over the NEIGHBOURS
CHUNK = 64  # posts compared at a time (their similarities to every training story stay in the CPU's cache)


@cache
def _blas() -> ThreadpoolController:
    """The process's thread pools (found once: looking for them costs more than a small product)."""
    return ThreadpoolController()


@dataclass(frozen=True)
class Readings:
    """Posts as the models read them: each row one post."""

    vectors: np.ndarray  # the encoder's sentence vectors, unit length
    words: np.ndarray  # WordLlama's embeddings, unit length (the classifier's)
    tfidf: list[dict[int, float]]  # the classifier's TF-IDF rows (L2-normalized), vocabulary index -> value


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _int8(vectors: np.ndarray) -> np.ndarray:
    """Each vector scaled to its largest component, as 8 bits (only directions matter)."""
    scale = np.maximum(np.abs(vectors).max(axis=1, keepdims=True), 1e-9)
    return np.round(127 * vectors / scale).astype(np.int8)


def _unit(stored: np.ndarray) -> np.ndarray:
    vectors = stored.astype(np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)


def save(path: Path, *, readings: Readings, tags: list[set[str]], topics: list[str], models: list[Path]) -> None:
    """Write the training stories (``readings``, with their ``tags``) for the models in ``models``."""
    rows = [sorted(row.items()) for row in readings.tfidf]
    np.savez_compressed(
        path,
        models=np.array([f"{m.name}:{file_digest(m)}" for m in models]),
        topics=np.array(topics),
        vectors=_int8(readings.vectors),
        tfidf_indptr=np.cumsum([0] + [len(r) for r in rows]).astype(np.int32),
        tfidf_indices=np.array([i for r in rows for i, _ in r], dtype=np.int32),
        tfidf_values=np.array([v for r in rows for _, v in r], dtype=np.float16),
        tags=np.packbits(np.array([[t in story for t in topics] for story in tags], dtype=bool), axis=1),
    )


class Neighbours:
    """The training stories, as the models read them, and their tags."""

    def __init__(self, path: Path, *, models: list[Path]) -> None:
        with np.load(path, allow_pickle=False) as data:
            if [str(m) for m in data["models"]] != [f"{m.name}:{file_digest(m)}" for m in models]:
                raise RuntimeError(f"{path.name} was written for other models: rebuild it (train_encoder)")
            self.topics: list[str] = [str(t) for t in data["topics"]]
            self.vectors = _unit(data["vectors"])
            self.tags = np.unpackbits(data["tags"], axis=1, count=len(self.topics)).astype(np.float32)
            indptr, indices = data["tfidf_indptr"], data["tfidf_indices"]
            values = data["tfidf_values"].astype(np.float32)
        # the TF-IDF rows by word (an inverted index): word -> the stories that have it, and its value in each
        stories = np.repeat(np.arange(len(indptr) - 1, dtype=np.int32), np.diff(indptr))
        order = np.argsort(indices, kind="stable")
        words, starts = np.unique(indices[order], return_index=True)
        ends = np.append(starts[1:], len(order))
        self._postings = {
            int(w): (stories[order[a:b]], values[order[a:b]]) for w, a, b in zip(words, starts, ends, strict=True)
        }

    def __len__(self) -> int:
        return len(self.tags)

    def similarity(self, readings: Readings) -> np.ndarray:
        """posts x training stories: the mean of the two cosines."""
        # one thread, as the encoder runs: a worker's tasks run side by side (and BLAS threads spin)
        with _blas().limit(limits=1, user_api="blas"):
            sims = readings.vectors.astype(np.float32) @ self.vectors.T
        for row, tfidf in enumerate(readings.tfidf):
            for word, value in tfidf.items():
                if word in self._postings:
                    stories, values = self._postings[word]
                    sims[row, stories] += value * values
        return sims / 2

    def vote(self, readings: Readings) -> np.ndarray:
        """posts x topics: the share of each topic among the posts' nearest training stories."""
        out = np.zeros((len(readings.tfidf), len(self.topics)), np.float32)
        for start in range(0, len(out), CHUNK):
            part = slice(start, start + CHUNK)
            sims = self.similarity(Readings(readings.vectors[part], readings.words[part], readings.tfidf[part]))
            k = min(NEIGHBOURS, sims.shape[1])
            near = np.argpartition(sims, sims.shape[1] - k, axis=1)[:, -k:]
            weights = np.exp(SHARPNESS * np.take_along_axis(sims, near, axis=1))
            weights /= weights.sum(axis=1, keepdims=True)
            out[part] = np.einsum("nk,nkt->nt", weights, self.tags[near])
        return out
