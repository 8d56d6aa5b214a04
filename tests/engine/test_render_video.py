"""render.py's logic on a tiny synthetic room: a readable MP4 with the expected frames."""

import math
import re
from pathlib import Path

import cv2
import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from gsnerf.data.dataset import DatasetCfg, open_split
from gsnerf.data.synthetic import SyntheticCfg
from gsnerf.engine.render_video import (
    RenderCfg,
    RenderRootCfg,
    camera_path,
    choose_frames,
    compose_frame,
    load_render_config,
    register_render_schema,
    run_render,
)
from gsnerf.evaluation.palette import legend_image
from gsnerf.geometry.camera_path import look_at
from gsnerf.model import build_model
from gsnerf.types import ImageRender, Views

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
SCENE = "scene0000_00"
SYNTHETIC = SyntheticCfg(
    num_train_scenes=1, num_test_scenes=0, frames_per_scene=16, width=64, height=48, num_workers=1
)


def overrides(data_root: Path, checkpoint: Path) -> list[str]:
    return [
        f"ckpt={checkpoint}",
        f"scene={SCENE}",
        "model=tiny",
        "train.device=cpu",
        f"dataset.root={data_root}",
        f"dataset.synthetic.num_train_scenes={SYNTHETIC.num_train_scenes}",
        f"dataset.synthetic.num_test_scenes={SYNTHETIC.num_test_scenes}",
        f"dataset.synthetic.frames_per_scene={SYNTHETIC.frames_per_scene}",
        f"dataset.synthetic.width={SYNTHETIC.width}",
        f"dataset.synthetic.height={SYNTHETIC.height}",
        "dataset.synthetic.num_workers=1",
        "dataset.image_width=48",
        "dataset.image_height=32",
        "dataset.views.num_source_views=3",
        "dataset.views.num_mvs_neighbours=2",
        "render.frames=4",
    ]


def compose_render(arguments: list[str], run_dir: Path) -> RenderRootCfg:
    register_render_schema()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        dict_cfg = compose(config_name="render", overrides=arguments)
    dict_cfg.paths.output_dir = str(run_dir)
    return load_render_config(dict_cfg)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    """A generated room and a checkpoint of a randomly initialised tiny model."""
    data_root = tmp_path_factory.mktemp("synthetic")
    dataset = DatasetCfg(root=str(data_root), test_scenes=[SCENE], synthetic=SYNTHETIC)
    class_names = open_split(dataset, "test")[0].class_names
    checkpoint = data_root / "random.pt"
    cfg = compose_render(overrides(data_root, checkpoint), data_root / "unused")
    torch.manual_seed(0)
    model = build_model(cfg.model, len(class_names))
    torch.save({"model": model.state_dict(), "class_names": class_names}, checkpoint)
    return data_root, checkpoint, class_names


@pytest.mark.parametrize("trajectory", ["interpolate", "spiral"])
def test_video_has_the_frames_and_panels(
    setup: tuple[Path, Path, list[str]], tmp_path: Path, trajectory: str
) -> None:
    data_root, checkpoint, class_names = setup
    arguments = overrides(data_root, checkpoint) + [f"render.trajectory={trajectory}"]
    summary = run_render(compose_render(arguments, tmp_path))
    assert Path(summary["path"]) == tmp_path / "video.mp4"
    frames = imageio.mimread(summary["path"])
    assert len(frames) == summary["frames"] == 4
    # Colour, semantics and depth at 48 x 32 each, then the legend; widths padded to even.
    legend_width = legend_image(class_names, 32, row_height=8).shape[1]
    width = 3 * 48 + legend_width
    assert frames[0].shape == (32, width + width % 2, 3)
    assert summary["fps"] > 0


def test_keyframes_from_the_pool_middle_and_sources_nearest_them(
    setup: tuple[Path, Path, list[str]], tmp_path: Path
) -> None:
    data_root, checkpoint, _ = setup
    cfg = compose_render(overrides(data_root, checkpoint) + ["render.path_keyframes=2"], tmp_path)
    dataset = DatasetCfg(root=str(data_root), test_scenes=[SCENE], synthetic=SYNTHETIC)
    scene = open_split(dataset, "test")[0]
    keyframes, sources = choose_frames(scene, cfg)
    # 16 frames: pool 0, 5, 10, 15 (spec 1.5 strides; query 2 is not among them); the middle
    # two are the keyframes.
    pool = [0, 5, 10, 15]
    assert keyframes == [5, 10]
    centres = scene.cam_to_world[pool, :3, 3]
    distances = (centres - centres[1:3].mean(0)).norm(dim=-1)
    farthest = pool[int(distances.argmax())]
    assert sources == sorted(set(pool) - {farthest})


def test_mandatory_keys_and_named_choices() -> None:
    with pytest.raises(Exception, match="ckpt"):
        compose_render(["scene=s"], Path("unused"))
    assert compose_render(["ckpt=a.pt"], Path("unused")).scene is None
    with pytest.raises(ValueError, match="trajectory"):
        compose_render(["ckpt=a.pt", "scene=s", "render.trajectory=zigzag"], Path("unused"))


