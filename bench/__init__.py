"""Benchmarks of rdebug_nb's loading path against real-shaped data.

``python -m bench`` (``make bench``) runs the full plan and writes its tables
into ``bench/README.md``; ``python -m bench --quick`` runs small sizes once and
only prints (CI runs it through ``tests/test_bench.py``).
"""
