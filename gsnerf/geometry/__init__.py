"""Pure camera and multi-view geometry: tensors in, tensors out."""

from gsnerf.geometry.splatting import reproject_depth, reproject_depth_batched

__all__ = ["reproject_depth", "reproject_depth_batched"]
