"""A fitted model outside the package: a `torch.nn.Module` from image to logits and concepts, one
ONNX file of the whole model, a `save_pretrained` / `from_pretrained` folder with a model card, and
its upload to the Hugging Face Hub (docs/guides/export.md)."""

from .hub import push_to_hub
from .onnx_export import OnnxModel, export_onnx
from .pretrained import from_pretrained, model_card, read_card, save_pretrained
from .torch_module import ExportedModel, export_torch, image_encoder, torch_head

__all__ = ["ExportedModel", "OnnxModel", "export_onnx", "export_torch", "from_pretrained", "image_encoder",
           "model_card", "push_to_hub", "read_card", "save_pretrained", "torch_head"]
