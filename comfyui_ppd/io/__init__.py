"""Files: atomic writes (files), images and depth maps (images), point clouds and meshes (meshes)."""
