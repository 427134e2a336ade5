"""The mlx-lm model a conversion targets: the parameter names and shapes it expects, and
which of its layers mlx-lm would quantize. Parameters stay lazy and are never materialized."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlxserve.models.convert.errors import ConversionError


@dataclass
class TargetModel:
    model: Any  # an mlx_lm.models.<type>.Model, with lazy random parameters
    shapes: dict[str, tuple[int, ...]]
    quantizable: dict[str, Any] = field(default_factory=dict)  # module path -> module

    @classmethod
    def from_config(cls, config: dict) -> TargetModel:
        import mlx.nn as nn
        from mlx.utils import tree_flatten
        from mlx_lm.utils import _get_classes

        try:
            model_class, args_class = _get_classes(config)
            model = model_class(args_class.from_dict(config))
        except (ValueError, TypeError, KeyError) as error:
            raise ConversionError(
                f"mlx-lm cannot build a {config.get('model_type')!r} model: {error}"
            ) from error
        shapes = {name: tuple(p.shape) for name, p in tree_flatten(model.parameters())}
        quantizable = {
            path: module
            for path, module in model.named_modules()
            if hasattr(module, "to_quantized") and isinstance(module, nn.Module)
        }
        return cls(model, shapes, quantizable)

    def check(self, name: str, shape: tuple[int, ...]) -> None:
        """Fail on a tensor the model has no slot for, or a slot of another shape."""
        if name not in self.shapes:
            raise ConversionError(
                f"weight {name} has no place in mlx-lm's "
                f"{type(self.model).__module__.rsplit('.', 1)[-1]} model"
            )
        if tuple(shape) != self.shapes[name]:
            raise ConversionError(
                f"weight {name} has shape {tuple(shape)}, the model expects {self.shapes[name]}"
            )

    def check_complete(self, written: set[str]) -> None:
        # A tied lm_head is dropped by the model's sanitize when no lm_head.weight is present.
        missing = sorted(set(self.shapes) - written - {"lm_head.weight"})
        if missing:
            raise ConversionError(
                f"missing {len(missing)} weight(s) the model needs, e.g. {missing[0]}"
            )

    def quantization_for(self, weight_name: str, group_size: int) -> bool | dict:
        """What mlx-lm's quantize_model does with this weight: False, True or layer params."""
        path = weight_name.removesuffix(".weight")
        module = self.quantizable.get(path)
        if module is None or not weight_name.endswith(".weight"):
            return False
        if self.shapes[weight_name][-1] % group_size:
            return False
        predicate = getattr(self.model, "quant_predicate", None)
        return predicate(path, module) if predicate is not None else True
