"""Benchmarks: tinkex_actors vs the official ``tinker`` SDK vs bare-HTTP floors.

``python -m bench`` (``make bench``) runs every workload and prints one table; each module is
one workload (``sequential``, ``fanout``, ``encode``, ``pipelining``, ``footprint``,
``embedded``, ``transport``); ``server`` and ``engine`` measure the embedded server and the
torch engine alone. See ``bench/README.md``.
"""
