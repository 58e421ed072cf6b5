"""The pieces of `benchmarks/inference.py`: what is served, who serves it, the contest, the report.

A package rather than more scripts beside it, so that `benchmarks/*.py` stays the list of
benchmarks anyone can run; none of these modules runs on its own.
"""
