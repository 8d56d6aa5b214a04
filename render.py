"""Render a fly-through video: ``python render.py ckpt=PATH scene=NAME [render.trajectory=spiral]``.

Encodes K source frames of the scene once, renders a smooth camera path and writes colour |
semantics | depth side by side as an MP4 into the run directory (configs/render.yaml).
"""

import hydra
from omegaconf import DictConfig

from gsnerf.engine.render_video import load_render_config, register_render_schema, run_render

register_render_schema()


@hydra.main(config_path="configs", config_name="render", version_base="1.3")
def main(dict_cfg: DictConfig) -> None:
    run_render(load_render_config(dict_cfg))


if __name__ == "__main__":
    main()
