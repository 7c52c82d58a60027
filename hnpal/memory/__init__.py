"""What HN Pal remembers about a user: interests, facts, opinions, notes."""
