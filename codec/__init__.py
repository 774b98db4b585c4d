"""lic-sweep's library, in layers; each imports only the layers below it (tests/test_layers.py):

    errors        the one exception type users see (one line, no traceback)
    records/      run records and run directories (torch-free)
    models/       architectures, their coding to bytes, checkpoints, complexity
    data/         images, test sets, training data, packed shards
    schema.py     the run config: every key, its type and default
    training/     the training loop, its callbacks, state, schedulers, precision, DDP
    evaluation/   real bitstreams on test sets, classical anchors
    runs/         one job (train, evaluate, record, log to W&B), provenance, cost, base checkpoints
    datasets.py, prepare.py, complexity.py, cost.py, pretrained.py: the `python -m codec.X` commands

Plain Python: nothing here imports Hydra, so tests and notebooks call it directly.
"""

import warnings

# CompressAI imports torch_geometric, whose import calls torch.jit.script and prints a FutureWarning on
# every command; it says nothing about this project's code.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
