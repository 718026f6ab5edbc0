import numpy as np
import torch

from implicitseg.config import PointCloudConfig
from implicitseg.inference.pointcloud import dense_point_cloud


class SphereUdf(torch.nn.Module):
    """The exact unsigned distance to a sphere (unit frame); counts encoder calls."""

    def __init__(self, center, radius):
        super().__init__()
        self.center = torch.tensor(center, dtype=torch.float32)
        self.radius = radius
        self.encoder_calls = 0

    def encode(self, image):
        self.encoder_calls += 1
        return [image]

    def decode(self, features, points_unit):
        return ((points_unit - self.center).norm(dim=-1) - self.radius).abs()


def test_projection_lands_on_the_surface_and_runs_the_encoder_once():
    model = SphereUdf([0.2, -0.1, 0.05], 0.5)
    config = PointCloudConfig(n_seeds=20_000, n_dense=30_000, batch_points=7_000, steps=5)
    points, stats = dense_point_cloud(model, torch.zeros(1, 1, 4, 4, 4), config)
    assert model.encoder_calls == 1
    radii = np.linalg.norm(points - np.array([0.2, -0.1, 0.05]), axis=1)
    assert np.abs(radii - 0.5).max() < 1e-4
    assert stats["n_points"] == len(points) > 25_000
    assert stats["n_survivors"] < config.n_seeds  # seeds far from the surface were dropped
    # points cover the sphere: every octant of directions is hit
    directions = np.sign(points - np.array([0.2, -0.1, 0.05]))
    assert len({tuple(d) for d in directions}) == 8


def test_points_outside_the_cube_are_dropped():
    model = SphereUdf([0.9, 0.0, 0.0], 0.3)  # part of the sphere leaves the cube
    points, _ = dense_point_cloud(model, torch.zeros(1, 1, 4, 4, 4), PointCloudConfig(n_seeds=10_000, n_dense=10_000))
    assert len(points) > 1_000 and np.abs(points).max() <= 1.0
    radii = np.linalg.norm(points - np.array([0.9, 0.0, 0.0]), axis=1)
    assert np.abs(radii - 0.3).max() < 1e-3  # on the sphere: the part inside the cube, nothing else
    assert points[:, 0].min() < 0.65 and points[:, 0].max() > 0.95  # both sides of the cut at x = 1 are reached


def test_field_far_from_zero_gives_no_points():
    class FarField(SphereUdf):
        def decode(self, features, points_unit):
            return super().decode(features, points_unit) + 0.5

    points, stats = dense_point_cloud(FarField([0, 0, 0], 0.5), torch.zeros(1, 1, 4, 4, 4),
                                      PointCloudConfig(n_seeds=2_000, n_dense=2_000))
    assert points.shape == (0, 3) and stats["n_points"] == 0
