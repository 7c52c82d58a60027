"""The LLM layer: providers (OpenAI-compatible, offline), token counting, prices, retries, accounting."""
