"""The paper's multitask models: a shared backbone + one ASPP head per task.

    from adapmtl.models import create_model
    model = create_model("deeplab_resnet34", {"segment_semantic": 40, "normal": 3, "depth_zbuffer": 1})

Each backbone file registers itself (`@register_model`); importing this package registers them.
"""
from adapmtl.models.aspp import ASPPHead
from adapmtl.models.errors import ModelError
from adapmtl.models.mobilenetv2 import MobileNetV2
from adapmtl.models.multitask import MultiTaskModel
from adapmtl.models.registry import available_models, create_model, register_model
from adapmtl.models.resnet import DeeplabResNet34

__all__ = [
    "ASPPHead",
    "DeeplabResNet34",
    "MobileNetV2",
    "ModelError",
    "MultiTaskModel",
    "available_models",
    "create_model",
    "register_model",
]
