"""Tests of tinkex_actors.transport (HTTP pools, headers, retries, errors, streaming)."""
