"""KPIs per tenant: record data points, query a metric's summary and recent points (kind ``kpi``).

Each point is stored as its own document (an audit trail), and the metric's summary (count, sum,
min, max, last) is updated in the same call with an atomic read-modify-write, so concurrent
recorders never lose an update.
"""

from .router import router
from .service import Kpis, Point, Summary

__all__ = ["Kpis", "Point", "Summary", "router"]
