"""The four registered models train, and code real bitstreams that decode to what was encoded."""

import pytest
import torch
from compressai.models import FactorizedPrior, JointAutoregressiveHierarchicalPriors, ScaleHyperprior

from codec.models.bitstream import crop, decode, decode_mismatches, decompress_shape, encode, pack, unpack
from codec.models.checkerboard import CheckerboardAutoregressive
from codec.errors import ConfigError, LicSweepError
from codec.models.registry import REGISTRY, build_model, entry_for_state_dict, entry_of
from tests.conftest import kodak_crop, small_channels

MODEL_NAMES = list(REGISTRY)

EXPECTED_CLASSES = {
    "factorized": FactorizedPrior,
    "hyperprior": ScaleHyperprior,
    "joint_autoregressive": JointAutoregressiveHierarchicalPriors,
    "checkerboard": CheckerboardAutoregressive,
}


def test_registry_maps_the_names_to_their_classes():
    assert set(EXPECTED_CLASSES) <= set(REGISTRY)
    for name, cls in EXPECTED_CLASSES.items():
        model = build_model(name, 8, 12)
        assert type(model) is cls
        assert entry_of(model).name == name


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_a_state_dict_is_recognised_by_its_parameters_alone(name):
    """No key order, no isinstance order: exactly one registered architecture has these parameters."""
    for N, M in {REGISTRY[name].tiny, small_channels(name), (16, 16)}:
        if name.startswith("elic") and M < 20:
            continue  # ELIC's five channel groups need M >= 20
        state_dict = build_model(name, N, M).state_dict()
        assert entry_for_state_dict(state_dict).name == name


def test_an_unknown_state_dict_is_refused():
    with pytest.raises(LicSweepError, match="cannot tell the architecture.*matches none"):
        entry_for_state_dict({"g_a.0.weight": torch.zeros(8, 3, 5, 5), "g_a.6.weight": torch.zeros(12, 8, 5, 5)})


def test_unknown_model_names_the_choices():
    with pytest.raises(ConfigError, match="model='foo'.*factorized.*checkerboard"):
        build_model("foo", 8, 8)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_trains(name):
    x = kodak_crop()
    model = build_model(name, *small_channels(name)).train()
    out = model(x)
    assert out["x_hat"].shape == x.shape
    expected = {"y"} if entry_of(model).coding.strings == 1 else {"y", "z"}
    assert set(out["likelihoods"]) == expected
    bpp = sum(torch.log2(l).sum() for l in out["likelihoods"].values()) / -(x.shape[2] * x.shape[3])
    loss = torch.nn.functional.mse_loss(out["x_hat"], x) + bpp + model.aux_loss()
    loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if n.startswith("g_a"))


def _train_a_little(model, x, steps=20, lmbda=0.01):
    """A few steps so the round trip runs on a model with non-trivial latents."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        out = model(x)
        bpp = sum(torch.log2(l).sum() for l in out["likelihoods"].values()) / -x[0, 0].numel()
        loss = lmbda * 255**2 * torch.nn.functional.mse_loss(out["x_hat"], x) + bpp + model.aux_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_real_bitstream_round_trip(name):
    x = kodak_crop(height=100, width=150)  # not a multiple of 64: padded, then cropped back
    model = build_model(name, *small_channels(name))
    _train_a_little(model, kodak_crop())
    model.eval()
    model.update(force=True)
    with torch.no_grad():
        enc = encode(model, x)
        data = pack(enc)
        x_hat, y_hat = decode(model, unpack(data, model))
        # the model's own decompress gives the same image
        reference = crop(model.decompress(enc.strings, decompress_shape(model, enc.image_hw))["x_hat"],
                         enc.image_hw)
        assert torch.equal(x_hat, reference)
        assert unpack(data, model).image_hw == enc.image_hw
        # the decoder reproduces exactly the latent the encoder coded
        assert torch.equal(y_hat, enc.y_hat)
        assert decode_mismatches(enc, y_hat) == 0
        # a corrupted latent is caught
        assert decode_mismatches(enc, y_hat + (torch.rand_like(y_hat) < 0.01).float()) > 0
    assert x_hat.shape == x.shape
    assert len(data) > 4
    mse = torch.mean((x_hat - x) ** 2).item()
    assert mse < 0.05  # it is an image, not noise


def test_packed_bitstream_round_trips_bytes():
    from codec.models.bitstream import Encoded

    model = build_model("checkerboard", 8, 8)
    enc = Encoded([[b"abc"], [b""], [bytes(300)]], (500, 333))
    data = pack(enc)
    assert len(data) == 4 + 1 + 3 + 1 + 0 + 300  # size header, two length bytes, the strings
    back = unpack(data, model)
    assert back.strings == enc.strings and back.image_hw == (500, 333)
    with pytest.raises(ValueError, match="truncated"):
        unpack(data[:6], model)


def test_checkerboard_state_dict_loads_into_a_fresh_instance():
    model = build_model("checkerboard", 16, 24)
    clone = CheckerboardAutoregressive.from_state_dict(model.state_dict())
    assert (clone.N, clone.M) == (16, 24)
    for (k, a), (_, b) in zip(model.state_dict().items(), clone.state_dict().items()):
        assert torch.equal(a, b), k
