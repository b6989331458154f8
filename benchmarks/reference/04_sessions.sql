-- Sessions: a person's events split at gaps over 30 minutes, one row per session.
COPY (
    WITH e AS (
        SELECT coalesce(user_id, 'anonymous:' || anonymous_id) AS person_id, message_id, timestamp, type
        FROM read_parquet('{work}/events.parquet')
    ),
    gaps AS (
        SELECT *, CASE WHEN epoch_us(timestamp) - lag(epoch_us(timestamp)) OVER w <= 1800000000
                       THEN 0 ELSE 1 END AS starts
        FROM e WINDOW w AS (PARTITION BY person_id ORDER BY timestamp, message_id)
    ),
    numbered AS (
        SELECT *, sum(starts) OVER (PARTITION BY person_id ORDER BY timestamp, message_id
                                    ROWS UNBOUNDED PRECEDING) AS session_no
        FROM gaps
    )
    SELECT person_id, min(timestamp) AS started_at, max(timestamp) AS ended_at,
           CAST(min(timestamp) AS DATE) AS session_date, count(*) AS event_count,
           count(*) FILTER (WHERE type = 'page') AS page_views
    FROM numbered
    GROUP BY person_id, session_no
) TO '{work}/sessions.parquet' (FORMAT parquet, COMPRESSION zstd);
