"""The tiny model over-fits one synthetic view: a renderer that ignored its inputs could not.

A constant colour or class cannot reproduce a textured room view, so reaching a high PSNR and
label accuracy on the view's own rays shows that colours, depths and semantics flow from the
source views through the renderer.
"""

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from gsnerf.data import open_scene
from gsnerf.data.dataset import DatasetCfg, MultiViewDataset, collate_examples
from gsnerf.data.synthetic import SyntheticCfg, generate_dataset
from gsnerf.data.view_selection import ViewSelectionCfg
from gsnerf.engine.step import ray_targets
from gsnerf.losses import LossCfg, compute_losses
from gsnerf.model.gsnerf import GSNeRFCfg, build_model

PROJECT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _tiny_model_cfg() -> GSNeRFCfg:
    yaml = OmegaConf.load(PROJECT / "configs" / "model" / "tiny.yaml")
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(GSNeRFCfg), yaml))


@pytest.mark.parametrize("depth_supervision", ["supervised"])
def test_tiny_model_overfits_one_view(tmp_path: Path, depth_supervision: str) -> None:
    torch.manual_seed(0)
    split = generate_dataset(
        SyntheticCfg(num_train_scenes=1, num_test_scenes=0, frames_per_scene=16, width=64,
                     height=48, num_workers=1),
        tmp_path,
    )
    scene = open_scene("synthetic", tmp_path, split.train[0], (48, 32))
    views = ViewSelectionCfg(num_source_views=3, num_mvs_neighbours=2)
    dataset = MultiViewDataset([scene], DatasetCfg(kind="synthetic", views=views), "test")
    example = collate_examples([dataset[0]])
    model = build_model(_tiny_model_cfg(), scene.num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss_cfg = LossCfg(depth_supervision=depth_supervision)
    height, width = 32, 48
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    all_pixels = torch.stack([rows, cols], dim=-1).reshape(1, -1, 2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(250):
        pixels = all_pixels[:, torch.randint(height * width, (384,), generator=generator)]
        result = model(example, pixels, training=True, generator=generator)
        targets = ray_targets(example.target, pixels, result.rays)
        losses = compute_losses(loss_cfg, result.render, targets, result.geometry, example,
                                guide_distance=result.rays.guide_depth,
                                guide_valid=result.rays.guide_valid)
        optimizer.zero_grad()
        losses["total"].backward()
        optimizer.step()

    model.eval()
    with torch.no_grad():
        image = model.render_image(example, model.encode_sources(example), chunk_rays=0)
    gt = example.target.images[0, 0]
    mse = float(((image.rgb[0] - gt) ** 2).mean())
    psnr = -10.0 * torch.log10(torch.tensor(mse))
    labels = example.target.labels[0, 0]
    labelled = labels != scene.ignore_index
    accuracy = float((image.semantic_logits[0].argmax(0) == labels)[labelled].float().mean())
    # A mean-colour image of this view scores far lower (checked below), a learnt one higher.
    mean_colour_psnr = -10.0 * torch.log10(((gt - gt.mean((1, 2), keepdim=True)) ** 2).mean())
    majority = torch.bincount(labels[labelled]).max() / labelled.sum()
    assert psnr > 24.0 and psnr > mean_colour_psnr + 8.0, (float(psnr), float(mean_colour_psnr))
    assert accuracy > 0.85 and accuracy > float(majority) + 0.2, (accuracy, float(majority))
