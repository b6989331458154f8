/*
description: >
  Active-person counts for the partition date D. A person is active on a day when
  person_events has at least one event of theirs dated that day (person ids as resolved in
  person_events). Exactly one row per built day, also when D has no events (dau = 0; wau
  and mau still count the trailing days). new_persons and returning_persons use the persons
  snapshot for D, so dau = new_persons + returning_persons.
grain: one row per activity_date
partitioned: daily
window:
  person_events: [-29, 0]
  persons: [0, 0]
columns:
  activity_date: The day D (the partition).
  dau: Distinct persons with an event on D.
  wau: Distinct persons with an event in the 7 days D-6..D.
  mau: Distinct persons with an event in the 30 days D-29..D.
  new_persons: Persons whose first_seen_date is D (from the persons snapshot for D).
  returning_persons: Persons active on D whose first_seen_date is before D.
  stickiness: dau / mau as DOUBLE; 0 when mau is 0.
*/
WITH active AS (
    SELECT DISTINCT person_id, event_date
    FROM person_events
    WHERE person_id IS NOT NULL
      AND event_date BETWEEN getvariable('partition_date') - 29 AND getvariable('partition_date')
),
counts AS (
    SELECT
        count(DISTINCT a.person_id) FILTER (WHERE a.event_date = getvariable('partition_date')) AS dau,
        count(DISTINCT a.person_id) FILTER (WHERE a.event_date >= getvariable('partition_date') - 6) AS wau,
        count(DISTINCT a.person_id) AS mau,
        count(DISTINCT a.person_id) FILTER (
            WHERE a.event_date = getvariable('partition_date')
              AND p.first_seen_date < getvariable('partition_date')
        ) AS returning_persons
    FROM active AS a
    LEFT JOIN persons AS p ON p.person_id = a.person_id
),
new AS (
    SELECT count(*) AS new_persons
    FROM persons
    WHERE first_seen_date = getvariable('partition_date')
)
SELECT
    getvariable('partition_date') AS activity_date,
    c.dau,
    c.wau,
    c.mau,
    n.new_persons,
    c.returning_persons,
    CASE WHEN c.mau = 0 THEN CAST(0 AS DOUBLE) ELSE CAST(c.dau AS DOUBLE) / c.mau END AS stickiness
FROM counts AS c
CROSS JOIN new AS n
