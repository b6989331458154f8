"""Every asset check the pipeline declares, in one place.

Two sources: the invariants written in SQL next to the step that stages the data
(``quality.py``: reconciliation, required columns, person ids), and the suites in
``checks/suites/<asset>.yml`` (Great Expectations, volume, schema drift; see gates.py).
All of them run on the staged partition before it is published. ERROR checks are
declared ``blocking=True``: when one fails nothing is published, the step fails and
downstream assets do not run; WARN checks only report.
"""

import warnings

from dagster import AssetCheckSpec, PreviewWarning

from analytics_pipeline.conform import EVENTS_TABLE
from analytics_pipeline.defs.partitions import daily_partitions
from analytics_pipeline.gates import PlannedCheck, planned_checks
from analytics_pipeline.ingestion import QUARANTINE_TABLE, RAW_TABLE
from analytics_pipeline.settings import PipelineSettings

# the suites the steps will run: the same settings the definitions' resource reads
SUITES_DIR = PipelineSettings.from_env().suites_path

SQL_CHECKS: dict[str, list[PlannedCheck]] = {
    RAW_TABLE: [
        PlannedCheck(
            "raw_reconciliation",
            "Lines read = raw events + quarantined lines + lines of re-delivered files, exactly.",
            "ERROR",
        ),
        PlannedCheck(
            "raw_required_columns_not_null",
            "messageId, type, timestamps, partition and provenance columns are never null.",
            "ERROR",
        ),
        PlannedCheck("raw_person_id_present", "Every row has a userId or an anonymousId.", "ERROR"),
        PlannedCheck(
            "raw_type_accepted", "type is one of track, page, screen, identify, group, alias.", "ERROR"
        ),
    ],
    QUARANTINE_TABLE: [
        PlannedCheck(
            "quarantine_reason_recorded",
            "Every quarantined row names its file, reason code and message.",
            "ERROR",
        ),
    ],
    EVENTS_TABLE: [
        PlannedCheck("events_person_id_present", "Every event has a userId or an anonymousId.", "ERROR"),
        PlannedCheck(
            "events_reconciliation",
            "Raw rows dated D = events + duplicates + id conflicts, exactly.",
            "ERROR",
        ),
    ],
}


def check_specs(asset: str, partitioned: bool = True) -> list[AssetCheckSpec]:
    """The SQL invariants and the suite's checks of one asset, as Dagster declares them.

    Checks of a partitioned asset are partitioned too, so each partition has its own
    result in the UI and automation can tell which partition's gate failed.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PreviewWarning)
        return [
            AssetCheckSpec(
                check.name,
                asset=asset,
                blocking=check.blocking,
                description=f"[{check.severity}] {check.description}",
                partitions_def=daily_partitions if partitioned else None,
            )
            for check in SQL_CHECKS.get(asset, []) + planned_checks(asset, SUITES_DIR)
        ]
