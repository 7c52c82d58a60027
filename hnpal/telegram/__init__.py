"""Telegram plumbing: the write-ahead log of incoming updates."""
