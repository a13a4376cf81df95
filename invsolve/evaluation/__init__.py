"""Evaluation: metrics, batched runners, tables and figures."""

from .metrics import sliced_wasserstein

__all__ = ["sliced_wasserstein"]
