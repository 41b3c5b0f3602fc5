"""Sample-quality metrics."""
from .distances import class_energy_distance, energy_distance  # noqa: F401
