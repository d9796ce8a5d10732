"""gofau: the Generic Optimization Framework for Alternative Updates (Kirtas et al., 2024)."""

__version__ = "0.1.0"
