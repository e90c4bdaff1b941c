"""Helpers for tests, benchmarks and ``make`` targets only: no stage imports them, so editing
one never makes DVC rerun a stage. May import any layer; nothing in odpipe imports it."""
