/*
description: >
  Cumulative person snapshot as of the end of the partition date: one row per person ever
  seen in person_events up to and including that date. Built incrementally: the partition
  for D is the snapshot for D-1 merged with person_events for D, so the event history is
  never re-read. Person ids are as person_events resolved them (as of each event's date);
  an anonymous person who later identifies keeps its own 'anonymous:<id>' row (ids are not
  merged retroactively), and the userId becomes a new person from its first event.
  latest_traits holds the traits of the person's latest identify call that carries traits,
  ordered by (timestamp, message_id); identify calls without traits are ignored, and a day
  without such a call keeps the previous value.
grain: one row per person_id (per snapshot date)
partitioned: daily
window:
  persons: [-1, -1]
  person_events: [0, 0]
columns:
  person_id: {type: VARCHAR, description: "Person id as resolved in person_events (userId, linked userId, or 'anonymous:<anonymousId>')."}
  first_seen: {type: TIMESTAMPTZ, description: Time of the person's earliest event.}
  last_seen: {type: TIMESTAMPTZ, description: Time of the person's latest event up to the snapshot date.}
  first_seen_date: {type: DATE, description: UTC date of first_seen.}
  last_seen_date: {type: DATE, description: UTC date of last_seen.}
  days_active: {type: BIGINT, description: Number of distinct UTC dates with at least one event of the person.}
  is_identified: {type: BOOLEAN, description: "True when person_id is a userId (does not start with 'anonymous:')."}
  latest_traits: {type: JSON, description: "Traits of the latest identify call with traits, by (timestamp, message_id); NULL if none yet."}
  as_of_date: {type: DATE, description: The snapshot date (the partition).}
*/
WITH today AS (
    SELECT
        person_id,
        min(timestamp) AS first_seen,
        max(timestamp) AS last_seen,
        min(event_date) AS first_seen_date,
        max(event_date) AS last_seen_date,
        count(DISTINCT event_date) AS days_active,
        arg_max(traits, (timestamp, message_id))
            FILTER (WHERE type = 'identify' AND traits IS NOT NULL) AS latest_traits
    FROM person_events
    WHERE person_id IS NOT NULL
    GROUP BY person_id
)
SELECT
    coalesce(t.person_id, p.person_id) AS person_id,
    least(p.first_seen, t.first_seen) AS first_seen,
    greatest(p.last_seen, t.last_seen) AS last_seen,
    least(p.first_seen_date, t.first_seen_date) AS first_seen_date,
    greatest(p.last_seen_date, t.last_seen_date) AS last_seen_date,
    CAST(coalesce(p.days_active, 0) + coalesce(t.days_active, 0) AS BIGINT) AS days_active,
    NOT starts_with(coalesce(t.person_id, p.person_id), 'anonymous:') AS is_identified,
    CAST(coalesce(t.latest_traits, p.latest_traits) AS JSON) AS latest_traits,
    getvariable('partition_date') AS as_of_date
FROM persons AS p
FULL OUTER JOIN today AS t ON t.person_id = p.person_id
ORDER BY person_id
