from .defaults import CfgNode, add_multitask_config, get_cfg

__all__ = ["CfgNode", "add_multitask_config", "get_cfg"]
