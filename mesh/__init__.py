"""The mesh's shared runtime: everything every process needs, in one place."""

__version__ = "0.1.0"
