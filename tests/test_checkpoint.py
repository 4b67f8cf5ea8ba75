"""Stage-1 checkpoints: cuts.checkpoint (safetensors + JSON metadata, atomic, never unpickles)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import cuts
from cuts.checkpoint import CheckpointError, default_model_path, load_model, save_model
from cuts.model import CutsModel, Encoder


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def img():
    return np.random.default_rng(0).integers(0, 255, (24, 30)).astype(np.uint8)


@pytest.fixture(scope="module")
def model(img):
    return cuts.train([img], steps=3, batch_size=2, anchors_per_image=4, seed=0, device="cpu")


@pytest.fixture
def saved(model, tmp_path):
    return save_model(model, tmp_path / "m.safetensors")


def _tensors(model):
    out = {"encoder." + k: v for k, v in model.encoder.state_dict().items()}
    out.update({"head." + k: v for k, v in model.head.state_dict().items()})
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def test_round_trip(model, img, saved):
    assert saved.is_file()
    loaded = load_model(saved)
    a, b = _tensors(model), _tensors(loaded)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    np.testing.assert_array_equal(cuts.embed(model, img), cuts.embed(loaded, img))
    assert not loaded.encoder.training
    assert loaded.in_channels == 1
    assert loaded.device.type == "cpu"
    assert load_model(saved, device="auto").device.type in ("cpu", "cuda", "mps")


def test_metadata_preserved_as_json(model, saved):
    loaded = load_model(saved)
    expected = json.loads(json.dumps(model.metadata))
    assert loaded.metadata == expected
    assert loaded.metadata["training"]["steps_done"] == 3
    with safe_open(str(saved), framework="pt") as f:
        header = f.metadata()
    assert json.loads(header["cuts"]) == expected


def test_rgb_round_trip(tmp_path):
    m = CutsModel.create(3, seed=1)
    p = save_model(m, tmp_path / "rgb.safetensors")
    loaded = load_model(p, in_channels=3)
    assert loaded.in_channels == 3
    rgb = np.random.default_rng(1).random((20, 21, 3)).astype(np.float32)
    np.testing.assert_array_equal(cuts.embed(m, rgb), cuts.embed(loaded, rgb))


def test_atomic_save_leaves_no_temp_files(model, tmp_path):
    save_model(model, tmp_path / "a.safetensors")
    save_model(model, tmp_path / "a.safetensors")  # overwrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors"]


def test_overwrite_false(model, saved):
    before = saved.read_bytes()
    with pytest.raises(FileExistsError):
        save_model(CutsModel.create(1, seed=9), saved, overwrite=False)
    assert saved.read_bytes() == before


def test_save_into_missing_folder(model, tmp_path):
    with pytest.raises(FileNotFoundError):
        save_model(model, tmp_path / "nope" / "m.safetensors")


def test_failing_save_leaves_existing_file_untouched(model, saved, monkeypatch):
    import safetensors.torch

    before = saved.read_bytes()

    def broken(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half written")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save_model(CutsModel.create(1, seed=7), saved)
    assert saved.read_bytes() == before
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]
    load_model(saved)  # still a good checkpoint


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointError):
        load_model(tmp_path)  # a folder


@pytest.mark.parametrize("content", [b"", b"\x00" * 7, np.random.default_rng(3).bytes(4096), b"{\"a\": 1}"])
def test_corrupt_bytes(tmp_path, content):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a readable CUTS checkpoint"):
        load_model(p)


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999])
def test_truncated(saved, keep):
    data = saved.read_bytes()
    saved.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(saved)


def test_foreign_safetensors(tmp_path):
    p = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(3, 3)}, str(p))
    with pytest.raises(CheckpointError, match="not a CUTS checkpoint"):
        load_model(p)
    save_file({"weight": torch.zeros(3, 3)}, str(p), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="not a CUTS checkpoint"):
        load_model(p)


def _write(path, tensors, meta):
    save_file(tensors, str(path), metadata={"cuts": meta if isinstance(meta, str) else json.dumps(meta)})
    return path


@pytest.mark.parametrize("meta", ["{not json", "[1, 2]", "\"text\""])
def test_corrupt_metadata(tmp_path, model, meta):
    p = _write(tmp_path / "m.safetensors", _tensors(model), meta)
    with pytest.raises(CheckpointError, match="corrupt CUTS metadata"):
        load_model(p)


def test_wrong_architecture(tmp_path, model):
    meta = {**model.metadata, "architecture": "unet-v9"}
    p = _write(tmp_path / "m.safetensors", _tensors(model), meta)
    with pytest.raises(CheckpointError, match="unet-v9"):
        load_model(p)
    meta.pop("architecture")
    _write(p, _tensors(model), meta)
    with pytest.raises(CheckpointError, match="architecture"):
        load_model(p)


@pytest.mark.parametrize("bad", [0, -1, "three", None, 1.0])
def test_invalid_in_channels_metadata(tmp_path, model, bad):
    meta = {**model.metadata, "in_channels": bad}
    p = _write(tmp_path / "m.safetensors", _tensors(model), meta)
    with pytest.raises(CheckpointError, match="in_channels"):
        load_model(p)


def test_wrong_tensor_shapes(tmp_path, model):
    # colour weights under grey metadata
    rgb = CutsModel.create(3, seed=0)
    p = _write(tmp_path / "m.safetensors", _tensors(rgb), model.metadata)
    with pytest.raises(CheckpointError, match="wrong shapes"):
        load_model(p)
    # a single tensor of the wrong size
    t = _tensors(model)
    t["head.net.0.weight"] = torch.zeros(3, 3)
    _write(p, t, model.metadata)
    with pytest.raises(CheckpointError, match="head"):
        load_model(p)


def test_missing_and_unexpected_tensors(tmp_path, model):
    t = _tensors(model)
    del t["encoder.layers.0.weight"]
    p = _write(tmp_path / "m.safetensors", t, model.metadata)
    with pytest.raises(CheckpointError, match="missing"):
        load_model(p)
    t = _tensors(model)
    t["encoder.extra"] = torch.zeros(2)
    _write(p, t, model.metadata)
    with pytest.raises(CheckpointError, match="unexpected"):
        load_model(p)


def test_wrong_in_channels_argument(saved):
    with pytest.raises(CheckpointError) as info:
        load_model(saved, in_channels=3)
    msg = str(info.value)
    assert "grey (1-channel)" in msg and "colour (3-channel)" in msg
    assert load_model(saved, in_channels=1).in_channels == 1


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_files_rejected_without_running_code(tmp_path):
    # control: the payload really does create its marker when unpickled
    control = tmp_path / "control_marker"
    pickle.loads(pickle.dumps(_Evil(control)))
    assert control.exists()

    marker = tmp_path / "pwned_marker"
    raw = tmp_path / "raw_pickle.safetensors"
    raw.write_bytes(pickle.dumps({"encoder.x": _Evil(marker)}))
    zipped = tmp_path / "torch_save.safetensors"
    torch.save({"state": _Evil(marker), "w": torch.zeros(2)}, zipped)
    pt = tmp_path / "model.pt"
    torch.save({"encoder": Encoder(1).state_dict(), "x": _Evil(marker)}, pt)
    for p in (raw, zipped, pt):
        with pytest.raises(CheckpointError):
            load_model(p)
        assert not marker.exists(), f"loading {p.name} executed pickled code"


def test_default_model_path():
    assert default_model_path(1).name.endswith("grey.safetensors")
    assert default_model_path(3).name.endswith("rgb.safetensors")
    with pytest.raises(CheckpointError):
        default_model_path(2)


def test_checkpoint_error_is_value_error():
    assert issubclass(CheckpointError, ValueError)
