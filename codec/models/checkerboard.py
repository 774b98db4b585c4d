"""He et al. 2021 checkerboard context model on the Minnen 2018 backbone.

The transforms and entropy-parameter network are those of CompressAI's
JointAutoregressiveHierarchicalPriors; only the serial 5x5 masked context is replaced by
CompressAI's two-pass CheckerboardLatentCodec (anchors first, then non-anchors with context
from the quantised anchors), composed the way Cheng2020AnchorCheckerboard composes it.
"""

from __future__ import annotations

from compressai.entropy_models import EntropyBottleneck
from compressai.latent_codecs import (
    CheckerboardLatentCodec,
    GaussianConditionalLatentCodec,
    HyperLatentCodec,
    HyperpriorLatentCodec,
)
from compressai.layers import CheckerboardMaskedConv2d
from compressai.models import JointAutoregressiveHierarchicalPriors
from compressai.models.base import SimpleVAECompressionModel


class CheckerboardAutoregressive(SimpleVAECompressionModel):
    """Minnen 2018 backbone + checkerboard context (He 2021).

    Args:
        N: channels of the hyper transforms and hidden layers.
        M: channels of the latent y.
        forward_method: CheckerboardLatentCodec's training forward; "twopass" quantises the
            anchors (STE around the predicted means) before they serve as context, as in decoding.
    """

    def __init__(self, N: int = 192, M: int = 192, forward_method: str = "twopass", **kwargs):
        super().__init__(**kwargs)
        backbone = JointAutoregressiveHierarchicalPriors(N=N, M=M)
        self.N, self.M = N, M
        self.g_a = backbone.g_a
        self.g_s = backbone.g_s
        self.latent_codec = HyperpriorLatentCodec(
            latent_codec={
                "y": CheckerboardLatentCodec(
                    latent_codec={"y": GaussianConditionalLatentCodec(quantizer="ste")},
                    entropy_parameters=backbone.entropy_parameters,
                    context_prediction=CheckerboardMaskedConv2d(M, 2 * M, kernel_size=5, stride=1, padding=2),
                    forward_method=forward_method,
                ),
                "hyper": HyperLatentCodec(
                    entropy_bottleneck=EntropyBottleneck(N),
                    h_a=backbone.h_a,
                    h_s=backbone.h_s,
                ),
            },
        )

    @property
    def downsampling_factor(self) -> int:
        return 2 ** (4 + 2)

    @classmethod
    def from_state_dict(cls, state_dict):
        """A model shaped like the one that wrote `state_dict`, with its weights loaded."""
        N = state_dict["g_a.0.weight"].size(0)
        M = state_dict["g_a.6.weight"].size(0)
        net = cls(N=N, M=M)
        net.load_state_dict(state_dict)
        return net
