"""The analyst connection on data built by the real pipeline.

It reads the published modeled tables and the sketches (the same rows as their Parquet) and
nothing else; every write, file, ATTACH, extension and setting change is refused by DuckDB
itself, also inside a CTE, a subquery or ``query('...')``, with a one-line message; metric
filters never reach DuckDB as SQL; a slow query is interrupted; a big result is cut and marked;
and queries keep working while the pipeline republishes partitions and rewrites its catalog.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from analytics_pipeline import cli
from analytics_pipeline.analyst import (
    AnalystConnection,
    AnalystQueryError,
    QueryRefused,
    QueryTimeout,
    RowLimitWarning,
    allowed_tables,
    connect,
)
from analytics_pipeline.sample_data.generator import generate
from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse.storage import Warehouse, file_sha256

DAYS = 3
EVENTS_PER_DAY = 1000
MODELS = {"identities", "person_events", "persons", "person_sessions", "sessions", "daily_active_users",
          "event_counts", "funnels", "retention", "users"}  # fmt: skip
HIDDEN = ["raw_events", "quarantined_events", "file_ledger", "events", "event_id_conflicts"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> PipelineSettings:
    root = tmp_path_factory.mktemp("analyst")
    settings = PipelineSettings(data_dir=str(root / "data"), duckdb_memory_limit="1GB", duckdb_threads=2)
    generate(settings.landing_path, date.today() - timedelta(days=DAYS), DAYS, EVENTS_PER_DAY, seed=5)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_HOME", str(root / "dagster_home"))
        assert cli.run_days(settings, cli.landing_days(settings), cli.dagster_instance(), echo=False)
    return settings


@pytest.fixture
def con(pipeline: PipelineSettings) -> Iterator[AnalystConnection]:
    with connect(pipeline, max_rows=1_000_000) as connection:
        yield connection


def plain(sql: str) -> pa.Table:
    """An unrestricted in-memory DuckDB: the oracle."""
    oracle = duckdb.connect()
    try:
        oracle.execute("SET TimeZone = 'UTC'")
        return oracle.sql(sql).to_arrow_table()
    finally:
        oracle.close()


def refused(con: AnalystConnection, sql: str, *fragments: str) -> str:
    with pytest.raises(QueryRefused) as caught:
        con.sql(sql)
    message = str(caught.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


# --- what it sees ------------------------------------------------------------------------------


def test_sees_exactly_the_published_models_and_the_sketches(
    pipeline: PipelineSettings, con: AnalystConnection
) -> None:
    assert set(allowed_tables(pipeline)) == MODELS | {"daily_sketches"}
    assert con.tables() == sorted(MODELS | {"daily_sketches"})
    warehouse = Warehouse(pipeline.warehouse_path)
    for table in HIDDEN:  # published, but not for analysts
        assert warehouse.published_days(table)
        with pytest.raises(AnalystQueryError, match=f"Table with name {table} does not exist") as caught:
            con.sql(f"SELECT count(*) FROM {table}")
        assert "the analyst tables: daily_active_users" in str(caught.value)


@pytest.mark.parametrize(
    "table", ["person_events", "persons", "funnels", "retention", "users", "daily_sketches"]
)
def test_an_allowed_table_equals_its_parquet(
    pipeline: PipelineSettings, con: AnalystConnection, table: str
) -> None:
    glob = Warehouse(pipeline.warehouse_path).table_glob(table).replace("*.parquet", "part-0.parquet")
    expected = plain(
        f"SELECT * FROM read_parquet('{glob}', hive_partitioning = true, union_by_name = true) ORDER BY ALL"
    )
    got = con.sql(f"SELECT * FROM {table} ORDER BY ALL")
    assert got.num_rows > 0
    assert got.schema.names == expected.schema.names
    assert got.to_pylist() == expected.to_pylist()
    assert not con.truncated


def test_the_published_files_other_than_the_tables_are_not_readable(
    pipeline: PipelineSettings, con: AnalystConnection
) -> None:
    root = pipeline.warehouse_path
    for path in [
        f"{root}/raw_events/date=*/part-0.parquet",
        f"{root}/quarantined_events/date=*/part-0.parquet",
        f"{root}/_versions/*/*/*.parquet",
        f"{root}/_staging/*/*/*.parquet",
        f"{root}/persons/date=*/part-0.parquet",  # a table's own folder: only through analyst://
        "analyst://raw_events/date=*/part-0.parquet",
        "analyst://persons/../raw_events/date=*/part-0.parquet",
        "analyst://persons/date=*/../../_versions/persons/*/*.parquet",
    ]:
        refused(con, f"SELECT count(*) FROM read_parquet('{path}')", "SELECT refused", "files cannot be read")
    refused(con, f"SELECT * FROM read_json('{root}/_manifests/*/*.json')", "files cannot be read")
    refused(con, f"SELECT * FROM read_text('{root}/analytics.duckdb')", "files cannot be read")
    # the tables' published files themselves are readable, through the read-only file system
    day = Warehouse(root).published_days("persons")[0]
    (n,) = con.sql(f"SELECT count(*) AS n FROM read_parquet('analyst://persons/date={day}/part-0.parquet')")[
        0
    ]
    assert n.as_py() > 0


# --- what it refuses -----------------------------------------------------------------------------

WRITES = [
    "CREATE TABLE t AS SELECT 1",
    "CREATE TEMP TABLE t AS SELECT 1",
    "CREATE TEMPORARY VIEW v AS SELECT * FROM persons",
    "CREATE OR REPLACE TEMP VIEW persons AS SELECT 1 AS shadow",
    "CREATE TEMP MACRO m(x) AS x + 1",
    "CREATE TEMP SEQUENCE s",
    "INSERT INTO persons SELECT * FROM persons",
    "UPDATE persons SET days_active = 0",
    "DELETE FROM persons",
    "DROP VIEW persons",
    "ALTER VIEW persons RENAME TO p",
]


@pytest.mark.parametrize("sql", WRITES)
def test_writes_are_refused(con: AnalystConnection, sql: str) -> None:
    verb = sql.split()[0]
    refused(con, sql, f"{verb} refused", "read-only")
    assert con.tables() == sorted(MODELS | {"daily_sketches"})  # nothing created or dropped
    assert con.sql("SELECT count(*) AS n FROM persons").column("n")[0].as_py() > 0


FILES = [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM read_blob('/etc/hostname')",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM '/etc/passwd.csv'",  # a replacement scan of a file name
    "SELECT * FROM read_parquet('https://example.com/x.parquet')",
    # the same function inside a CTE, a subquery, a join, a scalar subquery and query(): the
    # refusal comes from DuckDB wherever the table function is bound
    "WITH leak AS (SELECT * FROM read_csv('/etc/passwd')) SELECT * FROM persons, leak",
    "SELECT * FROM persons WHERE person_id IN (SELECT content FROM read_text('/etc/passwd'))",
    "SELECT p.person_id FROM persons p JOIN read_csv('/etc/passwd') x ON true",
    "SELECT (SELECT count(*) FROM glob('/root/*')) AS n",
    "SELECT * FROM query('SELECT * FROM read_text(''/etc/passwd'')')",
]


@pytest.mark.parametrize("sql", FILES)
def test_reading_other_files_is_refused(con: AnalystConnection, sql: str) -> None:
    refused(con, sql, "SELECT refused", "files cannot be read or written on the analyst connection")


def test_copy_export_attach_install_load_are_refused(
    pipeline: PipelineSettings, con: AnalystConnection
) -> None:
    warehouse = Warehouse(pipeline.warehouse_path)
    day = warehouse.published_days("persons")[0]
    published = warehouse.partition_file("persons", day)
    before = file_sha256(published)
    out = Path(pipeline.data_dir) / "out.csv"
    refused(con, f"COPY (SELECT * FROM persons) TO '{out}'", "COPY refused", "files cannot be")
    refused(con, f"COPY persons TO '{published}' (FORMAT parquet)", "COPY refused", "files cannot be")
    # a table's own folder, through the read-only file system DuckDB is allowed to use
    target = f"analyst://persons/date={day}/part-0.parquet"
    refused(con, f"COPY (SELECT 1 AS x) TO '{target}' (FORMAT parquet)", "COPY refused", "read-only")
    refused(con, f"COPY (SELECT 1 AS x) TO '{target}' (FORMAT parquet, USE_TMP_FILE false)", "read-only")
    refused(con, f"COPY (SELECT 1) TO 'analyst://persons/date={day}/x.csv'", "read-only")
    refused(con, f"EXPORT DATABASE '{Path(pipeline.data_dir) / 'export'}'", "EXPORT refused")
    assert not out.exists() and not (Path(pipeline.data_dir) / "export").exists()
    assert file_sha256(published) == before
    assert sorted(p.name for p in published.parent.iterdir()) == ["part-0.parquet"]
    refused(con, "ATTACH ':memory:' AS scratch", "ATTACH refused")
    refused(con, f"ATTACH '{warehouse.root / 'analytics.duckdb'}' AS catalog (READ_ONLY)", "ATTACH refused")
    refused(con, f"ATTACH '{Path(pipeline.data_dir) / 'new.duckdb'}' AS new", "ATTACH refused")
    refused(con, "INSTALL httpfs", "INSTALL refused", "extensions")
    refused(con, "LOAD httpfs", "LOAD refused", "extensions")
    assert not (Path(pipeline.data_dir) / "new.duckdb").exists()


@pytest.mark.parametrize(
    ("sql", "option"),
    [
        ("SET threads = 8", "threads"),
        ("SET memory_limit = '64GB'", "memory_limit"),
        ("RESET memory_limit", "memory_limit"),
        ("PRAGMA threads = 8", "threads"),
        ("SET enable_external_access = true", "enable_external_access"),
        ("SET allowed_directories = ['/']", "allowed_directories"),
        ("SET lock_configuration = false", "lock_configuration"),
        ("SET autoload_known_extensions = true", "autoload_known_extensions"),
        ("SET TimeZone = 'Europe/Paris'", "TimeZone"),
    ],
)
def test_setting_changes_are_refused(con: AnalystConnection, sql: str, option: str) -> None:
    refused(con, sql, f"{sql.split()[0]} refused", "settings are locked", f"{option} cannot be changed")
    rows = con.sql(
        "SELECT name, value FROM duckdb_settings() WHERE name IN "
        "('threads', 'enable_external_access', 'lock_configuration', 'TimeZone')"
    ).to_pylist()
    settings = {r["name"]: r["value"] for r in rows}
    assert settings["threads"] == "2" and settings["enable_external_access"] == "false"
    assert settings["lock_configuration"] == "true" and settings["TimeZone"] == "UTC"


def test_reading_pragmas_and_session_variables_still_work(con: AnalystConnection) -> None:
    assert "person_id" in con.sql("PRAGMA table_info('persons')").column("name").to_pylist()
    assert (
        con.sql("SET VARIABLE day_count = 3; SELECT getvariable('day_count') AS v").column("v")[0].as_py()
        == 3
    )
    assert con.sql("DESCRIBE users").num_rows > 0


def test_the_refusals_are_duckdbs_not_a_text_filter(
    pipeline: PipelineSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forbidden words as data run; with this module's one pre-check turned off, DuckDB still refuses."""
    with connect(pipeline) as con:
        text = "COPY x TO 'y'; ATTACH 'z'; SET threads = 8; SELECT * FROM read_csv('/etc/passwd')"
        assert con.sql(f"SELECT {duckdb_literal(text)} AS s").column("s")[0].as_py() == text
    monkeypatch.setattr(AnalystConnection, "_refuse_writes", lambda self, statement, kind: None)
    with connect(pipeline) as con:
        # the read-only catalog file: DuckDB's own refusal
        message = refused(con, "CREATE TABLE t AS SELECT 1", "CREATE refused", "read-only")
        assert "attached in read-only mode" in message
        refused(con, "DROP VIEW persons", "DROP refused", "read-only mode")
        # file access, settings and ATTACH never depended on the pre-check
        refused(
            con, "WITH x AS (SELECT * FROM read_csv('/etc/passwd')) SELECT * FROM x", "files cannot be read"
        )
        refused(con, "SET threads = 8", "settings are locked")
        # what the pre-check is for: DuckDB 2.0.1 lets a read-only file's session create temp objects
        con.sql("CREATE TEMP TABLE scratch AS SELECT 1 AS x")
        assert con.sql("SELECT x FROM scratch").column("x")[0].as_py() == 1


