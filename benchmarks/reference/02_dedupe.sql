-- Dedupe: one row per (event date, messageId), the copy received first. Only the narrow
-- columns are ranked; the row's position in the parsed file identifies the winner.
CREATE TABLE winners AS
SELECT arg_min(file_row_number, (received_at, file_row_number)) AS row_id
FROM read_parquet('{work}/parsed.parquet', file_row_number = true)
GROUP BY event_date, message_id;
