"""Sample-quality metrics."""
from .distances import class_energy_distance, energy_distance, precision_recall  # noqa: F401
from .frechet import feature_statistics, frechet_distance, frechet_distance_of  # noqa: F401