def duckdb_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# --- metrics ---------------------------------------------------------------------------------------


def test_metric_goes_through_the_metrics_layer(con: AnalystConnection) -> None:
    persons = con.metric("persons")
    (exact,) = con.sql("SELECT count(DISTINCT person_id) AS n FROM person_events").column("n").to_pylist()
    assert persons["persons"].tolist() == [exact]
    daily = con.metric("daily_active_persons", grain="day")
    dau = con.sql("SELECT activity_date, dau FROM daily_active_users ORDER BY 1").to_pylist()
    assert [(r["period"], r["daily_active_persons"]) for r in daily.to_dict("records")] == [
        (r["activity_date"], r["dau"]) for r in dau
    ]


def test_sql_in_a_metric_filter_is_a_value(con: AnalystConnection) -> None:
    evil = "x' UNION SELECT * FROM read_csv('/etc/passwd') --"
    per_day = con.metric("events", grain="day", filters={"event": evil})
    assert per_day.empty and list(per_day.columns) == ["period", "events"]
    total = con.metric("events", filters={"event": evil})
    assert total["events"].tolist() == [0]  # matched no event named like that; nothing raised or read
    assert con.metric("events", filters={"event": "no such event"})["events"].tolist() == [0]


# --- timeout and row limit -----------------------------------------------------------------------


