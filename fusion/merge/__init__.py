"""Checkpoint merging: mergekit-style configs, registered methods, a streaming engine."""

from fusion.merge.config import MergeConfig, load_merge_config, parse_merge_config
from fusion.merge.engine import MergeOptions, MergeResult, run_merge
from fusion.merge.plan import resolve_model_path
from fusion.merge.registry import METHODS, get_method

__all__ = ["METHODS", "MergeConfig", "MergeOptions", "MergeResult", "get_method", "load_merge_config",
           "parse_merge_config", "resolve_model_path", "run_merge"]
