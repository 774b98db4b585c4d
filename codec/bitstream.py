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
from codec.models import entry_of


@dataclass
class Encoded:
    strings: list  # CompressAI's nested list: one list of bytes per string kind, batch of one
    image_hw: tuple[int, int]  # original image size before padding
    # The quantised latent the encoder coded (not part of the bitstream): the decoder must reproduce it.
    y_hat: torch.Tensor | None = None


PAD_MULTIPLE = 64  # six stride-2 stages (g_a then h_a)


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
    if max(image_hw) > 65535:
        raise ValueError(f"image of {image_hw} pixels is too large for the 16-bit size header")
    with _finite_latents(model):
        strings, y_hat = entry_of(model).coding.encode(model, pad(x))
    return Encoded(strings, image_hw, y_hat)


class NonFiniteLatent(LicSweepError):
    pass


@contextlib.contextmanager
def _finite_latents(model):
    """Refuse a latent with inf or NaN before it reaches the entropy coder (which loops without end on
    one): the outputs of every analysis transform (g_a, h_a). Finite weights can still overflow."""

    def check(name):
        def hook(_module, _args, out):
            if isinstance(out, torch.Tensor) and not bool(torch.isfinite(out).all()):
                raise NonFiniteLatent(f"the model's {name} gives {int((~torch.isfinite(out)).sum())} non-finite "
                                      "value(s) (inf or NaN) for this image, which cannot be entropy-coded; "
                                      "its weights are out of range")
        return hook

    handles = [module.register_forward_hook(check(name)) for name, module in model.named_modules()
               if name.rsplit(".", 1)[-1] in ("g_a", "h_a")]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


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
    return coding.compressai_shape(model, coding.latent_hw(padded_hw(image_hw)))


def decode_latent(model, enc: Encoded) -> torch.Tensor:
    """The decoded latent y_hat, computed the way the model's coding decodes it."""
    coding = entry_of(model).coding
    return coding.decode_latent(model, enc.strings, coding.latent_hw(padded_hw(enc.image_hw)))


def decode(model, enc: Encoded) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_hat cropped to the original size and clamped to [0, 1], y_hat)."""
    y_hat = decode_latent(model, enc)
    x_hat = model.g_s(y_hat).clamp_(0, 1)
    return crop(x_hat, enc.image_hw), y_hat


def decode_mismatches(encoded: Encoded, y_hat_decoded: torch.Tensor, atol: float = 1e-3) -> int:
    """Number of latent elements where the decoder's y_hat differs from the encoder's."""
    return int((~torch.isclose(encoded.y_hat, y_hat_decoded, rtol=0, atol=atol)).sum())
