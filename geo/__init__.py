"""Pure spatial helpers for civicmap: coordinate and bbox validation, synthetic data.

No Flask and no database session here: everything is plain, typed Python that
`service/` (through `sync/`) calls and that tests run without PostGIS.
"""
