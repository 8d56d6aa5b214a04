"""The GSNeRF model: geo-reasoner, guide depth, sampler, feature gathering and heads."""

from gsnerf.model.gsnerf import GSNeRF, GSNeRFCfg, GSNeRFOutput, RendererCfg, build_model

__all__ = ["GSNeRF", "GSNeRFCfg", "GSNeRFOutput", "RendererCfg", "build_model"]
