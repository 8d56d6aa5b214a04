"""Fine-tune a generalizable checkpoint on one scene, then evaluate it on that scene.

``python finetune.py ckpt=PATH dataset=scannet scene=scene0376_02 [train.steps=5000]``. Training
uses only the scene's source pool: the test query frames are never trained on (spec 6).
"""

import hydra
from omegaconf import DictConfig

from gsnerf.config import load_config, register_schema
from gsnerf.engine.interruption import exit_quietly_when_interrupted
from gsnerf.engine.runs import run_finetuning

register_schema()


@hydra.main(config_path="configs", config_name="finetune", version_base="1.3")
def main(dict_cfg: DictConfig) -> None:
    with exit_quietly_when_interrupted():
        run_finetuning(load_config(dict_cfg))


if __name__ == "__main__":
    main()
