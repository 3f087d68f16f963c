"""The offline batch-sync protocol as plain data and decisions (no Flask, no DB session)."""
