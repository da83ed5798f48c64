"""The import path of pysyncq 0.0.1: ``from pysyncq import pysyncq as pq; pq.PySyncQ``."""

from .queue import PySyncQ

__all__ = ["PySyncQ"]
