"""lic-sweep's Hydra launcher for one machine: one job per GPU, the rest queued."""
