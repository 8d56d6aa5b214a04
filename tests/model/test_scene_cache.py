"""Source encodings reused across targets: same renders, expected hits and misses, LRU order."""

import dataclasses
import json
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from gsnerf.evaluation.benchmark import load_model_cfg
from gsnerf.evaluation.benchmark_scene import plane_example
from gsnerf.evaluation.evaluator import EvalCfg, evaluate, rate_after_first
from gsnerf.model import build_model
from gsnerf.model.scene_cache import SceneEncodingCache, source_key
from gsnerf.types import Example, SourceGeometry, Views

CLASSES = 5


def with_target_of_source(example: Example, index: int) -> Example:
    """The same sources, with source view ``index`` (image, pose, depth) as the target."""
    sources = example.sources

    def pick(tensor: torch.Tensor | None) -> torch.Tensor | None:
        return None if tensor is None else tensor[:, index : index + 1].clone()

    target = Views(
        **{item.name: pick(getattr(sources, item.name)) for item in dataclasses.fields(Views)}
    )
    return dataclasses.replace(example, target=target)


def test_cached_render_equals_an_uncached_render_of_the_same_sources() -> None:
    torch.manual_seed(0)
    cfg = load_model_cfg("tiny", 2)
    # Fewer depth hypotheses keep the test fast; the cache does not depend on them.
    geo_reasoner = dataclasses.replace(cfg.geo_reasoner, n_depths=[8, 4, 4])
    model = build_model(dataclasses.replace(cfg, geo_reasoner=geo_reasoner), CLASSES).eval()
    first = plane_example(2, 16, 24, CLASSES, seed=0)
    second = with_target_of_source(first, 1)
    cache = SceneEncodingCache(max_entries=2)
    with torch.inference_mode():
        cache.encode(model, first)
        geometry = cache.encode(model, second)
        cached = model.render_image(second, geometry, chunk_rays=0)
        uncached = model.render_image(second, model.encode_sources(second), chunk_rays=0)
        first_render = model.render_image(first, geometry, chunk_rays=0)
    assert (cache.hits, cache.misses) == (1, 1)
    for name in ("rgb", "depth", "semantic_logits", "opacity", "guide_depth"):
        expected = getattr(uncached, name)
        torch.testing.assert_close(getattr(cached, name), expected, rtol=0, atol=1e-6)
    # The two targets differ, so the shared encoding was really used for two different views.
    assert not torch.allclose(first_render.rgb, cached.rgb)


class CountingEncoder:
    """Stands in for the model: counts encodings and returns a small valid SourceGeometry."""

    def __init__(self) -> None:
        self.calls = 0

    def encode_sources(self, example: Example) -> SourceGeometry:
        self.calls += 1
        maps = torch.full((1, 2, 1, 4, 4), float(self.calls))
        return SourceGeometry(
            depths=[maps[:, :, 0]],
            depth_ranges=[maps.expand(1, 2, 2, 4, 4)],
            volume_features=[maps[:, :, :, None]],
            image_features=maps,
            semantic_features=maps,
            semantic_logits=maps,
        )


def sources(
    scene: str, frame_ids: list[int], near: float = 0.1, far: float = 10.0, size: int = 4
) -> Example:
    count = len(frame_ids)
    views = Views(
        images=torch.zeros(1, count, 3, size, size),
        intrinsics=torch.eye(3).expand(1, count, 3, 3),
        cam_to_world=torch.eye(4).expand(1, count, 4, 4),
        near=torch.full((1, count), near),
        far=torch.full((1, count), far),
        depths=None,
        labels=None,
        frame_ids=torch.tensor([frame_ids]),
    )
    target = dataclasses.replace(views, frame_ids=torch.tensor([[99] * count]))
    return Example(
        sources=views,
        target=target,
        source_neighbours=torch.zeros(1, count, 1, dtype=torch.int64),
        scenes=[scene],
    )


@pytest.mark.parametrize(
    ("max_entries", "order", "expected_calls", "expected_hits"),
    [
        # One entry: only directly repeated source sets hit (the module doc's example).
        (1, "AABA", 3, 1),
        # Two entries: A is still held when it comes back after B.
        (2, "AABA", 2, 2),
        # Least recently used goes first: A was used after B, so C evicts B, and B misses again.
        (2, "ABACB", 4, 1),
        # No entries: every view is encoded.
        (0, "AAA", 3, 0),
    ],
)
def test_hits_and_misses_follow_least_recently_used_order(
    max_entries: int, order: str, expected_calls: int, expected_hits: int
) -> None:
    examples = {
        "A": sources("scene_a", [0, 5]),
        "B": sources("scene_a", [5, 10]),
        "C": sources("scene_b", [0, 5]),
    }
    encoder = CountingEncoder()
    cache = SceneEncodingCache(max_entries)
    for name in order:
        cache.encode(encoder, examples[name])
    assert encoder.calls == cache.misses == expected_calls
    assert cache.hits == expected_hits
    assert len(cache) <= max_entries


