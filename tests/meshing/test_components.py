"""Which parts of a mesh a prediction keeps: the surfaces the field supports, never a fragment over them."""

from __future__ import annotations

import numpy as np
import pytest

from implicitseg.config import ComponentConfig
from implicitseg.errors import InputError
from implicitseg.meshing.components import (boundary_loop_lengths, boundary_loops, largest_component, select_components,
                                             supported_component)


def grid_sheet(n: int, offset: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """An n × n square of unit squares (2 triangles each) at ``offset``: area n² mm²."""
    axis = np.arange(n + 1, dtype=float)
    x, y = np.meshgrid(axis, axis, indexing="ij")
    vertices = np.column_stack([x.ravel(), y.ravel(), np.zeros(x.size)]) + offset
    index = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    a, b, c, d = index[:-1, :-1].ravel(), index[1:, :-1].ravel(), index[1:, 1:].ravel(), index[:-1, 1:].ravel()
    return vertices, np.concatenate([np.column_stack([a, b, c]), np.column_stack([a, c, d])])


def two_parts(n_first: int, n_second: int):
    first_v, first_f = grid_sheet(n_first, (0.0, 0.0, 0.0))
    second_v, second_f = grid_sheet(n_second, (100.0, 0.0, 0.0))
    return np.vstack([first_v, second_v]), np.vstack([first_f, second_f + len(first_v)]), len(first_v)


def test_a_larger_unsupported_fragment_never_wins_over_the_supported_surface():
    vertices, faces, n_first = two_parts(10, 20)  # the fragment (second) is 4x larger, but 2 mm off the field
    distance_mm = np.concatenate([np.full(n_first, 0.05), np.full(len(vertices) - n_first, 2.0)])
    kept, kept_faces, selection = select_components(vertices, faces, ComponentConfig(), distance_mm)
    assert kept[:, 0].max() <= 10 and (selection.n_kept, selection.n_dropped) == (1, 1)
    assert selection.area_kept_mm2 == pytest.approx(100.0) and selection.area_dropped_mm2 == pytest.approx(400.0)
    largest, _, _ = select_components(vertices, faces, ComponentConfig(rule="largest"), distance_mm)
    assert largest[:, 0].min() >= 100  # the paper's rule keeps the fragment


def test_disjoint_supported_surfaces_are_all_kept_and_specks_dropped():
    vertices, faces, _ = two_parts(10, 9)
    speck_v, speck_f = grid_sheet(1, (0.0, 50.0, 0.0))
    vertices, faces = np.vstack([vertices, speck_v]), np.vstack([faces, speck_f + len(vertices)])
    _, kept_faces, selection = select_components(vertices, faces, ComponentConfig(), np.zeros(len(vertices)))
    assert (selection.n_kept, selection.n_dropped) == (2, 1) and len(kept_faces) == 2 * (100 + 81)
    _, _, by_area = select_components(vertices, faces, ComponentConfig(min_area_mm2=90.0, min_area_fraction=0.0))
    assert by_area.n_kept == 1  # the 81 mm² sheet is below the minimum area
    assert select_components(vertices, faces, ComponentConfig(rule="all"))[2].n_dropped == 0


def test_unknown_rule_is_an_input_error():
    vertices, faces = grid_sheet(2, (0.0, 0.0, 0.0))
    with pytest.raises(InputError, match="components.rule"):
        select_components(vertices, faces, ComponentConfig(rule="biggest"))


def test_boundary_loops_count_each_hole():
    vertices, faces = grid_sheet(6, (0.0, 0.0, 0.0))
    assert boundary_loops(faces) == 1
    centre = [i for i, f in enumerate(faces) if np.all(np.abs(vertices[f, :2].mean(axis=0) - 3.0) < 1.0)]
    assert boundary_loops(np.delete(faces, centre, axis=0)) == 2
    # the 6 × 6 mm sheet's rim and the 2 × 2 mm hole the four middle squares leave
    assert boundary_loop_lengths(vertices, np.delete(faces, centre, axis=0)) == pytest.approx([24.0, 8.0])
    assert len(boundary_loop_lengths(*grid_sheet(2, (0.0, 0.0, 0.0)))) == 1


def test_largest_component_keeps_the_one_with_most_faces():
    vertices = np.arange(21, dtype=float).reshape(7, 3)
    faces = np.array([[0, 1, 2], [4, 5, 6], [4, 6, 3]])
    kept_vertices, kept_faces = largest_component(vertices, faces)
    assert len(kept_faces) == 2
    np.testing.assert_array_equal(np.sort(kept_vertices[np.unique(kept_faces)], axis=0), vertices[3:])


def test_supported_component_keeps_the_one_the_points_lie_on_even_if_smaller():
    vertices = np.arange(21, dtype=float).reshape(7, 3)
    faces = np.array([[0, 1, 2], [4, 5, 6], [4, 6, 3]])
    support = vertices[[0, 2]] + 0.1
    kept_vertices, kept_faces = supported_component(vertices, faces, support)
    assert len(kept_faces) == 1
    np.testing.assert_array_equal(kept_vertices, vertices[:3])
    # no support points: the largest
    assert len(supported_component(vertices, faces, np.zeros((0, 3)))[1]) == 2
