"""HeyGem: a self-hosted lip-sync studio."""

__version__ = "0.1.0"
