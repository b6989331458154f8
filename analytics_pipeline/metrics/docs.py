"""The metric definitions as documentation: ``docs/metrics.md`` and the Dagster asset's metadata."""

from __future__ import annotations

from analytics_pipeline.metrics.definitions import Metrics


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def metrics_table(metrics: Metrics) -> str:
    """One Markdown row per metric: name, kind, description, formula, owner, dimensions, grains."""
    lines = [
        "| metric | kind | description | formula | owner | dimensions | grains |",
        "|---|---|---|---|---|---|---|",
    ]
    for metric in sorted(metrics.metrics.values(), key=lambda m: m.name):
        lines.append(
            f"| `{metric.name}` | {metric.kind} | {_cell(metric.description)} | `{_cell(metric.formula)}` "
            f"| {metric.owner} | {', '.join(metric.dimensions) or '-'} | {', '.join(metric.grains) or 'total'} |"
        )
    return "\n".join(lines)


def metrics_markdown(metrics: Metrics) -> str:
    """The whole ``docs/metrics.md``."""
    models = "\n".join(
        f"- `{name}` (time: `{model.time_dimension}`): {_cell(model.description)}"
        + "".join(f"\n  - `{d}`: {_cell(dim.description)}" for d, dim in model.dimensions.items())
        for name, model in sorted(metrics.models.items())
    )
    return (
        "# Metrics\n\n"
        "Generated from `assets/metrics.yml` by `analytics-pipeline metrics --markdown`; do not edit by hand.\n"
        "Query one with `analytics-pipeline query METRIC --by DIM --start D1 --end D2 --grain day` or\n"
        "`analytics_pipeline.metrics.query(...)` in Python.\n\n"
        f"{metrics_table(metrics)}\n\n"
        "## Models and their dimensions\n\n"
        f"{models}\n"
    )
