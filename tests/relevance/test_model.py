"""The topic model: loads with the network refused, fits a worker's memory, and understands interests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hnpal.relevance.encoder import ONNX, encoder
from hnpal.relevance.glossary import plain
from hnpal.relevance.model import (
    DATA,
    ENCODER_WEIGHT,
    NEIGHBOURS_WEIGHT,
    PostText,
    model,
    neighbours,
    normalize_phrase,
    topic_name,
)
from hnpal.relevance.neighbours import NEIGHBOURS, NEIGHBOURS_FILE, SHARPNESS, Neighbours, Readings

# Run in a fresh interpreter: every socket refused before anything is imported, then the model loaded and
# used; prints what it found and the resident memory it added.
LOAD_OFFLINE = """
import json, resource, socket
def refuse(*args, **kwargs):
    raise OSError("network refused by the test")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
from hnpal.relevance.model import PostText, model
found = model().classify([PostText("Anatomy of a typosquatting attack", "https://blog.example/typo")])
meant = model().interest_topics("distributed systems")
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"found": found, "meant": meant, "added_mb": (after - before) / 1024, "rss_mb": after / 1024}))
"""


def test_the_model_loads_and_works_with_the_network_refused() -> None:
    done = subprocess.run([sys.executable, "-c", LOAD_OFFLINE], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert next(iter(result["found"][0])) == "security"
    assert result["meant"] == {"distributed": 1.0}
    # what a worker pays for the models (WordLlama's 256-dimension table, its tokenizer, the classifier; the
    # 8-bit encoder, its tokenizer and onnxruntime; the neighbours' vectors and rows): about 110 MB
    print(f"model loaded: +{result['added_mb']:.0f} MB, worker RSS {result['rss_mb']:.0f} MB")
    assert result["added_mb"] < 200


def test_topics_of_posts_are_probabilities_best_first() -> None:
    found = model().classify([PostText("SQLite WAL mode in depth", "https://sqlite.org/wal.html")])[0]
    weights = list(found.values())
    assert next(iter(found)) == "databases"
    assert weights == sorted(weights, reverse=True) and all(0 < w <= 1 for w in weights)


def test_interests_mean_topics_by_name_by_button_or_by_meaning() -> None:
    m = model()
    assert m.interest_topics("Databases") == {"databases": 1.0}
    assert m.interest_topics("  GO ") == {"go": 1.0}
    assert m.interest_topics("LLM") == {"ai": 1.0}  # HN Pal's own button
    # the community's "ml" is the ML family of languages: machine learning is AI, OCaml is ML
    assert m.interest_topics("machine learning") == {"ai": 1.0}
    assert m.interest_topics("OCaml") == {"ml": 1.0}
    ocaml = m.classify([PostText("Effect handlers arrive in OCaml 5: a practical tour", "https://ocaml.org/news")])[0]
    assert next(iter(ocaml)) == "ml" and topic_name("ml") == "ML languages"
    assert next(iter(m.interest_topics("computer networking"))) == "networking"
    assert next(iter(m.interest_topics("game development"))) == "games"
    assert m.interest_topics("sourdough") == {}
    assert m.interest_topics("") == {}


def test_the_glossary_says_newer_words_as_the_training_stories_did() -> None:
    assert plain("Why LLMs hallucinate") == "Why AI models AI hallucination"
    assert plain("gpt-4o-mini is cheap") == "GPT AI model is cheap"
    assert plain("Llama-3.1 405B on one GPU") == "AI model 405B on one GPU"
    # ambiguous names stay what they are, and so do terms inside other names
    for title in (
        "Claude Shannon's master's thesis",
        "Llama - a terminal file manager",
        "The Gemini protocol",
        "LoRa mesh networking",
        "LLM.int8(): 8-bit matrix multiplication",
        "my-llm-tool",
        "LLVM 18",
    ):
        assert plain(title) == title
    m = model()
    assert m.interest_topics("LLM inference")["ai"] == 1.0
    assert m.interest_topics("local LLMs") == {"ai": 1.0}  # not programming language theory beside it
    posts = [PostText("How do you evaluate LLM features"), PostText("Why LLMs hallucinate")]
    assert all(next(iter(found)) == "ai" for found in m.classify(posts))


def test_names_the_training_stories_met_too_seldom_are_said_with_what_they_are() -> None:
    assert plain("Moving from webpack to Vite") == "Moving from webpack to Vite JavaScript build tool"
    assert plain("Bun 1.1 adds Windows support") == "Bun JavaScript runtime adds Windows support"
    for title in ("C'est vite fait", "I baked a bun", "svelte.config.js explained", "Visionary leaders"):
        assert plain(title) == title
    m = model()
    found = m.classify(
        [
            PostText("Valkey 8.0 released", "https://valkey.io/blog/8"),
            PostText("Bun 1.0", "https://bun.sh/blog/bun-v1.0"),
            PostText("Vite 5.0 is out", "https://vitejs.dev/blog/announcing-vite5"),
            PostText("CrowdStrike update bricks Windows machines worldwide", "https://www.theverge.com/x"),
            PostText("Apple Vision Pro teardown", "https://www.ifixit.com/News/x"),
        ]
    )
    assert [max(f, key=f.__getitem__) for f in found] == [
        "databases",
        "javascript",
        "javascript",
        "security",
        "hardware",
    ]


def test_phrases_are_compared_folded() -> None:
    assert normalize_phrase("  Machine\tLEARNING ") == "machine learning"
    assert normalize_phrase("ﬁle Café") == "file café"


def test_the_encoder_reads_like_titles_alike() -> None:
    _, vectors = encoder().encode(
        ["How the PostgreSQL query planner picks an index", "SQLite's query optimizer explained", "Rust lifetimes"]
    )
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.1


def test_the_nearest_training_stories_vote_their_tags() -> None:
    near = neighbours()
    assert near.topics == model().topics and len(near) > 1000
    story = int(np.flatnonzero(near.tags.sum(axis=1) >= 2)[0])  # a training story with two tags or more
    readings = Readings(vectors=near.vectors[[story]], words=np.zeros((1, 256), np.float32), tfidf=[{}])
    sims = near.similarity(readings)[0]
    assert sims[story] == pytest.approx(1 / 2, abs=1e-5)  # itself: a cosine of 1, no words given
    vote = near.vote(readings)[0]
    # the story is among its own nearest: its tags get at least its share of the vote
    top = np.sort(sims)[-NEIGHBOURS:]
    own_share = np.exp(SHARPNESS * sims[story]) / np.exp(SHARPNESS * top).sum()
    assert own_share > 1 / NEIGHBOURS
    for t in np.flatnonzero(near.tags[story]):
        assert vote[t] >= own_share - 1e-5
    assert np.all(vote >= 0) and vote.max() <= 1 + 1e-5


def test_a_post_s_topics_follow_its_neighbours_beside_the_models() -> None:
    m = model()
    post = [PostText("Faster Postgres bulk loads with COPY", "https://example.org/postgres-copy")]
    encoded, readings = m.read(post)
    vote = neighbours().vote(readings)[0]
    models = (1 - ENCODER_WEIGHT) * m.classifier_probabilities(post)[0] + ENCODER_WEIGHT * encoded[0]
    assert vote[m.index["databases"]] > 0.5  # its nearest training stories are mostly about databases
    assert np.allclose(m.probabilities(post)[0], (1 - NEIGHBOURS_WEIGHT) * models + NEIGHBOURS_WEIGHT * vote, atol=1e-5)


def test_neighbours_written_for_other_models_are_refused(tmp_path: Path) -> None:
    assert len(Neighbours(NEIGHBOURS_FILE, models=[DATA, ONNX])) > 1000
    with np.load(NEIGHBOURS_FILE) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["models"] = np.array([str(arrays["models"][0]), "topics-encoder.onnx:0123456789abcdef"])
    np.savez(tmp_path / "stale.npz", **arrays)
    with pytest.raises(RuntimeError, match="other models"):
        Neighbours(tmp_path / "stale.npz", models=[DATA, ONNX])


def test_an_encoder_trained_on_other_text_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The file says what text it was trained on; an encoder_text that gives something else (a changed format
    without a retrained model) would misread every post, so the encoder does not load."""
    from hnpal.relevance import encoder as encoder_module

    assert encoder_module.TopicEncoder().topics == model().topics  # the shipped file matches
    monkeypatch.setattr(encoder_module, "TEXT_FORMAT", "title (site)")
    with pytest.raises(RuntimeError, match="trained on 'title \\(host\\)'"):
        encoder_module.TopicEncoder()
