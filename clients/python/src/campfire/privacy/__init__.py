"""Task filters and the client's own privacy configuration (issue 15; /work/coord/FILTERS.md, docs/privacy.md).

A job names filters in its config_fed_client.json (Task.client_config); the
client names its own, mandatory ones in `Agent(privacy=...)`. The agent runs
them on each task's data before the trainer sees it and on the trainer's result
before it leaves: exclude_vars, include_vars, clip_l2, gaussian_noise,
percentile_sparsify.
"""

from campfire.privacy.chain import TaskFilters, filter_data, filter_result
from campfire.privacy.config import FilterConfig, FilterEntry, PrivacyConfig
from campfire.privacy.filters import BUILT_IN, ChainState, ClipL2, ExcludeVars, Filter, GaussianNoise, IncludeVars, PercentileSparsify, make_filter
from campfire.privacy.update import Update

__all__ = [
    "BUILT_IN",
    "ChainState",
    "ClipL2",
    "ExcludeVars",
    "Filter",
    "FilterConfig",
    "FilterEntry",
    "GaussianNoise",
    "IncludeVars",
    "PercentileSparsify",
    "PrivacyConfig",
    "TaskFilters",
    "Update",
    "filter_data",
    "filter_result",
    "make_filter",
]
