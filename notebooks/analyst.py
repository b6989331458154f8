"""The analysts' notebook (marimo): activity, the purchase funnel, retention, sketches vs exact.

Open it on the demo's data from the project root: ``.venv/bin/marimo edit notebooks/analyst.py``
(see notebooks/README.md). It reads the warehouse that ``PipelineSettings`` points at
(``ANALYTICS_DATA_DIR``, ``./data`` by default) through the read-only analyst connection
(``analytics_pipeline.analyst.connect``) and the governed metrics (``con.metric``).
"""

import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium", app_title="Product analytics")


@app.cell
def _():
    import altair as alt
    import marimo as mo
    import pandas as pd

    from analytics_pipeline.analyst import connect
    from analytics_pipeline.settings import PipelineSettings

    return PipelineSettings, alt, connect, mo, pd


@app.cell
def _(PipelineSettings, connect, mo):
    settings = PipelineSettings()
    con = connect(settings)
    _tables = con.tables()
    mo.stop(
        "daily_active_users" not in _tables,
        mo.md(
            f"**No published tables under `{settings.warehouse_path}`.** Run the demo first "
            "(`.venv/bin/analytics-pipeline demo`), or set `ANALYTICS_DATA_DIR`."
        ),
    )
    _days = con.sql(
        "SELECT min(activity_date) AS first_day, max(activity_date) AS last_day FROM daily_active_users"
    ).to_pylist()[0]
    first_day, last_day = _days["first_day"], _days["last_day"]
    period = mo.ui.date_range(start=first_day, stop=last_day, value=(first_day, last_day), label="Days")
    mo.vstack(
        [
            mo.md(
                f"""
    # Product analytics

    Data: `{settings.data_dir}`, published days **{first_day} .. {last_day}**.
    Tables on this read-only connection: {", ".join(f"`{t}`" for t in _tables)}.
    """
            ),
            period,
        ]
    )
    return con, period


@app.cell
def _(period):
    start, end = period.value
    return end, start


@app.cell
def _(alt, con, end, mo, start):
    _dau = con.metric("daily_active_persons", start=start, end=end, grain="day")
    _wau = con.metric("active_persons_7d", start=start, end=end)
    _mau = con.metric("monthly_active_persons", start=start, end=end, grain="day")
    active = (
        _dau.merge(_wau, on="period", how="outer")
        .merge(_mau, on="period", how="outer")
        .rename(
            columns={
                "daily_active_persons": "DAU",
                "active_persons_7d": "WAU (7 days)",
                "monthly_active_persons": "MAU (30 days)",
            }
        )
        .sort_values("period")
    )
    _long = active.melt("period", var_name="measure", value_name="persons")
    _long["period"] = _long["period"].astype(str)
    active_chart = (
        alt.Chart(_long, title="Active persons per day")
        .mark_line(point=True)
        .encode(
            x=alt.X("period:T", title="day"),
            y=alt.Y("persons:Q", title="distinct persons"),
            color=alt.Color("measure:N", sort=["DAU", "WAU (7 days)", "MAU (30 days)"], title=None),
            tooltip=["period:T", "measure:N", "persons:Q"],
        )
        .properties(width=640, height=260)
    )
    mo.vstack(
        [
            mo.md(
                "## DAU / WAU / MAU\n\nMetrics `daily_active_persons`, `active_persons_7d` and "
                "`monthly_active_persons` (`assets/metrics.yml`). Windows that start before the first "
                "published day only count the days there are."
            ),
            active_chart,
        ]
    )
    return active, active_chart


@app.cell
def _(alt, con, end, mo, start):
    funnel = con.df(
        f"""
        SELECT step_index, any_value(step) AS step, CAST(sum(persons) AS BIGINT) AS persons
        FROM funnels
        WHERE funnel = 'purchase' AND cohort_date BETWEEN DATE '{start.isoformat()}' AND DATE '{end.isoformat()}'
        GROUP BY step_index
        ORDER BY step_index
        """
    )
    _entered = int(funnel["persons"].iloc[0]) if len(funnel) else 0
    funnel["from_first"] = funnel["persons"] / _entered if _entered else None
    funnel["label"] = [
        f"{int(p)} ({c:.0%})" if c is not None and c == c else f"{int(p)}"
        for p, c in zip(funnel["persons"], funnel["from_first"], strict=True)
    ]
    _order = funnel["step"].tolist()
    _bars = (
        alt.Chart(funnel, title="Purchase funnel: persons per step (cohorts summed)")
        .mark_bar()
        .encode(
            x=alt.X("persons:Q", title="persons"),
            y=alt.Y("step:N", sort=_order, title=None),
            tooltip=["step_index:O", "step:N", "persons:Q", alt.Tooltip("from_first:Q", format=".1%")],
        )
    )
    funnel_chart = (_bars + _bars.mark_text(align="left", dx=4).encode(text="label:N")).properties(
        width=560, height=180
    )
    mo.vstack(
        [
            mo.md(
                "## Purchase funnel\n\nThe `funnels` table (Mixpanel semantics, `assets/funnels.yml`): "
                "persons of each daily cohort who reached each step, summed over the days; the percentage "
                "is of the persons who entered. Recent cohorts are still within their 14-day window."
            ),
            funnel_chart,
        ]
    )
    return funnel, funnel_chart


