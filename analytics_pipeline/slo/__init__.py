"""SLOs: golden queries with latency SLOs and invariants, data-latency SLOs, percentiles."""
