-- Daily active users: distinct persons per event date.
COPY (
    SELECT CAST(timestamp AS DATE) AS activity_date,
           count(DISTINCT coalesce(user_id, 'anonymous:' || anonymous_id)) AS dau
    FROM read_parquet('{work}/events.parquet')
    GROUP BY 1 ORDER BY 1
) TO '{work}/daily_active_users.parquet' (FORMAT parquet);
