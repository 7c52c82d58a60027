"""The text features of a post: the words of its title and text, its domain and the words of its URL.

Shared by training and inference, so both see a post the same way. No model is loaded here.
"""

from __future__ import annotations

import html
import math
import re
from collections import Counter
from urllib.parse import urlsplit

from hnpal.relevance.glossary import plain

WORD = re.compile(r"[a-z0-9+#]+")
PATH_WORDS = 12
TEXT_WORDS = 60  # words of a post's own text (HN text or article) its embedding reads


def host_of(url: str | None, domain: str | None = None) -> str:
    host = domain or ""
    if url:
        try:
            host = urlsplit(url).hostname or host
        except ValueError:
            pass
    host = host.lower()
    return host[4:] if host.startswith("www.") else host


def tokens(title: str, url: str | None, domain: str | None = None) -> list[str]:
    """The post's tokens: title words, then ``D:`` host and its last two labels, ``H:`` host labels and
    ``P:`` URL path words. A post without a URL is ``D:self``."""
    out = WORD.findall(plain(title).lower())
    host = host_of(url, domain)
    if host:
        out.append("D:" + host)
        labels = host.split(".")
        if len(labels) >= 2:
            out.append("D:" + ".".join(labels[-2:]))
        out += ["H:" + x for x in labels[:-1]]
    else:
        out.append("D:self")
    if url:
        try:
            path = urlsplit(url).path.lower()
        except ValueError:
            path = ""
        out += ["P:" + w for w in WORD.findall(path) if not w.isdigit()][:PATH_WORDS]
    return out


def embedding_text(title: str, url: str | None, domain: str | None = None) -> str:
    """What the sentence embedding reads: the title and the words of the host."""
    return f"{plain(title)} {re.sub(r'[.-]', ' ', host_of(url, domain))}".strip()


def text_start(text: str | None) -> str:
    """The first words of a post's own text (HN text or article), read beside the title when there is one;
    HN's HTML (tags and entities) is reduced to its words."""
    words = html.unescape(re.sub(r"<[^>]*>", " ", (text or "")[:4000]))
    return plain(" ".join(words.split()[:TEXT_WORDS]))


def tfidf(toks: list[str], vocab: dict[str, int], idf: list[float] | None = None) -> dict[int, float]:
    """Sublinear TF x IDF, L2-normalized (scikit-learn's TfidfVectorizer with sublinear_tf): index -> value."""
    counts = Counter(t for t in toks if t in vocab)
    row = {vocab[t]: (1.0 + math.log(n)) * (idf[vocab[t]] if idf is not None else 1.0) for t, n in counts.items()}
    norm = math.sqrt(sum(v * v for v in row.values())) or 1.0
    return {k: v / norm for k, v in row.items()}
