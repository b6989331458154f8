"""Dagster declarations, one module per stage, each exposing ``defs``; the machinery lives in the stage packages."""
