"""The input preprocessing a pretrained parent was trained with, from its library.

torchvision's weight enums carry their transforms (resize, crop, mean, std,
interpolation); timm models carry a pretrained data config (input size, crop_pct, mean,
std, interpolation). Feeding a parent other statistics than its own shifts every feature
map, and so every stitch's target. Parents without pretrained weights have none.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .specs import split_spec


@dataclass(frozen=True)
class Preprocess:
    """Resize the shorter side to `resize`, centre-crop `crop`, normalise by `mean`/`std`."""

    resize: int
    crop: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"

    def options(self, size: int) -> dict[str, str]:
        """Image-folder dataset options for inputs of `size` (the resize keeps this
        preprocessing's crop ratio)."""
        nums = lambda v: ",".join(f"{x:.4g}" for x in v)  # noqa: E731
        return {
            "size": str(size),
            "resize": str(round(size * self.resize / self.crop)),
            "mean": nums(self.mean),
            "std": nums(self.std),
            "interpolation": self.interpolation,
        }

    def describe(self) -> str:
        m = ", ".join(f"{x:.3f}" for x in self.mean)
        s = ", ".join(f"{x:.3f}" for x in self.std)
        return (
            f"resize {self.resize}, crop {self.crop}, mean ({m}), std ({s}), {self.interpolation}"
        )


def preprocessing(spec: str | None, model: nn.Module | None = None) -> Preprocess | None:
    """The preprocessing of the pretrained weights a model spec names (None when it names
    none: random or file weights, code-named models; hf-hub models need `model`)."""
    if not isinstance(spec, str):
        return None
    source, name, options = split_spec(spec)
    if source == "torchvision" and options.get("weights"):
        from .hub import torchvision_weights

        tf = torchvision_weights(name, str(options["weights"])).transforms()
        mode = getattr(tf.interpolation, "value", str(tf.interpolation))
        return Preprocess(
            tf.resize_size[0], tf.crop_size[0], tuple(tf.mean), tuple(tf.std), str(mode)
        )
    pretrained = source == "hf-hub" or (source == "timm" and options.get("pretrained"))
    if pretrained:
        from timm.data import resolve_data_config, resolve_model_data_config
        from timm.models import get_pretrained_cfg

        if model is not None:
            cfg = resolve_model_data_config(model)
        elif source == "timm" and (known := get_pretrained_cfg(name)) is not None:
            cfg = resolve_data_config(pretrained_cfg=known.to_dict())
        else:
            return None
        crop = int(cfg["input_size"][-1])
        mode = cfg.get("interpolation", "bilinear")
        return Preprocess(
            int(crop / cfg.get("crop_pct", 1.0)),
            crop,
            tuple(cfg["mean"]),
            tuple(cfg["std"]),
            mode if mode in ("nearest", "bilinear", "bicubic") else "bilinear",
        )
    return None
