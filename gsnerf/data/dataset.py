"""MultiViewDataset: scene readers + source-view selection -> typed :class:`Example` items.

Training items (spec 1.6, made reproducible): item ``i`` draws its scene, target frame and
source subset from a generator seeded by ``(seed, i)``, so the same index always gives the same
example, whatever the worker or the order (the reference re-seeds from the clock, spec 7.26).
Test items (spec 1.5): every query frame of every test scene, with the K nearest frames of the
scene's source pool as sources, nearest first.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from gsnerf.data.frame_cache import CachedSceneReader
from gsnerf.data.labels import LabelMapping
from gsnerf.data.scene_reader import SceneReader
from gsnerf.data.synthetic import SyntheticCfg
from gsnerf.data.view_selection import (
    ViewSelectionCfg,
    mvs_neighbours,
    nearest_views,
    select_training_sources,
    split_test_frames,
)
from gsnerf.types import Example, Views

log = logging.getLogger(__name__)


@dataclass
class DatasetCfg:
    # Reader: "synthetic" (built-in rooms in the ScanNet layout), "scannet" or "replica".
    kind: str = "synthetic"
    # Dataset root folder (ScanNet: holds scannetv2-labels.combined.tsv and the scene folders).
    root: str = "data/synthetic"
    # Training scene names; null reads <root>/splits/train.txt (spec 1.1 lists for real data).
    train_scenes: list[str] | None = None
    # Held-out test scene names; null reads <root>/splits/test.txt.
    test_scenes: list[str] | None = None
    # Width of every image, depth and label map fed to the model, pixels (spec 1.3: 320).
    image_width: int = 320
    # Height of every image fed to the model, pixels (spec 1.3: 240).
    image_height: int = 240
    # Near bound of the depth range of every view, metres (spec 1.7: 0.1).
    near: float = 0.1
    # Far bound of the depth range, metres (spec 1.7: ScanNet 10.0, Replica 6.0).
    far: float = 10.0
    # Class table: "benchmark" (clean) or "gsnerf_paper" (reference remap, spec 1.4).
    label_mapping: str = LabelMapping.BENCHMARK.value
    # Probability of jittering the depth range of a training item (spec 1.7: 0.05).
    depth_range_jitter_prob: float = 0.05
    # Near is multiplied by U(near_jitter, 1) when jittered (spec 1.7: 0.95).
    near_jitter: float = 0.95
    # Far is multiplied by U(1, far_jitter) when jittered (spec 1.7: 1.05).
    far_jitter: float = 1.05
    # Frames a training item may use: "all" valid frames (spec 1.6) or only the test protocol's
    # "source_pool" (per-scene fine-tuning, so the test queries are never trained on, spec 6).
    train_frames: str = "all"
    # Source-view selection and test protocol (spec 1.5, 1.6).
    views: ViewSelectionCfg = field(default_factory=ViewSelectionCfg)
    # Generator settings, used only when kind is "synthetic" and the data is missing.
    synthetic: SyntheticCfg = field(default_factory=SyntheticCfg)
    # Folder of decoded-and-resized frames; null reads and decodes every frame each time.
    frame_cache: str | None = None


def read_split_file(root: Path, split: str) -> list[str]:
    """Scene names listed in ``<root>/splits/<split>.txt``, one per line."""
    path = root / "splits" / f"{split}.txt"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: split file missing; list the scenes in the dataset config "
            f"(dataset.{split}_scenes) or create this file with one scene name per line"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path}: not a text file of scene names (byte {error.start} is not UTF-8)"
        ) from error
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise ValueError(f"{path}: split file lists no scene")
    return names


def scene_names(cfg: DatasetCfg, split: str) -> list[str]:
    """The scenes of ``split`` ("train" or "test"): from the config, else (null) the split file."""
    listed = cfg.train_scenes if split == "train" else cfg.test_scenes
    if listed is None:
        return read_split_file(Path(cfg.root), split)
    # An empty list is a mistake (an override emptied it), never a request for the split file.
    if not listed:
        raise ValueError(
            f"dataset.{split}_scenes is an empty list; list the scene names, or set it to null "
            f"to read {Path(cfg.root) / 'splits' / f'{split}.txt'}"
        )
    return list(listed)


def _stack_views(frames: list, frame_ids: list[int], near: float, far: float) -> Views:
    """Stack reader frames into one :class:`Views` without a batch axis."""
    has_labels = all(frame.labels is not None for frame in frames)
    count = len(frames)
    return Views(
        images=torch.stack([frame.image for frame in frames]),
        intrinsics=torch.stack([frame.intrinsics for frame in frames]),
        cam_to_world=torch.stack([frame.cam_to_world for frame in frames]),
        near=torch.full((count,), near, dtype=torch.float32),
        far=torch.full((count,), far, dtype=torch.float32),
        depths=torch.stack([frame.depth for frame in frames]),
        labels=torch.stack([frame.labels for frame in frames]) if has_labels else None,
        frame_ids=torch.tensor(frame_ids, dtype=torch.int64),
    )


class MultiViewDataset(Dataset):
    """Examples of K source views and one target view from a list of opened scenes.

    Args:
        scenes: opened scene readers (all at the same image size and class table).
        cfg: dataset configuration (depth range, view selection, jitter).
        split: "train" (random targets, seeded per item) or "test" (spec 1.5 protocol).
        seed: base seed of the training items.
        length: number of training items per epoch (ignored for "test").
    """

    def __init__(
        self,
        scenes: list[SceneReader],
        cfg: DatasetCfg,
        split: str,
        seed: int = 0,
        length: int = 1_000_000,
    ) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if not scenes:
            raise ValueError(f"no scene given for the {split} split")
        self.scenes = scenes
        self.cfg = cfg
        self.split = split
        self.seed = seed
        self.length = length
        self.num_sources = cfg.views.num_source_views
        for scene in scenes:
            needed = self.num_sources + 1
            if len(scene.frame_ids) < needed:
                raise ValueError(
                    f"scene {scene.name} has {len(scene.frame_ids)} valid frames; "
                    f"{needed} are needed for {self.num_sources} source views and a target"
                )
        self.queries = self._test_queries() if split == "test" else []
        self.train_positions = [self._training_positions(scene) for scene in scenes]

    def _training_positions(self, scene: SceneReader) -> list[int]:
        """Positions (into ``scene.frame_ids``) that training items may use as target or source."""
        if self.cfg.train_frames == "all":
            return list(range(len(scene.frame_ids)))
        if self.cfg.train_frames != "source_pool":
            raise ValueError(
                "dataset.train_frames must be 'all' or 'source_pool', "
                f"got {self.cfg.train_frames!r}"
            )
        pool_ids, _ = self._split_of(scene)
        position = {frame_id: i for i, frame_id in enumerate(scene.frame_ids)}
        if len(pool_ids) < self.num_sources + 1:
            raise ValueError(
                f"scene {scene.name}: the source pool has {len(pool_ids)} frames, fewer than "
                f"{self.num_sources + 1} needed to train on it"
            )
        return [position[frame_id] for frame_id in pool_ids]

    def _split_of(self, scene: SceneReader) -> tuple[list[int], list[int]]:
        views = self.cfg.views
        try:
            return split_test_frames(
                scene.frame_ids,
                pool_stride=views.pool_stride,
                pool_limit=views.pool_limit,
                query_offset=views.query_offset,
                query_stride=views.query_stride,
                max_queries=views.max_queries,
            )
        except ValueError as error:
            raise ValueError(f"scene {scene.name}: {error}") from error

    def _test_queries(self) -> list[tuple[int, int, list[int]]]:
        """(scene index, query frame id, source frame ids) of every test view (spec 1.5)."""
        queries = []
        views = self.cfg.views
        for scene_index, scene in enumerate(self.scenes):
            pool_ids, query_ids = self._split_of(scene)
            if len(pool_ids) < self.num_sources:
                valid = len(scene.frame_ids)
                raise ValueError(
                    f"test scene {scene.name}: its source pool has {len(pool_ids)} frames "
                    f"(pool_stride {views.pool_stride} over the first "
                    f"{min(valid, views.pool_limit)} of its {valid} valid frames, test queries "
                    f"excluded), fewer than the "
                    f"{self.num_sources} source views needed; lower "
                    "dataset.views.pool_stride or dataset.views.num_source_views"
                )
            position = {frame_id: i for i, frame_id in enumerate(scene.frame_ids)}
            pool_poses = scene.cam_to_world[[position[frame_id] for frame_id in pool_ids]]
            for query_id in query_ids:
                nearest = nearest_views(
                    scene.cam_to_world[position[query_id]],
                    pool_poses,
                    self.num_sources,
                    self.cfg.views.direction_weight,
                )
                queries.append((scene_index, query_id, [pool_ids[i] for i in nearest.tolist()]))
        return queries

    def __len__(self) -> int:
        return self.length if self.split == "train" else len(self.queries)

    def _training_choice(self, index: int) -> tuple[int, int, list[int], tuple[float, float]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        scene_index = int(torch.randint(len(self.scenes), (1,), generator=generator))
        scene = self.scenes[scene_index]
        allowed = self.train_positions[scene_index]
        target_choice = int(torch.randint(len(allowed), (1,), generator=generator))
        source_choices = select_training_sources(
            target_choice,
            scene.cam_to_world[allowed],
            self.num_sources,
            pool_factor=self.cfg.views.train_pool_factor,
            direction_weight=self.cfg.views.direction_weight,
            generator=generator,
        )
        target_position = allowed[target_choice]
        source_ids = [scene.frame_ids[allowed[i]] for i in source_choices.tolist()]
        near, far = self.cfg.near, self.cfg.far
        # Depth-range jitter of spec 1.7: one factor per item, shared by all its views.
        jitter_draws = torch.rand(3, generator=generator).tolist()
        if jitter_draws[0] < self.cfg.depth_range_jitter_prob:
            near *= self.cfg.near_jitter + (1.0 - self.cfg.near_jitter) * jitter_draws[1]
            far *= 1.0 + (self.cfg.far_jitter - 1.0) * jitter_draws[2]
        return scene_index, scene.frame_ids[target_position], source_ids, (near, far)

    def __getitem__(self, index: int) -> Example:
        if self.split == "train":
            scene_index, target_id, source_ids, (near, far) = self._training_choice(index)
        else:
            scene_index, target_id, source_ids = self.queries[index]
            near, far = self.cfg.near, self.cfg.far
        scene = self.scenes[scene_index]
        sources = _stack_views([scene.read(i) for i in source_ids], source_ids, near, far)
        target = _stack_views([scene.read(target_id)], [target_id], near, far)
        neighbours = mvs_neighbours(
            sources.cam_to_world,
            min(self.cfg.views.num_mvs_neighbours, self.num_sources - 1),
            self.cfg.views.direction_weight,
        )
        return Example(
            sources=sources, target=target, source_neighbours=neighbours, scenes=[scene.name]
        )


def _stack_optional(tensors: list[torch.Tensor | None]) -> torch.Tensor | None:
    return None if any(t is None for t in tensors) else torch.stack(tensors)


def _collate_views(views: list[Views]) -> Views:
    return Views(
        images=torch.stack([v.images for v in views]),
        intrinsics=torch.stack([v.intrinsics for v in views]),
        cam_to_world=torch.stack([v.cam_to_world for v in views]),
        near=torch.stack([v.near for v in views]),
        far=torch.stack([v.far for v in views]),
        depths=_stack_optional([v.depths for v in views]),
        labels=_stack_optional([v.labels for v in views]),
        frame_ids=torch.stack([v.frame_ids for v in views]),
    )


def collate_examples(examples: list[Example]) -> Example:
    """Stack unbatched examples along a new leading batch axis ``b``."""
    return Example(
        sources=_collate_views([e.sources for e in examples]),
        target=_collate_views([e.target for e in examples]),
        source_neighbours=torch.stack([e.source_neighbours for e in examples]),
        scenes=[name for e in examples for name in e.scenes],
    )


def open_split(cfg: DatasetCfg, split: str) -> list[SceneReader]:
    """Open every scene of ``split``; builds the synthetic set first when it is missing."""
    from gsnerf.data import open_scene
    from gsnerf.data.synthetic import generate_dataset

    if cfg.kind == "synthetic":
        generate_dataset(cfg.synthetic, Path(cfg.root))
    size = (cfg.image_width, cfg.image_height)
    scenes = [
        open_scene(cfg.kind, cfg.root, name, size, cfg.label_mapping)
        for name in scene_names(cfg, split)
    ]
    if cfg.frame_cache:
        scenes = [
            CachedSceneReader(scene, cfg.frame_cache, cfg.kind, cfg.label_mapping)
            for scene in scenes
        ]
    log.info("%s split: %d scenes from %s", split, len(scenes), cfg.root)
    warn_mixed_labels(scenes, split)
    return scenes


def warn_mixed_labels(scenes: list[SceneReader], split: str, max_listed: int = 10) -> None:
    """Warn when only some scenes of a split have label maps: the others get no semantic loss."""
    unlabeled = [scene.name for scene in scenes if not scene.has_labels]
    if not unlabeled or len(unlabeled) == len(scenes):
        return
    listed = ", ".join(unlabeled[:max_listed])
    more = f" and {len(unlabeled) - max_listed} more" if len(unlabeled) > max_listed else ""
    log.warning(
        "%s split: %d of %d scenes have no label maps, so no semantic loss or metric on them: %s%s",
        split,
        len(unlabeled),
        len(scenes),
        listed,
        more,
    )
