"""The `make demo` job (see ``python -m tinkex_actors.demo``)."""
