"""What posts are about and how much each reader cares: topics per post, interests per reader, relevance."""
