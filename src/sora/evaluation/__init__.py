"""Evaluation: metrics (torchmetrics), PNG plots and the HTML report."""
