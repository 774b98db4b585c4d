"""lic-sweep's library: models, data, loss, training, evaluation and complexity.

Plain Python: nothing here imports Hydra, so tests and notebooks call it directly.
"""

import warnings

# CompressAI imports torch_geometric, whose import calls torch.jit.script and prints a FutureWarning on
# every command; it says nothing about this project's code.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
