"""Sample-quality metrics."""
from .distances import energy_distance  # noqa: F401
