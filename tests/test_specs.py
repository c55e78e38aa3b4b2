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


def test_architecture_spec_keeps_what_pretrained_weights_changed():
    """torchvision's inception_v3 with weights normalises its input (transform_input): the
    architecture rebuilt without weights must do the same."""
    import torchvision

    from evostitch.models import architecture_spec, load_model

    torch.manual_seed(0)
    weighted = torchvision.models.inception_v3(
        weights=None, transform_input=True, aux_logits=True, init_weights=False
    ).eval()  # what the builder makes of weights=IMAGENET1K_V1
    spec = architecture_spec("torchvision:inception_v3?weights=IMAGENET1K_V1", weighted)
    options = spec.partition("?")[2].split("&")
    assert not any(o.startswith("weights=") for o in options) and "transform_input=True" in options
    rebuilt = load_model(spec)
    rebuilt.load_state_dict(weighted.state_dict())
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), weighted(x))
    plain = architecture_spec(
        "torchvision:resnet18?weights=DEFAULT", load_model("demo:resnet_like")
    )
    assert plain == "torchvision:resnet18"
    assert architecture_spec("timm:resnet18.a1_in1k?pretrained=true") == "timm:resnet18.a1_in1k"
