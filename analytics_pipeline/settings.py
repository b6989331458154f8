"""Pipeline settings: one typed object, overridable by ``ANALYTICS_<FIELD>`` environment variables.

The only place the environment is read (pydantic-settings does it). The object is also
the Dagster resource every asset receives, so the UI shows the values a run used, and
the definitions are built from the same values the steps run with.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Literal

import duckdb
from dagster import ConfigurableResource
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _project_path(*parts: str) -> str:
    return str(PROJECT_ROOT.joinpath(*parts))


class PipelineSettings(ConfigurableResource, BaseSettings):  # type: ignore[misc]
    """Where the data and the project's definitions live, and how DuckDB may use the machine."""

    model_config = SettingsConfigDict(env_prefix="ANALYTICS_", env_ignore_empty=True, extra="forbid")

    data_dir: str = Field(default="./data", description="Holds landing/ and warehouse/.")
    partitions_start: str = Field(default="2024-01-01", description="First daily partition (YYYY-MM-DD).")
    late_window_days: int = Field(
        default=3, ge=0, le=60, description="Arrival days after the event date that still count."
    )
    duckdb_memory_limit: str = Field(default="2GB", description="DuckDB memory_limit per step.")
    duckdb_threads: int = Field(default=2, ge=1, description="DuckDB threads per step.")
    duckdb_temp_dir: str = Field(
        default="", description="Spill directory; empty means <data_dir>/tmp/duckdb."
    )
    unregistered_events: Literal["accept", "quarantine"] = Field(
        default="accept", description="What to do with events that have no schema in assets/events."
    )
    versions_kept: int = Field(
        default=3, ge=1, description="Previous versions of a partition kept for rollback."
    )
    event_schemas_dir: str = Field(
        default=_project_path("assets", "events"), description="Event JSON Schemas, one file per event."
    )
    models_dir: str = Field(
        default=_project_path("assets", "models"), description="Modeled tables, one SQL file each."
    )
    funnels_file: str = Field(
        default=_project_path("assets", "funnels.yml"), description="Funnel definitions (a seed table)."
    )
    suites_dir: str = Field(
        default=_project_path("checks", "suites"), description="Expectation suites, one YAML per asset."
    )
    freshness_file: str = Field(
        default=_project_path("checks", "freshness.yml"), description="Freshness promises of final models."
    )
    flags_file: str = Field(
        default=_project_path("assets", "flags.yml"),
        description="Feature flags selecting model variants; point it at another file per environment.",
    )
    metrics_file: str = Field(
        default=_project_path("assets", "metrics.yml"), description="Metric definitions (the semantic layer)."
    )
    golden_queries_file: str = Field(
        default=_project_path("checks", "golden_queries.yml"), description="Golden queries and their SLOs."
    )
    slos_file: str = Field(default=_project_path("checks", "slos.yml"), description="Data-latency SLOs.")
    canary_file: str = Field(
        default=_project_path("checks", "canary.yml"),
        description="What a canary may change and still be promoted.",
    )
    cache_dir: str = Field(
        default="", description="Metric result cache; empty means <data_dir>/cache/metrics."
    )
    weekly_drill: str = Field(
        default="all",
        description="The drill weekly_drill_schedule runs (analytics-pipeline drill --list), or all.",
    )

    @field_validator("partitions_start")
    @classmethod
    def _iso_date(cls, value: str) -> str:
        return date.fromisoformat(value).isoformat()

    def replace(self, **changes: object) -> PipelineSettings:
        """A copy with some fields changed, every field set explicitly (what Dagster re-creates a
        resource from; ``model_copy(update=...)`` would lose the changes when a run rebuilds it)."""
        return type(self)(**{**self.model_dump(), **changes})

    # --- derived paths -------------------------------------------------------------
    @property
    def landing_path(self) -> Path:
        return Path(self.data_dir).resolve() / "landing"

    @property
    def warehouse_path(self) -> Path:
        return Path(self.data_dir).resolve() / "warehouse"

    @property
    def spill_path(self) -> Path:
        if self.duckdb_temp_dir:
            return Path(self.duckdb_temp_dir).resolve()
        return Path(self.data_dir).resolve() / "tmp" / "duckdb"

    @property
    def event_schemas_path(self) -> Path:
        return Path(self.event_schemas_dir).resolve()

    @property
    def models_path(self) -> Path:
        return Path(self.models_dir).resolve()

    @property
    def funnels_path(self) -> Path:
        return Path(self.funnels_file).resolve()

    @property
    def suites_path(self) -> Path:
        return Path(self.suites_dir).resolve()

    @property
    def freshness_path(self) -> Path:
        return Path(self.freshness_file).resolve()

    @property
    def flags_path(self) -> Path:
        return Path(self.flags_file).resolve()

    @property
    def metrics_path(self) -> Path:
        return Path(self.metrics_file).resolve()

    @property
    def golden_queries_path(self) -> Path:
        return Path(self.golden_queries_file).resolve()

    @property
    def slos_path(self) -> Path:
        return Path(self.slos_file).resolve()

    @property
    def canary_path(self) -> Path:
        return Path(self.canary_file).resolve()

    @property
    def cache_path(self) -> Path:
        if self.cache_dir:
            return Path(self.cache_dir).resolve()
        return Path(self.data_dir).resolve() / "cache" / "metrics"

    def connect(self) -> duckdb.DuckDBPyConnection:
        """An in-process DuckDB connection configured for this step.

        In-memory on purpose: no step holds a lock on a shared database file, so
        partitions can run in parallel processes.
        """
        self.spill_path.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(
            config={
                "memory_limit": self.duckdb_memory_limit,
                "threads": self.duckdb_threads,
                "temp_directory": str(self.spill_path),
                "preserve_insertion_order": False,
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": True,
            }
        )
        con.execute("SET TimeZone = 'UTC'")
        return con
