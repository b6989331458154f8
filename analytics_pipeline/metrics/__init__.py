"""The metrics stage: governed metric definitions (assets/metrics.yml), the query API, sketches and the result cache.

``query`` is the one entry point analysts use, from Python, the CLI and notebooks.
"""

from analytics_pipeline.metrics.api import MetricQueryError, QueryResult, query

__all__ = ["MetricQueryError", "QueryResult", "query"]
