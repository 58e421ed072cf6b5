"""Figures of a classifier shared by the trainer (model cards) and the monitor (reports)."""
