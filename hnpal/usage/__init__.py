"""LLM accounting: per-call agent logs and per-user daily token usage."""
