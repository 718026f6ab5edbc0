"""implicitseg: high-resolution segmentations and surface meshes of 3D medical images with neural implicit functions."""

__version__ = "0.1.0"
