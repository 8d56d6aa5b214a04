from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gsnerf.engine.logging import RunLogger


def test_missing_scalars_are_skipped(tmp_path: Path) -> None:
    # A metric that could not be computed (e.g. LPIPS without its weights) arrives as None.
    logger = RunLogger(tmp_path, True, True)
    logger.scalars({"a": 1.0, "lpips": None}, 0, "val")
    logger.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert events.Tags()["scalars"] == ["val/a"]
    assert [event.value for event in events.Scalars("val/a")] == [1.0]
