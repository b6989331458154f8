"""The ingest stage: landing files of one arrival day -> raw_events, quarantined_events, file_ledger."""
