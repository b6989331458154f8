"""Canary builds: a model's candidate built beside production, compared with it, then promoted or held.

``run_canary`` builds the candidate (a flag switched on, another SQL file, or the model as it
is) for some days into a shadow warehouse, ``<data_dir>/canary/<id>/warehouse``, whose
upstream tables are links to production's (read, never written) and which never gets an
analysts' catalog. It compares the candidate with production's published partitions of those
days (row counts, the metrics whose table is the model, per-column null rates and
distributions, the rows that differ by the model's unique key) and judges each comparison
against ``checks/canary.yml``: any one over its limit, or a build that failed the model's
gates, means ``hold``; otherwise ``promote``. The verdict and its evidence are kept in
``verdict.json`` beside the candidate; the CLI records them as a Dagster run (``defs/canary.py``).

``promote`` publishes the candidate's files into production through the same audit and
atomic publish as a build (``models/build.py``): every day is staged and passes the model's
gates before any is published. A held canary is refused unless forced; who promoted, when,
and whether it was forced go into each publish record and the manifest.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from analytics_pipeline.config_files import ConfigFileError, StrictModel, load
from analytics_pipeline.models.build import build_model
from analytics_pipeline.models.flags import Flag, project_flags, variant_sql
from analytics_pipeline.models.loader import ModelSpec, load_models
from analytics_pipeline.quality import gate_status
from analytics_pipeline.quality.gates import audit
from analytics_pipeline.quality.outcomes import GateFailed
from analytics_pipeline.quality.suites import suite_for
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.catalog import refresh_catalog
from analytics_pipeline.warehouse.storage import PublishResult, Warehouse, file_sha256, parquet_rows

CANARY_DIR = "canary"  # under the data directory: <data_dir>/canary/<id>/
VERDICT_FILE = "verdict.json"
UNIQUE_EXPECTATIONS = {
    "expect_column_values_to_be_unique": "column",
    "expect_compound_columns_to_be_unique": "column_list",
}
Verdict = Literal["promote", "hold"]


class CanaryError(ConfigFileError):
    """A canary that cannot run or be promoted (or a wrong ``checks/canary.yml``); the message says why."""


class CanaryHeld(CanaryError):
    """Promoting a held canary without ``force``."""


class Thresholds(StrictModel):
    row_count_change: float = Field(default=0.01, ge=0)
    metric_change: float = Field(default=0.01, ge=0)
    null_rate_change: float = Field(default=0.01, ge=0)
    mean_change: float = Field(default=0.02, ge=0)
    distinct_change: float = Field(default=0.02, ge=0)
    changed_rows: float = Field(default=0.01, ge=0)


class ThresholdOverrides(StrictModel):
    row_count_change: float | None = Field(default=None, ge=0)
    metric_change: float | None = Field(default=None, ge=0)
    null_rate_change: float | None = Field(default=None, ge=0)
    mean_change: float | None = Field(default=None, ge=0)
    distinct_change: float | None = Field(default=None, ge=0)
    changed_rows: float | None = Field(default=None, ge=0)


class CanaryFile(StrictModel):
    defaults: Thresholds = Thresholds()
    models: dict[str, ThresholdOverrides] = Field(default_factory=dict)


def load_thresholds(path: Path, model: str, known_models: list[str]) -> Thresholds:
    """The limits for ``model``: the file's defaults with the model's overrides."""
    config = load(path, CanaryFile, CanaryError, "canary thresholds")
    for name in config.models:
        if name not in known_models:
            raise CanaryError(f"{path}: models.{name}: unknown model; models: {sorted(known_models)}")
    override = config.models.get(model)
    if override is None:
        return config.defaults
    return config.defaults.model_copy(update=override.model_dump(exclude_none=True))


@dataclass(frozen=True)
class Finding:
    """One comparison of candidate with production, and whether it is within its limit."""

    check: str  # row_count, metric, null_rate, mean, distinct, changed_rows, gates
    subject: str  # the day, "metric day", or the column
    production: float | None
    candidate: float | None
    change: float | None  # relative (absolute for null_rate); None when production is 0 or absent
    limit: float | None
    passed: bool


@dataclass
class CanaryVerdict:
    """What ``run_canary`` found; kept as ``verdict.json`` in the canary's directory."""

    id: str
    model: str
    days: list[str]
    flag: str | None
    sql: str | None
    verdict: Verdict
    findings: list[Finding]
    rows_by_key: dict[str, Any]
    columns: dict[str, dict[str, Any]]
    flags: dict[str, dict[str, Any]]  # day -> the flags the candidate was built with
    gate_failures: dict[str, list[str]]  # day -> blocking checks the candidate failed
    thresholds: dict[str, float]
    directory: str
    created_at: str
    files: dict[str, str] = field(default_factory=dict)  # day -> sha256 of the candidate file judged

    @property
    def held(self) -> bool:
        return self.verdict == "hold"

    @property
    def over_limit(self) -> list[Finding]:
        return [f for f in self.findings if not f.passed]

    def write(self) -> Path:
        path = Path(self.directory) / VERDICT_FILE
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True, default=str))
        return path

    @classmethod
    def read(cls, directory: Path) -> CanaryVerdict:
        document = json.loads((directory / VERDICT_FILE).read_text())
        document["findings"] = [Finding(**f) for f in document["findings"]]
        return cls(**document)

    def summary(self) -> str:
        """The verdict with its evidence, for a terminal."""
        what = f"flag {self.flag}" if self.flag else (f"sql {self.sql}" if self.sql else "as defined now")
        span = self.days[0] if len(self.days) == 1 else f"{self.days[0]}..{self.days[-1]}"
        over = self.over_limit
        lines = [
            f"canary {self.id}: {self.model} {span}, {what}",
            f"verdict: {self.verdict.upper()} "
            + (
                f"({len(over)} of {len(self.findings)} comparisons over their limits in checks/canary.yml)"
                if over
                else f"(all {len(self.findings)} comparisons within checks/canary.yml)"
            ),
        ]
        for day, failed in sorted(self.gate_failures.items()):
            lines.append(f"  the candidate of {day} failed its blocking gates: {', '.join(failed)}")
        header = ("check", "subject", "production", "candidate", "change", "limit", "")
        table = [header]
        shown = [
            f for f in self.findings if f.check in ("row_count", "metric", "changed_rows") or not f.passed
        ]
        for f in shown:
            table.append(
                (
                    f.check, f.subject, _number(f.production), _number(f.candidate),
                    _percent(f.change, signed=f.check != "null_rate"), _percent(f.limit, signed=False),
                    "" if f.passed else "OVER",
                )
            )  # fmt: skip
        widths = [max(len(r[i]) for r in table) for i in range(len(header))]
        lines += [
            "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table
        ]
        hidden = len(self.findings) - len(shown)
        if hidden:
            lines.append(
                f"  ... and {hidden} column comparisons (null rate, mean, distinct) within their limits"
            )
        keyed = self.rows_by_key
        if keyed.get("key"):
            lines.append(
                f"rows by key ({', '.join(keyed['key'])}): {keyed['only_in_production']} only in production, "
                f"{keyed['only_in_candidate']} only in candidate, {keyed['changed']} changed, "
                f"of {keyed['production_rows']} production rows"
            )
            for kind in ("only_in_production", "only_in_candidate", "changed"):
                if keyed["examples"].get(kind):
                    lines.append(f"  e.g. {kind}: {', '.join(keyed['examples'][kind])}")
        else:
            lines.append(f"rows by key: {keyed.get('note', 'not compared')}")
        lines.append(f"candidate: {Path(self.directory) / 'warehouse' / self.model}")
        return "\n".join(lines)


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.4g}"


