"""The NUDF network: parameter counts of the presets, encode/decode reuse, and the grid_sample axis convention."""

from __future__ import annotations

import pytest
import torch

from implicitseg.methods.nudf import preset_config
from implicitseg.models.encoders import gather_features
from implicitseg.models import count_parameters
from implicitseg.models.nudf import NudfModel, build_model

SPEC_PARAMETERS = {"nudf64": 2_481_089, "nudf128": 2_550_881, "nudf256": 2_575_409, "nudf512": 2_566_393}


@pytest.mark.parametrize("preset", sorted(SPEC_PARAMETERS))
def test_preset_parameter_count_matches_spec(preset: str) -> None:
    model = build_model(preset_config(preset))
    assert abs(count_parameters(model) - SPEC_PARAMETERS[preset]) <= 0.01 * SPEC_PARAMETERS[preset]


def test_feature_dim_and_grid_resolutions() -> None:
    config = preset_config("nudf-demo")
    config.roi.res = 16
    model = NudfModel(config)
    grids = model.encode(torch.zeros(1, 1, 16, 16, 16))
    # input + stem at 16³, then levels pooled to 8³, 4³, 2³
    assert [tuple(g.shape[1:]) for g in grids] == [
        (1, 16, 16, 16), (16, 16, 16, 16), (32, 8, 8, 8), (64, 4, 4, 4), (64, 2, 2, 2)]
    assert model.feature_dim == 1 + 16 + 32 + 64 + 64
    assert model.decoder.hidden_layers[0].in_features == 7 * model.feature_dim


def test_first_pool_factor_of_nudf512() -> None:
    config = preset_config("nudf512")
    config.encoder.level_channels = (2, 2)
    config.encoder.stem_channels = 2
    grids = build_model(config).encode(torch.zeros(1, 1, 16, 16, 16))
    assert [g.shape[-1] for g in grids] == [16, 16, 4, 2]


def test_encode_once_decode_twice_equals_forward() -> None:
    torch.manual_seed(0)
    config = preset_config("nudf-demo")
    model = build_model(config).eval()
    image = torch.randn(2, 1, 16, 16, 16)
    points_a = torch.rand(2, 50, 3) * 2 - 1
    points_b = torch.rand(2, 30, 3) * 2 - 1
    with torch.no_grad():
        features = model.encode(image)
        decoded_a = model.decode(features, points_a)
        decoded_b = model.decode(features, points_b)
        assert decoded_a.shape == (2, 50) and decoded_b.shape == (2, 30)
        torch.testing.assert_close(decoded_a, model(image, points_a))
        torch.testing.assert_close(decoded_b, model(image, points_b))
    assert bool((decoded_a >= 0).all())  # softplus output


def test_feature_at_unit_point_reads_image_voxel_zyx() -> None:
    res = 9
    image = torch.arange(res**3, dtype=torch.float32).reshape(1, 1, res, res, res)  # (B, C, Z, Y, X)
    voxel_unit = 2.0 / (res - 1)
    index_xyz = torch.tensor([[2, 5, 7], [0, 8, 3], [4, 4, 1]])
    points_unit = (index_xyz * voxel_unit - 1.0)[None].float()
    features = gather_features([image], points_unit, displacement_unit=voxel_unit)  # (1, 3, 7)
    assert features.shape == (1, 3, 7)
    for n, (x, y, z) in enumerate(index_xyz.tolist()):
        assert features[0, n, 0] == pytest.approx(float(image[0, 0, z, y, x]))
        # neighbours in the order -x, +x, -y, +y, -z, +z; outside the cube reads 0
        expected = []
        for axis in range(3):
            for step in (-1, 1):
                index = [x, y, z]
                index[axis] += step
                inside = 0 <= index[axis] < res
                expected.append(float(image[0, 0, index[2], index[1], index[0]]) if inside else 0.0)
        assert features[0, n, 1:].tolist() == pytest.approx(expected, abs=1e-3)


def test_trilinear_between_voxels() -> None:
    image = torch.zeros(1, 1, 3, 3, 3)
    image[0, 0, 1, 1, 2] = 1.0  # voxel x=2, y=1, z=1 → unit (1, 0, 0)
    # halfway to x's voxel; along y instead; half a voxel outside (zero padding fades); a voxel outside
    points_unit = torch.tensor([[[0.5, 0.0, 0.0], [0.0, 0.5, 0.0], [1.5, 0.0, 0.0], [2.0, 0.0, 0.0]]])
    features = gather_features([image], points_unit, displacement_unit=0.1)
    assert features[0, :, 0].tolist() == pytest.approx([0.5, 0.0, 0.5, 0.0])
