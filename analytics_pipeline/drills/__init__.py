"""Failure drills: each breaks a sandbox copy of the data on purpose and checks the promise holds.

``analytics-pipeline drill NAME`` (or ``--all``, ``--list``) and the ``drills_job`` in
Dagster run them; ``scenarios.DRILLS`` is the registry, ``runner`` times and judges a
drill, ``sandbox`` makes the copy it runs on.
"""

from analytics_pipeline.drills.runner import Drill, DrillResult, format_table, run_drill
from analytics_pipeline.drills.sandbox import Sandbox, make_sandbox
from analytics_pipeline.drills.scenarios import DRILLS

__all__ = ["DRILLS", "Drill", "DrillResult", "Sandbox", "format_table", "make_sandbox", "run_drill"]
