"""Product-analytics ELT pipeline: raw event files -> gated, deduplicated events -> modeled tables."""

from analytics_pipeline.memory import use_system_allocator

use_system_allocator()  # every step's Arrow memory is returned when freed (memory.py)
