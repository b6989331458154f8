/*
description: >
  Every event with the person it belongs to, resolved as of the event date: the userId if
  the event has one; else the userId its anonymousId is linked to in that day's identities
  snapshot; else 'anonymous:' || anonymousId. The narrow event table every person-level
  model reads.
grain: one row per event (message_id)
partitioned: daily
window:
  events: [0, 0]
  identities: [0, 0]
columns:
  message_id: Segment messageId.
  person_id: userId, linked userId, or 'anonymous:<anonymousId>'.
  timestamp: Event time (UTC).
  event_date: UTC date of the event (the partition).
  type: Segment call type.
  event: Track event name (NULL for other types).
  page_path: Path of a page call (properties.path, else context.page.path).
  referrer: Referrer (properties.referrer, else context.page.referrer).
  traits: Identify traits (JSON).
  revenue: properties.revenue of an Order Completed event as DOUBLE (NULL otherwise, or when not a number).
  library: The client library that sent the event (context.library.name).
*/
SELECT
    e.message_id,
    coalesce(e.user_id, i.user_id, 'anonymous:' || e.anonymous_id) AS person_id,
    e.timestamp,
    e.event_date,
    e.type,
    e.event,
    CASE WHEN e.type = 'page'
        THEN coalesce(json_extract_string(e.properties, '$.path'), json_extract_string(e.context, '$.page.path'))
    END AS page_path,
    nullif(coalesce(json_extract_string(e.properties, '$.referrer'),
                    json_extract_string(e.context, '$.page.referrer')), '') AS referrer,
    e.traits,
    CASE WHEN e.type = 'track' AND e.event = 'Order Completed'
        THEN TRY_CAST(json_extract_string(e.properties, '$.revenue') AS DOUBLE)
    END AS revenue,
    json_extract_string(e.context, '$.library.name') AS library
FROM events AS e
LEFT JOIN identities AS i ON i.anonymous_id = e.anonymous_id
ORDER BY e.timestamp, e.message_id
