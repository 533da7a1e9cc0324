"""Physical constants, each defined once for the whole package."""

from __future__ import annotations

__all__ = ["SPEED_OF_LIGHT"]

#: Speed of light in vacuum, m/s (exact, SI definition).
SPEED_OF_LIGHT: float = 299792458.0
