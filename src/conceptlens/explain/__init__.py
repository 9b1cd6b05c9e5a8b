"""Why a model decided: concept contributions, and how faithful they are."""

from .contributions import Contribution, class_weights, contributions, explain_image, top_images
from .faithfulness import deletion_curves

__all__ = ["Contribution", "class_weights", "contributions", "deletion_curves", "explain_image",
           "top_images"]
