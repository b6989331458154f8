/*
description: >
  User dimension: one row per person, the latest cumulative persons snapshot as it stands
  (first/last seen, identified or not, latest identify traits, days active). Rebuilt
  incrementally in the sense that it reads only the newest published persons partition,
  never the event history. First/last session ids are left out on purpose: sessions are
  modeled elsewhere, and this table does not depend on them.
grain: one row per person_id
partitioned: none
window:
  persons: latest
columns:
  person_id: "Person id as resolved in person_events (userId, linked userId, or 'anonymous:<anonymousId>')."
  first_seen: Time of the person's earliest event.
  last_seen: Time of the person's latest event.
  first_seen_date: UTC date of first_seen.
  last_seen_date: UTC date of last_seen.
  days_active: Number of distinct UTC dates with at least one event of the person.
  is_identified: "True when person_id is a userId (does not start with 'anonymous:')."
  latest_traits: Traits of the latest identify call with traits, by (timestamp, message_id); NULL if none.
  as_of_date: Date of the persons snapshot this was built from.
*/
SELECT
    person_id,
    first_seen,
    last_seen,
    first_seen_date,
    last_seen_date,
    days_active,
    is_identified,
    latest_traits,
    as_of_date
FROM persons
ORDER BY person_id
