"""The NUDF network: parameter counts of the presets, encode/decode reuse, the grid_sample axis convention, and the
fast gathering equal to grid_sample (values and gradients)."""

from __future__ import annotations

import pytest
import torch

from implicitseg.methods.nudf import preset_config
from torch.nn import functional as F

from implicitseg.models.encoders import gather_feature_levels, gather_features, neighbour_offsets_unit
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


def _grid_sample_features(grids: list[torch.Tensor], points_unit: torch.Tensor, displacement_unit: float):
    """The reference: ``grid_sample`` at each point and its neighbours, (B, N, 7 · C) channel-major."""
    offsets = neighbour_offsets_unit(displacement_unit, dtype=points_unit.dtype)
    sample_grid = points_unit[:, None, None, :, :] + offsets[None, None, :, None, :]  # (B, 1, 7, N, 3)
    sampled = torch.cat([F.grid_sample(grid, sample_grid, mode="bilinear", padding_mode="zeros", align_corners=True)
                         for grid in grids], dim=1)  # (B, C, 1, 7, N)
    return sampled.reshape(points_unit.shape[0], -1, points_unit.shape[1]).transpose(1, 2)


def test_gathering_equals_grid_sample_in_values_and_gradients() -> None:
    generator = torch.Generator().manual_seed(3)
    shapes = [(1, (6, 7, 5)), (3, (4, 3, 5)), (2, (2, 2, 2))]  # anisotropic, odd sides
    grids = [torch.randn(2, c, *zyx, generator=generator, dtype=torch.float64, requires_grad=True) for c, zyx in shapes]
    # inside, on the faces and corners of the cube, and outside it (zero padding)
    points = torch.rand(2, 40, 3, generator=generator, dtype=torch.float64) * 2.6 - 1.3
    points[:, :3] = torch.tensor([[1.0, -1.0, 1.0], [-1.0, 0.3, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    points.requires_grad_(True)
    weights = torch.randn(2, 40, 7 * 6, generator=generator, dtype=torch.float64)
    reference = _grid_sample_features(grids, points, 0.2)
    reference_grads = torch.autograd.grad((reference * weights).sum(), [*grids, points])
    features = gather_features(grids, points, 0.2)
    grads = torch.autograd.grad((features * weights).sum(), [*grids, points])
    torch.testing.assert_close(features, reference)
    for grad, reference_grad in zip(grads, reference_grads):
        torch.testing.assert_close(grad, reference_grad)


def test_decoder_on_levels_equals_decoder_on_concatenated_features() -> None:
    config = preset_config("nudf-demo")
    config.roi.res = 16
    model = NudfModel(config).eval()
    image = torch.rand(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    points = torch.rand(2, 50, 3, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        grids = model.encode(image)
        levels = gather_feature_levels(grids, points, model.displacement_unit)
        assert [tuple(level.shape) for level in levels] == [(2, 50, 7, g.shape[1]) for g in grids]
        torch.testing.assert_close(model.decoder.forward_levels(levels),
                                   model.decoder(gather_features(grids, points, model.displacement_unit)))
        with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16-mixed reads the grids in bfloat16
            mixed = model.decode(grids, points)
        assert mixed.dtype == torch.bfloat16
        torch.testing.assert_close(mixed.float(), model.decode(grids, points), atol=2e-3, rtol=0.05)
