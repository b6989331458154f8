"""Names of the tables the Python steps publish (modeled tables are named by their SQL files).

They live here, not in the stages, because the warehouse's readers (the summary, the
catalog, the planners) name them too, and the warehouse imports no stage.
"""

RAW_EVENTS = "raw_events"
QUARANTINED_EVENTS = "quarantined_events"
FILE_LEDGER = "file_ledger"
EVENTS = "events"
EVENT_ID_CONFLICTS = "event_id_conflicts"

# Segment Spec call types: the values of ``type`` in raw_events and events.
EVENT_TYPES = ("track", "page", "screen", "identify", "group", "alias")
