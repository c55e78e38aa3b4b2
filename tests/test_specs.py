import pytest
import torch
from safetensors.torch import save_file

from evostitch.errors import EvostitchError
from evostitch.models import specs


def test_torchvision_with_options():
    model = specs.load_model("torchvision:resnet18?num_classes=10")
    assert model.fc.out_features == 10 and not model.training


def test_factory_spec():
    model = specs.load_model("torch.nn:Identity")
    assert isinstance(model, torch.nn.Identity)


@pytest.mark.parametrize(
    "spec,needle",
    [
        ("torchvision:resnet999", "unknown torchvision model"),
        ("nonsense", "bad model spec"),
        ("no_such_pkg.mod:f", "cannot import"),
        ("torch.nn:NoSuchThing", "no callable"),
        ("torchvision:resnet18?bogus=1", "cannot build"),
    ],
)
def test_bad_specs_are_one_line(spec, needle):
    with pytest.raises(EvostitchError, match=needle) as err:
        specs.load_model(spec)
    assert "\n" not in str(err.value)


def test_weights_round_trip_safetensors_and_torch(tmp_path):
    src = specs.load_model("torchvision:resnet18?num_classes=3")
    state = {k: v.contiguous() for k, v in src.state_dict().items()}
    save_file(state, tmp_path / "w.safetensors")
    torch.save(state, tmp_path / "w.pt")
    x = torch.randn(2, 3, 32, 32)
    for name in ("w.safetensors", "w.pt"):
        model = specs.load_model("torchvision:resnet18?num_classes=3", tmp_path / name)
        with torch.no_grad():
            torch.testing.assert_close(model(x), src.eval()(x), rtol=0, atol=0)


def test_wrong_weights_are_one_line(tmp_path):
    state = specs.load_model("torchvision:resnet18?num_classes=3").state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "w.safetensors")
    with pytest.raises(EvostitchError, match="wrong shape") as err:
        specs.load_model("torchvision:resnet18", tmp_path / "w.safetensors")
    assert "\n" not in str(err.value)
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(EvostitchError, match="cannot read weights"):
        specs.load_model("torchvision:resnet18", tmp_path / "bad.safetensors")
    with pytest.raises(EvostitchError, match="not found"):
        specs.load_model("torchvision:resnet18", tmp_path / "missing.pt")
