"""The fine-tuned sentence encoder: a small transformer that reads a post's title and host and gives the
probability of each topic, and the sentence vector it reads them from.

all-MiniLM-L6-v2 (Apache-2.0), fine-tuned on community-tagged stories by ``hnpal.relevance.train_encoder``
and quantized to 8 bits: ``topics-encoder.onnx`` (23 MB) and its WordPiece tokenizer ship beside this
module, and onnxruntime runs them on one CPU thread (about 2 ms per post). Nothing is downloaded: the
files are read from the package. The topics, the text format and the token limit are in the file's
metadata and checked against the classifier's at load.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

from hnpal.relevance.features import host_of
from hnpal.relevance.glossary import plain

HERE = Path(__file__).resolve().parent
ONNX = HERE / "topics-encoder.onnx"
TOKENIZER = HERE / "topics-encoder-tokenizer.json"
BATCH = 32


TEXT_FORMAT = "title (host)"  # what encoder_text gives, in the file's metadata: checked at load


def encoder_text(title: str, url: str | None, domain: str | None = None) -> str:
    """What the encoder reads: the title, and the host in brackets when there is one."""
    host = host_of(url, domain)
    return f"{plain(title)} ({host})" if host else plain(title)


class TopicEncoder:
    def __init__(self, onnx_path: Path = ONNX, tokenizer_path: Path = TOKENIZER) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # a worker's tasks run side by side: one thread each
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        self.topics: list[str] = json.loads(meta["topics"])
        if meta.get("text") != TEXT_FORMAT:  # a model trained on other text would misread every post
            raise RuntimeError(
                f"{onnx_path.name} was trained on {meta.get('text')!r}, not on what encoder_text gives "
                f"({TEXT_FORMAT!r}): retrain it (train_encoder)"
            )
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        if "embedding" not in outputs or not isinstance(outputs["embedding"][-1], int):
            raise RuntimeError(f"{onnx_path.name} has no sentence vector output: export it again (train_encoder)")
        self.dimensions: int = outputs["embedding"][-1]
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.tokenizer.no_padding()  # the file pads to 128 tokens: batches are padded here, to their longest
        self.tokenizer.enable_truncation(int(meta.get("max_tokens", "48")))

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """texts x topics."""
        return self.encode(texts)[0]

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """texts x topics (probabilities), and texts x dimensions (the sentence vectors, unit length).
        Texts of similar length are run together, so that little is padding."""
        probs = np.zeros((len(texts), len(self.topics)), np.float32)
        vectors = np.zeros((len(texts), self.dimensions), np.float32)
        if not texts:
            return probs, vectors
        encoded = self.tokenizer.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i].ids))
        for start in range(0, len(order), BATCH):
            rows = order[start : start + BATCH]
            width = max(len(encoded[i].ids) for i in rows)
            ids = np.zeros((len(rows), width), np.int64)
            mask = np.zeros((len(rows), width), np.int64)
            for n, i in enumerate(rows):
                ids[n, : len(encoded[i].ids)] = encoded[i].ids
                mask[n, : len(encoded[i].ids)] = 1
            logits, vec = self.session.run(["logits", "embedding"], {"input_ids": ids, "attention_mask": mask})
            probs[rows] = 1.0 / (1.0 + np.exp(-logits))
            vectors[rows] = vec / np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-9)
        return probs, vectors


_lock = threading.Lock()
_encoder: Any = None


def encoder() -> TopicEncoder:
    global _encoder
    with _lock:
        if _encoder is None:
            _encoder = TopicEncoder()
        return _encoder
