"""Feature flags per tenant: set, read, and evaluate a flag for a subject (kind ``feature_flags``).

Evaluation is deterministic: a subject lands in the same rollout bucket on every pod and after
every backend switch, because the bucket is a hash of (flag, subject), not stored state.
"""

from .router import router
from .service import Evaluation, FeatureFlags, Flag

__all__ = ["Evaluation", "FeatureFlags", "Flag", "router"]
