"""The Implicit U-Net's parts: positional encoding, multi-scale gathering in patch voxel coordinates, the DeepSDF
decoder, and the two networks (implicit decoder, and the same encoder's U-Net decoder)."""

import math

import pytest
import torch

from implicitseg.config import ImplicitUnetModelConfig
from implicitseg.models import count_parameters
from implicitseg.models.decoders import DeepSdfDecoder
from implicitseg.models.encoders import StridedConvEncoder
from implicitseg.models.implicit_unet import (
    ConvDecoderUnet,
    ImplicitUnet,
    build_patch_network,
    gather_stage_features,
    positional_encoding,
)

SMALL = ImplicitUnetModelConfig(stage_channels=(4, 8, 16), stage_convs=(1, 1, 2), hidden=32, n_hidden_layers=4,
                                skip_layer=2, n_frequencies=3)


def test_positional_encoding_is_sines_then_cosines_of_octaves():
    points = torch.tensor([[0.25, -0.5, 1.0]])
    encoded = positional_encoding(points, 3)
    assert encoded.shape == (1, 18)
    assert math.isclose(encoded[0, 0].item(), math.sin(math.pi * 0.25), abs_tol=1e-6)  # x, k = 0
    assert math.isclose(encoded[0, 1].item(), math.sin(2 * math.pi * 0.25), abs_tol=1e-6)  # x, k = 1
    assert math.isclose(encoded[0, 3].item(), math.sin(math.pi * -0.5), abs_tol=1e-6)  # y, k = 0
    assert math.isclose(encoded[0, 9].item(), math.cos(math.pi * 0.25), abs_tol=1e-6)  # cosines follow


def _index_grids(side: int, n_stages: int) -> list[torch.Tensor]:
    """Stage grids whose 3 channels hold each cell's own (d, h, w) index."""
    grids = []
    for stage in range(n_stages):
        n = side // 2**stage
        grids.append(torch.stack(torch.meshgrid(*[torch.arange(n).float()] * 3, indexing="ij"))[None])
    return grids


def test_nearest_gather_reads_cell_floor_p_over_2_to_the_stage():
    grids = _index_grids(16, 3)
    points = torch.tensor([[[0.0, 5.0, 15.0], [7.9, 8.0, 3.2]]])
    features = gather_stage_features(grids, points, "nearest")
    assert features.shape == (1, 2, 9)
    expected = [torch.floor(points[0] / 2**s) for s in range(3)]
    assert torch.equal(features[0], torch.cat(expected, dim=-1))


def test_trilinear_gather_interpolates_between_cell_centres():
    grids = _index_grids(16, 3)
    points = torch.tensor([[[2.0, 6.0, 9.0], [0.0, 12.0, 3.0]]])
    features = gather_stage_features(grids, points, "trilinear")
    # a linear function of the index is reproduced exactly: stage s reads p / 2^s
    expected = torch.cat([points[0] / 2**s for s in range(3)], dim=-1)
    assert torch.allclose(features[0], expected, atol=1e-5)
    with pytest.raises(ValueError, match="gather"):
        gather_stage_features(grids, points, "cubic")


def test_deepsdf_decoder_reinjects_its_input_and_uses_weight_normalisation():
    decoder = DeepSdfDecoder(10, 3, hidden=16, n_hidden_layers=4, skip_layer=3, dropout=0.0)
    assert decoder.hidden_layers[2].in_features == 16 + 10
    assert hasattr(decoder.hidden_layers[0], "parametrizations")
    assert decoder(torch.randn(2, 7, 10)).shape == (2, 7, 3)
    with pytest.raises(ValueError, match="skip_layer"):
        DeepSdfDecoder(10, 3, n_hidden_layers=4, skip_layer=5)


def test_encoder_halves_the_grid_per_stage_and_needs_multiples():
    encoder = StridedConvEncoder((4, 8, 16), (1, 1, 2))
    stages = encoder(torch.randn(1, 1, 16, 16, 8))
    assert [tuple(s.shape) for s in stages] == [(1, 4, 16, 16, 8), (1, 8, 8, 8, 4), (1, 16, 4, 4, 2)]
    with pytest.raises(ValueError, match="multiples of 4"):
        encoder(torch.randn(1, 1, 16, 16, 6))


def test_both_networks_share_the_encoder_and_give_class_logits():
    torch.manual_seed(0)
    implicit = build_patch_network(SMALL, 3)
    conv = build_patch_network(ImplicitUnetModelConfig(**{**SMALL.__dict__, "decoder": "convolutional"}), 3)
    assert isinstance(implicit, ImplicitUnet) and isinstance(conv, ConvDecoderUnet)
    assert count_parameters(implicit.encoder) == count_parameters(conv.encoder)
    image = torch.randn(2, 1, 16, 16, 16)
    points = torch.rand(2, 50, 3) * 15
    assert implicit(image, points).shape == (2, 50, 3)
    assert conv(image).shape == (2, 3, 16, 16, 16)
    with pytest.raises(ValueError, match="decoder"):
        build_patch_network(ImplicitUnetModelConfig(decoder="mlp"), 2)
    with pytest.raises(ValueError, match="at least 2 classes"):
        build_patch_network(SMALL, 1)


def test_encode_then_decode_equals_forward_and_points_are_independent():
    torch.manual_seed(1)
    model = build_patch_network(SMALL, 2).eval()
    image = torch.randn(1, 1, 16, 16, 16)
    points = torch.rand(1, 40, 3) * 15
    stages = model.encode(image)
    together = model.decode(stages, points)
    assert torch.allclose(together, model(image, points))
    one_by_one = torch.cat([model.decode(stages, points[:, i:i + 1]) for i in range(40)], dim=1)
    assert torch.allclose(together, one_by_one, atol=1e-5)
