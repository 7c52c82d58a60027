"""The topic model: what a post is about (a probability per topic) and which topics an interest means.

Offline and small, two models averaged: WordLlama's static word embeddings (256 dimensions, shipped with
the ``wordllama`` package: nothing is downloaded, the weights load from the package folder) and a logistic
regression per topic over that embedding and the TF-IDF of the title's words, the host and the URL's path
(``topics.npz``, trained by ``hnpal.relevance.train`` on real community-tagged stories); and a small
transformer fine-tuned on the same stories (``hnpal.relevance.encoder``). Beside their average, the
post's nearest training stories vote with their tags (``hnpal.relevance.neighbours``). 2–5 ms of CPU per
post, by host (docs/performance.md); the loaded models add about 110 MB to a worker.

A typed interest ("distributed systems", "sourdough") is matched to the topics whose name and strongest
words its embedding is close to; one that is close to none keeps only its words (the selection matches
them against titles).
"""

from __future__ import annotations

import hashlib
import json
import threading
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from hnpal.relevance.encoder import ONNX, TopicEncoder, encoder, encoder_text
from hnpal.relevance.features import embedding_text, text_start, tfidf, tokens
from hnpal.relevance.glossary import plain
from hnpal.relevance.neighbours import NEIGHBOURS_FILE, Neighbours, Readings

DATA = Path(__file__).resolve().parent / "topics.npz"
# stored with each post's topics: a new model recomputes recent posts
MODEL_NAME = "wordllama-lr1+minilm-ft2+knn10+glossary2"
MIN_PROB = 0.03  # topics below this are not stored for a post
MAX_TOPICS = 6
TEXT_WEIGHT = 0.35  # how much a post's own text moves its embedding, beside the title
MATCH_MIN = 0.55  # cosine an interest needs with a topic's description to mean it
MATCH_PROB = 0.35  # or: the probability the classifier gives the topic for the interest read as a title ...
MATCH_LIFT = 3.0  # ... when that is this many times what it gives an empty title
SECOND = 0.5  # the weight of a second topic the interest also means (within half the best's probability)
ENCODER_WEIGHT = 0.5  # a post's topics: this much the encoder's probabilities, the rest the classifier's ...
NEIGHBOURS_WEIGHT = 1 / 3  # ... and that average beside the vote of the encoder's nearest training stories

# HN Pal's own topic buttons that are no topic of the model by name.
BUTTONS = {
    "llm": {"ai": 1.0},
    "cloud": {"devops": 1.0, "distributed": 0.5, "virtualization": 0.5},
    "space": {"science": 0.5},
    "open source": {},
    "startups": {},
}

# How topics are shown to readers; the rest are capitalised. The community's "ml" is the ML family of
# languages (OCaml, Standard ML), not machine learning, which it files under "ai".
NAMES = {
    "ai": "AI", "ml": "ML languages", "api": "APIs", "a11y": "Accessibility", "c": "C", "c++": "C++",
    "compsci": "Computer science", "css": "CSS", "devops": "DevOps", "distributed": "Distributed systems",
    "dotnet": ".NET", "formalmethods": "Formal methods", "freebsd": "FreeBSD", "games": "Game development",
    "graphics": "Computer graphics", "historical": "Computing history", "ios": "iOS", "javascript": "JavaScript",
    "mac": "macOS", "math": "Mathematics", "netbsd": "NetBSD", "networking": "Networking", "nix": "Nix",
    "nodejs": "Node.js", "openbsd": "OpenBSD", "osdev": "Operating system development",
    "performance": "Performance", "php": "PHP", "plt": "Programming language theory",
    "reversing": "Reverse engineering", "vcs": "Version control", "wasm": "WebAssembly", "vim": "Vim",
    "cogsci": "Cognitive science", "visualization": "Data visualization", "virtualization": "Virtualization",
    "law": "Law", "scaling": "Scaling", "go": "Go", "crypto": "Cryptocurrency",
}  # fmt: skip


def story_hash(story_id: str) -> int:
    """A story's place in the train/benchmark split (64 bits of SHA-256 of its id)."""
    return int(hashlib.sha256(f"lobsters:{story_id}".encode()).hexdigest()[:16], 16)


def topic_name(topic: str) -> str:
    return NAMES.get(topic, topic[:1].upper() + topic[1:])


def normalize_phrase(phrase: str) -> str:
    """How interests and mutes are compared: NFKC, case-folded, single spaces."""
    return " ".join(unicodedata.normalize("NFKC", phrase).casefold().split())


