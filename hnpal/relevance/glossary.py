"""Words newer than the models, said in the words they learned from.

The topic models learned from stories of July 2021 to December 2022, before the words of the language-model
era were common: none of them knows "LLM" (the encoder reads it much as it reads "LLVM", so "Why LLMs
hallucinate" came out as a compilers story), "Claude", "Ollama" or "RAG". Each such term is rewritten, in
what the models read (never in what a reader sees), into the words the training stories used for the same
thing ("LLMs" are "AI models": not "language models", which the training stories also used for
programming languages); the rest of the title is read as it is.

A few names the training stories met too seldom to learn ("Vite", "Svelte", "Valkey", "Bun") are said with
what they are, beside the name. Only unambiguous terms are listed: a bare "Llama" is also a file manager and
"Gemini" also a protocol (both are in the training stories), so they count only with what names the model
("Llama 3", "Gemini 1.5"); "Claude" counts unless it is Claude Shannon; LoRa is also a radio; "vite" is
French. Every listed term was checked against the 11,459 training-era stories: of the 20 it rewrites, the 9
with a term of the language-model era are all tagged ``ai``, and 8 of the 11 with a name (Svelte, Vite)
``javascript`` or ``web``. Retraining on newer tagged stories is the lasting fix; until then a term the
models miss goes here, with a test.
"""

from __future__ import annotations

import re
from functools import lru_cache

# (pattern, as said), the more specific first where two share a start; patterns are matched case-insensitively,
# on word boundaries (a term inside a longer word or a dotted or hyphenated name is not rewritten)
GLOSSARY: tuple[tuple[str, str], ...] = (
    (r"llms", "AI models"),
    (r"llm", "AI model"),
    (r"(?:large|small) language models", "AI models"),
    (r"(?:large|small) language model", "AI model"),
    (r"gpt-?[4-9](?:\.\d)?(?:o|-turbo|-mini|-nano)*", "GPT AI model"),
    (r"claude code", "AI coding assistant"),
    (r"claude(?!\s+shannon)(?:\s+(?:\d(?:\.\d)?|sonnet|opus|haiku|instant|pro))*", "AI chatbot"),
    (r"anthropic", "AI lab"),
    (r"deepseek(?:-[a-z0-9.]+)?", "AI model"),
    (r"qwen[0-9.]*", "AI model"),
    (r"mistral(?:\s+\d+b)?", "AI model"),
    (r"mixtral", "AI model"),
    (r"llama\.cpp", "AI model runtime"),
    (r"code\s+llama|llama[- ]?[1-9](?:\.\d)?", "AI model"),
    (r"ollama", "AI model runtime"),
    (r"vllm", "AI model serving"),
    (r"(?:google\s+)?gemini\s+(?:\d(?:\.\d)?|pro|ultra|flash|nano|advanced)(?:\s+(?:pro|ultra|flash))?", "AI chatbot"),
    (r"google\s+gemini", "AI chatbot"),
    (r"langchain", "AI framework"),
    (r"llamaindex", "AI framework"),
    (r"retrieval[- ]augmented generation", "AI retrieval"),
    (r"rag", "AI retrieval"),
    (r"prompt injections?", "AI prompt attack"),
    (r"prompt engineering", "AI prompts"),
    (r"agentic", "AI agent"),
    (r"vibe[- ]?cod(?:ing|ed)", "AI coding"),
    (r"model context protocol", "AI model protocol"),
    (r"mcp servers?", "AI model tools"),
    (r"genai", "generative AI"),
    (r"qlora", "neural network training"),
    (r"embeddings", "machine learning embeddings"),
    (r"hallucinat(?:es?|ions?|ing)", "AI hallucination"),
    (r"midjourney", "AI image generation"),
    (r"gemma(?:[- ]?\d(?:\.\d)?)?", "AI model"),
    (r"phi-\d(?:\.\d)?", "AI model"),
    (r"gguf", "AI model weights"),
    (r"safetensors", "machine learning model weights"),
    (r"hugging\s?face", "machine learning models"),
    # names the training stories met too seldom to learn (a few each, tagged like the words given here)
    (r"valkey", "Valkey Redis database fork"),
    (r"bun(?:\.js|\s+v?\d+(?:\.\d+)*)", "Bun JavaScript runtime"),
    (r"(?-i:Vite)(?:js)?|vitejs", "Vite JavaScript build tool"),  # capitalised: "vite" is French for quickly
    (r"svelte(?:kit)?", "Svelte JavaScript web framework"),
    (r"crowdstrike", "CrowdStrike security vendor"),
    (r"(?:apple\s+)?vision\s?pro|visionos", "Apple VR headset"),
    (r"bluesky", "Bluesky decentralized social network"),
)  # fmt: skip

_TERMS = re.compile(
    r"(?<![\w.-])(?:"
    + "|".join(f"(?P<t{i}>{pattern})" for i, (pattern, _) in enumerate(GLOSSARY))
    + r")(?![\w-]|\.\w)",
    re.IGNORECASE,
)


@lru_cache(maxsize=2048)  # a post's title is read by three feature builders in turn: scanned once
def plain(text: str) -> str:
    """``text`` with every glossary term said as the models' training stories said it."""
    return _TERMS.sub(lambda m: GLOSSARY[int(str(m.lastgroup)[1:])][1], text) if text else text
