"""A factorized prior (Ballé 2018) whose transforms carry one residual block each: a stand-in for your model.

Everything lic-sweep needs to know about it is in ENTRY, a codec.models.registry.ModelEntry: the class and
how to build it, its channels per rate tier, which state_dict tensors carry N and M, how it is coded to bytes
(one of codec.models.coding's codings), its plot label and style, and, because this package has no
conf/model/<name>.yaml, its protocol epochs and scheduler. pyproject.toml names ENTRY under the entry-point
group `lic_sweep.models`; lic-sweep registers it in every process it starts.
"""

from compressai.layers import GDN, ResidualBlock
from compressai.models import FactorizedPrior
from compressai.models.utils import conv, deconv
from torch import nn

from codec.models.coding import FactorizedCoding
from codec.models.registry import ModelEntry


class ResidualFactorizedPrior(FactorizedPrior):
    """FactorizedPrior (its entropy bottleneck, forward, compress and decompress) with a residual block after
    the first analysis stage and before the last synthesis stage."""

    def __init__(self, N: int = 128, M: int = 192, **kwargs):
        super().__init__(N=N, M=M, **kwargs)
        self.g_a = nn.Sequential(
            conv(3, N), GDN(N), ResidualBlock(N, N),
            conv(N, N), GDN(N),
            conv(N, N), GDN(N),
            conv(N, M),
        )
        self.g_s = nn.Sequential(
            deconv(M, N), GDN(N, inverse=True),
            deconv(N, N), GDN(N, inverse=True),
            deconv(N, N), GDN(N, inverse=True), ResidualBlock(N, N),
            deconv(N, 3),
        )


ENTRY = ModelEntry(
    name="residual_factorized",
    cls=ResidualFactorizedPrior,
    channels={"low": (128, 192), "high": (192, 320)},
    coding=FactorizedCoding(),
    label="Factorized prior + residual blocks (example package)",
    style=("black", "8"),
    channel_keys=("g_a.0.weight", "g_a.7.weight"),  # g_a's first and last convolutions
    epochs=200,
    scheduler="plateau",
)
