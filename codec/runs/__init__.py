"""One job and what surrounds it: train/evaluate/classical jobs that write run records (job), W&B (tracking),
the reproducibility card (provenance), cost estimates (cost), base checkpoints (pretrained)."""
