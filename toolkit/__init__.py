"""Research-to-production toolkit for a digital-asset trading desk."""

__version__ = "0.1.0"
__all__ = ["__version__"]
