"""The old import path of the answering engine, kept because MLflow models logged before the
subpackages import ``deflate.engine`` in their pyfunc; new code imports
:mod:`deflate.answering.engine`. Nothing in the package imports this module."""
from deflate.answering.engine import Deflate

__all__ = ["Deflate"]
