"""The ``hnpal`` command line."""
