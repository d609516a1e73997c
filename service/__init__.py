"""payrelay: the receiver and the shared contract."""

__version__ = "0.1.0"
