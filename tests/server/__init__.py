"""Tests of the embedded server (tinkex_actors.server)."""
