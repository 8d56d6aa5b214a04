"""Data contracts exchanged between the stages of gsnerf, and nothing else.

Axis names: ``b`` batch, ``v`` views, ``h w`` image, ``rays``, ``samples``, ``c_*`` channels,
``classes``, ``d`` depth hypotheses. The dataset yields these without the batch axis (``*b`` is
empty); :func:`gsnerf.data.dataset.collate_examples` stacks them into a batch.

Cameras follow OpenCV axes (x right, y down, z forward); poses are camera-to-world 4x4;
intrinsics are in pixels of the image they belong to, with pixel centres at integer coordinates.
"""

from dataclasses import dataclass

from jaxtyping import Bool, Float, Int64
from torch import Tensor


@dataclass
class Views:
    """V posed views of one scene."""

    images: Float[Tensor, "*b v 3 h w"]  # RGB in [0, 1]
    intrinsics: Float[Tensor, "*b v 3 3"]  # pixels, at the images' resolution
    cam_to_world: Float[Tensor, "*b v 4 4"]  # OpenCV axes
    near: Float[Tensor, "*b v"]  # metres
    far: Float[Tensor, "*b v"]  # metres
    depths: Float[Tensor, "*b v h w"] | None  # metres, 0 = unknown; supervision only
    labels: Int64[Tensor, "*b v h w"] | None  # class ids; ignore_index where unlabeled
    frame_ids: Int64[Tensor, "*b v"]

    def to(self, device: str | object) -> "Views":
        """Copy of these views with every tensor moved to ``device``."""
        return Views(
            images=self.images.to(device),
            intrinsics=self.intrinsics.to(device),
            cam_to_world=self.cam_to_world.to(device),
            near=self.near.to(device),
            far=self.far.to(device),
            depths=None if self.depths is None else self.depths.to(device),
            labels=None if self.labels is None else self.labels.to(device),
            frame_ids=self.frame_ids.to(device),
        )


@dataclass
class Example:
    """What the DataLoader yields: K source views and one target view of one scene."""

    sources: Views  # v = K source views
    target: Views  # v = 1
    source_neighbours: Int64[Tensor, "*b v n"]  # per source view, indices (into sources) of its
    # MVS neighbours, nearest first, the view itself excluded
    scenes: list[str]

    def to(self, device: str | object) -> "Example":
        return Example(
            sources=self.sources.to(device),
            target=self.target.to(device),
            source_neighbours=self.source_neighbours.to(device),
            scenes=self.scenes,
        )


@dataclass
class SourceGeometry:
    """Semantic Geo-Reasoner output, per source view (spec 2.1-2.2)."""

    depths: list[Float[Tensor, "b v _ _"]]  # one map per cascade level, coarse -> fine
    depth_ranges: list[Float[Tensor, "b v 2 _ _"]]  # per level, first and last hypothesis
    volume_features: list[Float[Tensor, "b v c_vol _ _ _"]]  # per level, regularised volume
    image_features: Float[Tensor, "b v c_img h w"]
    semantic_features: Float[Tensor, "b v c_sem h w"]
    semantic_logits: Float[Tensor, "b v classes h w"]


@dataclass
class GuideDepth:
    """Target-view guide depth D_T (paper Algorithm 1)."""

    depth: Float[Tensor, "b h w"]  # metres; 0 where invalid
    valid: Bool[Tensor, "b h w"]  # False where no source depth reached the pixel


@dataclass
class RayBundle:
    """Target-camera rays."""

    origins: Float[Tensor, "b rays 3"]
    directions: Float[Tensor, "b rays 3"]  # unit length, world frame
    near: Float[Tensor, "b rays"]  # distance along the unit direction, metres
    far: Float[Tensor, "b rays"]
    pixels: Int64[Tensor, "b rays 2"]  # (row, col) in the target image
    guide_depth: Float[Tensor, "b rays"]  # D_T at that pixel, as distance along the ray
    guide_valid: Bool[Tensor, "b rays"]  # False: no guide, the sampler falls back to uniform


@dataclass
class RaySamples:
    """Distances of the samples along each ray."""

    depths: Float[Tensor, "b rays samples"]  # sorted, inside [near, far]
    guide_index: Int64[Tensor, "b rays"]  # which sample sits at D_T (the "middle point")


@dataclass
class RenderOutput:
    rgb: Float[Tensor, "b rays 3"]
    depth: Float[Tensor, "b rays"]  # expected distance along the ray, metres
    semantic_logits: Float[Tensor, "b rays classes"]
    weights: Float[Tensor, "b rays samples"]
    opacity: Float[Tensor, "b rays"]


@dataclass
class ImageRender:
    """A whole rendered target image (evaluation, videos)."""

    rgb: Float[Tensor, "b 3 h w"]  # in [0, 1]
    depth: Float[Tensor, "b h w"]  # z-depth, metres, comparable with the dataset's depth maps
    semantic_logits: Float[Tensor, "b classes h w"]
    opacity: Float[Tensor, "b h w"]
    guide_depth: Float[Tensor, "b h w"]  # D_T, z-depth, metres; 0 where invalid
    guide_valid: Bool[Tensor, "b h w"]
