"""Run records and run directories (torch-free, the lowest layer above codec.errors): files written atomically
(files), what a run leaves behind (record: results.json, per_image.csv), where it leaves it (layout), what
state a run directory is in (status), which config keys are credentials (secrets), and the offline W&B run
file read back without wandb's sync (wandb_file)."""
