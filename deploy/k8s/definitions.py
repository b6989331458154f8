"""The Kubernetes code location: the pipeline's definitions, every step in its own Kubernetes Job.

The k8s twin of ``deploy/scaleout/definitions.py``: the same ``Definitions`` as
``analytics_pipeline.definitions`` with ``k8s_job_executor`` (dagster-k8s) as the default
executor of every job. The run worker (a Job started by the K8sRunLauncher) starts one Job
per step from the same image, with the run launcher's env and volumes (the ReadWriteMany
warehouse volume at the same path), so each step's DuckDB runs in its own pod. The
``warehouse_io`` pool still bounds how many of them run at once (slots in PostgreSQL).

Not loaded on this project's machines (no dagster-k8s there); the image installs it.
Served by the chart's user deployment: ``dagster code-server start -f deploy/k8s/definitions.py``.
"""

from __future__ import annotations

from dagster import Definitions
from dagster_k8s import k8s_job_executor

from analytics_pipeline import definitions as pipeline  # one Definitions at module scope: ours

step_pods = k8s_job_executor.configured(
    {
        "max_concurrent": 4,  # step Jobs per run at once (the pool limits warehouse steps anyway)
        "step_k8s_config": {
            "container_config": {
                # one DuckDB per pod: ANALYTICS_DUCKDB_MEMORY_LIMIT (2GB) plus the Python around it
                "resources": {"requests": {"cpu": "2", "memory": "3Gi"}, "limits": {"memory": "4Gi"}}
            }
        },
    },
    name="k8s_job_executor",
)

defs = Definitions.merge(pipeline.defs, Definitions(executor=step_pods))
