"""Analysts' access: a read-only DuckDB connection to the published modeled tables, with guardrails.

```python
from analytics_pipeline.analyst import connect
con = connect()                       # PipelineSettings(): ANALYTICS_DATA_DIR etc., ./data by default
con.df("SELECT * FROM daily_active_users ORDER BY activity_date")
```

See :mod:`analytics_pipeline.analyst.connection` for what is refused and how DuckDB enforces it.
"""

from analytics_pipeline.analyst.connection import (
    AnalystConnection,
    AnalystQueryError,
    QueryRefused,
    QueryTimeout,
    RowLimitWarning,
    allowed_tables,
    connect,
)

__all__ = [
    "AnalystConnection",
    "AnalystQueryError",
    "QueryRefused",
    "QueryTimeout",
    "RowLimitWarning",
    "allowed_tables",
    "connect",
]
