/*
description: Events and distinct persons per call type and event name, per day.
grain: one row per (event_date, type, event_name)
partitioned: daily
columns:
  event_date: The day (UTC).
  type: Segment call type.
  event_name: Track event name; for other types the type itself (page, identify, ...).
  events: Number of events.
  persons: Distinct persons with such an event that day.
*/
SELECT
    getvariable('partition_date') AS event_date,
    type,
    coalesce(event, type) AS event_name,
    count(*) AS events,
    count(DISTINCT person_id) AS persons
FROM person_events
GROUP BY type, coalesce(event, type)
ORDER BY type, event_name
