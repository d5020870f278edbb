"""adroi training: ingest → validate → fit → evaluate → gate → publish → record.

Importing this package is cheap: the heavy stages (pandas, scikit-learn, matplotlib) are only imported by
the modules that need them, so the API can import `training.core.store` and `training.core.registry` alone.
"""
