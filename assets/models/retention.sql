/*
description: >
  Day-N retention of daily cohorts. Cohort D: the persons whose first event (person ids as
  person_events resolved them) is dated D, i.e. first_seen_date = D in the persons snapshot
  for D. The persons snapshot is what makes "no earlier event" decidable with a bounded read
  (it carries first_seen_date over all history); person_events itself is read only for
  activity, D .. D+30. A person is active on a day when person_events has an event of theirs
  dated that day (UTC). For N = 0..30: persons_on = cohort members active on D+N;
  persons_on_or_after = cohort members active on any day in [D+N, D+30] (the read window ends
  at D+30, so "or after" means up to D+30; non-increasing in N). No partial periods: the row
  for N exists only when the person_events partition D+N is published (a published day is
  complete; an unpublished day in the range has no row and contributes no activity). So the
  partition for D grows as later days land: rebuild D after each new person_events day up to
  D+30. The published days come from getvariable('person_events_partitions'), so an empty
  published day still counts as elapsed.
grain: one row per (cohort_date, period)
partitioned: daily
window:
  persons: [0, 0]
  person_events: [0, 30]
columns:
  cohort_date: The cohort's first-event date D (the partition).
  period: N, days since the cohort date (0..30).
  activity_date: D + N.
  cohort_size: Persons whose first event is dated D (BIGINT).
  persons_on: Cohort members active on D+N (BIGINT).
  persons_on_or_after: Cohort members active on any day D+N .. D+30 (BIGINT).
  retention_on: persons_on / cohort_size (DOUBLE; NULL for an empty cohort).
  retention_on_or_after: persons_on_or_after / cohort_size (DOUBLE; NULL for an empty cohort).
*/
WITH published AS (
    -- the published person_events days of this build's window (set by models.py)
    SELECT DISTINCT unnest(getvariable('person_events_partitions')) AS activity_date
),
periods AS (
    SELECT CAST(activity_date - getvariable('partition_date') AS BIGINT) AS period, activity_date
    FROM published
    WHERE activity_date BETWEEN getvariable('partition_date') AND getvariable('partition_date') + 30
),
cohort AS (
    SELECT DISTINCT person_id
    FROM persons
    WHERE first_seen_date = getvariable('partition_date') AND person_id IS NOT NULL
),
activity AS (
    SELECT DISTINCT e.person_id, e.event_date
    FROM person_events AS e
    JOIN cohort AS c ON c.person_id = e.person_id
    WHERE e.event_date BETWEEN getvariable('partition_date') AND getvariable('partition_date') + 30
),
last_active AS (
    SELECT person_id, max(event_date) AS last_date
    FROM activity
    GROUP BY person_id
),
counts AS (
    -- active on or after D+N within the window <=> last active date in the window >= D+N.
    -- count(person_id), never NULL here, equals count(*) and names the column the count is of,
    -- so the recorded column lineage traces it (a count(*) has no source column).
    SELECT
        p.period,
        p.activity_date,
        (SELECT count(a.person_id) FROM activity AS a WHERE a.event_date = p.activity_date) AS persons_on,
        (SELECT count(l.person_id) FROM last_active AS l WHERE l.last_date >= p.activity_date) AS persons_on_or_after
    FROM periods AS p
)
SELECT
    getvariable('partition_date') AS cohort_date,
    k.period,
    k.activity_date,
    CAST((SELECT count(person_id) FROM cohort) AS BIGINT) AS cohort_size,
    CAST(k.persons_on AS BIGINT) AS persons_on,
    CAST(k.persons_on_or_after AS BIGINT) AS persons_on_or_after,
    CAST(k.persons_on AS DOUBLE) / nullif((SELECT count(person_id) FROM cohort), 0) AS retention_on,
    CAST(k.persons_on_or_after AS DOUBLE) / nullif((SELECT count(person_id) FROM cohort), 0) AS retention_on_or_after
FROM counts AS k
ORDER BY k.period
