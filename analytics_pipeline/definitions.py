"""The one ``Definitions`` object ``dagster dev -w workspace.yaml`` loads: every stage's, merged.

Each module in ``defs/`` declares one stage (its assets, checks, jobs, schedules and
sensors) and exposes its own ``defs``; adding a stage is adding a module here.
"""

from __future__ import annotations

from dagster import Definitions

from analytics_pipeline.defs import (
    canary,
    drills,
    events,
    flags,
    ingest,
    metrics,
    models,
    quality,
    resources,
    slo,
)

defs = Definitions.merge(
    resources.defs,
    ingest.defs,
    events.defs,
    flags.defs,
    models.defs,
    metrics.defs,
    slo.defs,
    quality.defs,
    canary.defs,
    drills.defs,
)
