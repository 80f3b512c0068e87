"""Inference: offline classification, sliding-window timelines and streaming."""
