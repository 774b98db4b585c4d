"""Evaluation with real bitstreams (evaluate) and the classical anchors measured the same way (classical)."""