def test_a_hit_returns_the_stored_encoding() -> None:
    encoder = CountingEncoder()
    cache = SceneEncodingCache(1)
    stored = cache.encode(encoder, sources("scene_a", [0, 5]))
    again = cache.encode(encoder, sources("scene_a", [0, 5]))
    assert again is stored


def test_key_separates_scene_frames_and_depth_range() -> None:
    base = source_key(sources("scene_a", [0, 5]))
    assert source_key(sources("scene_a", [0, 5])) == base
    assert source_key(sources("scene_b", [0, 5])) != base
    assert source_key(sources("scene_a", [5, 0])) != base
    assert source_key(sources("scene_a", [0, 5], near=0.2)) != base
    # The far bound and the image size change the network's input as much as near does.
    assert source_key(sources("scene_a", [0, 5], far=8.0)) != base
    assert source_key(sources("scene_a", [0, 5], size=8)) != base


def test_negative_size_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        SceneEncodingCache(-1)


def unbatched(example: Example) -> Example:
    """The dataset's form of a batch-of-one example: no leading batch axis."""

    def first(views: Views) -> Views:
        values = {item.name: getattr(views, item.name) for item in dataclasses.fields(Views)}
        return Views(**{name: None if v is None else v[0] for name, v in values.items()})

    return Example(
        sources=first(example.sources),
        target=first(example.target),
        source_neighbours=example.source_neighbours[0],
        scenes=example.scenes,
    )


class ListDataset(Dataset):
    def __init__(self, items: list[Example]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Example:
        return self.items[index]


@pytest.mark.parametrize(("cache_size", "expected_encodings"), [(1, 1), (0, 2)])
def test_evaluation_encodes_a_shared_source_set_once(
    tmp_path: Path, cache_size: int, expected_encodings: int
) -> None:
    cfg = load_model_cfg("tiny", 2)
    geo_reasoner = dataclasses.replace(cfg.geo_reasoner, n_depths=[8, 4, 4])
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(cfg, geo_reasoner=geo_reasoner), CLASSES)
    encodings = []
    encode = model.encode_sources
    model.encode_sources = lambda example: encodings.append(1) or encode(example)
    first = plane_example(2, 16, 24, CLASSES, seed=0)
    views = ListDataset([unbatched(first), unbatched(with_target_of_source(first, 1))])
    eval_cfg = EvalCfg(save_images=False, lpips=False, scene_cache_size=cache_size)
    names = [f"class{i}" for i in range(CLASSES)]
    metrics = evaluate(model, views, eval_cfg, names, 255, tmp_path, torch.device("cpu"))
    assert len(encodings) == expected_encodings
    assert metrics["psnr"] is not None


def test_frame_rate_leaves_out_the_first_view(tmp_path: Path) -> None:
    cfg = load_model_cfg("tiny", 2)
    geo_reasoner = dataclasses.replace(cfg.geo_reasoner, n_depths=[8, 4, 4])
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(cfg, geo_reasoner=geo_reasoner), CLASSES)
    render = model.render_image
    calls = []

    def slow_first_render(*args: object, **kwargs: object) -> object:
        # Stands in for compiling the heads: one-off work on the first view only.
        if not calls:
            time.sleep(1.0)
        calls.append(1)
        return render(*args, **kwargs)

    model.render_image = slow_first_render
    first = plane_example(2, 16, 24, CLASSES, seed=0)
    views = ListDataset([unbatched(first), unbatched(with_target_of_source(first, 1))])
    eval_cfg = EvalCfg(save_images=False, lpips=False)
    names = [f"class{i}" for i in range(CLASSES)]
    metrics = evaluate(model, views, eval_cfg, names, 255, tmp_path, torch.device("cpu"))
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["first_view_s"] >= 1.0
    # The second view alone: far faster than one per second at 24 x 16 pixels.
    assert metrics["fps"] == written["fps"] > 1.0


def test_rate_after_first_leaves_out_the_first_frame() -> None:
    assert rate_after_first([20.0, 0.5, 0.5]) == 2.0
    assert rate_after_first([0.25]) == 4.0
    assert rate_after_first([]) is None
