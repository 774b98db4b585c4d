"""Serial coding for the joint autoregressive model, bit-exact with CompressAI but faster.

CompressAI's JointAutoregressiveHierarchicalPriors codes the latent position by position. Two
costs dominate there and neither changes a bit of the result:
- each channel's scale index comes from a Python loop over the 64-entry scale table
  (GaussianConditional.build_indexes: 128 tensor operations per position); here it is one
  torch.searchsorted, which gives the same integers (the count of table entries below the
  bounded scale);
- the decoder is handed all 64 CDFs at every position and converts them from Python lists each
  time; here it gets only the few CDFs the position's symbols use, re-indexed.
The rest of the per-position work is the same operations in the same order, so the bitstream
and the decoded tensor are identical to CompressAI's (tests check both).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from compressai.ans import BufferedRansEncoder, RansDecoder

KERNEL, PAD = 5, 2


def _indexes(gc, scales: torch.Tensor, table: torch.Tensor) -> list[int]:
    return torch.searchsorted(table, gc.lower_bound_scale(scales).reshape(-1).contiguous()).tolist()


def _tables(gc):
    return gc.quantized_cdf.tolist(), gc.cdf_length.tolist(), gc.offset.tolist(), gc.scale_table[:-1].contiguous()


def _decode_symbols(decoder, indexes: list[int], cdf, cdf_lengths, offsets) -> list[int]:
    """RansDecoder.decode_stream with only the CDFs these symbols use: the decoder converts every
    CDF it is handed from Python lists on each call, which cost more than the decoding itself."""
    used = sorted(set(indexes))
    position = {u: i for i, u in enumerate(used)}
    return decoder.decode_stream([position[i] for i in indexes], [cdf[u] for u in used],
                                 [cdf_lengths[u] for u in used], [offsets[u] for u in used])


@torch.no_grad()
def compress(model, x: torch.Tensor) -> dict:
    """Same output as model.compress(x) (CompressAI), for a batch of one, plus the coded y_hat."""
    y = model.g_a(x)
    z = model.h_a(y)
    z_strings = model.entropy_bottleneck.compress(z)
    z_hat = model.entropy_bottleneck.decompress(z_strings, z.size()[-2:])
    params = model.h_s(z_hat)
    height, width = z_hat.size(2) * 4, z_hat.size(3) * 4
    y_hat = F.pad(y, (PAD, PAD, PAD, PAD))
    gc = model.gaussian_conditional
    cdf, cdf_lengths, offsets, table = _tables(gc)
    weight = model.context_prediction.weight * model.context_prediction.mask
    bias = model.context_prediction.bias
    symbols, indexes = [], []
    for h in range(height):
        for w in range(width):
            y_crop = y_hat[:, :, h:h + KERNEL, w:w + KERNEL]
            ctx_p = F.conv2d(y_crop, weight, bias=bias)
            p = params[:, :, h:h + 1, w:w + 1]
            gaussian_params = model.entropy_parameters(torch.cat((p, ctx_p), dim=1)).squeeze(3).squeeze(2)
            scales_hat, means_hat = gaussian_params.chunk(2, 1)
            y_q = gc.quantize(y_crop[:, :, PAD, PAD], "symbols", means_hat)
            y_hat[:, :, h + PAD, w + PAD] = y_q + means_hat
            symbols.extend(y_q.squeeze().tolist())
            indexes.extend(_indexes(gc, scales_hat, table))
    encoder = BufferedRansEncoder()
    encoder.encode_with_indexes(symbols, indexes, cdf, cdf_lengths, offsets)
    return {"strings": [[encoder.flush()], z_strings], "shape": z.size()[-2:],
            "y_hat": F.pad(y_hat, (-PAD, -PAD, -PAD, -PAD))}


@torch.no_grad()
def decode_latent(model, strings, shape) -> torch.Tensor:
    """The y_hat that CompressAI's decompress computes (before g_s), for a batch of one."""
    z_hat = model.entropy_bottleneck.decompress(strings[1], shape)
    params = model.h_s(z_hat)
    height, width = z_hat.size(2) * 4, z_hat.size(3) * 4
    y_hat = torch.zeros((1, model.M, height + 2 * PAD, width + 2 * PAD), device=z_hat.device)
    gc = model.gaussian_conditional
    cdf, cdf_lengths, offsets, table = _tables(gc)
    weight, bias = model.context_prediction.weight, model.context_prediction.bias
    decoder = RansDecoder()
    decoder.set_stream(strings[0][0])
    for h in range(height):
        for w in range(width):
            y_crop = y_hat[:, :, h:h + KERNEL, w:w + KERNEL]
            ctx_p = F.conv2d(y_crop, weight, bias=bias)
            p = params[:, :, h:h + 1, w:w + 1]
            gaussian_params = model.entropy_parameters(torch.cat((p, ctx_p), dim=1))
            scales_hat, means_hat = gaussian_params.chunk(2, 1)
            rv = _decode_symbols(decoder, _indexes(gc, scales_hat, table), cdf, cdf_lengths, offsets)
            rv = gc.dequantize(torch.Tensor(rv).reshape(1, -1, 1, 1), means_hat)
            y_hat[:, :, h + PAD:h + PAD + 1, w + PAD:w + PAD + 1] = rv
    return F.pad(y_hat, (-PAD, -PAD, -PAD, -PAD))
