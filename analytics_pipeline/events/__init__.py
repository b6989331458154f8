"""The events stage: raw_events of an event date and its late window -> deduplicated events."""
