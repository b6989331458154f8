"""Pipeline settings: one place, overridable by ``ANALYTICS_*`` environment variables.

The settings are a Dagster resource so that every asset receives them the same way
and the UI shows the values a run used. ``PipelineSettings.from_env()`` is the only
place that reads the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import duckdb
from dagster import ConfigurableResource
from pydantic import Field

ENV_PREFIX = "ANALYTICS_"


class PipelineSettings(ConfigurableResource):  # type: ignore[misc]
    """Where the data lives and how DuckDB may use the machine."""

    data_dir: str = Field(default="./data", description="Holds landing/ and warehouse/.")
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
    schemas_dir: str = Field(
        default="", description="Event JSON Schemas; empty means the project's assets/events."
    )
    suites_dir: str = Field(
        default="", description="Expectation suites (one YAML per asset); empty means checks/suites."
    )

    @classmethod
    def from_env(cls, **overrides: object) -> PipelineSettings:
        """Settings from ``ANALYTICS_<FIELD>`` variables, then explicit overrides."""
        values: dict[str, object] = {}
        for name in cls.model_fields:
            raw = os.environ.get(ENV_PREFIX + name.upper())
            if raw is not None and raw != "":
                values[name] = raw
        values.update(overrides)
        return cls.model_validate(values)

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
        if self.schemas_dir:
            return Path(self.schemas_dir).resolve()
        return PROJECT_ROOT / "assets" / "events"

    @property
    def suites_path(self) -> Path:
        if self.suites_dir:
            return Path(self.suites_dir).resolve()
        return PROJECT_ROOT / "checks" / "suites"

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


PROJECT_ROOT = Path(__file__).resolve().parent.parent


def late_window_days_from_env() -> int:
    """The late window is needed when definitions load (for the partition mapping)."""
    return PipelineSettings.from_env().late_window_days
