"""Frame rendering: pixel kernels (``composite``), overlays (``overlays.render_overlay``), face texture
(``texture.build_texture``) and 3DMM face swap (``swap.swap_faces``), on the numba z-buffer rasterizer in
``model.raster`` (shared with training's face profiling, which may not import ``stream``). Modules are imported
explicitly; importing the package costs nothing."""
