-- Parse: every line of the arrival days' landing files into typed rows, written once as
-- Parquet. Lines that are not JSON (or over 1 MiB) are skipped, rows without the required
-- fields dropped: no accounting, no quarantine, no schema validation.
-- {files}: the landing files (a list); {work}: the scratch directory.
COPY (
    WITH lines AS (
        SELECT *
        FROM read_json({files}, format = 'newline_delimited', ignore_errors = true,
            maximum_object_size = 1048576,
            columns = {messageId: 'VARCHAR', type: 'VARCHAR', event: 'VARCHAR', userId: 'VARCHAR',
                       anonymousId: 'VARCHAR', timestamp: 'VARCHAR', originalTimestamp: 'VARCHAR',
                       sentAt: 'VARCHAR', receivedAt: 'VARCHAR', properties: 'JSON', traits: 'JSON',
                       context: 'JSON'})
    ),
    typed AS (
        SELECT
            messageId AS message_id, type, nullif(event, '') AS event,
            nullif(userId, '') AS user_id, nullif(anonymousId, '') AS anonymous_id,
            coalesce(TRY_CAST(timestamp AS TIMESTAMPTZ), TRY(epoch_ms(TRY_CAST(timestamp AS BIGINT)))) AS ts,
            coalesce(TRY_CAST(originalTimestamp AS TIMESTAMPTZ),
                     TRY(epoch_ms(TRY_CAST(originalTimestamp AS BIGINT)))) AS original_timestamp,
            coalesce(TRY_CAST(sentAt AS TIMESTAMPTZ), TRY(epoch_ms(TRY_CAST(sentAt AS BIGINT)))) AS sent_at,
            coalesce(TRY_CAST(receivedAt AS TIMESTAMPTZ),
                     TRY(epoch_ms(TRY_CAST(receivedAt AS BIGINT)))) AS received_at,
            properties, traits, context
        FROM lines
    ),
    timed AS (
        SELECT *, coalesce(ts, received_at - (sent_at - original_timestamp), original_timestamp, received_at)
            AS event_ts
        FROM typed
    )
    SELECT message_id, type, event, user_id, anonymous_id, event_ts AS timestamp,
           CAST(event_ts AS DATE) AS event_date, received_at, sent_at, original_timestamp,
           properties, traits, context
    FROM timed
    WHERE message_id IS NOT NULL AND received_at IS NOT NULL
      AND coalesce(user_id, anonymous_id) IS NOT NULL
      AND type IN ('track', 'page', 'screen', 'identify', 'group', 'alias')
      AND (type <> 'track' OR event IS NOT NULL)
      AND event_ts >= TIMESTAMPTZ '2000-01-01 00:00:00+00' AND event_ts < TIMESTAMPTZ '2100-01-01 00:00:00+00'
) TO '{work}/parsed.parquet' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE_BYTES '64MB');
