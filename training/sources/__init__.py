"""Data sources behind one reader interface (`training.ingest.DataReader`): files, or tables in BigQuery.

`open_reader(settings)` returns the reader of `settings.data`: `bq://project.dataset` → `BigQueryReader`
(aggregation pushed down to BigQuery), anything else → `CsvReader` over the store (folder or `gs://`). Both
return the same `RawData`, so validation and everything after cannot tell them apart.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from training.core.store import open_store

if TYPE_CHECKING:
    from training.config import Settings
    from training.ingest import DataReader


def open_reader(settings: Settings, as_of: datetime | None = None) -> DataReader:
    """Return the reader of `settings.data`; a BigQuery source reads its tables as they were at `as_of`."""
    from training.ingest import CsvReader

    if str(settings.data).startswith("bq://"):
        from training.sources.bigquery import BigQueryReader

        return BigQueryReader(str(settings.data), settings.bigquery, as_of=as_of)
    return CsvReader(open_store(settings.data))
