"""Mesh rasterization shared by training data (face profiling) and the stream renderer: ``raster`` (numba z-buffer) and
``mesh`` (normals, culling, grid topology helpers)."""
