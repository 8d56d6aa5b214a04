"""GSNeRF: source views -> geometry -> guide depth -> samples -> heads -> rendered rays (spec 0).

For one target view: the Semantic Geo-Reasoner encodes the sources once; the guide depth D_T is
splatted once from the finest source depths; every target ray gets depth-guided samples; each
sample gathers features from every source view; the radiance head gives density and colour, the
semantic head class logits; alpha compositing renders colour, depth and semantics.

The source depths that place the guide (and so the samples) are detached: sample placement is a
proposal, as the coarse-to-fine resampling of NeRF, and the cascade depths are trained by their
own depth losses (spec 3.4-3.5) instead of through the sample positions.
"""

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from einops import rearrange, repeat
from jaxtyping import Float, Int64
from torch import Tensor, nn

from gsnerf.geometry.camera import camera_rays, pixel_grid, scale_intrinsics
from gsnerf.model.feature_gather import GatherCfg
from gsnerf.model.geo_reasoner import GeoReasonerCfg, SemanticGeoReasoner
from gsnerf.model.radiance_head import RadianceHead, RadianceHeadCfg, RadianceOutput
from gsnerf.model.ray_features import RayFeatures, gather_ray_features
from gsnerf.model.sampler import SamplerCfg
from gsnerf.model.semantic_head import SemanticHead, SemanticHeadCfg, SemanticRendering
from gsnerf.model.stage_timer import StageRecorder
from gsnerf.model.target_depth import TargetDepthCfg, estimate_guide_depth
from gsnerf.rendering.chunked import rays_for_samples, render_in_chunks, render_memory_sized
from gsnerf.rendering.volume import (
    DepthNormalisation,
    alphas_from_density,
    composite,
    composite_depth,
    opacity,
    render_weights,
    sample_intervals,
)
from gsnerf.types import (
    Example,
    GuideDepth,
    ImageRender,
    RayBundle,
    RaySamples,
    RenderOutput,
    SourceGeometry,
)


@dataclass
class RendererCfg:
    # Per-sample, per-view gathering: semantic patch, occlusion tolerance, angle encoding (2.5).
    gather: GatherCfg = field(default_factory=GatherCfg)
    # Density and colour-blending branch (spec 2.6).
    radiance: RadianceHeadCfg = field(default_factory=RadianceHeadCfg)
    # Semantic branch with the semantic global token (spec 2.7).
    semantic: SemanticHeadCfg = field(default_factory=SemanticHeadCfg)
    # Composited depth: "none" (sum w t, spec 2.8) or "opacity" (divided by sum w).
    depth_normalisation: str = DepthNormalisation.NONE.value
    # Rays per chunk of a full-image render when the caller names none (the reference: a fixed
    # 4096, spec 5.1). 0 chooses: on CUDA chunks sized to the free memory after a probe chunk
    # (auto_chunk_*), on a CPU chunks of cpu_chunk_samples samples.
    chunk_rays: int = 0
    # Samples per automatically sized CPU chunk (chunk_rays = 0): cpu_chunk_samples // N rays.
    # Small chunks stay in the CPU's caches: at N = 4 a tiny-model 80x60 view rendered 1.2 times
    # faster in chunks of 1024 rays than in one pass. 0 renders the whole image at once.
    cpu_chunk_samples: int = 4096
    # Fraction of the free CUDA memory one automatically sized chunk may fill (chunk_rays = 0).
    auto_chunk_memory_fraction: float = 0.7
    # At most this many MB per automatically sized chunk; 0 for no bound. A whole 240x320 view
    # of the paper model in one pass needs about 6 GB in fp32 (78 kB per ray, measured on the
    # CPU), more than the 4 GB inference target; 2 GB chunks (about 27k rays in fp32) keep the
    # peak bounded however much memory the GPU has free.
    auto_chunk_max_mb: float = 2048.0
    # Rays of the first automatically sized chunk, whose peak memory per ray sizes the others.
    auto_chunk_probe_rays: int = 1024

    def __post_init__(self) -> None:
        if self.depth_normalisation not in {mode.value for mode in DepthNormalisation}:
            raise ValueError(
                f"RendererCfg.depth_normalisation: unknown value {self.depth_normalisation!r}, "
                f"expected one of {[mode.value for mode in DepthNormalisation]}"
            )
        if self.chunk_rays < 0 or self.cpu_chunk_samples < 0:
            raise ValueError(
                "RendererCfg: chunk_rays and cpu_chunk_samples must be >= 0 (0: automatic), got "
                f"{self.chunk_rays} and {self.cpu_chunk_samples}"
            )
        if self.auto_chunk_max_mb < 0:
            raise ValueError(
                f"RendererCfg: auto_chunk_max_mb must be >= 0 (0: no bound), got "
                f"{self.auto_chunk_max_mb}"
            )
        if not 0 < self.auto_chunk_memory_fraction <= 1 or self.auto_chunk_probe_rays < 1:
            raise ValueError(
                "RendererCfg: auto_chunk_memory_fraction must lie in (0, 1] and "
                f"auto_chunk_probe_rays be >= 1, got {self.auto_chunk_memory_fraction} and "
                f"{self.auto_chunk_probe_rays}"
            )


