"""compute_losses: the documented terms, their weights, errors, and a numerically hard batch."""

import pytest
import torch

from gsnerf.losses import LossCfg, RayTargets, compute_losses
from gsnerf.losses.depth_self_supervised import SelfSupervisedDepthCfg
from gsnerf.losses.depth_supervised import SupervisedDepthCfg
from gsnerf.losses.photometric import image_loss
from gsnerf.losses.semantic import ray_semantic_loss, source_semantic_loss
from gsnerf.types import Example, RenderOutput, SourceGeometry, Views

VIEWS, HEIGHT, WIDTH, CLASSES, RAYS, SAMPLES = 3, 8, 12, 4, 5, 8
LEVEL_SIZES = [(2, 3), (4, 6), (8, 12)]
SUPERVISED_TERMS = {"image", "semantic_ray", "semantic_2d", "depth_source", "depth_ray", "total"}
SELF_SUPERVISED_TERMS = {
    "image",
    "semantic_ray",
    "semantic_2d",
    "ssl_reconstruction",
    "ssl_ssim",
    "ssl_smoothness",
    "depth_guide",
    "total",
}


def views(images: torch.Tensor, depths: torch.Tensor | None, labels: torch.Tensor | None) -> Views:
    count = images.shape[1]
    intrinsics = torch.tensor([[10.0, 0.0, 5.5], [0.0, 10.0, 3.5], [0.0, 0.0, 1.0]])
    poses = torch.eye(4).repeat(1, count, 1, 1)
    poses[0, :, 0, 3] = 0.1 * torch.arange(count)
    return Views(
        images=images,
        intrinsics=intrinsics.expand(1, count, 3, 3).clone(),
        cam_to_world=poses,
        near=torch.full((1, count), 0.1),
        far=torch.full((1, count), 10.0),
        depths=depths,
        labels=labels,
        frame_ids=torch.arange(count)[None],
    )