def test_a_slow_query_is_interrupted(pipeline: PipelineSettings) -> None:
    with connect(pipeline, timeout_s=0.5) as con:
        started = time.perf_counter()
        with pytest.raises(QueryTimeout, match=r"query cancelled after 0.5 s \(timeout_s\)") as caught:
            con.sql("SELECT count(*) FROM range(1000000000) a, range(1000000) b")
        elapsed = time.perf_counter() - started
        assert 0.4 < elapsed < 5, elapsed
        assert "\n" not in str(caught.value)
        # the connection is usable afterwards, and a later query is not hit by a stale interrupt
        time.sleep(0.6)
        assert con.sql("SELECT count(*) AS n FROM persons").column("n")[0].as_py() > 0


def test_rows_beyond_max_rows_are_cut_and_marked(pipeline: PipelineSettings) -> None:
    with connect(pipeline, max_rows=50) as con:
        (total,) = con.sql("SELECT count(*) AS n FROM person_events").column("n").to_pylist()
        assert total > 50
        with pytest.warns(RowLimitWarning, match="more than max_rows=50 rows; the first 50 are returned"):
            cut = con.sql("SELECT * FROM person_events ORDER BY message_id")
        assert cut.num_rows == 50 and con.truncated
        assert cut.schema.metadata[b"analyst.truncated"] == b"true"
        full_order = plain(
            f"SELECT message_id FROM read_parquet('{Warehouse(pipeline.warehouse_path).table_glob('person_events')}') "
            "ORDER BY message_id LIMIT 50"
        )
        assert cut.column("message_id").to_pylist() == full_order.column("message_id").to_pylist()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            exact = con.sql("SELECT * FROM person_events LIMIT 50")
        assert exact.num_rows == 50 and not con.truncated
        assert b"analyst.truncated" not in (exact.schema.metadata or {})
        with pytest.warns(RowLimitWarning):
            frame = con.df("SELECT * FROM person_events")
        assert len(frame) == 50 and frame.attrs["truncated"] is True
        assert con.df("SELECT 1 AS one").attrs["truncated"] is False


