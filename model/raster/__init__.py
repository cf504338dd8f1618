"""Mesh rasterization shared by training data (face profiling) and the stream renderer: ``zbuffer`` (the numba
z-buffer triangle rasterizer) and ``mesh`` (normals, culling, grid topology helpers). Drawing on frames (overlays,
the swap) is ``stream.render``."""
