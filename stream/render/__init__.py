"""Rendering: numba z-buffer rasterizer (``raster``), mesh helpers (``mesh``), pixel kernels (``composite``),
overlays (``overlays.render_overlay``), face texture (``texture.build_texture``) and 3DMM face swap
(``swap.swap_faces``). Modules are imported explicitly; importing the package costs nothing."""