def test_close_and_no_files_left(pipeline: PipelineSettings) -> None:
    before = set(pipeline.spill_path.glob("analyst-*")) if pipeline.spill_path.exists() else set()
    con = connect(pipeline)
    assert set(pipeline.spill_path.glob("analyst-*")) == before  # the private catalog is unlinked at once
    assert con.sql("SELECT count(*) AS n FROM users").column("n")[0].as_py() > 0
    con.close()
    con.close()
    with pytest.raises(AnalystQueryError, match="closed"):
        con.sql("SELECT 1")
    with connect(pipeline) as other, connect(pipeline, memory_limit="512MB", threads=1) as third:
        assert other.tables() == third.tables()  # two configurations at once in one process


# --- while the pipeline publishes ---------------------------------------------------------------

PUBLISHER = textwrap.dedent(
    """
    import shutil, sys, uuid
    from pathlib import Path
    from analytics_pipeline.warehouse.catalog import refresh_catalog
    from analytics_pipeline.warehouse.storage import Warehouse
    root, table, day, stop = Path(sys.argv[1]), sys.argv[2], sys.argv[3], Path(sys.argv[4])
    versions = [Path(p) for p in sys.argv[5:]]
    warehouse = Warehouse(root)
    n = 0
    while not stop.exists():
        staged = warehouse.staging_file(table, day, uuid.uuid4().hex)
        shutil.copyfile(versions[n % len(versions)], staged)
        warehouse.publish(staged, table, day, versions_kept=3)
        refresh_catalog(warehouse)
        n += 1
    print(n)
    """
)


