-- Events Parquet: the winning rows of every event date.
COPY (
    SELECT p.* EXCLUDE (file_row_number)
    FROM read_parquet('{work}/parsed.parquet', file_row_number = true) AS p
    SEMI JOIN winners AS w ON w.row_id = p.file_row_number
) TO '{work}/events.parquet' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE_BYTES '64MB');
