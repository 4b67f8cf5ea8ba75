"""The command line and the evaluation pipeline, on small synthetic images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from skimage import io as skio

from cuts import cli
from cuts.evaluation import CLICK_KEYS, DEFAULT_METHODS, find_mask, format_table, load_pairs


def _disc_image(seed: int, size: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.integers(14, size - 14, 2)
    mask = (yy - cy) ** 2 + (xx - cx) ** 2 < 8**2
    img = np.full((size, size, 3), 60.0) + rng.normal(0, 4, (size, size, 3))
    img[mask] = [200, 180, 120]
    return np.clip(img, 0, 255).astype(np.uint8), mask


@pytest.fixture()
def dataset(tmp_path: Path) -> tuple[Path, Path]:
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for i in range(3):
        img, mask = _disc_image(i)
        skio.imsave(images / f"case{i}.png", img, check_contrast=False)
        # two naming conventions for masks: NAME and NAME_seg
        name = f"case{i}_seg.png" if i == 0 else f"case{i}.png"
        skio.imsave(masks / name, (mask * 255).astype(np.uint8), check_contrast=False)
    return images, masks


def test_find_mask_conventions(dataset: tuple[Path, Path]) -> None:
    images, masks = dataset
    assert find_mask(images / "case0.png", masks).name == "case0_seg.png"
    assert find_mask(images / "case1.png", masks).name == "case1.png"
    assert find_mask(images / "nothing.png", masks) is None


def test_same_folder_never_uses_the_image_as_its_mask(tmp_path: Path) -> None:
    img, mask = _disc_image(0)
    skio.imsave(tmp_path / "a.png", img, check_contrast=False)
    with pytest.raises(ValueError, match="no mask for a.png"):
        load_pairs(tmp_path, tmp_path)
    skio.imsave(tmp_path / "a_seg.png", (mask * 255).astype(np.uint8), check_contrast=False)
    ((name, image, truth),) = load_pairs(tmp_path, tmp_path)
    assert name == "a.png" and truth.sum() == mask.sum()


def test_evaluate_writes_json_with_every_method(dataset: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    images, masks = dataset
    out = tmp_path / "result.json"
    rc = cli.main(["evaluate", "--images", str(images), "--masks", str(masks), "--steps", "20",
                   "--device", "cpu", "--json", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["n_images"] == 3
    assert result["train_seconds"] > 0
    assert set(DEFAULT_METHODS) | set(CLICK_KEYS) == set(result["methods"])
    for key in DEFAULT_METHODS:
        vals = result["methods"][key]
        assert set(vals) >= {"dice", "hausdorff", "ssim", "rmse", "ergas"}
        assert 0.0 <= vals["dice"] <= 1.0
    # the discs are trivially separable: the oracle level must find them
    assert result["methods"]["best_level"]["dice"] > 0.8
    assert result["methods"]["best_level"]["dice"] >= result["methods"]["persistent"]["dice"] - 1e-9
    assert 0 <= result["methods"]["noc85"]["clicks"] <= 20
    assert [row["name"] for row in result["images"]] == ["case0.png", "case1.png", "case2.png"]
    printed = capsys.readouterr().out
    assert "CUTS + diffusion (best level, oracle)" in printed and "case2.png" in printed


def test_scoring_in_threads_gives_the_single_thread_result(dataset: tuple[Path, Path]) -> None:
    import torch

    import cuts
    from cuts.evaluation import evaluate_folder

    images, masks = dataset
    model = cuts.train([p[1] for p in load_pairs(images, masks)], steps=10, device="cpu")
    threads = torch.get_num_threads()
    seen = []
    one = evaluate_folder(images, masks, model=model, workers=1)
    model.encoder.train()  # a training-mode encoder is embedded in eval mode by every thread
    many = evaluate_folder(images, masks, model=model, workers=3, progress=lambda *a: seen.append(a))
    assert model.encoder.training, "the encoder's mode was not restored"
    assert (one["workers"], many["workers"]) == (1, 3)
    assert one["images"] == many["images"] and one["methods"] == many["methods"]
    assert seen[-1] == ("segment", 3, 3) and all(stage == "segment" for stage, _, _ in seen)
    assert torch.get_num_threads() == threads, "torch's thread count was not restored"


def test_cancelled_threaded_scoring_raises_and_restores_threads(dataset: tuple[Path, Path]) -> None:
    import threading

    import torch

    import cuts
    from cuts.evaluation import evaluate_folder

    images, masks = dataset
    model = cuts.train([p[1] for p in load_pairs(images, masks)], steps=5, device="cpu")
    threads = torch.get_num_threads()
    stop = threading.Event()

    def progress(stage: str, done: int, total: int) -> None:
        stop.set()  # cancel once the first image is scored

    with pytest.raises(cuts.Cancelled):
        evaluate_folder(images, masks, model=model, workers=2, progress=progress, cancel=stop)
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_evaluate_rejects_bad_worker_counts(dataset: tuple[Path, Path], bad) -> None:
    from cuts.evaluation import evaluate_folder

    images, masks = dataset
    with pytest.raises(ValueError, match="workers"):
        evaluate_folder(images, masks, workers=bad, steps=1)


def test_large_images_are_scored_one_at_a_time() -> None:
    from cuts.evaluation import PARALLEL_MAX_PIXELS, default_workers

    small = np.zeros((64, 64))
    assert default_workers([small, small]) >= 1
    big = np.zeros((PARALLEL_MAX_PIXELS // 1000 + 1, 1000))
    assert default_workers([small, big]) == 1


def test_format_table_lists_methods() -> None:
    result = {
        "n_images": 1, "train_seconds": 1.0, "segment_seconds": 2.0, "device": "cpu",
        "methods": {"kmeans": {m: 0.5 for m in ("dice", "hausdorff", "ssim", "ergas", "rmse")}},
        "images": [{"name": "x.png", "kmeans": {"dice": 0.5}}],
    }
    text = format_table(result)
    assert "CUTS + k-means" in text and "x.png" in text and "0.500" in text


def test_train_embed_segment_commands(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    images, _ = dataset
    ckpt = tmp_path / "enc.safetensors"
    assert cli.main(["train", str(images), "-o", str(ckpt), "--steps", "5", "--device", "cpu"]) == 0
    assert ckpt.is_file()
    emb_dir = tmp_path / "emb"
    assert cli.main(["embed", str(images / "case1.png"), "-o", str(emb_dir), "--model", str(ckpt)]) == 0
    emb = np.load(emb_dir / "case1.npy")
    assert emb.shape == (40, 40, 128) and emb.dtype == np.float32
    import cuts

    img = cuts.read_image(images / "case1.png").data
    np.testing.assert_array_equal(emb, cuts.embed(cuts.load_model(ckpt), img))
    assert [p.name for p in emb_dir.iterdir()] == ["case1.npy"]
    seg_dir = tmp_path / "seg"
    assert cli.main(["segment", str(images / "case2.png"), "-o", str(seg_dir), "--model", str(ckpt)]) == 0
    persistent = tifffile.imread(seg_dir / "case2_persistent.tif")
    assert persistent.shape == (40, 40) and persistent.min() >= 1
    import cuts

    h = cuts.Hierarchy.load(seg_dir / "case2_hierarchy.npz")
    assert h.shape == (40, 40)
    np.testing.assert_array_equal(h.persistent(), persistent)


def test_cli_reports_bad_input_without_traceback(tmp_path: Path, capsys) -> None:
    tiny = tmp_path / "tiny.png"
    skio.imsave(tiny, np.zeros((5, 5), np.uint8), check_contrast=False)
    rc = cli.main(["train", str(tiny), "-o", str(tmp_path / "m.safetensors"), "--steps", "2"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "smaller than" in err and "Traceback" not in err
    assert not (tmp_path / "m.safetensors").exists()


def test_cli_rejects_wrong_channel_checkpoint(dataset: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    import cuts

    images, _ = dataset
    grey = cuts.CutsModel.create(1, seed=0)
    ckpt = cuts.save_model(grey, tmp_path / "grey.safetensors")
    rc = cli.main(["embed", str(images / "case0.png"), "-o", str(tmp_path / "e"), "--model", str(ckpt)])
    assert rc == 2
    assert "grey" in capsys.readouterr().err