def _percent(value: float | None, signed: bool = True) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "new"
    return f"{value:+.1%}" if signed else f"{value:.1%}"


def parse_partitions(text: str) -> list[str]:
    """``D1..D2`` (inclusive) or one day ``D``: the days, in order."""
    first, _, last = text.partition("..")
    try:
        start = date.fromisoformat(first.strip())
        end = date.fromisoformat((last or first).strip())
    except ValueError:
        raise CanaryError(f"--partitions takes YYYY-MM-DD..YYYY-MM-DD, got {text!r}") from None
    if start > end:
        raise CanaryError(f"--partitions: {start} is after {end}")
    return [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def canary_directory(settings: PipelineSettings, canary_id: str) -> Path:
    return Path(settings.data_dir).resolve() / CANARY_DIR / canary_id


def load_verdict(settings: PipelineSettings, canary_id: str) -> CanaryVerdict:
    directory = canary_directory(settings, canary_id)
    if not (directory / VERDICT_FILE).exists():
        raise CanaryError(f"no canary {canary_id!r} under {directory.parent}")
    return CanaryVerdict.read(directory)


def _spec(settings: PipelineSettings, model: str) -> tuple[ModelSpec, list[ModelSpec]]:
    specs = load_models(settings.models_path)
    by_name = {s.name: s for s in specs}
    if model not in by_name:
        raise CanaryError(f"unknown model {model!r}; models: {sorted(by_name)}")
    if not by_name[model].partitioned:
        raise CanaryError(f"{model} is not partitioned; a canary compares daily partitions")
    return by_name[model], specs


def candidate_flags(
    settings: PipelineSettings, spec: ModelSpec, flag: str | None, sql: str | None
) -> tuple[ModelSpec, dict[str, Flag]]:
    """The model and flags the candidate is built with: ``flag`` switched on, or ``sql`` swapped in."""
    if flag and sql:
        raise CanaryError("a canary tries a flag or a SQL file, not both")
    flags = dict(project_flags(settings.flags_path, settings.models_path))
    if flag is not None:
        if flag not in flags:
            raise CanaryError(
                f"unknown flag {flag!r} in {settings.flags_path}; flags: {sorted(flags) or 'none'}"
            )
        if flags[flag].model != spec.name:
            raise CanaryError(f"flag {flag} changes {flags[flag].model}, not {spec.name}")
        flags[flag] = dataclasses.replace(flags[flag], enabled=True)
    if sql is not None:
        spec = dataclasses.replace(spec, sql=variant_sql(Path(sql).resolve(), spec, "--sql"))
        # the SQL under trial replaces any variant a flag would swap in; their parameters stay
        flags = {
            n: dataclasses.replace(f, sql=None, sql_path=None) if f.model == spec.name and f.sql else f
            for n, f in flags.items()
        }
    return spec, flags


def shadow_settings(
    settings: PipelineSettings, directory: Path, spec: ModelSpec, days: list[str]
) -> PipelineSettings:
    """Settings whose warehouse is the canary's: production's upstream tables and the model's
    other days linked in (read only), the canary's days left for the candidate."""
    shadow = settings.replace(data_dir=str(directory), cache_dir=str(directory / "cache"))
    production = Warehouse(settings.warehouse_path)
    root = shadow.warehouse_path
    root.mkdir(parents=True, exist_ok=True)
    for table in spec.upstreams:
        if table != spec.name and (production.root / table).exists():
            (root / table).symlink_to(production.root / table, target_is_directory=True)
    for day in production.published_days(spec.name):
        if day not in days:  # history for the volume gate, rolling metrics and self-reading models
            target = Warehouse(root).partition_file(spec.name, day)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(production.partition_file(spec.name, day))
    return shadow


def run_canary(
    settings: PipelineSettings,
    model: str,
    days: list[str],
    flag: str | None = None,
    sql: str | None = None,
    thresholds: Thresholds | None = None,
    canary_id: str | None = None,
) -> CanaryVerdict:
    """Build the candidate of ``model`` for ``days`` in a shadow warehouse, compare, judge.

    Nothing under production's warehouse (published files, manifests, records, gate status,
    the analysts' catalog) is written. ``thresholds`` defaults to ``checks/canary.yml``.
    """
    spec, specs = _spec(settings, model)
    days = sorted(set(days))
    if not days:
        raise CanaryError("a canary needs at least one partition")
    spec, flags = candidate_flags(settings, spec, flag, sql)
    if thresholds is None:
        thresholds = load_thresholds(settings.canary_path, model, [s.name for s in specs])
    canary_id = canary_id or f"{model}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    directory = canary_directory(settings, canary_id)
    directory.mkdir(parents=True, exist_ok=False)
    shadow = shadow_settings(settings, directory, spec, days)
    built: dict[str, dict[str, Any]] = {}
    gate_failures: dict[str, list[str]] = {}
    files: dict[str, str] = {}
    for day in days:
        try:
            result = build_model(shadow, spec, day, flags=flags)
        except GateFailed as failed:
            gate_failures[day] = [c.name for c in failed.failed]
            continue
        built[day] = result.flags
        files[day] = result.published.sha256
    production = Warehouse(settings.warehouse_path)
    candidate = Warehouse(shadow.warehouse_path)
    findings: list[Finding] = []
    for day in days:
        findings.append(_row_count(production, candidate, model, day, thresholds))
    compared = [d for d in days if d in built]
    findings += _metric_findings(settings, shadow, model, compared, thresholds)
    prod_files = [
        str(production.partition_file(model, d))
        for d in compared
        if production.partition_file(model, d).exists()
    ]
    cand_files = [str(candidate.partition_file(model, d)) for d in compared]
    columns, column_findings = _column_findings(settings, prod_files, cand_files, thresholds)
    findings += column_findings
    rows_by_key, key_finding = _rows_by_key(settings, model, prod_files, cand_files, thresholds)
    if key_finding:
        findings.append(key_finding)
    for day in gate_failures:
        findings.append(Finding("gates", day, None, None, None, None, False))
    verdict = CanaryVerdict(
        id=canary_id, model=model, days=days, flag=flag, sql=str(Path(sql).resolve()) if sql else None,
        verdict="hold" if any(not f.passed for f in findings) else "promote", findings=findings,
        rows_by_key=rows_by_key, columns=columns, flags=built, gate_failures=gate_failures,
        thresholds=thresholds.model_dump(), directory=str(directory),
        created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), files=files,
    )  # fmt: skip
    verdict.write()
    return verdict


