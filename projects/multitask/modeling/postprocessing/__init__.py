from .registry import POSTPROCESSOR_REGISTRY, build_postprocessors, run_postprocessors

__all__ = ["POSTPROCESSOR_REGISTRY", "build_postprocessors", "run_postprocessors"]
