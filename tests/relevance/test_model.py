"""The topic model: loads with the network refused, fits a worker's memory, and understands interests."""

from __future__ import annotations

import json
import subprocess
import sys

from hnpal.relevance.model import PostText, model, normalize_phrase

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
    # 8-bit encoder, its tokenizer and onnxruntime): about 150 MB
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
    assert m.interest_topics("LLM") == {"ai": 1.0, "ml": 0.5}  # HN Pal's own button
    assert next(iter(m.interest_topics("computer networking"))) == "networking"
    assert next(iter(m.interest_topics("game development"))) == "games"
    assert m.interest_topics("sourdough") == {}
    assert m.interest_topics("") == {}


def test_phrases_are_compared_folded() -> None:
    assert normalize_phrase("  Machine\tLEARNING ") == "machine learning"
    assert normalize_phrase("ﬁle Café") == "file café"
