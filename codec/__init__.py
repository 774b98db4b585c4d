"""lic-sweep's library: models, data, loss, training, evaluation and complexity.

Plain Python: nothing here imports Hydra, so tests and notebooks call it directly.
"""
