"""Pretrained weights through the libraries' own caches, read without pickle.

torchvision keeps its weights in torch's hub cache (`~/.cache/torch/hub/checkpoints`,
`$TORCH_HOME`), timm and the Hugging Face hub in Hugging Face's cache
(`~/.cache/huggingface`, `$HF_HOME`). Online, what is missing is downloaded once into
them; offline, one line says what is missing and how to do without it.
torchvision reads its files with `torch.load(weights_only=False)`; here they are read
with `weights_only=True` (no pickle code runs).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

from torch import nn

from ..errors import ModelError

_PATCH = threading.Lock()
_OFFLINE_HINT = (
    "offline? download it once where there is a network (it goes into the library's cache), "
    "or pass the weights as a file (--a-weights/--b-weights/--parent-weights, weights=[...])"
)


@contextlib.contextmanager
def _weights_only_torchvision() -> Iterator[None]:
    """torchvision's pretrained builders, reading their files with weights_only=True."""
    from torch.hub import load_state_dict_from_url
    from torchvision.models._api import WeightsEnum

    def get_state_dict(self: WeightsEnum, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return load_state_dict_from_url(self.url, *args, **{**kwargs, "weights_only": True})

    with _PATCH:
        original = WeightsEnum.get_state_dict
        WeightsEnum.get_state_dict = get_state_dict
        try:
            yield
        finally:
            WeightsEnum.get_state_dict = original


def torchvision_weights(name: str, weights: str) -> Any:
    """The weights enum member `weights` (e.g. DEFAULT, IMAGENET1K_V2) of model `name`."""
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError):
        raise ModelError(f"torchvision model {name!r} has no pretrained weights") from None
    if weights == "DEFAULT":
        return enum.DEFAULT
    try:
        return enum[weights]
    except KeyError:
        known = ", ".join(["DEFAULT", *enum.__members__])
        raise ModelError(
            f"torchvision:{name} has no weights {weights!r} (known: {known})"
        ) from None


def pretrained(build: Callable[[], nn.Module], label: str, torchvision: bool = False) -> nn.Module:
    """`build()` a model whose builder fetches pretrained weights; fetch failures (offline,
    missing file, damaged download) become one ModelError line."""
    try:
        with _weights_only_torchvision() if torchvision else contextlib.nullcontext():
            return build()
    except ModelError:
        raise
    except Exception as exc:  # URLError, HF hub errors, unpickling refused...
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ModelError(
            f"cannot get the pretrained weights of {label} ({type(exc).__name__}: {why}): "
            + _OFFLINE_HINT
        ) from None
