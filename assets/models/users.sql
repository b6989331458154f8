/*
description: >
  User dimension: one row per person, the latest cumulative persons snapshot as it stands
  (first/last seen, identified or not, latest identify traits, days active) with the
  person's first and last session from the latest person_sessions snapshot. Rebuilt
  incrementally in the sense that it reads only the newest published snapshots, never the
  event or session history. A person seen only on a day whose sessions are not built yet
  has NULL session columns.
grain: one row per person_id
partitioned: none
window:
  persons: latest
  person_sessions: latest
columns:
  person_id: "Person id as resolved in person_events (userId, linked userId, or 'anonymous:<anonymousId>')."
  first_seen: Time of the person's earliest event.
  last_seen: Time of the person's latest event.
  first_seen_date: UTC date of first_seen.
  last_seen_date: UTC date of last_seen.
  days_active: Number of distinct UTC dates with at least one event of the person.
  is_identified: "True when person_id is a userId (does not start with 'anonymous:')."
  latest_traits: Traits of the latest identify call with traits, by (timestamp, message_id); NULL if none.
  first_session_id: session_id of the person's first session (NULL if none built yet).
  last_session_id: session_id of the person's latest session.
  sessions: Sessions of the person so far.
  as_of_date: Date of the persons snapshot this was built from.
*/
SELECT
    p.person_id,
    p.first_seen,
    p.last_seen,
    p.first_seen_date,
    p.last_seen_date,
    p.days_active,
    p.is_identified,
    p.latest_traits,
    s.first_session_id,
    s.last_session_id,
    coalesce(s.sessions, 0) AS sessions,
    p.as_of_date
FROM persons AS p
LEFT JOIN person_sessions AS s ON s.person_id = p.person_id
ORDER BY p.person_id
