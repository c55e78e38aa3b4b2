"""One way to name a parent network: `SOURCE:NAME[?key=value&...]`.

Sources:
- `torchvision:resnet50[?weights=DEFAULT|IMAGENET1K_V2|...]`  torchvision's builders; with
  `weights`, its pretrained weights (from torch's hub cache, read without pickle);
- `timm:NAME[?pretrained=true]`  timm's `create_model` (needs timm); pretrained weights
  through timm's and Hugging Face's caches;
- `hf-hub:ORG/NAME`        a timm model from the Hugging Face hub, pretrained;
- `demo:NAME`              evostitch's own small demo architectures (`models.zoo`);
- `package.module:factory` any importable callable returning an `nn.Module`.

Options after `?` become keyword arguments of the builder (`torchvision:resnet18?num_classes=10`).
Trained weights may also come from a file: safetensors, or a state dict readable by
`torch.load(weights_only=True)`.

A `package.module:factory` spec names code: building it imports and calls that code. Specs
read from a folder someone sent are built only with `trust_code=True` (`--trust-code`);
the other sources name a library's architecture, whose options are plain values.
"""

from __future__ import annotations

import importlib
import inspect
import numbers
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelError
from . import hub
from .weights import Layout, layout, load_weights, read_state_dict

# what a builder raises for options it cannot use (a negative size, a float for an int...)
BUILD_ERRORS = (TypeError, ValueError, RuntimeError, ArithmeticError, AssertionError)


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


LIBRARY_SOURCES = ("torchvision", "timm", "hf-hub", "demo")


def names_code(spec: str) -> bool:
    """Whether building `spec` runs code it names (a `package.module:factory` spec)."""
    return split_spec(spec)[0] not in LIBRARY_SOURCES


def architecture_spec(spec: str, model: nn.Module | None = None) -> str:
    """A spec of the same architecture that fetches no pretrained weights (their tensors
    come from elsewhere, e.g. a supernetwork's folder). An `hf-hub:` model is named by the
    timm architecture and class count its hub config gave `model`."""
    source, name, options = split_spec(spec)
    if source == "hf-hub":
        cfg = getattr(model, "pretrained_cfg", None) or {}
        arch = cfg.get("architecture") or name.rpartition("/")[2]
        if getattr(model, "num_classes", None) is not None:
            options.setdefault("num_classes", model.num_classes)
        return f"timm:{arch}" + _query(options)
    key = {"timm": "pretrained", "torchvision": "weights"}.get(source)
    if key and options.pop(key, None) and source == "torchvision" and model is not None:
        # torchvision's builders change some arguments when given weights (GoogLeNet and
        # Inception v3 normalise their input and keep or drop their auxiliary heads)
        for arg in ("transform_input", "aux_logits"):
            if isinstance(getattr(model, arg, None), bool):
                options.setdefault(arg, getattr(model, arg))
        if any(arg in options for arg in ("transform_input", "aux_logits")):
            options.setdefault("init_weights", False)  # the weights come from elsewhere
    return f"{source}:{name}" + _query(options)


def _query(options: dict[str, Any]) -> str:
    return ("?" + "&".join(f"{k}={v}" for k, v in options.items())) if options else ""


def build_model(spec: str, *, trust_code: bool = True) -> nn.Module:
    """Build the network a spec names (pretrained where the spec asks for it).

    `trust_code=False` refuses a spec that names code (`names_code`) instead of running it.
    """
    source, name, options = split_spec(spec)
    if source not in LIBRARY_SOURCES and not trust_code:
        raise ModelError(
            f"{spec!r} names code ({source}.{name}): it runs only if you trust where it came "
            "from (--trust-code, trust_code=True)"
        )
    _check_sizes(spec, options)
    if source == "torchvision":
        model = _torchvision(name, options)
    elif source == "timm":
        model = _timm(name, options)
    elif source == "hf-hub":
        model = _timm(f"hf-hub:{name}", {**options, "pretrained": True})
    elif source == "demo":
        from . import zoo

        if name not in zoo.DEMO_MODELS:
            known = ", ".join(sorted(zoo.DEMO_MODELS))
            raise ModelError(f"unknown demo model {name!r} (known: {known})")
        build = zoo.build_demo_model
        model = _call(lambda **kw: build(name, **kw), options, f"demo:{name}", BUILD_ERRORS)
    else:
        model = _factory(source, name, options)
    if not isinstance(model, nn.Module):
        raise ModelError(f"{spec!r} built a {type(model).__name__}, not a torch.nn.Module")
    return model