class Batch:
    """Leaf tensors of one step (the 'model outputs' get gradients) and the structures."""

    def __init__(self, hard: bool, dtype: torch.dtype = torch.float32) -> None:
        generator = torch.Generator().manual_seed(0)

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=generator)

        def leaf(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.to(dtype).requires_grad_()

        signs = torch.where(rand(1, RAYS, CLASSES) > 0.5, 1.0, -1.0)
        self.rgb = leaf(torch.zeros(1, RAYS, 3) if hard else rand(1, RAYS, 3))
        self.depth = leaf(torch.full((1, RAYS), 1e-3) if hard else 1.0 + rand(1, RAYS))
        self.logits = leaf(1e4 * signs if hard else rand(1, RAYS, CLASSES))
        source_signs = torch.where(rand(1, VIEWS, CLASSES, HEIGHT, WIDTH) > 0.5, 1.0, -1.0)
        self.source_logits = leaf(
            1e4 * source_signs if hard else rand(1, VIEWS, CLASSES, HEIGHT, WIDTH)
        )
        self.levels = [
            leaf(torch.full((1, VIEWS, h, w), 1e-3) if hard else 1.0 + rand(1, VIEWS, h, w))
            for h, w in LEVEL_SIZES
        ]
        images = (
            torch.zeros(1, VIEWS, 3, HEIGHT, WIDTH) if hard else rand(1, VIEWS, 3, HEIGHT, WIDTH)
        )
        gt_depth = (
            torch.zeros(1, VIEWS, HEIGHT, WIDTH) if hard else 1.0 + rand(1, VIEWS, HEIGHT, WIDTH)
        )
        labels = torch.randint(CLASSES, (1, VIEWS, HEIGHT, WIDTH), generator=generator)
        ray_labels = torch.randint(CLASSES, (1, RAYS), generator=generator)
        if hard:
            labels.fill_(255)
            ray_labels.fill_(255)
        self.targets = RayTargets(
            rgb=torch.zeros(1, RAYS, 3) if hard else rand(1, RAYS, 3),
            labels=ray_labels,
            depth=torch.zeros(1, RAYS) if hard else 1.0 + rand(1, RAYS),
        )
        self.guide = torch.zeros(1, RAYS) if hard else 1.0 + rand(1, RAYS)
        sources = views(images.to(dtype), gt_depth, labels)
        target = views(images[:, :1].to(dtype), gt_depth[:, :1], labels[:, :1])
        neighbours = torch.tensor([[[1, 2], [0, 2], [1, 0]]])
        self.example = Example(
            sources=sources, target=target, source_neighbours=neighbours, scenes=["s"]
        )

    def leaves(self) -> list[torch.Tensor]:
        return [self.rgb, self.depth, self.logits, self.source_logits, *self.levels]

    def output(self) -> RenderOutput:
        return RenderOutput(
            rgb=self.rgb,
            depth=self.depth,
            semantic_logits=self.logits,
            weights=torch.full((1, RAYS, SAMPLES), 1.0 / SAMPLES),
            opacity=torch.ones(1, RAYS),
        )

    def geometry(self) -> SourceGeometry:
        return SourceGeometry(
            depths=self.levels,
            depth_ranges=[torch.ones(1, VIEWS, 2, h, w) for h, w in LEVEL_SIZES],
            volume_features=[torch.zeros(1, VIEWS, 8, 4, h, w) for h, w in LEVEL_SIZES],
            image_features=torch.zeros(1, VIEWS, 8, HEIGHT, WIDTH),
            semantic_features=torch.zeros(1, VIEWS, CLASSES, HEIGHT, WIDTH),
            semantic_logits=self.source_logits,
        )

    def losses(self, cfg: LossCfg) -> dict[str, torch.Tensor]:
        return compute_losses(
            cfg,
            self.output(),
            self.targets,
            self.geometry(),
            self.example,
            guide_distance=self.guide,
        )


@pytest.mark.parametrize(
    ("mode", "names"),
    [("supervised", SUPERVISED_TERMS), ("self_supervised", SELF_SUPERVISED_TERMS)],
)
def test_totals_hold_the_documented_terms_and_sum_them(mode: str, names: set[str]) -> None:
    terms = Batch(hard=False).losses(LossCfg(depth_supervision=mode))
    assert set(terms) == names
    parts = sum(value for name, value in terms.items() if name != "total")
    assert torch.isclose(terms["total"], parts)
    assert all(value.item() > 0 for value in terms.values())


def test_terms_carry_their_weights() -> None:
    batch = Batch(hard=False)
    cfg = LossCfg(rgb_weight=2.0, semantic_weight=0.5)
    terms = batch.losses(cfg)
    assert torch.isclose(terms["image"], 2.0 * image_loss(batch.rgb, batch.targets.rgb))
    ray_ce = ray_semantic_loss(batch.logits, batch.targets.labels, None, 255)
    assert torch.isclose(terms["semantic_ray"], 0.5 * ray_ce)
    source_ce = source_semantic_loss(batch.source_logits, batch.example.sources.labels, None, 255)
    assert torch.isclose(terms["semantic_2d"], 0.5 * source_ce)
    weighted = batch.losses(LossCfg(class_weights=[1.0, 2.0, 0.5, 1.0]))
    assert not torch.isclose(weighted["semantic_ray"], terms["semantic_ray"])
    ssl = SelfSupervisedDepthCfg(reconstruction_weight=0.0, ssim_weight=0.0, guide_weight=0.0)
    no_photo = batch.losses(LossCfg(depth_supervision="self_supervised", self_supervised=ssl))
    assert no_photo["ssl_reconstruction"].item() == 0.0
    assert "depth_guide" not in no_photo


def test_terms_without_ground_truth_are_left_out() -> None:
    batch = Batch(hard=False)
    batch.targets.labels = None
    batch.example.sources.labels = None
    terms = compute_losses(
        LossCfg(depth_supervision="self_supervised"),
        batch.output(),
        batch.targets,
        batch.geometry(),
        batch.example,
    )
    assert set(terms) == SELF_SUPERVISED_TERMS - {"semantic_ray", "semantic_2d", "depth_guide"}


def test_supervised_mode_without_gt_depth_names_the_fix() -> None:
    batch = Batch(hard=False)
    batch.example.sources.depths = None
    with pytest.raises(ValueError, match="ground-truth depth is missing.*self_supervised"):
        batch.losses(LossCfg())
    batch.losses(LossCfg(depth_supervision="self_supervised"))


def test_unknown_choices_name_the_config_key() -> None:
    batch = Batch(hard=False)
    with pytest.raises(ValueError, match="loss.depth_supervision must be one of"):
        batch.losses(LossCfg(depth_supervision="gt"))
    with pytest.raises(ValueError, match="loss.self_supervised.view_reduction"):
        batch.losses(LossCfg(self_supervised=SelfSupervisedDepthCfg(view_reduction="max")))
    with pytest.raises(ValueError, match="loss.supervised.gt_downsample"):
        batch.losses(LossCfg(supervised=SupervisedDepthCfg(gt_downsample="bilinear")))
    with pytest.raises(ValueError, match="loss.ignore_index 3 is a real class"):
        batch.losses(LossCfg(ignore_index=3))


def assert_finite_step(batch: Batch, terms: dict[str, torch.Tensor]) -> None:
    assert all(torch.isfinite(value) for value in terms.values()), terms
    assert terms["total"].dtype == torch.float32
    terms["total"].backward()
    for leaf in batch.leaves():
        assert leaf.grad is not None and torch.isfinite(leaf.grad).all()


@pytest.mark.parametrize("mode", ["supervised", "self_supervised"])
def test_hard_batch_gives_finite_loss_and_gradients(mode: str) -> None:
    batch = Batch(hard=True)
    assert_finite_step(batch, batch.losses(LossCfg(depth_supervision=mode)))


@pytest.mark.parametrize("mode", ["supervised", "self_supervised"])
def test_hard_batch_under_bf16_autocast(mode: str) -> None:
    batch = Batch(hard=True, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = batch.losses(LossCfg(depth_supervision=mode))
    assert_finite_step(batch, terms)


@pytest.mark.parametrize("mode", ["supervised", "self_supervised"])
def test_bf16_autocast_agrees_with_float32(mode: str) -> None:
    reference = Batch(hard=False).losses(LossCfg(depth_supervision=mode))
    batch = Batch(hard=False, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = batch.losses(LossCfg(depth_supervision=mode))
    assert_finite_step(batch, terms)
    # Only the inputs are rounded to bf16 (8 bits of mantissa); the losses run in float32.
    assert torch.isclose(terms["total"], reference["total"], rtol=2e-2)
