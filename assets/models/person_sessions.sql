/*
description: >
  Each person's first and last session as of the partition date: a running snapshot built
  from the previous day's snapshot plus the sessions that started on D, so the users
  dimension gets first/last session without reading the session history.
grain: one row per person_id (per snapshot date)
partitioned: daily
window:
  person_sessions: [-1, -1]
  sessions: [0, 0]
columns:
  person_id: {type: VARCHAR, description: The person (as in sessions).}
  first_session_id: {type: VARCHAR, description: session_id of the person's earliest session.}
  first_session_started_at: {type: TIMESTAMPTZ, description: Its start time.}
  last_session_id: {type: VARCHAR, description: session_id of the person's latest session.}
  last_session_started_at: {type: TIMESTAMPTZ, description: Its start time.}
  sessions: {type: BIGINT, description: Sessions of the person up to and including D.}
  as_of_date: {type: DATE, description: The snapshot date (the partition).}
*/
WITH candidates AS (
    SELECT person_id, first_session_id, first_session_started_at, last_session_id,
           last_session_started_at, sessions
    FROM person_sessions
    UNION ALL
    SELECT person_id, session_id, started_at, session_id, started_at, 1
    FROM sessions
)
SELECT
    person_id,
    arg_min(first_session_id, (first_session_started_at, first_session_id)) AS first_session_id,
    min(first_session_started_at) AS first_session_started_at,
    arg_max(last_session_id, (last_session_started_at, last_session_id)) AS last_session_id,
    max(last_session_started_at) AS last_session_started_at,
    CAST(sum(sessions) AS BIGINT) AS sessions,
    getvariable('partition_date') AS as_of_date
FROM candidates
GROUP BY person_id
ORDER BY person_id
