"""Real bitstreams for one image: encode, pack to bytes, unpack, decode, and check the decode.

The packed bytes hold everything the decoder needs besides the model: the original image size (to
crop the padding away) and each entropy-coded string, all but the last length-prefixed. The latent
size and the number of strings follow from the model (its registry entry's coding) and the image size.
bits = 8 * len(packed bytes): nothing is estimated from likelihoods.
"""

from __future__ import annotations

import contextlib
import struct
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from compressai.ops import compute_padding

from codec.errors import LicSweepError
from codec.models.registry import entry_of


@dataclass
class Encoded:
    strings: list  # CompressAI's nested list: one list of bytes per string kind, batch of one
    image_hw: tuple[int, int]  # original image size before padding
    # The quantised latent the encoder coded (not part of the bitstream): the decoder must reproduce it.
    y_hat: torch.Tensor | None = None


PAD_MULTIPLE = 64  # six stride-2 stages (g_a then h_a)
MAX_SIDE = 65535  # the size header's 16 bits per side


def padded_hw(image_hw: tuple[int, int]) -> tuple[int, int]:
    return tuple(-(-v // PAD_MULTIPLE) * PAD_MULTIPLE for v in image_hw)


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
    if max(image_hw) > MAX_SIDE:
        raise ValueError(f"image of {image_hw} pixels is too large for the 16-bit size header")
    # no_grad: CompressAI's channel-group codec (ELIC) writes into views that autograd refuses
    with _bounded_symbols(model), torch.no_grad():
        strings, y_hat = entry_of(model).coding.encode(model, pad(x))
    return Encoded(strings, image_hw, y_hat)


class LatentOutOfRange(LicSweepError):
    pass


# The largest |symbol| handed to the entropy coder. Trained models code values within a few hundred;
# CompressAI's rANS coder loops without end on inf, NaN or values near 2^27 (int32 overflow).
SYMBOL_LIMIT = 1 << 20


@contextlib.contextmanager
def _bounded_symbols(model):
    """Refuse a symbol that the entropy coder cannot code before it gets there: every route to the coder
    (EntropyBottleneck, GaussianConditional, the latent codecs, fast_autoregressive) quantizes its
    symbols with EntropyModel.quantize(..., "symbols", means), which is checked here for every entropy
    model of `model` while the context lasts. Finite weights can still give such values."""
    from compressai.entropy_models import EntropyModel

    def checked(name, original):
        def quantize(inputs, mode, means=None):
            if mode == "symbols" and inputs.numel():
                centred = inputs if means is None else inputs - means
                worst = centred.abs().max()
                if not bool(torch.isfinite(worst)) or worst >= SYMBOL_LIMIT:
                    raise LatentOutOfRange(f"the model's {name} would entropy-code a value of {worst.item():.3g} "
                                           f"(the coder takes finite values under {SYMBOL_LIMIT:,}); its weights "
                                           "are out of range for this image")
            return original(inputs, mode, means)
        return quantize

    models = [(name, module) for name, module in model.named_modules() if isinstance(module, EntropyModel)]
    for name, module in models:
        module.quantize = checked(name, module.quantize)  # an instance attribute over the class's method
    try:
        yield
    finally:
        for _, module in models:
            del module.quantize


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


def pack(enc: Encoded) -> bytes:
    """Image height and width (uint16 each), then the strings, each but the last length-prefixed."""
    flat = [s[0] for s in enc.strings]  # batch of one
    parts = [struct.pack(">2H", *enc.image_hw)]
    for s in flat[:-1]:
        parts += [_write_varint(len(s)), s]
    parts.append(flat[-1])
    return b"".join(parts)


def unpack(data: bytes, model) -> Encoded:
    image_hw = struct.unpack(">2H", data[:4])
    strings, pos = [], 4
    for _ in range(entry_of(model).coding.strings - 1):
        n, pos = _read_varint(data, pos)
        if pos + n > len(data):
            raise ValueError(f"bitstream truncated: a string of {n} bytes at offset {pos} runs past the end")
        strings.append([data[pos:pos + n]])
        pos += n
    strings.append([data[pos:]])
    return Encoded(strings, image_hw)


def decompress_shape(model, image_hw: tuple[int, int]):
    """The `shape` the model's own CompressAI `decompress` takes for an image of this size."""
    coding = entry_of(model).coding
    return coding.compressai_shape(model, coding.latent_hw(model, padded_hw(image_hw)))


def decode_latent(model, enc: Encoded) -> torch.Tensor:
    """The decoded latent y_hat, computed the way the model's coding decodes it."""
    coding = entry_of(model).coding
    return coding.decode_latent(model, enc.strings, coding.latent_hw(model, padded_hw(enc.image_hw)))


def decode(model, enc: Encoded) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_hat cropped to the original size and clamped to [0, 1], y_hat)."""
    y_hat = decode_latent(model, enc)
    x_hat = model.g_s(y_hat).clamp_(0, 1)
    return crop(x_hat, enc.image_hw), y_hat


def decode_mismatches(encoded: Encoded, y_hat_decoded: torch.Tensor, atol: float = 1e-3) -> int:
    """Number of latent elements where the decoder's y_hat differs from the encoder's."""
    return int((~torch.isclose(encoded.y_hat, y_hat_decoded, rtol=0, atol=atol)).sum())
