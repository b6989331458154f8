"""The warehouse: Parquet published with write-audit-publish, the analysts' catalog, the summary.

Dagster-free and stage-free: every stage writes through it.
"""
