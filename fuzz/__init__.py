"""Fuzzing of both front doors (docs/fuzzing.md): hypothesis targets, an optional atheris
harness and a runner with a time budget (``python -m fuzz --seconds 600``)."""
