"""Dagster definitions, one module per concept: partitions, assets, jobs and schedules."""
