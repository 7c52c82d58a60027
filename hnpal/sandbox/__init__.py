"""Local stand-ins for the internet services HN Pal talks to (Hacker News API, article pages)."""
