"""How each kind of model is coded to entropy-coded strings and back, with the same methods for all.

A model's registry entry (codec/models/registry.py) names its coding. Every coding answers:
`strings` (how many entropy-coded strings an image gives), `latent_hw` (the latent size the decoder
needs, from the padded image size), `encode` (strings and the quantised latent the encoder coded)
and `decode_latent` (the latent the decoder reconstructs from the strings). The decoder's latent must
equal the encoder's: evaluation checks it on every image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from codec.models import fast_autoregressive


def _catching_outputs(model, x: torch.Tensor, *modules: str) -> tuple[dict, list[torch.Tensor]]:
    """model.compress(x), and the outputs of the named submodules during it (caught, not recomputed)."""
    caught: dict[str, torch.Tensor] = {}
    handles = [getattr(model, name).register_forward_hook(lambda _m, _i, out, name=name: caught.setdefault(name, out))
               for name in modules]
    try:
        out = model.compress(x)
    finally:
        for h in handles:
            h.remove()
    return out, [caught[name] for name in modules]


class _Coding:
    def latent_hw(self, model, padded_hw: tuple[int, int]) -> tuple[int, int]:
        """The size of the first latent the decoder reads (y of a factorized prior, z of a hyperprior): the
        padded image size over the model's own downsampling factor."""
        factor = model.downsampling_factor
        return padded_hw[0] // factor, padded_hw[1] // factor

    def compressai_shape(self, model, latent_hw: tuple[int, int]):
        """The `shape` argument of the model's own CompressAI `decompress`."""
        return latent_hw


@dataclass(frozen=True)
class FactorizedCoding(_Coding):
    """One string: the latent y under the fully factorized entropy bottleneck (y at 1/16 size:
    the model's downsampling_factor)."""

    strings: int = 1

    def encode(self, model, x: torch.Tensor) -> tuple[list, torch.Tensor]:
        out, (y,) = _catching_outputs(model, x, "g_a")
        medians = model.entropy_bottleneck._get_medians()
        return out["strings"], torch.round(y - medians) + medians

    def decode_latent(self, model, strings: list, latent_hw: tuple[int, int]) -> torch.Tensor:
        return model.entropy_bottleneck.decompress(strings[0], latent_hw)


@dataclass(frozen=True)
class HyperpriorCoding(_Coding):
    """Two strings: y under a Gaussian whose scales (and, with `means`, means) come from h_s(z_hat),
    then z under the entropy bottleneck (z at 1/64 size: the model's downsampling_factor)."""

    means: bool = False
    strings: int = 2

    def _scales_means(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return tuple(params.chunk(2, 1)) if self.means else (params, None)

    def encode(self, model, x: torch.Tensor) -> tuple[list, torch.Tensor]:
        out, (y, params) = _catching_outputs(model, x, "g_a", "h_s")
        _, means = self._scales_means(params)
        return out["strings"], (torch.round(y) if means is None else torch.round(y - means) + means)

    def decode_latent(self, model, strings: list, latent_hw: tuple[int, int]) -> torch.Tensor:
        z_hat = model.entropy_bottleneck.decompress(strings[1], latent_hw)
        scales, means = self._scales_means(model.h_s(z_hat))
        indexes = model.gaussian_conditional.build_indexes(scales)
        return model.gaussian_conditional.decompress(strings[0], indexes, z_hat.dtype, means)


@dataclass(frozen=True)
class SerialContextCoding(_Coding):
    """Minnen 2018's serial 5x5 context: codec/models/fast_autoregressive.py, bit-exact with CompressAI's
    compress/decompress and faster."""

    strings: int = 2

    def encode(self, model, x: torch.Tensor) -> tuple[list, torch.Tensor]:
        out = fast_autoregressive.compress(model, x)
        return out["strings"], out["y_hat"]

    def decode_latent(self, model, strings: list, latent_hw: tuple[int, int]) -> torch.Tensor:
        return fast_autoregressive.decode_latent(model, strings, latent_hw)


@dataclass(frozen=True)
class LatentCodecCoding(_Coding):
    """Models built from CompressAI latent codecs: a HyperpriorLatentCodec whose y codec gives all strings
    but the last (a CheckerboardLatentCodec: anchors and non-anchors, 3 strings in all; ELIC's
    ChannelGroupsLatentCodec: two per channel group, 11 for its five groups), then z's string.
    The hyper latent is at 1/64 of the padded image (g_a's four stride-2 stages, h_a's two; a model's own
    downsampling_factor where it has one), y at 4 times its size."""

    strings: int = 3

    def latent_hw(self, model, padded_hw: tuple[int, int]) -> tuple[int, int]:
        factor = getattr(model, "downsampling_factor", 64)  # CompressAI's Cheng checkerboard and ELIC lack it
        return padded_hw[0] // factor, padded_hw[1] // factor

    def encode(self, model, x: torch.Tensor) -> tuple[list, torch.Tensor]:
        out = model.compress(x)
        return out["strings"], out["y_hat"]

    def compressai_shape(self, model, latent_hw: tuple[int, int]) -> dict:
        from compressai.latent_codecs import ChannelGroupsLatentCodec

        from codec.models.registry import entry_of

        h, w = latent_hw
        y_codec = model.latent_codec["y"]
        if isinstance(y_codec, ChannelGroupsLatentCodec):
            y_shape = [(groups, 4 * h, 4 * w) for groups in y_codec.groups]
        else:
            y_shape = (entry_of(model).channels_of(model.state_dict())[1], 4 * h, 4 * w)
        return {"y": y_shape, "hyper": (h, w)}

    def decode_latent(self, model, strings: list, latent_hw: tuple[int, int]) -> torch.Tensor:
        return model.latent_codec.decompress(strings, self.compressai_shape(model, latent_hw))["y_hat"]
