"""The models and their coding: the registry of architectures (registry), how each is coded to bytes and back
(coding, bitstream, checkerboard, fast_autoregressive), rate tiers, complexity (thop), model checkpoints."""
