"""Our serial coder for the joint autoregressive model is bit-exact with CompressAI's."""

import torch

from codec.models import fast_autoregressive
from codec.models.bitstream import pad
from codec.models.registry import build_model
from tests.conftest import kodak_crop
from tests.test_models import _train_a_little


def test_same_bitstream_and_same_decoded_tensor_as_compressai():
    torch.manual_seed(0)
    model = build_model("joint_autoregressive", 16, 24)
    _train_a_little(model, kodak_crop(), steps=20, lmbda=0.05)
    model.eval()
    model.update(force=True)
    x = pad(kodak_crop("kodim19.png", height=130, width=200))
    with torch.no_grad():
        ours = fast_autoregressive.compress(model, x)
        theirs = model.compress(x)
        assert ours["strings"] == theirs["strings"] and tuple(ours["shape"]) == tuple(theirs["shape"])
        y_hat = fast_autoregressive.decode_latent(model, theirs["strings"], theirs["shape"])
        x_hat = model.g_s(y_hat).clamp_(0, 1)
        assert torch.equal(x_hat, model.decompress(theirs["strings"], theirs["shape"])["x_hat"])
    assert len(theirs["strings"][0][0]) > 100
