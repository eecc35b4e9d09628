"""`python -m engine.bench`: per-stage latency, throughput and peak memory of the engine.

Stages: detect (dlib, reported only), preprocess, network, decode, write, and the pipelined
network_decode and end_to_end, for every available runner and batch size. See
engine.bench.cli for the options and engine.bench.stages for what each stage measures.
"""
from engine.bench.cli import main

__all__ = ["main"]
