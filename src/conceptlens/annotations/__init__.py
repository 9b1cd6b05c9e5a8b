"""Human concept annotations: which concepts truly hold for each class or image."""

from conceptlens.annotations.annotations import ConceptAnnotations, load_class_csv, load_image_csv
from conceptlens.annotations.loaders import load_awa2, load_celeba, load_cub

__all__ = ["ConceptAnnotations", "load_awa2", "load_celeba", "load_class_csv", "load_cub", "load_image_csv"]
