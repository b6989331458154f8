/*
description: >
  anonymousId -> userId links as of the end of the partition date: for each anonymousId,
  the userId of the earliest event (any type) that carried both, among events dated up to
  and including the partition date. Each partition is a full snapshot, built from the
  previous day's snapshot plus that day's events, so an old partition never changes when
  later data arrives.
grain: one row per anonymous_id (per snapshot date)
partitioned: daily
window:
  identities: [-1, -1]
  events: [0, 0]
columns:
  anonymous_id: {type: VARCHAR, description: The anonymousId.}
  user_id: {type: VARCHAR, description: The userId it is linked to.}
  first_linked_at: {type: TIMESTAMPTZ, description: Time of the earliest event carrying both ids.}
  linked_by_message_id: {type: VARCHAR, description: messageId of that event (ties on time broken by it).}
  as_of_date: {type: DATE, description: The snapshot date (the partition).}
*/
WITH candidates AS (
    SELECT anonymous_id, user_id, first_linked_at, linked_by_message_id
    FROM identities
    UNION ALL
    SELECT anonymous_id, user_id, timestamp, message_id
    FROM events
    WHERE anonymous_id IS NOT NULL AND user_id IS NOT NULL
)
SELECT
    anonymous_id,
    arg_min(user_id, (first_linked_at, linked_by_message_id)) AS user_id,
    min(first_linked_at) AS first_linked_at,
    arg_min(linked_by_message_id, (first_linked_at, linked_by_message_id)) AS linked_by_message_id,
    getvariable('partition_date') AS as_of_date
FROM candidates
GROUP BY anonymous_id
ORDER BY anonymous_id
