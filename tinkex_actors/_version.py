"""The package version (single source; read by hatchling and by ``tinkex version``)."""

__version__ = "0.1.0.dev0"