def _check_sizes(spec: str, options: dict[str, Any]) -> None:
    """A class or channel count given as an option is a whole number (timm's
    `num_classes=0` drops the classifier); a builder would fail on it deep inside."""
    for key, least in (("num_classes", 0), ("in_channels", 1), ("in_chans", 1)):
        value = options.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
            raise ModelError(
                f"bad model spec {spec!r}: {key} must be a whole number >= {least}, not {value!r}"
            )


def model_layout(spec: str, *, trust_code: bool = True) -> Layout | None:
    """The layout of the state dict `spec` builds (names, dtypes, shapes), built on the
    meta device: no memory is taken however large the options make it, so stored
    weights can be checked against it first. None for a builder that cannot run on the
    meta device (one computing values while it builds) or that fails: building it for
    real then says why in one line."""
    try:
        with torch.device("meta"):
            model = build_model(spec, trust_code=trust_code)
        return layout(model.state_dict())
    except Exception:  # meta tensors hold no values; a bad spec fails again when built
        return None


def _torchvision(name: str, options: dict[str, Any]) -> nn.Module:
    import torchvision

    if name not in torchvision.models.list_models():
        raise ModelError(
            f"unknown torchvision model {name!r} (see torchvision.models.list_models())"
        )
    builder = torchvision.models.get_model_builder(name)
    kwargs = {"weights": None, **options}
    if "weights_backbone" in inspect.signature(builder).parameters:
        kwargs.setdefault("weights_backbone", None)  # the pretrained weights cover it
    if kwargs["weights"] is None:
        return _call(builder, kwargs, f"torchvision:{name}", BUILD_ERRORS)
    label = f"torchvision:{name}?weights={kwargs['weights']}"
    kwargs["weights"] = hub.torchvision_weights(name, str(kwargs["weights"]))
    return hub.pretrained(lambda: _call(builder, kwargs, label), label, torchvision=True)


def _timm(name: str, options: dict[str, Any]) -> nn.Module:
    try:
        import timm
    except ImportError as exc:
        raise ModelError("timm specs need timm: pip install 'evostitch[timm]'") from exc
    hub_name = name.startswith("hf-hub:")
    if not hub_name and not timm.is_model(name.partition(".")[0]):
        raise ModelError(f"unknown timm model {name!r} (see timm.list_models())")
    kwargs = {"model_name": name, "pretrained": False, **options}
    label = name if hub_name else f"timm:{name}"
    if not kwargs["pretrained"]:
        return _call(timm.create_model, kwargs, label, BUILD_ERRORS)
    return hub.pretrained(lambda: _call(timm.create_model, kwargs, label), label)


def _factory(module_name: str, attr: str, options: dict[str, Any]) -> nn.Module:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(f"cannot import {module_name!r}: {exc}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModelError(f"{module_name!r} has no callable {attr!r}")
    return _call(factory, options, f"{module_name}:{attr}", BUILD_ERRORS)


def _call(
    builder: Any,
    kwargs: dict[str, Any],
    label: str,
    errors: tuple[type[BaseException], ...] = (TypeError,),
) -> nn.Module:
    """`builder(**kwargs)`; `errors` become one ModelError line (a pretrained builder's
    other errors are left to `hub.pretrained`, which says how to fetch the weights)."""
    try:
        return builder(**kwargs)
    except ModelError:
        raise
    except errors as exc:
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ModelError(f"cannot build {label} with options {kwargs}: {why}") from exc


def load_model(
    spec: str, weights: str | Path | None = None, *, trust_code: bool = True
) -> nn.Module:
    """Build the network a spec names, load its weights if given, and put it in eval mode."""
    model = build_model(spec, trust_code=trust_code)
    if weights is not None:
        load_weights(model, read_state_dict(weights), spec)
    return model.eval()
