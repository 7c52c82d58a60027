"""Operations: ``hnpal up`` (the supervisor), task outcome logs, Prometheus metrics, retention and the
quarantine of work that failed for good."""
