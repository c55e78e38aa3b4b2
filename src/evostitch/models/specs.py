"""One way to name a parent network: `SOURCE:NAME[?key=value&...]`.

Sources:
- `torchvision:resnet50`  torchvision's model builders, always with `weights=None`
  (nothing is downloaded at run time);
- `timm:NAME`            timm's `create_model(NAME, pretrained=False)` (needs timm);
- `demo:NAME`            evostitch's own small demo architectures (`evostitch.zoo`);
- `package.module:factory`  any importable callable returning an `nn.Module`.

Options after `?` become keyword arguments of the builder (`torchvision:resnet18?num_classes=10`).
Trained weights come from a separate file: safetensors, or a state dict readable by
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import ModelError
from .weights import load_weights, read_state_dict


def parse_options(text: str) -> dict[str, Any]:
    """`a=1&b=x&c=true` -> {"a": 1, "b": "x", "c": True}."""
    options: dict[str, Any] = {}
    for item in filter(None, text.split("&")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ModelError(f"bad option {item!r}: expected key=value")
        options[key] = _parse_value(value)
    return options


def _parse_value(value: str) -> Any:
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def split_spec(spec: str) -> tuple[str, str, dict[str, Any]]:
    """`torchvision:resnet18?num_classes=10` -> ("torchvision", "resnet18", {"num_classes": 10})."""
    head, _, query = spec.partition("?")
    source, sep, name = head.rpartition(":")
    if not sep or not source or not name:
        raise ModelError(
            f"bad model spec {spec!r}: expected SOURCE:NAME, e.g. torchvision:resnet50, "
            "timm:NAME, demo:resnet_like or package.module:factory"
        )
    return source, name, parse_options(query)


def build_model(spec: str) -> nn.Module:
    """Build the (untrained) network a spec names."""
    source, name, options = split_spec(spec)
    if source == "torchvision":
        model = _torchvision(name, options)
    elif source == "timm":
        model = _timm(name, options)
    elif source == "demo":
        from . import zoo

        if name not in zoo.DEMO_MODELS:
            known = ", ".join(sorted(zoo.DEMO_MODELS))
            raise ModelError(f"unknown demo model {name!r} (known: {known})")
        model = zoo.build_demo_model(name, **options)
    else:
        model = _factory(source, name, options)
    if not isinstance(model, nn.Module):
        raise ModelError(f"{spec!r} built a {type(model).__name__}, not a torch.nn.Module")
    return model


def _torchvision(name: str, options: dict[str, Any]) -> nn.Module:
    import torchvision

    if name not in torchvision.models.list_models():
        raise ModelError(
            f"unknown torchvision model {name!r} (see torchvision.models.list_models())"
        )
    builder = torchvision.models.get_model_builder(name)
    kwargs = {"weights": None, **options}
    if "weights_backbone" in inspect.signature(builder).parameters:
        kwargs.setdefault("weights_backbone", None)  # never download a backbone
    if kwargs["weights"] is not None:
        raise ModelError("torchvision weights are not downloaded: pass a weights file instead")
    return _call(builder, kwargs, f"torchvision:{name}")


def _timm(name: str, options: dict[str, Any]) -> nn.Module:
    try:
        import timm
    except ImportError as exc:
        raise ModelError("timm specs need timm: pip install 'evostitch[timm]'") from exc
    if not timm.list_models(name):
        raise ModelError(f"unknown timm model {name!r}")
    return _call(
        timm.create_model, {"model_name": name, "pretrained": False, **options}, f"timm:{name}"
    )


def _factory(module_name: str, attr: str, options: dict[str, Any]) -> nn.Module:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(f"cannot import {module_name!r}: {exc}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModelError(f"{module_name!r} has no callable {attr!r}")
    return _call(factory, options, f"{module_name}:{attr}")


def _call(builder: Any, kwargs: dict[str, Any], label: str) -> nn.Module:
    try:
        return builder(**kwargs)
    except TypeError as exc:
        raise ModelError(f"cannot build {label} with options {kwargs}: {exc}") from exc


def load_model(spec: str, weights: str | Path | None = None) -> nn.Module:
    """Build the network a spec names, load its weights if given, and put it in eval mode."""
    model = build_model(spec)
    if weights is not None:
        load_weights(model, read_state_dict(weights), spec)
    return model.eval()
