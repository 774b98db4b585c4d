"""Real bitstreams for one image: encode, pack to bytes, unpack, decode, and check the decode.

The packed bytes hold everything the decoder needs besides the model: the original image size
(to crop the padding away), the latent shape, and each entropy-coded string with its length.
bits = 8 * len(packed bytes): nothing is estimated from likelihoods.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from compressai.ops import compute_padding
from compressai.models import (
    FactorizedPrior,
    JointAutoregressiveHierarchicalPriors,
    ScaleHyperprior,
)

from codec import fast_autoregressive
from codec.checkerboard import CheckerboardAutoregressive


@dataclass
class Encoded:
    strings: list  # CompressAI's nested list: one list of bytes per string kind, batch of one
    latent_hw: tuple[int, int]  # the (h, w) the model's decompress needs (y for factorized, else z)
    image_hw: tuple[int, int]  # original image size before padding
    # The quantised latent the encoder coded (not part of the bitstream): the decoder must reproduce it.
    y_hat: torch.Tensor | None = None


def shape_for_decompress(model, latent_hw):
    if isinstance(model, CheckerboardAutoregressive):
        h, w = latent_hw
        return {"y": (model.M, 4 * h, 4 * w), "hyper": (h, w)}
    return latent_hw


PAD_MULTIPLE = 64  # six stride-2 stages (g_a then h_a)


def pad(x: torch.Tensor) -> torch.Tensor:
    """Zero-pad to a multiple of 64, centred, as CompressAI's eval_model does."""
    padding, _ = compute_padding(x.shape[2], x.shape[3], min_div=PAD_MULTIPLE)
    return F.pad(x, padding, mode="constant", value=0)


def crop(x_hat: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    _, unpad = compute_padding(*image_hw, min_div=PAD_MULTIPLE)
    return F.pad(x_hat, unpad)


def encode(model, x: torch.Tensor) -> Encoded:
    """Compress one unpadded 1x3xHxW image in [0, 1]."""
    image_hw = (x.shape[2], x.shape[3])
    if max(image_hw) > 65535:
        raise ValueError(f"image of {image_hw} pixels is too large for the 16-bit size header")
    if isinstance(model, JointAutoregressiveHierarchicalPriors):
        out = fast_autoregressive.compress(model, pad(x))  # bit-exact with model.compress, faster
        y_hat = out["y_hat"]
    elif isinstance(model, CheckerboardAutoregressive):
        out = model.compress(pad(x))
        y_hat = out["y_hat"]
    else:
        out, y = _compress_keeping_latent(model, pad(x))
        y_hat = _quantized_latent(model, y)
    shape = out["shape"]
    latent_hw = tuple(shape["hyper"]) if isinstance(shape, dict) else tuple(shape)
    return Encoded(out["strings"], tuple(int(v) for v in latent_hw), image_hw, y_hat)


def _compress_keeping_latent(model, x: torch.Tensor) -> tuple[dict, torch.Tensor]:
    """model.compress(x), and the latent y = g_a(x) it coded (caught on the way, not recomputed)."""
    caught = []
    handle = model.g_a.register_forward_hook(lambda _m, _i, y: caught.append(y))
    try:
        out = model.compress(x)
    finally:
        handle.remove()
    return out, caught[0]


def _quantized_latent(model, y: torch.Tensor) -> torch.Tensor:
    """The y_hat CompressAI's compress codes: around the medians (factorized), plain rounding
    (scale hyperprior, whose Gaussian has zero mean)."""
    if isinstance(model, ScaleHyperprior):
        return torch.round(y)
    if isinstance(model, FactorizedPrior):
        medians = model.entropy_bottleneck._get_medians()
        return torch.round(y - medians) + medians
    raise TypeError(f"no encoder for {type(model).__name__}")


def _write_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _layout(model, image_hw: tuple[int, int]) -> tuple[int, tuple[int, int]]:
    """(number of strings, latent (h, w) for decompress): both follow from the model and image size."""
    ph, pw = (-(-v // PAD_MULTIPLE) * PAD_MULTIPLE for v in image_hw)
    if isinstance(model, CheckerboardAutoregressive):
        return 3, (ph // 64, pw // 64)
    if isinstance(model, (ScaleHyperprior, JointAutoregressiveHierarchicalPriors)):
        return 2, (ph // 64, pw // 64)
    if isinstance(model, FactorizedPrior):
        return 1, (ph // 16, pw // 16)
    raise TypeError(f"no bitstream layout for {type(model).__name__}")


def pack(enc: Encoded) -> bytes:
    """Image height and width (uint16 each), then the strings, each but the last length-prefixed.
    The latent shape and the number of strings follow from the model and the image size."""
    flat = [s[0] for s in enc.strings]  # batch of one
    parts = [struct.pack(">2H", *enc.image_hw)]
    for s in flat[:-1]:
        parts += [_write_varint(len(s)), s]
    parts.append(flat[-1])
    return b"".join(parts)


def unpack(data: bytes, model) -> Encoded:
    image_hw = struct.unpack(">2H", data[:4])
    count, latent_hw = _layout(model, image_hw)
    strings, pos = [], 4
    for _ in range(count - 1):
        n, pos = _read_varint(data, pos)
        if pos + n > len(data):
            raise ValueError(f"bitstream truncated: a string of {n} bytes at offset {pos} runs past the end")
        strings.append([data[pos:pos + n]])
        pos += n
    strings.append([data[pos:]])
    return Encoded(strings, latent_hw, image_hw)


def decode_latent(model, enc: Encoded) -> torch.Tensor:
    """The decoded latent y_hat, computed the way each model's own decompress computes it."""
    strings, shape = enc.strings, shape_for_decompress(model, enc.latent_hw)
    if isinstance(model, CheckerboardAutoregressive):
        return model.latent_codec.decompress(strings, shape)["y_hat"]
    if isinstance(model, JointAutoregressiveHierarchicalPriors):
        return fast_autoregressive.decode_latent(model, strings, shape)
    if isinstance(model, ScaleHyperprior):
        z_hat = model.entropy_bottleneck.decompress(strings[1], shape)
        indexes = model.gaussian_conditional.build_indexes(model.h_s(z_hat))
        return model.gaussian_conditional.decompress(strings[0], indexes, z_hat.dtype)
    if isinstance(model, FactorizedPrior):
        return model.entropy_bottleneck.decompress(strings[0], shape)
    raise TypeError(f"no decoder for {type(model).__name__}")


def decode(model, enc: Encoded) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_hat cropped to the original size and clamped to [0, 1], y_hat)."""
    y_hat = decode_latent(model, enc)
    x_hat = model.g_s(y_hat).clamp_(0, 1)
    return crop(x_hat, enc.image_hw), y_hat


def decode_mismatches(encoded: Encoded, y_hat_decoded: torch.Tensor, atol: float = 1e-3) -> int:
    """Number of latent elements where the decoder's y_hat differs from the encoder's."""
    return int((~torch.isclose(encoded.y_hat, y_hat_decoded, rtol=0, atol=atol)).sum())
