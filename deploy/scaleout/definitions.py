"""The scale-out code location: the pipeline's definitions, every job's steps on Celery workers.

The same ``Definitions`` as ``analytics_pipeline.definitions`` (assets, checks, jobs,
schedules, sensors, the ``warehouse_io`` pool), with ``celery_executor`` as the default
executor of every job: nightly_job, late_window_job, models_job, the runs the sensors and
backfills launch. A run's steps are sent to RabbitMQ and executed by whichever Celery
worker takes them; the run worker only orchestrates.

Broker, result backend and queue come from the environment (``DAGSTER_CELERY_BROKER_URL``,
``DAGSTER_CELERY_BACKEND_URL``, ``DAGSTER_CELERY_QUEUE``; defaults in ``scaleout.env``),
resolved by Dagster in the process that runs the run, so the code has no host in it; a run
may override them in its run config (``execution: config: {broker, backend, queue}``). The
Celery workers read broker and backend through ``celery.yaml`` and take the queue with
``-q``. Nothing of the pipeline changes: the embedded default keeps loading
``analytics_pipeline.definitions`` with its multiprocess executor.

Load it with ``dagster code-server start -f deploy/scaleout/definitions.py -d <project root>``
(or ``dagster job ... -f deploy/scaleout/definitions.py``). The Celery workers re-import this
file by the same absolute path, so the project sits at the same path on every machine.
"""

from __future__ import annotations

from typing import Any

from dagster import Definitions, Field, StringSource, configured
from dagster_celery import celery_executor

from analytics_pipeline import definitions as pipeline  # one Definitions at module scope: ours


def _from_env(variable: str, description: str) -> Field:
    return Field(StringSource, is_required=False, default_value={"env": variable}, description=description)


@configured(
    celery_executor,
    config_schema={
        "broker": _from_env("DAGSTER_CELERY_BROKER_URL", "Celery broker URL (RabbitMQ)."),
        "backend": _from_env("DAGSTER_CELERY_BACKEND_URL", "Celery result backend URL (Redis or rpc://)."),
        "queue": _from_env("DAGSTER_CELERY_QUEUE", "The queue the steps go to; workers listen with -q."),
    },
)
def scaleout_executor(config: dict[str, Any]) -> dict[str, Any]:
    """``celery_executor`` with broker, backend and queue from the environment (or the run config)."""
    return {
        "broker": config["broker"],
        "backend": config["backend"],
        "config_source": {"task_default_queue": config["queue"]},
    }


defs = Definitions.merge(pipeline.defs, Definitions(executor=scaleout_executor))
