"""meshing layer."""
