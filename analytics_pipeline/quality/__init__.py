"""Quality gates: what a staged partition must satisfy before it is published.

Dagster-free; every stage uses it. ``outcomes`` is the shared vocabulary, ``sql_checks``
the SQL invariants, ``suites`` and ``gates`` the expectation suites with the volume and
schema-drift policies, ``gate_status`` the latest result per partition, ``freshness``
the promises of ``checks/freshness.yml``.
"""
