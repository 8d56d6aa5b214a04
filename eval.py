"""Evaluate a checkpoint: ``python eval.py ckpt=PATH [dataset=...] [model.sampler.num_samples=N]``.

Renders every test view of every test scene (spec 1.5 protocol), prints the metrics table and
writes ``metrics.json``, ``per_view.csv`` and image strips into the run directory.
"""

import hydra
from omegaconf import DictConfig

from gsnerf.config import load_config, register_schema
from gsnerf.engine.runs import run_evaluation

register_schema()


@hydra.main(config_path="configs", config_name="eval", version_base="1.3")
def main(dict_cfg: DictConfig) -> None:
    run_evaluation(load_config(dict_cfg))


if __name__ == "__main__":
    main()
