/*
description: >
  Sessions: one person's activity split where it pauses. Take a person's events ordered by
  timestamp, then message_id. A run is a maximal sequence of them in which every gap between
  consecutive events is at most 30 minutes (a gap of exactly 1800 s stays in the run; anything
  over 1800 s starts a new one). A run is then cut every 24 hours measured from its first event:
  the event at offset t seconds after the run's first event belongs to piece floor(t / 86400).
  Each piece is a session. A session belongs whole to the UTC date of its first event, even
  when it crosses midnight. Partition D reads person_events D-1 .. D+1: D-1 to know whether
  D's first events continue a run begun the day before, D+1 to finish sessions that cross
  midnight (a session lasts under 24 h, so it ends by D+1). Only the persons with an event on D
  go into the ordering (no one else can have a session starting on D): the neighbours' other
  persons cost a scan of person_id, not a sort. The one approximation: a run of
  continuous activity (no gap over 30 min) that began before D-1 is anchored at the start of
  the read window (its first event on D-1), so its 24-hour cuts on D may differ from a build
  that saw the whole run. D's sessions need person_events D+1: rebuild D once D+1 exists.
grain: one row per session (person_id, started_at)
partitioned: daily
window:
  person_events: [-1, 1]
parameters:
  session_gap_seconds: 1800  # the inactivity gap that ends a run; the flag sessions_gap_20m sets 1200
columns:
  session_id: md5(person_id || '|' || started_at as 'YYYY-MM-DDTHH:MM:SS.ffffffZ' (UTC)).
  person_id: The person (person_events.person_id).
  session_date: UTC date of the session's first event (the partition).
  started_at: Time of the session's first event (UTC).
  ended_at: Time of the session's last event (UTC).
  duration_s: ended_at - started_at in seconds (DOUBLE; 0 for a one-event session).
  event_count: Events in the session (all call types).
  page_views: Page calls in the session.
  landing_path: page_path of the session's first page call (NULL without page calls).
  exit_path: page_path of the session's last page call (NULL without page calls).
  referrer: Referrer of the session's first event that has one.
  is_bounce: Exactly one event and it is a page call (event_count = 1 AND page_views = 1).
  is_engaged: >
    duration_s > 10, or page_views >= 2, or any track event named in
    getvariable('conversion_events').
*/
WITH persons_of_the_day AS (  -- a session starting on D is a person's with an event on D
    SELECT DISTINCT person_id
    FROM person_events
    WHERE event_date = getvariable('partition_date')
),
ordered AS (
    SELECT
        person_id,
        message_id,
        timestamp,
        type,
        event,
        page_path,
        referrer,
        epoch_us(timestamp) AS ts_us,
        epoch_us(timestamp) - lag(epoch_us(timestamp)) OVER (
            PARTITION BY person_id ORDER BY timestamp, message_id
        ) AS gap_us
    FROM person_events
    WHERE person_id IN (SELECT person_id FROM persons_of_the_day)
),
runs AS (
    SELECT
        *,
        sum(CASE WHEN gap_us IS NULL OR gap_us > CAST(getvariable('session_gap_seconds') AS BIGINT) * 1000000
            THEN 1 ELSE 0 END) OVER (
            PARTITION BY person_id ORDER BY timestamp, message_id ROWS UNBOUNDED PRECEDING
        ) AS run_no
    FROM ordered
),
pieces AS (
    SELECT
        *,
        (ts_us - min(ts_us) OVER (PARTITION BY person_id, run_no)) // 86400000000 AS piece_no
    FROM runs
),
per_session AS (
    SELECT
        person_id,
        min(timestamp) AS started_at,
        max(timestamp) AS ended_at,
        (max(ts_us) - min(ts_us)) / 1e6 AS duration_s,
        count(*) AS event_count,
        count(*) FILTER (WHERE type = 'page') AS page_views,
        first(page_path ORDER BY timestamp, message_id) FILTER (WHERE type = 'page') AS landing_path,
        last(page_path ORDER BY timestamp, message_id) FILTER (WHERE type = 'page') AS exit_path,
        first(referrer ORDER BY timestamp, message_id) FILTER (WHERE referrer IS NOT NULL) AS referrer,
        coalesce(bool_or(list_contains(getvariable('conversion_events'), event)), false) AS has_conversion
    FROM pieces
    GROUP BY person_id, run_no, piece_no
)
SELECT
    md5(person_id || '|' || strftime(started_at AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%S.%fZ')) AS session_id,
    person_id,
    CAST(started_at AT TIME ZONE 'UTC' AS DATE) AS session_date,
    started_at,
    ended_at,
    CAST(duration_s AS DOUBLE) AS duration_s,
    event_count,
    page_views,
    landing_path,
    exit_path,
    referrer,
    event_count = 1 AND page_views = 1 AS is_bounce,
    duration_s > 10 OR page_views >= 2 OR has_conversion AS is_engaged
FROM per_session
WHERE CAST(started_at AT TIME ZONE 'UTC' AS DATE) = getvariable('partition_date')
ORDER BY started_at, person_id
