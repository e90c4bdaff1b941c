"""Benchmarks of the pipeline (``make bench-*``): each ``<name>.py`` is a script run as
``python benchmarks/<name>.py``; what they share is the package :mod:`benchmarks.harness`."""