def test_a_missing_scene_is_an_error_that_lists_the_test_scenes(tmp_path: Path) -> None:
    listed = ["ckpt=a.pt", f"dataset.root={tmp_path}", "dataset.test_scenes=[room_a,room_b]"]
    cfg = compose_render(listed, tmp_path)
    expected = "scene=NAME is required: the scene to fly through; test scenes of synthetic in "
    with pytest.raises(ValueError, match=re.escape(f"{expected}{tmp_path}: room_a, room_b")):
        run_render(cfg)


# A tilted world frame for the spiral tests: rotation about x by 0.3 rad, then about z by 0.2.
C_X, S_X, C_Z, S_Z = math.cos(0.3), math.sin(0.3), math.cos(0.2), math.sin(0.2)
TILT = torch.tensor([[C_Z, -S_Z, 0.0], [S_Z, C_Z, 0.0], [0.0, 0.0, 1.0]]) @ torch.tensor(
    [[1.0, 0.0, 0.0], [0.0, C_X, -S_X], [0.0, S_X, C_X]]
)
SHIFT = torch.tensor([0.5, -0.2, 3.0])


def spiral_around_tilted_sources() -> torch.Tensor:
    """Spiral poses for 4 sources on a circle of radius 2, 1 above the scene, in frame TILT.

    In the local frame the sources sit at 90-degree steps at y = -1 (up is -y), each looking
    down at the origin, so their y columns tilt but average to the local y axis; the points are
    +-0.5 on each local axis, centroid the origin. World = TILT @ local + SHIFT.
    """
    to_world = torch.eye(4)
    to_world[:3, :3], to_world[:3, 3] = TILT, SHIFT
    angles = torch.arange(4) * torch.pi / 2 + 0.35
    local_centres = torch.stack([2 * angles.cos(), -torch.ones(4), 2 * angles.sin()], dim=-1)
    poses = torch.stack(
        [
            to_world @ look_at(c, torch.zeros(3), torch.tensor([0.0, 1.0, 0.0]))
            for c in local_centres
        ]
    )
    local_points = torch.cat([0.5 * torch.eye(3), -0.5 * torch.eye(3)])
    points = local_points @ TILT.T + SHIFT
    sources = Views(
        images=torch.zeros(1, 4, 3, 4, 4),
        intrinsics=torch.eye(3).expand(1, 4, 3, 3),
        cam_to_world=poses[None],
        near=torch.full((1, 4), 0.1),
        far=torch.full((1, 4), 10.0),
        depths=None,
        labels=None,
        frame_ids=torch.arange(4)[None],
    )
    cfg = RenderCfg(trajectory="spiral", frames=8, spiral_radius=0.5, spiral_height=0.0)
    return camera_path(cfg, poses, sources, points)


def test_spiral_axis_is_the_sources_mean_y_column() -> None:
    path = spiral_around_tilted_sources()
    # The sources' y columns average to the local y axis: TILT's second column.
    down = TILT[:, 1]
    offsets = path[:, :3, 3] - SHIFT
    heights = offsets @ down
    # A flat spiral about that axis: every frame at one height, radius 0.5 * 2 from the axis.
    torch.testing.assert_close(heights, heights[:1].expand(8), atol=1e-5, rtol=0)
    horizontal = offsets - heights[:, None] * down
    torch.testing.assert_close(horizontal.norm(dim=-1), torch.ones(8), atol=1e-5, rtol=0)


def test_spiral_sits_at_the_sources_mean_height() -> None:
    path = spiral_around_tilted_sources()
    # The sources sit 1 above the centroid (-1 along down); so must every frame.
    heights = (path[:, :3, 3] - SHIFT) @ TILT[:, 1]
    torch.testing.assert_close(heights, torch.full((8,), -1.0), atol=1e-5, rtol=0)


def test_depth_panel_maps_low_to_blue_and_high_to_red() -> None:
    depth = torch.tensor([[[2.0, 3.0, 4.0, 1.0], [5.0, 2.0, 4.0, 3.0]]])
    image = ImageRender(
        rgb=torch.zeros(1, 3, 2, 4),
        depth=depth,
        semantic_logits=torch.zeros(1, 3, 2, 4),
        opacity=torch.ones(1, 2, 4),
        guide_depth=torch.zeros(1, 2, 4),
        guide_valid=torch.ones(1, 2, 4, dtype=torch.bool),
    )
    legend = np.full((2, 6, 3), 255, dtype=np.uint8)
    frame = compose_frame(image, (2.0, 4.0), legend)
    # Range [2, 4]: 2 -> turbo level 0 (blue end), 3 -> 128, 4 -> 255 (red end); outside clamps.
    levels = np.array([[0, 128, 255, 0], [255, 0, 255, 128]], dtype=np.uint8)
    expected = cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB)
    # Third panel after colour and semantics, 4 pixels wide each.
    np.testing.assert_array_equal(frame[:, 8:12], expected)
