"""Human concept annotations: which concepts truly hold for each class or image."""

from conceptlens.annotations.annotations import (
    ConceptAnnotations,
    class_level,
    load_class_csv,
    load_image_csv,
)
from conceptlens.annotations.fashion_mnist import attribute_rules, fashion_mnist_attributes, load_annotations
from conceptlens.annotations.loaders import load_awa2, load_celeba, load_cub

__all__ = [
    "ConceptAnnotations",
    "attribute_rules",
    "class_level",
    "fashion_mnist_attributes",
    "load_annotations",
    "load_awa2",
    "load_celeba",
    "load_class_csv",
    "load_cub",
    "load_image_csv",
]