# A muted keyword that names a topic mutes the posts about it too (MUTE_MIN: a post at least that likely to be
# about the topic), beside the titles with the word. Only an unambiguous name does: "ml" is the community's
# ML languages, but a reader who mutes "ML" most likely means machine learning (the word still mutes titles).
MUTE_MIN = 0.5
AMBIGUOUS_NAMES = frozenset({"ml"})


def topic_aliases(topics: Iterable[str]) -> dict[str, str]:
    """Each topic by its tag and by its shown name (as normalize_phrase gives them) -> the topic."""
    return {key: t for t in topics for key in (normalize_phrase(t), normalize_phrase(topic_name(t)))}


@lru_cache(maxsize=1)
def topic_names() -> tuple[str, ...]:
    """The model's topics, read alone from topics.npz (no model is loaded: a settings view can ask)."""
    with np.load(DATA, allow_pickle=False) as data:
        return tuple(str(t) for t in data["topics"])


@lru_cache(maxsize=1)
def mute_aliases() -> dict[str, str]:
    """The phrases that name a topic for a mute: its tag and its shown name (unless ambiguous), and HN Pal's
    buttons that mean one topic alone ("llm"). Phrase (as normalize_phrase gives it) -> topic."""
    aliases = {key: t for key, t in topic_aliases(topic_names()).items() if key not in AMBIGUOUS_NAMES}
    aliases.update({key: next(iter(m)) for key, m in BUTTONS.items() if list(m.values()) == [1.0]})
    return aliases


def muted_topics(mutes: list[str]) -> list[str]:
    """The topics these muted keywords mute by meaning, in their order."""
    aliases = mute_aliases()
    return list(dict.fromkeys(aliases[k] for k in map(normalize_phrase, mutes) if k in aliases))


_lock = threading.Lock()
_embedder: Any = None
_model: TopicModel | None = None
_neighbours: Neighbours | None = None


def embedder() -> Any:
    """WordLlama from the files its package ships (``disable_download``: no network, ever)."""
    global _embedder
    with _lock:
        if _embedder is None:
            import wordllama
            from wordllama import WordLlama

            _embedder = WordLlama.load(cache_dir=Path(wordllama.__file__).parent, disable_download=True)
        return _embedder


def model() -> TopicModel:
    global _model
    if _model is None:
        loaded = TopicModel.load(DATA)
        with _lock:
            _model = _model or loaded
    return _model


def neighbours() -> Neighbours:
    """The training stories the shipped models read (``topics-neighbours.npz``), checked against them."""
    global _neighbours
    if _neighbours is None:
        loaded = Neighbours(NEIGHBOURS_FILE, models=[DATA, ONNX])
        if loaded.topics != model().topics:
            raise RuntimeError(f"{NEIGHBOURS_FILE.name} has other topics than topics.npz: rebuild it (train_encoder)")
        with _lock:
            _neighbours = _neighbours or loaded
    return _neighbours


@dataclass(frozen=True)
class PostText:
    title: str
    url: str | None = None
    domain: str | None = None
    text: str | None = None


