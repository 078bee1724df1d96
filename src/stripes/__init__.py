"""stripes: structure-informed positional encoding for efficient music generation."""

__version__ = "0.1.0"