@app.cell
def _(alt, con, end, mo, start):
    retention = con.df(
        f"""
        SELECT cohort_date, period, cohort_size, persons_on, retention_on
        FROM retention
        WHERE cohort_date BETWEEN DATE '{start.isoformat()}' AND DATE '{end.isoformat()}'
        ORDER BY cohort_date, period
        """
    )
    retention["cohort_date"] = retention["cohort_date"].astype(str)
    _base = alt.Chart(retention, title="Retention: share of each cohort active N days after its first event")
    _cells = _base.mark_rect().encode(
        x=alt.X("period:O", title="days since first event"),
        y=alt.Y("cohort_date:O", title="cohort (first event day)"),
        color=alt.Color("retention_on:Q", title="retained", scale=alt.Scale(scheme="blues", domain=[0, 1])),
        tooltip=[
            "cohort_date:O",
            "period:O",
            "cohort_size:Q",
            "persons_on:Q",
            alt.Tooltip("retention_on:Q", format=".1%"),
        ],
    )
    _labels = _base.mark_text(fontSize=10).encode(
        x="period:O",
        y="cohort_date:O",
        text=alt.Text("retention_on:Q", format=".0%"),
        color=alt.condition("datum.retention_on > 0.5", alt.value("white"), alt.value("black")),
    )
    retention_chart = (_cells + _labels).properties(width=560)
    mo.vstack(
        [
            mo.md(
                "## Retention\n\nThe `retention` table: `retention_on` = cohort members active on day "
                "N / cohort size. A period appears once its day is published."
            ),
            retention_chart,
        ]
    )
    return retention, retention_chart


@app.cell
def _(alt, con, end, mo, pd, start):
    _approx = con.metric("approx_persons", start=start, end=end, grain="day")
    _exact = con.metric("persons", start=start, end=end, grain="day")
    sketch_days = _approx.merge(_exact, on="period", how="outer")
    sketch_days["period"] = sketch_days["period"].astype(str)
    _total_approx = con.metric("approx_persons", start=start, end=end).iloc[0]
    _total_exact = int(con.metric("persons", start=start, end=end)["persons"].iloc[0])
    sketch_total = pd.DataFrame(
        [
            {
                "range": f"{start} .. {end}",
                "estimate": float(_total_approx["approx_persons"]),
                "lower": float(_total_approx["approx_persons_lower"]),
                "upper": float(_total_approx["approx_persons_upper"]),
                "exact": _total_exact,
            }
        ]
    )
    sketch_total["relative_error"] = (sketch_total["estimate"] - sketch_total["exact"]) / sketch_total[
        "exact"
    ]
    sketch_total["within_bounds"] = sketch_total["lower"].le(sketch_total["exact"]) & sketch_total[
        "upper"
    ].ge(sketch_total["exact"])
    _base = alt.Chart(
        sketch_days, title="Distinct persons per day: HLL sketch estimate (2-sigma bounds) vs exact"
    )
    sketch_chart = (
        _base.mark_rule(strokeWidth=3, opacity=0.5).encode(
            x=alt.X("period:N", title="day"),
            y=alt.Y("approx_persons_lower:Q", title="distinct persons", scale=alt.Scale(zero=False)),
            y2="approx_persons_upper:Q",
        )
        + _base.mark_point(filled=True, size=60).encode(
            x="period:N", y="approx_persons:Q", tooltip=["period:N", "approx_persons:Q", "persons:Q"]
        )
        + _base.mark_tick(color="firebrick", thickness=2, size=24).encode(x="period:N", y="persons:Q")
    ).properties(width=560, height=240)
    _row = sketch_total.iloc[0]
    mo.vstack(
        [
            mo.md(
                "## Sketch estimate vs exact\n\n`approx_persons` merges the daily HLL sketches "
                "(`daily_sketches`) with bounds at 2 standard deviations; `persons` counts distinct "
                f"persons in `person_events`. Over {_row['range']}: estimate **{_row['estimate']:.1f}** "
                f"[{_row['lower']:.1f}, {_row['upper']:.1f}], exact **{_row['exact']}**, relative error "
                f"{_row['relative_error']:+.2%}, {'within' if _row['within_bounds'] else 'OUTSIDE'} the bounds."
            ),
            sketch_chart,
            sketch_total,
        ]
    )
    return sketch_chart, sketch_days, sketch_total


if __name__ == "__main__":
    app.run()
