"""Training: the loop (trainer), its callbacks, the resumable state, schedulers by name, the loss, mixed
precision, and the devices and DDP set-up under torchrun or Slurm (distributed)."""
