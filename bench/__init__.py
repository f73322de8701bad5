"""Benchmarks: saga engines vs. DBOS Transact vs. the raw Kafka limit (never run by pytest)."""