def _change(production: float | None, candidate: float | None) -> float | None:
    if production is None or candidate is None:
        return None
    if production == 0:
        return 0.0 if candidate == 0 else math.inf
    return (candidate - production) / abs(production)


def _judge(
    check: str, subject: str, production: float | None, candidate: float | None, limit: float
) -> Finding:
    change = _change(production, candidate)
    if production is None and candidate is None:
        passed = True
    elif change is None:
        passed = False  # one side has no value: a partition or a column appeared or vanished
    else:
        passed = abs(change) <= limit
    return Finding(check, subject, production, candidate, change, limit, passed)


def _row_count(
    production: Warehouse, candidate: Warehouse, model: str, day: str, limits: Thresholds
) -> Finding:
    prod_file, cand_file = production.partition_file(model, day), candidate.partition_file(model, day)
    prod_rows = parquet_rows(prod_file) if prod_file.exists() else None
    cand_rows = parquet_rows(cand_file) if cand_file.exists() else None
    return _judge("row_count", day, prod_rows, cand_rows, limits.row_count_change)


def _metric_findings(
    settings: PipelineSettings, shadow: PipelineSettings, model: str, days: list[str], limits: Thresholds
) -> list[Finding]:
    """Every metric whose table is the model, per day, on production and on the candidate."""
    from analytics_pipeline.metrics.api import query, source_table
    from analytics_pipeline.metrics.definitions import project_metrics

    if not days:
        return []
    metrics = project_metrics(settings)
    findings = []
    for metric in sorted(metrics.metrics.values(), key=lambda m: m.name):
        if metric.kind == "approximate" or source_table(metrics, metric) != model:
            continue
        grain = "day" if "day" in metric.grains else None
        values = []
        for where in (settings, shadow):
            result = query(
                metric.name, start=days[0], end=days[-1], grain=grain, settings=where, use_cache=False
            )
            rows = result.table.to_pylist()
            values.append(
                {str(r["period"]) if grain else "total": r[metric.name] for r in rows} if rows else {}
            )
        for period in sorted(set(values[0]) | set(values[1])):
            if grain and period not in days:
                continue
            prod, cand = values[0].get(period), values[1].get(period)
            findings.append(
                _judge("metric", f"{metric.name} {period}", _float(prod), _float(cand), limits.metric_change)
            )
    return findings


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _summarize(settings: PipelineSettings, files: list[str]) -> dict[str, dict[str, Any]]:
    """Per column: type, null rate, min, max, mean (numbers), approximate distinct count, top values."""
    if not files:
        return {}
    con = settings.connect()
    try:
        listed = ", ".join(f"'{f}'" for f in files)
        con.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet([{listed}], hive_partitioning = false)")
        stats: dict[str, dict[str, Any]] = {}
        for name, kind, low, high, distinct, mean, *_, count, null_pct in con.execute(
            "SUMMARIZE t"
        ).fetchall():
            numeric = mean is not None and kind != "BOOLEAN" and "TIME" not in kind and "DATE" not in kind
            stats[name] = {
                "type": kind, "rows": count, "null_rate": float(null_pct) / 100, "min": low, "max": high,
                "mean": float(mean) if numeric else None, "distinct": distinct,
            }  # fmt: skip
            if kind == "VARCHAR" or kind == "BOOLEAN":
                top = con.execute(
                    f'SELECT CAST("{name}" AS VARCHAR), count(*) AS n FROM t GROUP BY 1 ORDER BY n DESC, 1 LIMIT 3'
                ).fetchall()
                stats[name]["top"] = [[value, n] for value, n in top]
        return stats
    finally:
        con.close()


