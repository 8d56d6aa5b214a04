"""The smallest model configurations the model tests build: a few channels everywhere."""

from gsnerf.model import GSNeRFCfg, RendererCfg
from gsnerf.model.cost_volume import CostVolumeCfg
from gsnerf.model.feature_net import FeatureNetCfg
from gsnerf.model.geo_reasoner import GeoReasonerCfg
from gsnerf.model.radiance_head import RadianceHeadCfg
from gsnerf.model.sampler import SamplerCfg
from gsnerf.model.semantic_head import SemanticHeadCfg
from gsnerf.model.transformer import TransformerCfg


def small_geo_reasoner_cfg() -> GeoReasonerCfg:
    """Feature widths of 4 to 16 channels, 16 / 8 / 4 depth hypotheses."""
    return GeoReasonerCfg(
        feature_net=FeatureNetCfg(
            stem_width=4,
            encoder_widths=[8, 8, 16, 16],
            decoder_widths=[16, 8, 8, 8],
            pyramid_widths=[8, 8, 4],
        ),
        cost_volume=CostVolumeCfg(groups=4, widths=[4, 4, 8, 8], volume_channels=4),
        n_depths=[16, 8, 4],
    )


def small_gsnerf_cfg(
    num_samples: int = 4, num_uniform: int = 2, rendering: str = "volume"
) -> GSNeRFCfg:
    """The small geo-reasoner with one-layer heads of width 16."""
    small = TransformerCfg(width=16, heads=2, layers=1, ffn_width=16)
    return GSNeRFCfg(
        name="tiny",
        geo_reasoner=small_geo_reasoner_cfg(),
        sampler=SamplerCfg(num_samples=num_samples, num_uniform=num_uniform),
        renderer=RendererCfg(
            radiance=RadianceHeadCfg(transformer=small, density_hidden=[16], blend_hidden=[16]),
            semantic=SemanticHeadCfg(transformer=small, rendering=rendering, hidden=[16]),
        ),
    )
