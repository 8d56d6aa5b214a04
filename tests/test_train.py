"""End-to-end runs of the real configs, shrunk: train, resume, evaluate, NaN guard, DDP.

The data is a tiny synthetic set (two rooms, 16 frames at 64x48) generated once per module.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gsnerf.config import RootCfg, load_config, register_schema
from gsnerf.data.posed_rgbd import PosedRgbdSource, import_posed_rgbd
from gsnerf.data.synthetic import SyntheticCfg
from gsnerf.engine import trainer as trainer_module
from gsnerf.engine.checkpoint import load_checkpoint
from gsnerf.engine.runs import run_evaluation, run_training
from gsnerf.engine.trainer import Trainer
from gsnerf.model import cpu_volume_norm, fused_guide_depth, fused_volume_conv
from gsnerf.model.native_library import compiler_present

PROJECT = Path(__file__).resolve().parents[1]
CONFIG_DIR = PROJECT / "configs"
HOLOLENS = PROJECT / "tests" / "fixtures" / "hololens_small"

pytestmark = pytest.mark.slow


def _synthetic_overrides(data_root: Path) -> list[str]:
    synthetic = SyntheticCfg(
        num_train_scenes=1,
        num_test_scenes=1,
        frames_per_scene=16,
        width=64,
        height=48,
        num_workers=1,
    )
    return [
        "debug=fast",
        f"paths.data_root={data_root}",
        f"dataset.synthetic.num_train_scenes={synthetic.num_train_scenes}",
        f"dataset.synthetic.num_test_scenes={synthetic.num_test_scenes}",
        f"dataset.synthetic.frames_per_scene={synthetic.frames_per_scene}",
        f"dataset.synthetic.width={synthetic.width}",
        f"dataset.synthetic.height={synthetic.height}",
        "dataset.synthetic.num_workers=1",
        "dataset.image_width=48",
        "dataset.image_height=32",
        "dataset.views.num_source_views=3",
        "dataset.views.num_mvs_neighbours=2",
        "train.rays_per_step=32",
        "train.device=cpu",
        "train.optim.warmup_steps=2",
        "train.optim.lr=1e-3",
    ]


def _compose(config_name: str, overrides: list[str], run_dir: Path) -> RootCfg:
    register_schema()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        dict_cfg = compose(config_name=config_name, overrides=overrides)
    dict_cfg.paths.output_dir = str(run_dir)
    return load_config(dict_cfg)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(
    data_root: Path, tmp_path: Path
) -> None:
    base = _synthetic_overrides(data_root) + ["train.steps=4", "eval.after_training=false"]
    straight = tmp_path / "straight"
    run_training(_compose("train", base, straight))
    first_half = tmp_path / "first_half"
    run_training(_compose("train", base + ["train.stop_at_step=2"], first_half))
    assert load_checkpoint(first_half / "checkpoints" / "last.pt")["step"] == 2
    resumed = tmp_path / "resumed"
    run_training(_compose("train", base + [f"resume={first_half}"], resumed))

    expected, interrupted = _weights(straight), _weights(resumed)
    assert load_checkpoint(resumed / "checkpoints" / "last.pt")["step"] == 4
    for name, value in expected.items():
        torch.testing.assert_close(interrupted[name], value, rtol=0, atol=0, msg=name)
    # The run did train: the weights moved away from the step-2 state.
    half = _weights(first_half)
    assert any(not torch.equal(half[name], value) for name, value in expected.items())
    assert (straight / "checkpoints" / "step-000000004.pt").is_file()
    assert (straight / "config.yaml").is_file()
    assert list((straight / "tensorboard").glob("events.*"))


def test_train_then_evaluate_writes_the_outputs(data_root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "train"
    overrides = _synthetic_overrides(data_root) + ["train.steps=2", "eval.save_images=true"]
    metrics = run_training(_compose("train", overrides, run_dir))
    assert metrics is not None and 0.0 <= metrics["total_accuracy"] <= 1.0
    written = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert written["overall"]["psnr"] == pytest.approx(metrics["psnr"])
    # LPIPS is computed or reported unavailable with its reason, never a made-up number.
    assert written["overall"].get("lpips") is not None or "lpips" in written["unavailable"]
    assert (run_dir / "eval" / "per_view.csv").read_text().startswith("scene,frame")
    strips = sorted((run_dir / "eval" / "images").glob("*_??????.png"))
    assert strips
    for strip in strips:
        # The source views' 2-D semantics beside each strip, predicted and ground truth.
        assert strip.with_name(strip.stem + "_semantic.png").is_file()
        assert strip.with_name(strip.stem + "_semantic_gt.png").is_file()
    table = (run_dir / "eval" / "table.md").read_text()
    assert f"{metrics['psnr']:.2f}" in table
    # Every logged step reports which share of its time went into waiting for the batch.
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    shares = [event.value for event in events.Scalars("train/data_loading_share")]
    assert len(shares) == 2 and all(0.0 <= share < 1.0 for share in shares)

    eval_dir = tmp_path / "eval"
    checkpoint = run_dir / "checkpoints" / "last.pt"
    eval_overrides = _synthetic_overrides(data_root) + [f"ckpt={checkpoint}"]
    evaluated = run_evaluation(_compose("eval", eval_overrides, eval_dir))
    assert evaluated["psnr"] == pytest.approx(metrics["psnr"], abs=1e-6)
    assert evaluated["miou"] == pytest.approx(metrics["miou"], abs=1e-9)


def test_a_scene_without_labels_is_evaluated_on_colour_and_depth(
    data_root: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "train"
    run_training(
        _compose(
            "train",
            _synthetic_overrides(data_root) + ["train.steps=1", "eval.after_training=false"],
            run_dir,
        )
    )
    scene_root = tmp_path / "imported"
    import_posed_rgbd(
        PosedRgbdSource(
            images=HOLOLENS / "images",
            depth=HOLOLENS / "depth",
            poses=HOLOLENS / "poses.txt",
            intrinsics=HOLOLENS / "K.txt",
            names=HOLOLENS / "subset_image_names.txt",
        ),
        scene_root / "office",
    )
    overrides = _synthetic_overrides(data_root) + [
        f"ckpt={run_dir / 'checkpoints' / 'last.pt'}",
        "dataset.kind=scannet",
        f"dataset.root={scene_root}",
        "dataset.test_scenes=[office]",
        "dataset.views.pool_stride=1",
        "dataset.views.query_offset=3",
        "dataset.views.query_stride=4",
    ]
    metrics = run_evaluation(_compose("eval", overrides, tmp_path / "eval"))
    assert metrics["psnr"] is not None and metrics["guide_abs_rel"] is not None
    assert "miou" not in metrics
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert "no semantic labels" in written["unavailable"]["miou"]


def test_nan_guard_skips_steps_then_stops_with_a_clear_error(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    cfg = _compose(
        "train",
        _synthetic_overrides(data_root) + ["train.steps=3", "train.max_nonfinite_steps=2"],
        tmp_path,
    )
    real_losses = trainer_module.training_losses
    calls = {"count": 0}

    def poisoned_losses(*args, **kwargs):
        calls["count"] += 1
        losses = real_losses(*args, **kwargs)
        if calls["count"] >= 2:
            losses["total"] = losses["total"] * float("nan")
        return losses

    monkeypatch.setattr(trainer_module, "training_losses", poisoned_losses)
    trainer = Trainer(cfg, tmp_path)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    # Step 1 predates the first periodic checkpoint (debug=fast: every 2 steps).
    with pytest.raises(FloatingPointError, match="2 consecutive .* no checkpoint was written yet"):
        trainer.fit()
    trainer.close()
    assert trainer.step == 1
    assert "skipped: non-finite loss" in caplog.text and "scene0000_00" in caplog.text
    # The poisoned steps changed nothing: the weights are those after the one good step.
    moved = [not torch.equal(before[n], p) for n, p in trainer.model.named_parameters()]
    assert any(moved)


def test_train_compile_compiles_the_chosen_parts_for_the_steps(
    data_root: Path, tmp_path: Path
) -> None:
    # The compiled steps' losses and gradients: tests/model/test_compiled_heads.py.
    overrides = ["train.steps=1", "train.compile=default", "train.compile_parts=[cost_volumes]"]
    trainer = Trainer(
        _compose("train", _synthetic_overrides(data_root) + overrides, tmp_path), tmp_path
    )
    model = trainer.model
    trainer.close()
    assert all("forward" in vars(level.regularizer) for level in model.geo_reasoner.cost_volumes)
    assert "forward" not in vars(model.radiance_head) and "gather" not in vars(model)
    # Compiled methods are instance attributes: the checkpoint keys are those of the plain model.
    assert not [key for key in model.state_dict() if "_orig_mod" in key]
    plain = Trainer(
        _compose("train", _synthetic_overrides(data_root), tmp_path / "plain"), tmp_path / "plain"
    )
    plain.close()
    assert "forward" not in vars(plain.model.geo_reasoner.cost_volumes[0].regularizer)


def test_train_kernel_options_switch_the_kernels(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Their numbers and gradients: tests/model/test_cpu_volume_norm.py and the other kernels',
    # tests/model/test_fused_volume_conv_grad.py for the volume convolutions.
    requested = []
    choose = trainer_module.use_fused_kernels

    def recording(wanted, device):
        requested.append(wanted)
        return choose(wanted, device)

    monkeypatch.setattr(trainer_module, "use_fused_kernels", recording)
    for wanted in (True, False):
        run_dir = tmp_path / str(wanted)
        option = str(wanted).lower()
        overrides = ["train.steps=1", f"train.cpu_kernels={option}"]
        overrides += [f"train.fused_volumes={option}", f"train.fused_guide_depth={option}"]
        requested.clear()
        trainer = Trainer(
            _compose("train", _synthetic_overrides(data_root) + overrides, run_dir), run_dir
        )
        trainer.close()
        assert cpu_volume_norm.enabled == (wanted and compiler_present())
        # The cost-volume and D_T kernels are asked for as configured, and CUDA's only: off on a
        # CPU.
        assert requested[0].volumes == wanted and not fused_volume_conv.enabled
        assert requested[0].guide_depth == wanted and not fused_guide_depth.enabled


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo is exercised on Linux")
def test_torchrun_two_cpu_processes_end_with_identical_weights(
    data_root: Path, tmp_path: Path
) -> None:
    # The module fixture's data must exist before the ranks start.
    run_training(
        _compose(
            "train",
            _synthetic_overrides(data_root) + ["train.steps=1", "eval.after_training=false"],
            tmp_path / "warmup",
        )
    )
    run_dir = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(PROJECT / "train.py"),
        *_synthetic_overrides(data_root),
        "train.steps=4",
        "train.optim.warmup_steps=1",
        "eval.after_training=false",
        f"hydra.run.dir={run_dir}",
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    finished = subprocess.run(
        command, cwd=PROJECT, env=environment, capture_output=True, text=True, timeout=300
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    log_text = (run_dir / "train.log").read_text()
    assert "replica check: 2 ranks hold identical weights" in log_text
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert last["step"] == 4
    # The cosine spans the run's 4 steps on every rank (the reference divided its length by
    # the number of GPUs, spec 7.20): after warm-up the rate falls by thirds of the cosine.
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    rates = {event.step: event.value for event in events.Scalars("train/lr")}
    optim = OmegaConf.load(run_dir / "config.yaml").train.optim
    lr, lr_min = optim.lr, optim.lr_min
    for step in (1, 2, 3, 4):
        cosine = 0.5 * (1 + math.cos(math.pi * (step - 1) / 3))
        assert rates[step] == pytest.approx(lr_min + (lr - lr_min) * cosine, rel=1e-6), step


def test_best_checkpoint_keeps_the_highest_validation_miou(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reference kept the lowest mIoU (spec 7.19). Validation at steps 1, 2 and 3 reports a
    # falling then rising mIoU that never regains its first value: best.pt must stay at step 1.
    reported = iter([0.30, 0.10, 0.20])
    validated_at = []

    def validate(self: Trainer) -> dict:
        validated_at.append(self.step)
        return {"miou": next(reported)}

    monkeypatch.setattr(Trainer, "validate", validate)
    run_dir = tmp_path / "run"
    overrides = ["train.steps=4", "train.val_every=1", "eval.after_training=false"]
    run_training(_compose("train", _synthetic_overrides(data_root) + overrides, run_dir))
    assert validated_at == [1, 2, 3]
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert best["step"] == 1 and best["best_metric"] == pytest.approx(0.30)
    # The weights of best.pt are those of step 1, not of a later step.
    step_1_weights = best["model"]
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert last["best_metric"] == pytest.approx(0.30)  # a resumed run compares with it
    assert any(not torch.equal(step_1_weights[k], v) for k, v in last["model"].items())

    # Resumed for two more steps, the run still compares with 0.30: 0.25 is no new best.
    reported = iter([0.25])
    resumed = tmp_path / "resumed"
    more = ["train.steps=6", f"resume={run_dir}"]
    run_training(_compose("train", _synthetic_overrides(data_root) + overrides + more, resumed))
    assert validated_at == [1, 2, 3, 5]
    assert not (resumed / "checkpoints" / "best.pt").exists()
    assert load_checkpoint(resumed / "checkpoints" / "last.pt")["best_metric"] == 0.30