def _column_findings(
    settings: PipelineSettings, prod_files: list[str], cand_files: list[str], limits: Thresholds
) -> tuple[dict[str, dict[str, Any]], list[Finding]]:
    production, candidate = _summarize(settings, prod_files), _summarize(settings, cand_files)
    columns = {
        name: {"production": production.get(name), "candidate": candidate.get(name)}
        for name in [*production, *[c for c in candidate if c not in production]]
    }
    findings = []
    for name, sides in columns.items():
        prod, cand = sides["production"] or {}, sides["candidate"] or {}
        prod_null, cand_null = prod.get("null_rate"), cand.get("null_rate")
        if prod_null is None or cand_null is None:
            findings.append(
                Finding("null_rate", name, prod_null, cand_null, None, limits.null_rate_change, False)
            )
        else:
            change = cand_null - prod_null
            findings.append(
                Finding("null_rate", name, prod_null, cand_null, change, limits.null_rate_change,
                        abs(change) <= limits.null_rate_change)
            )  # fmt: skip
        if prod.get("mean") is not None or cand.get("mean") is not None:
            findings.append(_judge("mean", name, prod.get("mean"), cand.get("mean"), limits.mean_change))
        findings.append(
            _judge(
                "distinct",
                name,
                _float(prod.get("distinct")),
                _float(cand.get("distinct")),
                limits.distinct_change,
            )
        )
    return columns, findings


