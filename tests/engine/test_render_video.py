"""render.py's logic on a tiny synthetic room: a readable MP4 with the expected frames."""

import re
from pathlib import Path

import imageio.v2 as imageio
import pytest
import torch
from hydra import compose, initialize_config_dir

from gsnerf.data.dataset import DatasetCfg, open_split
from gsnerf.data.synthetic import SyntheticCfg
from gsnerf.engine.render_video import (
    RenderRootCfg,
    choose_frames,
    load_render_config,
    register_render_schema,
    run_render,
)
from gsnerf.evaluation.palette import legend_image
from gsnerf.model import build_model

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
