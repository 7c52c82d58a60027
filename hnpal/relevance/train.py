"""Train the topic classifier shipped in ``topics.npz`` (a developer's tool; needs scikit-learn).

    python -m hnpal.relevance.train --stories ../shared/fixtures/stories/lobsters-2021-2022.jsonl

The stories are split by a hash of their id: the training part (``--train-tenths`` of ten, 8 by
default) teaches the classifier, and the hashes of its ids ship with the model, so that
``bench/relevance.py`` never scores a story the model was trained on. Features: the sentence embedding
of the title and host (WordLlama, 256 dimensions) beside TF-IDF of title words, host, domain and URL path
words; one logistic regression per topic. Topics: the community tags with enough training stories that
say what a story is about (tags of format, such as ``pdf`` or ``video``, are left out).
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np

from hnpal.relevance.features import embedding_text, tokens
from hnpal.relevance.model import DATA, embedder, story_hash

# Tags that say what form a story takes or who posted it, not what it is about.
FORMAT_TAGS = {"ask", "show", "pdf", "video", "release", "slides", "transcript", "meta", "announce", "job",
               "event", "person", "satire", "rant", "book", "audio"}  # fmt: skip
MIN_TRAIN = 25


def main() -> int:
    from scipy import sparse  # training only
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stories", type=Path, required=True)
    parser.add_argument("--train-tenths", type=int, default=8)
    parser.add_argument("--C", type=float, default=2.0)
    args = parser.parse_args()

    stories = [json.loads(line) for line in args.stories.read_text().splitlines() if line.strip()]
    train = [s for s in stories if story_hash(s["id"]) % 10 < args.train_tenths]
    counts = Counter(t for s in train for t in s["tags"])
    topics = sorted(t for t, n in counts.items() if n >= MIN_TRAIN and t not in FORMAT_TAGS)
    print(f"{len(train)} of {len(stories)} stories for training, {len(topics)} topics")

    docs = [tokens(s["title"], s.get("url")) for s in train]
    vectorizer = TfidfVectorizer(analyzer=lambda d: d, min_df=2, sublinear_tf=True)
    words = vectorizer.fit_transform(docs)
    emb = embedder().embed([embedding_text(s["title"], s.get("url")) for s in train], norm=True)
    x = sparse.hstack([sparse.csr_matrix(emb), words]).tocsr()
    dims = emb.shape[1]
    w_emb = np.zeros((dims, len(topics)), np.float32)
    w_words = np.zeros((words.shape[1], len(topics)), np.float32)
    bias = np.zeros(len(topics), np.float32)
    for j, topic in enumerate(topics):
        y = np.array([topic in s["tags"] for s in train])
        clf = LogisticRegression(C=args.C, max_iter=3000).fit(x, y)
        coef = clf.coef_[0]
        w_emb[:, j], w_words[:, j], bias[j] = coef[:dims], coef[dims:], clf.intercept_[0]
    vocab = vectorizer.get_feature_names_out().tolist()
    # what each topic is about in words: its strongest title words, for matching typed interests
    title_words = [i for i, t in enumerate(vocab) if ":" not in t and not t.isdigit() and len(t) > 2]
    about = {
        topic: [vocab[i] for i in sorted(title_words, key=lambda i: -w_words[i, j])[:12]]
        for j, topic in enumerate(topics)
    }
    hashes = np.array(sorted(story_hash(s["id"]) for s in train), dtype=np.uint64)
    DATA.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        DATA,
        topics=np.array(topics),
        vocab=np.array(vocab),
        idf=vectorizer.idf_.astype(np.float32),
        w_words=w_words.astype(np.float16),
        w_emb=w_emb.astype(np.float16),
        bias=bias,
        train_hashes=hashes,
        about=np.array([json.dumps(about[t]) for t in topics]),
        meta=np.array(json.dumps({"stories": args.stories.name, "train": len(train), "C": args.C})),
    )
    print(f"wrote {DATA} ({DATA.stat().st_size / 1e6:.1f} MB); idf range {math.floor(min(vectorizer.idf_))}..")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
