"""Every primary config and experiment composes and converts into the typed tree."""

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from gsnerf.config import ConfigError, RootCfg, load_config, register_schema
from gsnerf.engine import runs
from gsnerf.engine.runs import run_finetuning

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
PAPER_EXPERIMENTS = ("scannet_gtdepth", "scannet_selfsup", "replica_gtdepth", "replica_selfsup")
EXPERIMENTS = sorted(path.stem for path in (CONFIG_DIR / "experiment").glob("*.yaml"))


def _compose(config_name: str, overrides: list[str]) -> RootCfg:
    register_schema()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        dict_cfg = compose(config_name=config_name, overrides=overrides)
    # The run directory is Hydra's at run time; tests give one.
    dict_cfg.paths.output_dir = "outputs/test"
    return load_config(dict_cfg)


def test_experiments_are_listed() -> None:
    assert {
        "quickstart",
        "scannet_gtdepth",
        "scannet_selfsup",
        "replica_gtdepth",
        "replica_selfsup",
    } <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment: str) -> None:
    cfg = _compose("train", [f"experiment={experiment}"])
    assert isinstance(cfg, RootCfg)
    if experiment in PAPER_EXPERIMENTS:
        # Paper settings of spec 4.
        assert cfg.train.steps == 300_000 and cfg.train.rays_per_step == 1024
        assert cfg.train.optim.lr == 5e-4 and cfg.train.optim.warmup_steps == 500
        assert cfg.dataset.views.num_source_views == 8
        assert (cfg.dataset.image_width, cfg.dataset.image_height) == (320, 240)
        assert cfg.model.geo_reasoner.n_depths == [48, 32, 8]
        expected = "self_supervised" if experiment.endswith("selfsup") else "supervised"
        assert cfg.loss.depth_supervision == expected


def test_scannet_lists_are_the_papers() -> None:
    cfg = _compose("train", ["experiment=scannet_gtdepth"])
    assert len(cfg.dataset.train_scenes) == 61 and cfg.dataset.train_scenes[-1] == "scene0060_00"
    assert len(cfg.dataset.test_scenes) == 10 and "scene0376_02" in cfg.dataset.test_scenes
    assert cfg.dataset.far == 10.0
    assert _compose("train", ["experiment=replica_gtdepth"]).dataset.far == 6.0


@pytest.mark.parametrize("experiment", ["replica_gtdepth", "replica_selfsup"])
def test_replica_lists_are_the_papers(experiment: str) -> None:
    # Spec 1.1: 12 training sequences, and the test list stands in for the missing val list.
    cfg = _compose("train", [f"experiment={experiment}"])
    sequences = ["Sequence_1", "Sequence_2"]
    training_rooms = ["office_0", "office_1", "office_2", "office_3", "room_0", "room_1"]
    assert cfg.dataset.train_scenes == [f"{r}/{s}" for r in training_rooms for s in sequences]
    assert cfg.dataset.test_scenes == [
        f"{r}/{s}" for r in ["office_4", "room_2"] for s in sequences
    ]


def test_default_job_is_the_quickstart() -> None:
    default = _compose("train", [])
    named = _compose("train", ["experiment=quickstart"])
    assert OmegaConf.structured(default) == OmegaConf.structured(named)
    assert default.dataset.kind == "synthetic" and default.model.name == "tiny"


def test_eval_and_finetune_require_their_keys() -> None:
    with pytest.raises(ConfigError, match=r"config key 'ckpt' has no value: add ckpt=\.\.\. to"):
        _compose("eval", [])
    cfg = _compose("eval", ["ckpt=some.pt"])
    assert cfg.ckpt == "some.pt"
    cfg = _compose("finetune", ["ckpt=some.pt", "scene=scene0000_00"])
    assert cfg.scene == "scene0000_00"


def test_unknown_key_is_an_error_naming_it() -> None:
    with pytest.raises(Exception, match="not_a_field"):
        _compose("train", ["train.not_a_field=3"])


def test_wrong_type_is_an_error_naming_the_key() -> None:
    with pytest.raises(Exception, match="steps"):
        _compose("train", ["train.steps=many"])


def test_load_config_names_a_bad_key_outside_hydra() -> None:
    bad = OmegaConf.create({"seed": 1, "dataset": {"image_width": "wide"}})
    with pytest.raises(ConfigError, match="dataset.image_width"):
        load_config(bad)


def test_finetuning_without_a_scene_names_the_test_scenes(tmp_path: Path) -> None:
    root = tmp_path / "scannet"
    (root / "splits").mkdir(parents=True)
    names = [f"scene{i:04d}_00" for i in range(12)]
    (root / "splits" / "test.txt").write_text("\n".join(names) + "\n")
    # The scannet config lists the paper's ten test scenes; without them the split file counts.
    from_files = ["ckpt=some.pt", "dataset=scannet", "dataset.test_scenes=null"]
    cfg = _compose("finetune", [*from_files, f"dataset.root={root}"])
    listed = "scene0000_00, scene0001_00, " + ", ".join(names[2:10]) + " and 2 more"
    with pytest.raises(
        ValueError, match=re.escape(f"fine-tune on; test scenes of scannet in {root}: {listed}")
    ):
        run_finetuning(cfg)
    # No split file: the error says so instead.
    cfg = _compose("finetune", [*from_files, f"dataset.root={tmp_path}"])
    with pytest.raises(
        ValueError, match="scene=NAME is required.*no test scenes found.*split file missing"
    ):
        run_finetuning(cfg)


def test_finetuning_trains_on_the_scenes_source_pool_from_the_checkpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Spec 6: the scene's test queries are never trained on; the weights start from ckpt.
    handed_over = []
    monkeypatch.setattr(runs, "run_training", handed_over.append)
    cfg = _compose("finetune", ["ckpt=trained.pt", "dataset=scannet", "scene=scene0376_02"])
    run_finetuning(cfg)
    (trained,) = handed_over
    assert trained.dataset.train_scenes == ["scene0376_02"] == trained.dataset.test_scenes
    assert trained.dataset.train_frames == "source_pool"
    assert trained.train.init_weights == "trained.pt" and not trained.resume


def _readme_commands() -> list[tuple[str, list[str]]]:
    """The README's ``python train.py|eval.py|finetune.py ...`` lines, continuations joined,
    as (config name, overrides); ``...`` stands for a path and ``<run>`` for a run name."""
    text = (CONFIG_DIR.parent / "README.md").read_text().replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        words = line.split("#")[0].split()
        if len(words) > 1 and words[0] == "python" and words[1] in _ENTRY_CONFIGS:
            overrides = [w.replace("...", "x.pt").replace("<run>", "r") for w in words[2:]]
            commands.append((_ENTRY_CONFIGS[words[1]], overrides))
    return commands


_ENTRY_CONFIGS = {"train.py": "train", "eval.py": "eval", "finetune.py": "finetune"}


def test_every_readme_command_composes() -> None:
    commands = _readme_commands()
    # The quickstart, the training, evaluation and fine-tuning lines at least.
    assert {name for name, _ in commands} == {"train", "eval", "finetune"}
    assert len(commands) >= 8
    for name, overrides in commands:
        cfg = _compose(name, overrides)
        assert isinstance(cfg, RootCfg), (name, overrides)
        if name == "finetune":
            # The fine-tuning command restores finetune.py's schedule over the experiment's.
            assert cfg.train.steps == 5000 and cfg.train.optim.warmup_steps == 100
            assert cfg.train.val_every == 1000 < cfg.train.steps
