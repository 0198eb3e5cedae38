"""Analyses of a fitted run directory: what predicts what, how groups differ, which clusters
co-occur, how good the labels are, how clusters nest, and how stable they are.

Each analysis is a function returning a pandas DataFrame and writing
``analysis_<name>.parquet`` into the run directory.
"""
