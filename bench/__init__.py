"""Benchmarks: how fast the project trains and scores on this machine and how well it
detects at a step budget (bench/runner.py drives the sections; script/benchmark.py is
the command), and the oneDNN crash reproduction (bench/repro_onednn.py)."""
