"""Stage-1 model and training: cuts.model, cuts.training, cuts.device."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

import cuts
from cuts.images import RECEPTIVE_FIELD, ImageError
from cuts.model import HALO, PATCH_SIZE, CutsModel, Encoder, ReconstructionHead
from cuts.training import TrainConfig, TrainProgress, iter_train, sample_step, train



pytestmark = pytest.mark.usefixtures("one_torch_thread")


# small, fast settings for every run in this file
FAST = dict(batch_size=2, anchors_per_image=4, device="cpu")


def _img(n=32, m=None, seed=0, c=None):
    rng = np.random.default_rng(seed)
    shape = (n, m or n) + ((c,) if c else ())
    return rng.integers(0, 255, shape).astype(np.uint8)


def _state(model: CutsModel) -> dict[str, torch.Tensor]:
    out = {"encoder." + k: v.clone() for k, v in model.encoder.state_dict().items()}
    out.update({"head." + k: v.clone() for k, v in model.head.state_dict().items()})
    return out


def _same_state(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- model


def test_constants():
    assert HALO == 8
    assert RECEPTIVE_FIELD == 2 * HALO + 1 == 17
    assert PATCH_SIZE == 5


@pytest.mark.parametrize("c", [1, 3])
def test_encoder_output_shapes(c):
    enc = Encoder(c).eval()
    assert enc.embedding_dim == 128
    x = torch.randn(2, c, 17, 17)
    assert enc(x).shape == (2, 128, 1, 1)  # valid convs: 17x17 window -> one pixel
    x = torch.randn(1, c, 20 + 2 * HALO, 27 + 2 * HALO)
    assert enc(x).shape == (1, 128, 20, 27)
    assert enc.embed_padded(torch.randn(1, c, 23, 31)).shape == (1, 128, 23, 31)


def test_encoder_rejects_bad_channels():
    with pytest.raises(ValueError):
        Encoder(0)


@pytest.mark.parametrize("c", [1, 3])
def test_head_output_shape(c):
    head = ReconstructionHead(c)
    z = torch.randn(7, 128)
    assert head(z).shape == (7, c, PATCH_SIZE, PATCH_SIZE)


def test_receptive_field_is_17_perturbation():
    torch.manual_seed(0)
    enc = Encoder(1).eval()
    h, w = 41, 45
    x = torch.rand(1, 1, h, w) * 2 - 1
    with torch.no_grad():
        base = enc.embed_padded(x)[0]
        yy, xx = np.mgrid[:h, :w]
        for r, c in [(20, 22), (0, 0), (40, 3), (5, 44)]:
            x2 = x.clone()
            x2[0, 0, r, c] += 1.5
            diff = (enc.embed_padded(x2)[0] - base).abs().amax(0).numpy()
            changed = diff > 1e-6
            expected = np.maximum(np.abs(yy - r), np.abs(xx - c)) <= HALO
            np.testing.assert_array_equal(changed, expected, err_msg=f"perturbing ({r}, {c})")


def test_create_seeded_and_metadata():
    a = CutsModel.create(3, seed=5)
    b = CutsModel.create(3, seed=5)
    c = CutsModel.create(3, seed=6)
    assert _same_state(_state(a), _state(b))
    assert not _same_state(_state(a), _state(c))
    assert a.in_channels == 3
    assert a.metadata["architecture"] == "cuts-encoder-v1"
    assert a.metadata["in_channels"] == 3
    assert a.percentiles == (0.5, 99.5)
    assert a.device.type == "cpu"
    d = a.copy()
    with torch.no_grad():
        next(d.encoder.parameters()).add_(1.0)
    assert not _same_state(_state(a), _state(d))  # deep copy


# ---------------------------------------------------------------- device


def test_resolve_device_auto_cpu():
    if torch.cuda.is_available() or (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        pytest.skip("an accelerator is available here")
    assert cuts.resolve_device("auto") == torch.device("cpu")
    assert cuts.resolve_device(None) == torch.device("cpu")


def test_resolve_device_explicit():
    assert cuts.resolve_device("cpu") == torch.device("cpu")
    assert cuts.resolve_device("CPU") == torch.device("cpu")
    assert cuts.resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device"):
        cuts.resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available")
def test_resolve_device_cuda_unavailable():
    with pytest.raises(ValueError, match="CUDA is not available"):
        cuts.resolve_device("cuda")
    with pytest.raises(ValueError):
        cuts.resolve_device("cuda:0")


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    "bad",
    [dict(steps=0), dict(max_seconds=0), dict(max_seconds=-1.0), dict(batch_size=0),
     dict(anchors_per_image=1), dict(lam=1.5), dict(lam=-0.1), dict(temperature=0.0)],
)
def test_config_validation(bad):
    with pytest.raises(ValueError):
        TrainConfig(**bad).validate()
    with pytest.raises(ValueError):
        train([_img()], **{**FAST, **bad})


def test_sample_step_shapes():
    cfg = TrainConfig(batch_size=2, anchors_per_image=3)
    scaled = cuts.scale_intensity(_img(24, 30))
    padded = [np.pad(scaled, ((0, 0), (HALO, HALO), (HALO, HALO)), mode="edge")]
    win, targets = sample_step(padded, np.array([0, 0]), np.random.default_rng(0), cfg)
    assert win.shape == (2, 6, 1, 17, 17)
    assert targets.shape == (2, 6, 1, 5, 5)
    np.testing.assert_array_equal(targets, win[..., 6:11, 6:11])


def test_sample_step_takes_each_window_from_its_own_image():
    cfg = TrainConfig(batch_size=3, anchors_per_image=4)
    values = [-0.5, 0.25, 0.75]
    sizes = [(20, 31), (40, 18), (17, 17)]
    padded = [np.full((1, h + 2 * HALO, w + 2 * HALO), v, np.float32) for v, (h, w) in zip(values, sizes)]
    order = np.array([2, 0, 1])
    win, targets = sample_step(padded, order, np.random.default_rng(0), cfg)
    assert win.shape == (3, 8, 1, 17, 17)
    for b, idx in enumerate(order):
        assert (win[b] == values[idx]).all()
    # the same draws whether the images come as a list or as a PatchSource
    from cuts.mining import PatchSource

    again = sample_step(PatchSource(padded, HALO), order, np.random.default_rng(0), cfg)
    np.testing.assert_array_equal(again[0], win)


# ---------------------------------------------------------------- training


def test_train_deterministic_for_seed():
    img = _img(32, 40)
    a = train([img], steps=4, seed=3, **FAST)
    b = train([img], steps=4, seed=3, **FAST)
    assert _same_state(_state(a), _state(b))
    np.testing.assert_array_equal(cuts.embed(a, img), cuts.embed(b, img))
    c = train([img], steps=4, seed=4, **FAST)
    assert not _same_state(_state(a), _state(c))
    assert not np.array_equal(cuts.embed(a, img), cuts.embed(c, img))


def test_training_changes_weights():
    img = _img()
    fresh = CutsModel.create(1, seed=0)
    trained = train([img], steps=3, seed=0, **FAST)
    assert not _same_state(_state(fresh), _state(trained))
    assert not trained.encoder.training and not trained.head.training  # left in eval mode


def test_callback_steps_and_metadata():
    reports: list[TrainProgress] = []
    model = train([_img(28, 36)], steps=5, seed=1, callback=reports.append, **FAST)
    assert [r.step for r in reports] == [1, 2, 3, 4, 5]
    assert all(r.total_steps == 5 for r in reports)
    assert all(np.isfinite([r.loss, r.contrastive, r.reconstruction]).all() for r in reports)
    assert all(r.device == "cpu" for r in reports)
    assert reports[-1].fraction == 1.0
    elapsed = [r.elapsed for r in reports]
    assert elapsed == sorted(elapsed)
    meta = model.metadata["training"]
    assert meta["steps_done"] == 5
    assert meta["device"] == "cpu"
    assert meta["n_images"] == 1
    assert meta["seed"] == 1
    assert meta["final_loss"] == pytest.approx(reports[-1].loss)
    assert model.metadata["training_runs"] == [meta]
    assert model.in_channels == 1
    # continue training: the history grows and the input model is unchanged
    before = _state(model)
    more = train([_img(28, 36)], model=model, steps=2, **FAST)
    assert len(more.metadata["training_runs"]) == 2
    assert more.metadata["training"]["steps_done"] == 2
    assert _same_state(before, _state(model))
    assert len(model.metadata["training_runs"]) == 1


def test_max_seconds_stops_early():
    t0 = time.perf_counter()
    model = train([_img()], steps=100_000, max_seconds=0.5, **FAST)
    wall = time.perf_counter() - t0
    done = model.metadata["training"]["steps_done"]
    assert 0 <= done < 100_000
    assert wall < 30  # generous
    assert model.metadata["training"]["max_seconds"] == 0.5


def test_cancel_from_another_thread_keeps_model():
    start_model = CutsModel.create(1, seed=11)
    before = _state(start_model)
    meta_before = dict(start_model.metadata)
    event = threading.Event()
    timer = threading.Timer(0.3, event.set)
    reports = []
    t0 = time.perf_counter()
    timer.start()
    try:
        with pytest.raises(cuts.Cancelled):
            train([_img()], model=start_model, steps=100_000, cancel=event, callback=reports.append, **FAST)
    finally:
        timer.cancel()
    took = time.perf_counter() - t0
    assert event.is_set()
    assert took < 5.0, f"cancellation took {took:.1f} s"
    assert len(reports) < 100_000
    assert _same_state(before, _state(start_model))
    assert start_model.metadata == meta_before


def test_cancel_callable_before_start():
    with pytest.raises(cuts.Cancelled):
        train([_img()], steps=5, cancel=lambda: True, **FAST)


def test_iter_train_returns_model():
    start_model = CutsModel.create(1, seed=2)
    before = _state(start_model)
    gen = iter_train([_img()], model=start_model, steps=3, **FAST)
    reports = []
    with pytest.raises(StopIteration) as stop:
        while True:
            reports.append(next(gen))
    model = stop.value.value
    assert isinstance(model, CutsModel)
    assert [r.step for r in reports] == [1, 2, 3]
    assert model.metadata["training"]["steps_done"] == 3
    assert model is not start_model
    assert _same_state(before, _state(start_model))

    def consume():
        return (yield from iter_train([_img()], steps=2, **FAST))

    g = consume()
    n = 0
    try:
        while True:
            next(g)
            n += 1
    except StopIteration as s:
        assert isinstance(s.value, CutsModel)
    assert n == 2


def test_iter_train_close_early_leaves_model():
    start_model = CutsModel.create(1, seed=2)
    before = _state(start_model)
    gen = iter_train([_img()], model=start_model, steps=50, **FAST)
    next(gen)
    next(gen)
    gen.close()
    assert _same_state(before, _state(start_model))


def test_mixed_channel_counts_raise():
    with pytest.raises(ValueError, match="mix channel counts"):
        train([_img(), _img(c=3)], steps=2, **FAST)


def test_model_channel_mismatch_raises():
    grey_model = CutsModel.create(1, seed=0)
    with pytest.raises(ImageError, match="grey"):
        train([_img(c=3)], model=grey_model, steps=2, **FAST)


def test_different_sizes_and_stacks_train():
    imgs = [_img(24, 24, seed=1), _img(40, 56, seed=2), np.stack([_img(30, 20, seed=3), _img(30, 20, seed=4)])]
    model = train(imgs, steps=3, **FAST)
    assert model.metadata["training"]["n_images"] == 4
    assert model.metadata["training"]["steps_done"] == 3
    e = cuts.embed(model, imgs[1])
    assert e.shape == (40, 56, 128) and np.isfinite(e).all()


def test_rgba_trains_colour_model():
    model = train([_img(32, 32, c=4)], steps=2, **FAST)
    assert model.in_channels == 3


def test_bad_images_raise_image_error():
    with pytest.raises(ImageError):
        train([np.zeros((10, 10))], steps=2, **FAST)
    with pytest.raises(ImageError):
        train([], steps=2, **FAST)


# ---------------------------------------------------------------- quality


def _two_means(z: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    best = None
    for _ in range(3):
        cent = z[rng.choice(len(z), 2, replace=False)]
        for _ in range(30):
            d = ((z[:, None] - cent[None]) ** 2).sum(-1)
            lab = d.argmin(1)
            cent = np.stack([z[lab == k].mean(0) if (lab == k).any() else cent[k] for k in range(2)])
        inertia = d.min(1).sum()
        if best is None or inertia < best[0]:
            best = (inertia, lab)
    return best[1]


def _separation(model, img, truth, away):
    e = cuts.embed(model, img)
    z = e.reshape(-1, e.shape[-1]).astype(np.float64)
    lab = _two_means(z).reshape(truth.shape)
    acc = (lab[away] == truth[away]).mean()
    acc = max(acc, 1 - acc)
    t = truth.ravel()
    ca, cb = z[t].mean(0), z[~t].mean(0)
    within = max(np.sqrt(((z[t] - ca) ** 2).sum(1).mean()), np.sqrt(((z[~t] - cb) ** 2).sum(1).mean()))
    return acc, float(np.linalg.norm(ca - cb) / within)


def test_two_textures_separate_after_training():
    """Left half: fine uniform noise; right half: a smooth field; same mean intensity."""
    from scipy import ndimage

    n = 64
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:n, :n]
    rough = rng.uniform(0, 1, (n, n))
    smooth = ndimage.gaussian_filter(rng.normal(size=(n, n)), 4)
    smooth = (smooth - smooth.mean()) / smooth.std() * 0.1 + 0.5
    img = np.where(xx < n // 2, rough, smooth) + rng.normal(0, 0.03, (n, n))
    img = (img * 1000).astype(np.int16)
    truth = xx < n // 2
    away = np.abs(xx - n // 2 + 0.5) > 10  # ignore pixels whose window straddles the boundary
    assert abs(img[truth].mean() - img[~truth].mean()) < 30  # same mean: only texture differs

    model = train([img], steps=100, batch_size=2, anchors_per_image=16, lr=3e-3, seed=0, device="cpu")
    acc, ratio = _separation(model, img, truth, away)
    _, ratio_untrained = _separation(CutsModel.create(1, seed=0), img, truth, away)
    assert acc >= 0.9, f"2-means agrees with the texture halves for only {acc:.1%} of pixels"
    assert ratio > ratio_untrained, (ratio, ratio_untrained)