def unique_key(settings: PipelineSettings, model: str) -> list[str]:
    """The model's unique key: the columns its suite expects to be unique (first such expectation)."""
    suite = suite_for(model, settings.suites_path)
    for expectation in suite.expectations if suite else []:
        argument = UNIQUE_EXPECTATIONS.get(expectation.type)
        if argument:
            value = expectation.kwargs[argument]
            return [value] if isinstance(value, str) else list(value)
    return []


def _rows_by_key(
    settings: PipelineSettings, model: str, prod_files: list[str], cand_files: list[str], limits: Thresholds
) -> tuple[dict[str, Any], Finding | None]:
    """Rows only in production, only in the candidate, and changed (same key, other values)."""
    key = unique_key(settings, model)
    if not key:
        return {"key": [], "note": f"no unique key declared in checks/suites/{model}.yml"}, None
    if not cand_files:
        return {"key": key, "note": "no candidate partition to compare"}, None
    con = settings.connect()
    try:
        for name, files in (("p", prod_files), ("c", cand_files)):
            if files:
                listed = ", ".join(f"'{f}'" for f in files)
                source = f"SELECT * FROM read_parquet([{listed}], hive_partitioning = false)"
            else:
                source = (
                    f"SELECT * FROM read_parquet('{cand_files[0]}', hive_partitioning = false) WHERE false"
                )
            con.execute(f"CREATE VIEW {name}_rows AS {source}")
        columns = ", ".join(f'"{k}"' for k in key)
        con.execute(
            f"CREATE VIEW p AS SELECT {columns}, md5(CAST(r AS VARCHAR)) AS h FROM p_rows r;"
            f"CREATE VIEW c AS SELECT {columns}, md5(CAST(r AS VARCHAR)) AS h FROM c_rows r"
        )
        rendered = " || '|' || ".join(f'CAST("{k}" AS VARCHAR)' for k in key)
        found = con.execute(
            f"""
            SELECT kind, count(*), list(k ORDER BY k)[1:3] FROM (
                SELECT {rendered} AS k,
                    CASE WHEN p.h IS NULL THEN 'only_in_candidate'
                         WHEN c.h IS NULL THEN 'only_in_production' ELSE 'changed' END AS kind
                FROM p FULL OUTER JOIN c USING ({columns})
                WHERE p.h IS DISTINCT FROM c.h
            ) GROUP BY kind
            """
        ).fetchall()
        row = con.execute("SELECT count(*) FROM p").fetchone()
        production_rows = int(row[0]) if row else 0
    finally:
        con.close()
    counts = {kind: int(n) for kind, n, _ in found}
    evidence: dict[str, Any] = {
        "key": key,
        "production_rows": production_rows,
        "only_in_production": counts.get("only_in_production", 0),
        "only_in_candidate": counts.get("only_in_candidate", 0),
        "changed": counts.get("changed", 0),
        "examples": {kind: list(examples) for kind, _, examples in found},
    }
    differing = sum(counts.values())
    share = differing / production_rows if production_rows else (0.0 if not differing else math.inf)
    finding = Finding(
        "changed_rows", f"by {', '.join(key)}", float(production_rows), float(differing), share,
        limits.changed_rows, share <= limits.changed_rows,
    )  # fmt: skip
    return evidence, finding