@dataclass
class GSNeRFCfg:
    # Name of this model configuration, quoted in run titles and errors (e.g. gsnerf, tiny).
    name: str = "gsnerf"
    # Semantic Geo-Reasoner: feature net and cascaded cost volumes (spec 2.1-2.2).
    geo_reasoner: GeoReasonerCfg = field(default_factory=GeoReasonerCfg)
    # Target-view guide depth D_T (spec 2.3).
    target_depth: TargetDepthCfg = field(default_factory=TargetDepthCfg)
    # Depth-guided samples along the target rays (spec 2.4).
    sampler: SamplerCfg = field(default_factory=SamplerCfg)
    # Gathering, radiance and semantic heads, compositing (spec 2.5-2.8).
    renderer: RendererCfg = field(default_factory=RendererCfg)


@dataclass
class GSNeRFOutput:
    """Everything one rendering pass produced, for the losses and for inspection."""

    geometry: SourceGeometry
    guide: GuideDepth
    rays: RayBundle
    samples: RaySamples
    render: RenderOutput


class GSNeRF(nn.Module):
    """The generalizable semantic NeRF of the paper (module doc)."""

    def __init__(self, cfg: GSNeRFCfg, num_classes: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        self.geo_reasoner = SemanticGeoReasoner(cfg.geo_reasoner, num_classes)
        gather = cfg.renderer.gather
        levels = len(cfg.geo_reasoner.n_depths)
        self.radiance_head = RadianceHead(
            cfg.renderer.radiance,
            volume_channels=levels * self.geo_reasoner.volume_channels,
            image_channels=self.geo_reasoner.image_channels,
            angle_channels=gather.angle_channels,
        )
        self.semantic_head = SemanticHead(
            cfg.renderer.semantic,
            feature_channels=gather.semantic_patch**2 * self.geo_reasoner.semantic_channels,
            num_classes=num_classes,
        )
        self.semantic_rendering = SemanticRendering(cfg.renderer.semantic.rendering)
        self.depth_normalisation = DepthNormalisation(cfg.renderer.depth_normalisation)
        # Set only inside profiled(); None keeps every stage a null context.
        self.stage_recorder: StageRecorder | None = None
        # True once the heads are compiled for static shapes (compile_heads): render_image then
        # splits an image into chunks of one size, so one compiled shape serves them all.
        self.equal_chunks = False

    def stage(self, name: str) -> contextlib.AbstractContextManager:
        """``with self.stage(name):`` records the block when a recorder is set (profiled())."""
        if self.stage_recorder is None:
            return contextlib.nullcontext()
        return self.stage_recorder(name)

    @contextlib.contextmanager
    def profiled(self, recorder: StageRecorder) -> Iterator[StageRecorder]:
        """Within this context every stage of a pass adds its cost to ``recorder`` (spec 9).

        A :class:`~gsnerf.model.stage_timer.StageTimer` (time) or ``StageFlops`` (FLOPs).
        Stages: ``feature_net`` and ``cost_volumes`` (forward hooks on the geo-reasoner's
        modules), ``guide_depth``, ``sampling_gather``, ``heads`` and ``compositing``.
        """
        handles = recorder.attach(self.geo_reasoner.feature_net, "feature_net")
        for level in self.geo_reasoner.cost_volumes:
            handles += recorder.attach(level, "cost_volumes")
        self.stage_recorder = recorder
        try:
            yield recorder
        finally:
            self.stage_recorder = None
            for handle in handles:
                handle.remove()

    def encode_sources(self, example: Example) -> SourceGeometry:
        """Per-source depths, volumes and 2-D semantics (spec 2.1-2.2)."""
        return self.geo_reasoner(example.sources, example.source_neighbours)

    def guide_depth(self, example: Example, geometry: SourceGeometry) -> GuideDepth:
        """D_T of the target view from the finest source depths, detached (module doc)."""
        with self.stage("guide_depth"):
            return self.estimate_guide(example, geometry)

    def estimate_guide(self, example: Example, geometry: SourceGeometry) -> GuideDepth:
        """:func:`estimate_guide_depth` on the finest source depths, outside the stage timer:
        ``compile_heads(..., parts=["guide_depth"])`` replaces it on the instance."""
        sources, target = example.sources, example.target
        source_depths = geometry.depths[-1].detach()
        image_size = (sources.images.shape[-1], sources.images.shape[-2])
        depth_size = (source_depths.shape[-1], source_depths.shape[-2])
        intrinsics = scale_intrinsics(sources.intrinsics, image_size, depth_size)
        height, width = target.images.shape[-2:]
        return estimate_guide_depth(
            source_depths,
            intrinsics,
            sources.cam_to_world,
            target.intrinsics[:, 0],
            target.cam_to_world[:, 0],
            height,
            width,
            self.cfg.target_depth,
        )

    def render_rays(
        self,
        example: Example,
        geometry: SourceGeometry,
        pixels: Int64[Tensor, "b rays 2"],
        training: bool,
        generator: torch.Generator | None = None,
        guide: GuideDepth | None = None,
    ) -> GSNeRFOutput:
        """Colour, depth and semantics of the target pixels ``(row, col)``.

        ``guide`` is D_T of the whole target image; computed here when not given. Colours are
        clamped to [0, 1] only when ``training`` is False.
        """
        if guide is None:
            guide = self.guide_depth(example, geometry)
        with self.stage("sampling_gather"):
            features = self.gather(example, geometry, pixels, guide, training, generator)
        samples, rays = features.samples, features.rays
        with self.stage("heads"):
            radiance = self.radiance_head(features.gathered, features.view_mask, features.positions)
            semantic = features.semantic
            logits = self.semantic_head(
                semantic.features, semantic.in_frustum, semantic.visible, semantic.view_mask
            )
        with self.stage("compositing"):
            render = self.composite_samples(radiance, logits, samples.depths, rays.far, training)
        return GSNeRFOutput(
            geometry=geometry, guide=guide, rays=rays, samples=samples, render=render
        )

    def gather(
        self,
        example: Example,
        geometry: SourceGeometry,
        pixels: Int64[Tensor, "b rays 2"],
        guide: GuideDepth,
        training: bool,
        generator: torch.Generator | None = None,
    ) -> RayFeatures:
        """Rays, samples and the heads' inputs (:func:`gather_ray_features`).

        A method of its own so that ``compile_heads(..., parts=["gather"])`` can replace it on
        the instance with a compiled one.
        """
        renderer = self.cfg.renderer
        return gather_ray_features(
            example,
            geometry,
            pixels,
            guide,
            self.cfg.sampler,
            renderer.gather,
            self.semantic_rendering,
            training,
            generator,
        )

    def composite_samples(
        self,
        radiance: RadianceOutput,
        logits: Float[Tensor, "b rays semantic_samples classes"],
        depths: Float[Tensor, "b rays samples"],
        far: Float[Tensor, "b rays"],
        training: bool,
    ) -> RenderOutput:
        """Colour, depth, opacity and class logits of the rays from their samples (spec 2.8).

        Densities and values are composited in float32 whatever the heads' precision. Colours
        are clamped to [0, 1] only when ``training`` is False. The class logits are the
        composited per-sample ones, or the guide sample's, the only one the semantic head
        then sees (``renderer.semantic.rendering``; ``semantic_samples`` = 1). A
        method of its own so that ``compile_heads(..., parts=["compositing"])`` can replace it
        on the instance with a compiled one: eager, its dozen small operators each launch a
        kernel per chunk.
        """
        deltas = sample_intervals(depths, far)
        weights = render_weights(alphas_from_density(radiance.density.float(), deltas))
        rgb = composite(weights, radiance.rgb.float())
        if not training:
            rgb = rgb.clamp(0.0, 1.0)
        if self.semantic_rendering is SemanticRendering.VOLUME:
            ray_logits = composite(weights, logits.float())
        else:
            ray_logits = logits[:, :, 0].float()
        return RenderOutput(
            rgb=rgb,
            depth=composite_depth(weights, depths, self.depth_normalisation),
            semantic_logits=ray_logits,
            weights=weights,
            opacity=opacity(weights),
        )

    def render_image(
        self, example: Example, geometry: SourceGeometry, chunk_rays: int | None = None
    ) -> ImageRender:
        """Every pixel of the target view, raster order, in chunks (evaluation mode sampling).

        ``chunk_rays`` rays per chunk, ``renderer.chunk_rays`` when None. With 0, CUDA sizes the
        chunks to the free memory (:meth:`render_sized`) and a CPU renders chunks of
        ``renderer.cpu_chunk_samples`` samples. The depth is converted from distance along the
        ray to z-depth.
        """
        target = example.target
        batch = target.images.shape[0]
        height, width = target.images.shape[-2:]
        device = target.images.device
        rows, cols = torch.meshgrid(
            torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij"
        )
        pixels = repeat(torch.stack([rows, cols], dim=-1), "h w two -> b (h w) two", b=batch)
        guide = self.guide_depth(example, geometry)

        def render_chunk(chunk: Int64[Tensor, "b chunk 2"]) -> RenderOutput:
            return self.render_rays(example, geometry, chunk, training=False, guide=guide).render

        chunk = self.cfg.renderer.chunk_rays if chunk_rays is None else chunk_rays
        if chunk <= 0 and device.type == "cuda":
            render = self.render_sized(render_chunk, pixels)
        else:
            if chunk <= 0:
                sampler = self.cfg.sampler
                per_ray = sampler.num_samples + sampler.num_uniform
                chunk = rays_for_samples(self.cfg.renderer.cpu_chunk_samples, per_ray)
            render = render_in_chunks(render_chunk, pixels, chunk, self.equal_chunks)
        # A distance t along a unit ray is the z-depth t * cos(angle to the optical axis).
        grid = repeat(pixel_grid(height, width, device=device), "h w two -> b (h w) two", b=batch)
        _, _, z_per_distance = camera_rays(
            target.intrinsics[:, 0].float(), target.cam_to_world[:, 0].float(), grid
        )
        unfold = {"h": height, "w": width}
        return ImageRender(
            rgb=rearrange(render.rgb, "b (h w) c -> b c h w", **unfold),
            depth=rearrange(render.depth * z_per_distance, "b (h w) -> b h w", **unfold),
            semantic_logits=rearrange(render.semantic_logits, "b (h w) k -> b k h w", **unfold),
            opacity=rearrange(render.opacity, "b (h w) -> b h w", **unfold),
            guide_depth=guide.depth,
            guide_valid=guide.valid,
        )

    def render_sized(
        self,
        render_chunk: Callable[[Int64[Tensor, "b chunk 2"]], RenderOutput],
        pixels: Int64[Tensor, "b rays 2"],
    ) -> RenderOutput:
        """Render a probe chunk, then chunks sized to the free CUDA memory it implies.

        :func:`gsnerf.rendering.chunked.render_memory_sized` with the ``auto_chunk_*`` settings;
        resets CUDA's peak memory statistics.
        """
        renderer = self.cfg.renderer
        return render_memory_sized(
            render_chunk,
            pixels,
            probe_rays=renderer.auto_chunk_probe_rays,
            memory_fraction=renderer.auto_chunk_memory_fraction,
            max_mb=renderer.auto_chunk_max_mb,
            equal_chunks=self.equal_chunks,
        )

    def forward(
        self,
        example: Example,
        pixels: Int64[Tensor, "b rays 2"],
        training: bool,
        generator: torch.Generator | None = None,
    ) -> GSNeRFOutput:
        """Encode the sources and render the target pixels ``(row, col)``."""
        geometry = self.encode_sources(example)
        return self.render_rays(example, geometry, pixels, training, generator)


def build_model(cfg: GSNeRFCfg, num_classes: int) -> GSNeRF:
    """The model of ``cfg`` for ``num_classes`` semantic classes."""
    if num_classes < 1:
        raise ValueError(f"build_model: num_classes must be >= 1, got {num_classes}")
    return GSNeRF(cfg, num_classes)
