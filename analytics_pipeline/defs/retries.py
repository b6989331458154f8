"""How a step retries: one ``RetryPolicy`` for every step of the pipeline, declared here only.

Every asset step (ingest, events, each model, the sketches, the metrics assets, the golden
queries) passes ``retry_policy=STEP_RETRY_POLICY``. A step that raises an unexpected error (an
``OSError`` from a network file system, a DuckDB I/O error, a full temp disk that was just
cleaned) is run again, up to 2 more times: after about 5 s, then about 15 s (exponential
backoff; +-5 s of jitter so parallel backfill runs do not retry in step). The step is safe to
repeat: it stages and publishes atomically, and republishing the same bytes changes nothing.

What is not retried, because running it again gives the same answer:

- a failed gate: ``defs/checks.py``'s ``failed_gate`` raises ``Failure(..., allow_retries=False)``,
  which Dagster never retries whatever the policy (one attempt, the step fails at once);
- a failed blocking asset check reported by a step (``golden_queries``' invariants): Dagster
  fails the step after it returns, outside the retried code.

A programming error (a bad SQL file) is retried too and fails 3 times, about 20 s later.
"""

from dagster import Backoff, Jitter, RetryPolicy

STEP_RETRY_POLICY = RetryPolicy(
    max_retries=2,
    delay=5,  # seconds before the first retry; the second waits 3x that (EXPONENTIAL: (2**n - 1) * delay)
    backoff=Backoff.EXPONENTIAL,
    jitter=Jitter.PLUS_MINUS,  # +- delay, so runs that failed together do not retry together
)