@dataclass(frozen=True)
class Promoted:
    day: str
    published: PublishResult
    rows: int


def promote(
    settings: PipelineSettings,
    verdict: CanaryVerdict,
    force: bool,
    promoted_by: str,
    run_id: str | None = None,
) -> list[Promoted]:
    """Publish the canary's partitions into production: staged, audited by the model's gates, published.

    Refuses a held canary unless ``force``; every day passes its gates before any is published.
    """
    if verdict.held and not force:
        reasons = ", ".join(f"{f.check} {f.subject}" for f in verdict.over_limit[:5]) or "failed gates"
        raise CanaryHeld(f"canary {verdict.id} was held ({reasons}); promote it anyway with --force")
    production = Warehouse(settings.warehouse_path)
    candidate = Warehouse(Path(verdict.directory) / "warehouse")
    promotion = {
        "canary": verdict.id, "verdict": verdict.verdict, "forced": bool(force and verdict.held),
        "promoted_by": promoted_by, "promoted_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **({"flag": verdict.flag} if verdict.flag else {}), **({"sql": verdict.sql} if verdict.sql else {}),
    }  # fmt: skip
    staged: dict[str, Path] = {}
    try:
        for day in verdict.days:
            source = candidate.partition_file(verdict.model, day)
            if not source.exists():
                raise CanaryError(
                    f"canary {verdict.id} has no {verdict.model} {day}: its build failed its gates"
                )
            if verdict.files.get(day) and file_sha256(source) != verdict.files[day]:
                raise CanaryError(f"canary {verdict.id}: {source} changed since it was judged")
            production.clear_staging(verdict.model, day)
            staged[day] = production.staging_file(verdict.model, day, uuid.uuid4().hex)
            shutil.copyfile(source, staged[day])
            gate = audit(production, verdict.model, day, staged[day], settings.suites_path)
            gate_status.record(production, [verdict.model], day, gate.outcomes)
            if gate.failed:
                raise GateFailed(verdict.model, day, gate.outcomes)
        promoted = []
        for day, path in staged.items():
            published = production.publish(
                path, verdict.model, day, settings.versions_kept, run_id=run_id,
                flags=verdict.flags.get(day, {}), promotion=promotion,
            )  # fmt: skip
            manifest = candidate.read_manifest(verdict.model, day) or {}
            production.write_manifest(verdict.model, day, {**manifest, "promotion": promotion})
            promoted.append(
                Promoted(day, published, int(manifest.get("rows") or parquet_rows(published.path) or 0))
            )
    finally:
        for path in staged.values():
            path.unlink(missing_ok=True)
    refresh_catalog(production)
    return promoted
