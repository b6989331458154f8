"""Sample data: deterministic Segment-style landing files with every fault the pipeline must absorb."""