def test_queries_while_the_pipeline_republishes(pipeline: PipelineSettings, tmp_path: Path) -> None:
    """A publisher process swaps a partition between two versions and rewrites the catalog in a
    loop; queries in this process never fail and always see one whole version."""
    data = tmp_path / "data"
    shutil.copytree(pipeline.warehouse_path, data / "warehouse")
    settings = PipelineSettings(data_dir=str(data), duckdb_memory_limit="1GB", duckdb_threads=2)
    warehouse = Warehouse(settings.warehouse_path)
    table = "person_events"
    day = warehouse.published_days(table)[0]
    version_a = tmp_path / "a.parquet"
    version_b = tmp_path / "b.parquet"
    shutil.copyfile(warehouse.partition_file(table, day), version_a)
    plain(
        f"COPY (SELECT * FROM '{version_a}' WHERE hash(message_id) % 3 = 0) TO '{version_b}' (FORMAT parquet)"
    )
    fingerprint = "SELECT count(*) AS n, sum(hash(message_id)) AS h FROM {}"
    expected = {
        tuple(plain(fingerprint.format(f"'{v}'")).to_pylist()[0].values()) for v in (version_a, version_b)
    }
    assert len(expected) == 2
    others = plain(
        fingerprint.format(f"read_parquet('{warehouse.table_glob(table)}')")
        + f" WHERE event_date <> DATE '{day}'"
    ).to_pylist()[0]["n"]
    stop = tmp_path / "stop"
    publisher = subprocess.Popen(
        [
            sys.executable,
            "-c",
            PUBLISHER,
            str(warehouse.root),
            table,
            day,
            str(stop),
            str(version_a),
            str(version_b),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: set[tuple[int, int]] = set()
    reads = reconnects = 0
    try:
        con = connect(settings)
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline and publisher.poll() is None:
            row = con.sql(fingerprint.format(table) + f" WHERE event_date = DATE '{day}'").to_pylist()[0]
            got = (row["n"], row["h"])
            assert got in expected, got  # one whole version, never a mix or a partial file
            seen.add(got)
            (total,) = con.sql(f"SELECT count(*) AS n FROM {table}").column("n").to_pylist()
            assert total - others in {n for n, _ in expected}
            reads += 1
            if reads % 10 == 0:  # a new connection while the catalog is being swapped
                con.close()
                con = connect(settings)
                reconnects += 1
        con.close()
    finally:
        stop.touch()
        out, err = publisher.communicate(timeout=60)
    assert publisher.returncode == 0, err
    publishes = int(out.strip())
    print(f"{publishes} publishes, {reads} reads, {reconnects} reconnects")
    assert publishes >= 10 and reads >= 20, (publishes, reads)
    assert seen == expected, "both versions were read"
    assert reconnects >= 1