class TopicModel:
    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.topics: list[str] = [str(t) for t in arrays["topics"]]
        self.vocab = {str(t): i for i, t in enumerate(arrays["vocab"])}
        self.idf = arrays["idf"].astype(np.float32).tolist()
        self.w_words = arrays["w_words"].astype(np.float32)
        self.w_emb = arrays["w_emb"].astype(np.float32)
        self.bias = arrays["bias"].astype(np.float32)
        self.about = {t: json.loads(str(a)) for t, a in zip(self.topics, arrays["about"], strict=True)}
        self.train_hashes = arrays["train_hashes"]
        self.index = {t: i for i, t in enumerate(self.topics)}

    @classmethod
    def load(cls, path: Path) -> TopicModel:
        with np.load(path, allow_pickle=False) as data:
            return cls({k: data[k] for k in data.files})

    def trained_on(self, story_id: str) -> bool:
        h = np.uint64(story_hash(story_id))
        i = int(np.searchsorted(self.train_hashes, h))
        return i < len(self.train_hashes) and self.train_hashes[i] == h

    # --- posts ---------------------------------------------------------------------------------------

    def embed_posts(self, posts: list[PostText]) -> np.ndarray:
        wl = embedder()
        emb = wl.embed([embedding_text(p.title, p.url, p.domain) for p in posts], norm=True)
        with_text = [i for i, p in enumerate(posts) if text_start(p.text)]
        if with_text:
            extra = wl.embed([text_start(posts[i].text) for i in with_text], norm=True)
            emb[with_text] += TEXT_WEIGHT * extra
            emb[with_text] /= np.linalg.norm(emb[with_text], axis=1, keepdims=True)
        return emb

    def probabilities(self, posts: list[PostText]) -> np.ndarray:
        """posts x topics: the probability that each post is about each topic: the classifier's and the
        encoder's averaged, beside the vote of the post's nearest training stories."""
        if not posts:
            return np.zeros((0, len(self.topics)), np.float32)
        encoded, readings = self.read(posts)
        models = (1 - ENCODER_WEIGHT) * self._classified(readings.words, readings.tfidf) + ENCODER_WEIGHT * encoded
        return (1 - NEIGHBOURS_WEIGHT) * models + NEIGHBOURS_WEIGHT * neighbours().vote(readings)

    def read(self, posts: list[PostText], enc: TopicEncoder | None = None) -> tuple[np.ndarray, Readings]:
        """The encoder's probabilities, and the posts as the models read them."""
        enc = enc or encoder()
        if enc.topics != self.topics:
            raise RuntimeError("topics-encoder.onnx was trained for other topics than topics.npz: retrain one")
        encoded, vectors = enc.encode([encoder_text(p.title, p.url, p.domain) for p in posts])
        return encoded, Readings(vectors=vectors, words=self.embed_posts(posts), tfidf=self._tfidf_rows(posts))

    def classifier_probabilities(self, posts: list[PostText]) -> np.ndarray:
        """The classifier's part: word embedding and TF-IDF, a logistic regression per topic."""
        return self._classified(self.embed_posts(posts), self._tfidf_rows(posts))

    def _tfidf_rows(self, posts: list[PostText]) -> list[dict[int, float]]:
        return [tfidf(tokens(p.title, p.url, p.domain), self.vocab, self.idf) for p in posts]

    def _classified(self, words: np.ndarray, rows: list[dict[int, float]]) -> np.ndarray:
        """The logistic regressions over the word embeddings and the TF-IDF rows."""
        logits = words @ self.w_emb + self.bias
        for row, values in enumerate(rows):
            for col, value in values.items():
                logits[row] += value * self.w_words[col]
        return 1.0 / (1.0 + np.exp(-logits))

    def classify(self, posts: list[PostText]) -> list[dict[str, float]]:
        """Each post's topics worth storing: up to MAX_TOPICS with a probability of at least MIN_PROB."""
        out = []
        for row in self.probabilities(posts):
            best = np.argsort(-row)[:MAX_TOPICS]
            out.append({self.topics[i]: round(float(row[i]), 4) for i in best if row[i] >= MIN_PROB})
        return out

    # --- interests -----------------------------------------------------------------------------------

    @cached_property
    def _descriptions(self) -> np.ndarray:
        texts = [f"{topic_name(t)} {t} " + " ".join(self.about[t][:8]) for t in self.topics]
        return embedder().embed(texts, norm=True)

    @cached_property
    def _aliases(self) -> dict[str, str]:
        return topic_aliases(self.topics)

    def _phrase_probabilities(self, phrases: list[str]) -> np.ndarray:
        """The classifier's probabilities for phrases read as titles (their words only: no host, no URL)."""
        rows = [
            tfidf([w for w in tokens(phrase, None) if not w.startswith("D:")], self.vocab, self.idf)
            for phrase in phrases
        ]
        return self._classified(embedder().embed([plain(phrase) for phrase in phrases], norm=True), rows)

    @cached_property
    def _prior(self) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.bias))  # an empty title: no words, a zero embedding

    def interest_topics(self, phrase: str) -> dict[str, float]:
        """The topics an interest means (topic -> weight in (0, 1]); empty when it means none of them.

        A topic's own name (or HN Pal's button for it) means that topic. Otherwise the interest is read
        as a title: a topic the classifier then finds likely (and far likelier than for an empty title),
        or whose name and strongest words the interest's embedding is close to, is meant; a second topic
        at least half as likely counts at half weight."""
        key = normalize_phrase(phrase)
        if not key:
            return {}
        if key in BUTTONS:
            return dict(BUTTONS[key])
        if key in self._aliases:
            return {self._aliases[key]: 1.0}
        probs = self._phrase_probabilities([key])[0]
        sims = self._descriptions @ embedder().embed([plain(key)], norm=True)[0]
        meant = (probs >= MATCH_PROB) & (probs >= MATCH_LIFT * self._prior)
        strength = np.where(meant, probs, 0.0) + np.where(sims >= MATCH_MIN, sims, 0.0)
        best = float(strength.max())
        if best <= 0:
            return {}
        return {
            self.topics[i]: 1.0 if strength[i] == best else SECOND
            for i in np.argsort(-strength)[:3]
            if strength[i] > 0 and strength[i] >= best / 2
        }
