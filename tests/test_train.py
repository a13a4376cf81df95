"""The trainer: exact resumption (train N, stop, resume to 2N == uninterrupted 2N), prior.json, and
training on your own data (folders of images, tensor files) with its errors."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from invsolve.priors.unet import load_prior
from invsolve.train import TrainConfig, main, train

TINY = TrainConfig(data="natural-rgb", channels=8, channel_mult=(1, 2), num_res_blocks=1, batch=4,
                   crop=16, ckpt_every=3, progress=False, warmup=2, threads=1)


@pytest.mark.parametrize("objective", ["edm", "flow"])
def test_resume_is_exact(tmp_path, objective):
    n = 6
    full = train(TINY, out=str(tmp_path / "full"), steps=2 * n, objective=objective)
    train(TINY, out=str(tmp_path / "half"), steps=n, objective=objective)
    resumed = train(TINY, out=str(tmp_path / "half"), steps=2 * n, objective=objective)
    assert resumed["losses"] == full["losses"]
    for a, b in zip(full["net"].parameters(), resumed["net"].parameters()):
        assert torch.equal(a, b)
    for a, b in zip(full["ema"], resumed["ema"]):
        assert torch.equal(a, b)


def test_a_copied_run_folder_resumes_exactly(tmp_path):
    full = train(TINY, out=str(tmp_path / "full"), steps=4)
    train(TINY, out=str(tmp_path / "half"), steps=2)
    shutil.copytree(tmp_path / "half", tmp_path / "moved")  # e.g. a checkpoint committed to the repo
    resumed = train(TINY, out=str(tmp_path / "moved"), steps=4)
    assert resumed["losses"] == full["losses"]


def test_resume_refuses_other_config(tmp_path):
    train(TINY, out=str(tmp_path / "r"), steps=2)
    with pytest.raises(ValueError, match="different configuration"):
        train(TINY, out=str(tmp_path / "r"), steps=4, lr=1.0)


def test_cli_writes_loadable_prior(tmp_path):
    out = tmp_path / "cli"
    assert main(["--data", "natural-rgb", "--out", str(out), "--steps", "2", "--channels", "8",
                 "--channel-mult", "1", "2", "--num-res-blocks", "1", "--batch", "2", "--crop", "16",
                 "--no-progress", "--threads", "1"]) == 0
    info = json.loads((out / "prior.json").read_text())
    assert info["steps"] == 2 and info["command"].startswith("invsolve train --data natural-rgb")
    assert info["split"]["test"] == ["chelsea"]
    assert info["reproduce"].startswith("invsolve train")
    prior = load_prior(out)
    x = torch.rand(1, 3, 20, 20)
    assert prior.denoise(x, torch.tensor([0.1])).shape == x.shape


def test_flow_run_loads_as_velocity_prior(tmp_path):
    res = train(TINY, out=str(tmp_path / "flow"), steps=2, objective="flow")
    prior = load_prior(res["out"])
    assert prior.parameterization == "velocity" and prior.info["objective"] == "flow"
    x, sigma = torch.rand(2, 3, 16, 16), torch.tensor([0.1, 0.5])
    t = (2 * sigma / (1 + 2 * sigma))[:, None, None, None]  # data at t = 0, [-1, 1] units
    x_t = (1 - t) * (2 * x - 1)
    with torch.no_grad():
        u = prior.module(x_t, t.flatten())
        torch.testing.assert_close(prior.denoise(x, sigma), (x_t - t * u + 1) / 2)


def test_darcy_training_set_is_in_units_of_a(tmp_path):
    from invsolve.data import generate_darcy
    from invsolve.priors.datasets import darcy_fields, training_data

    sampler, info = training_data("darcy", 64)
    assert info["units"] == [3.0, 12.0] and sampler.channels == 1
    patch = sampler.sample(4, torch.Generator().manual_seed(0))
    assert patch.shape == (4, 1, 64, 64) and set(torch.unique(patch).tolist()) == {0.0, 1.0}
    train_a, test_a = darcy_fields(3, "train"), darcy_fields(3, "test")
    assert torch.equal(train_a, generate_darcy(3, 64, seed=0, progress=False)["a"])  # the PDE issue's fields
    assert not torch.equal(train_a, test_a)
    # a run on it records the units, so the loaded prior denoises in units of a
    res = train(TINY, data="darcy", crop=16, out=str(tmp_path / "d"), steps=1)
    prior = load_prior(res["out"])
    assert prior.info["units"] == [3.0, 12.0]
    assert prior.scale * 3.0 + prior.shift == pytest.approx(-1.0)
    assert prior.scale * 12.0 + prior.shift == pytest.approx(1.0)


def test_phantoms_supersampled_edges_and_scales():
    from invsolve.priors.datasets import ellipse_phantoms, training_data

    hard, soft = ellipse_phantoms(3, 32, seed=5), ellipse_phantoms(3, 32, seed=5, supersample=4)
    assert soft.shape == hard.shape == (3, 1, 32, 32) and 0 <= soft.min() and soft.max() <= 1
    # the same ellipses: the two differ only along edges, where the supersampled set has
    # partial-volume values the hard-edged one lacks
    assert (soft - hard).abs().mean() < 0.05 and (soft != hard).float().mean() < 0.4
    levels = lambda t: len(torch.unique((t * 1000).round()))
    assert levels(soft) > 2 * levels(hard)
    with pytest.raises(ValueError, match="supersample"):
        ellipse_phantoms(1, 16, supersample=0)
    sampler, info = training_data("phantom-ct", 64, scales=(1.0, 0.5))
    assert info["scales"] == [1.0, 0.5] and "supersample=4" in info["split"]["train"]
    assert len(sampler.images) == 2000 and {tuple(im.shape[-2:]) for im in sampler.images} == {(128, 128), (64, 64)}
    with pytest.raises(ValueError, match="darcy"):
        training_data("darcy", 16, scales=(1.0, 0.5))


def test_equal_scale_weights_draw_each_scale_alike():
    """By crop positions a 16 x 16 image at crop 12 (25 positions) comes up 1 / 10 as often as a
    32 x 32 one (441); ``equal_groups`` draws each scale half the time."""
    from invsolve.priors.datasets import PatchSampler, rescaled

    images = rescaled([torch.rand(1, 32, 32), torch.rand(1, 32, 32)], (1.0, 0.5))
    sampler = PatchSampler(images, 12)
    small = lambda s: float(s.weights[2:].sum())
    assert small(sampler) == pytest.approx(50 / 932)
    sampler.equal_groups(2)
    assert small(sampler) == pytest.approx(0.5) and float(sampler.weights.sum()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="equal groups"):
        sampler.equal_groups(3)


def test_multiscale_run_from_before_scale_weights_resumes_with_positions(tmp_path):
    """A checkpoint written before ``scale_weights`` existed drew by positions: resuming it asks for
    ``scale_weights="positions"`` (a clear error otherwise) and is then exact."""
    ms = {"scales": (1.0, 0.5)}
    out = tmp_path / "old"
    train(TINY, out=str(out), steps=3, scale_weights="positions", **ms)
    ck = torch.load(out / "ckpt.pt", weights_only=False)
    del ck["config"]["scale_weights"]
    torch.save(ck, out / "ckpt.pt")
    with pytest.raises(ValueError, match="scale_weights"):
        train(TINY, out=str(out), steps=6, **ms)
    res = train(TINY, out=str(out), steps=6, scale_weights="positions", **ms)
    assert res["losses"] == train(TINY, out=str(tmp_path / "new"), steps=6, scale_weights="positions", **ms)["losses"]
    assert res["losses"] != train(TINY, out=str(tmp_path / "equal"), steps=6, **ms)["losses"]


# --- your own data: a folder of images or a tensor file -------------------------------------------

def _png_folder(folder, n=3, size=(24, 28), mode="RGB", seed=0):
    """``n`` smooth random images written with PIL (uint8), names img0.png, img1.png, ..."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    c = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
    for i in range(n):
        a = rng.uniform(0, 255, (size[0] // 4, size[1] // 4, c)).repeat(4, 0).repeat(4, 1)
        Image.fromarray(a.astype(np.uint8).squeeze(-1) if c == 1 else a.astype(np.uint8), mode).save(
            folder / f"img{i}.png")
    return folder


def test_folder_trains_loads_and_denoises(tmp_path):
    folder = _png_folder(tmp_path / "photos")
    (folder / "notes.txt").write_text("not an image")  # other files are skipped
    res = train(TINY, data=str(folder), out=str(tmp_path / "run"), steps=3, ckpt_every=2)
    info = json.loads((tmp_path / "run" / "prior.json").read_text())
    # whole files held out: 3 items -> 1 in validation (at least one), none in both
    assert len(info["split"]["val"]) == 1 and len(info["split"]["train"]) == 2
    assert sorted(info["split"]["train"] + info["split"]["val"]) == ["img0.png", "img1.png", "img2.png"]
    assert info["units"] == [0.0, 1.0] and info["steps"] == 3 and info["train_seconds"] > 0
    assert info["validation"]["step"] == 3 and len(info["validation"]["per_level"]) == 4
    assert [h["step"] for h in res["val_history"]] == [2, 3]
    assert all(np.isfinite(h["loss"]) and h["loss"] > 0 for h in res["val_history"])
    png = tmp_path / "run" / "loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    prior = load_prior(tmp_path / "run")
    assert prior.module.net.config["in_channels"] == 3
    x = torch.rand(2, 3, 24, 20)
    d = prior.denoise(x + 0.1 * torch.randn_like(x), torch.tensor([0.1, 0.1]))
    assert d.shape == x.shape and torch.isfinite(d).all()


def test_folder_resume_is_exact_and_checks_the_data(tmp_path):
    from PIL import Image

    folder = _png_folder(tmp_path / "grey", n=4, mode="L")
    a16 = np.linspace(0, 65535, 20 * 24).reshape(20, 24).astype(np.uint16)  # 16-bit grey
    Image.fromarray(a16).save(folder / "deep.png")
    cfg = dataclasses.replace(TINY, data=str(folder), val_fraction=0.4)
    full = train(cfg, out=str(tmp_path / "full"), steps=6)
    train(cfg, out=str(tmp_path / "half"), steps=3)
    half_seconds = json.loads((tmp_path / "half" / "prior.json").read_text())["train_seconds"]
    resumed = train(cfg, out=str(tmp_path / "half"), steps=6)
    assert resumed["losses"] == full["losses"]
    for a, b in zip(full["ema"], resumed["ema"]):
        assert torch.equal(a, b)
    assert resumed["val_history"] == full["val_history"]  # fixed crops, own generator
    info = json.loads((tmp_path / "half" / "prior.json").read_text())
    assert info["train_seconds"] >= half_seconds and "train_seconds_from_step" not in info
    assert len(info["split"]["val"]) == 2  # round(5 * 0.4)
    # adding an image changes the data: the run refuses to resume on it
    Image.fromarray(a16).save(folder / "new.png")
    with pytest.raises(ValueError, match="changed since"):
        train(cfg, out=str(tmp_path / "half"), steps=8)


def test_checkpoint_from_before_the_new_fields_resumes(tmp_path):
    out = tmp_path / "old"
    train(TINY, out=str(out), steps=3)
    ck = torch.load(out / "ckpt.pt", weights_only=False)
    for k in ("val_fraction", "units", "dicom_window"):
        del ck["config"][k]
    for k in ("val_history", "train_seconds", "timed_from_step", "data_sha1"):
        del ck[k]
    torch.save(ck, out / "ckpt.pt")
    res = train(TINY, out=str(out), steps=6)
    assert res["losses"] == train(TINY, out=str(tmp_path / "new"), steps=6)["losses"]
    assert json.loads((out / "prior.json").read_text())["train_seconds_from_step"] == 3


def test_read_image_modes(tmp_path):
    import tifffile
    from PIL import Image

    from invsolve.priors.datasets import read_image

    rgba = np.random.default_rng(0).integers(0, 256, (8, 9, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    x = read_image(tmp_path / "a.png")
    assert x.shape == (3, 8, 9) and torch.equal(x, torch.from_numpy(rgba[..., :3]).permute(2, 0, 1) / 255.0)
    Image.fromarray(rgba[..., :2], "LA").save(tmp_path / "la.png")
    assert read_image(tmp_path / "la.png").shape == (1, 8, 9)
    Image.fromarray(rgba[..., :3]).convert("P").save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").shape == (3, 8, 9)
    Image.fromarray(rgba[..., :3]).save(tmp_path / "c.jpg")
    Image.fromarray(rgba[..., :3]).save(tmp_path / "c.bmp")
    assert read_image(tmp_path / "c.jpg").shape == read_image(tmp_path / "c.bmp").shape == (3, 8, 9)
    Image.fromarray(np.full((5, 6), 65535, np.uint16)).save(tmp_path / "w.tif")
    assert read_image(tmp_path / "w.tif").min() == 1.0
    f = np.random.default_rng(1).random((7, 6, 3)).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tif", f, photometric="rgb")
    assert torch.allclose(read_image(tmp_path / "f.tif"), torch.from_numpy(f).permute(2, 0, 1))
    tifffile.imwrite(tmp_path / "hu.tif", (f * 3000 - 1000)[..., 0])
    with pytest.raises(ValueError, match=r"hu.tif .*outside \[0, 1\].*--units"):
        read_image(tmp_path / "hu.tif")


def test_bad_data_gives_clear_errors(tmp_path):
    from PIL import Image

    with pytest.raises(ValueError, match="neither a built-in set.*existing folder"):
        train(TINY, data=str(tmp_path / "nowhere"), out=str(tmp_path / "r0"), steps=1)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("hello")
    with pytest.raises(ValueError, match="no image in the folder .*readme.txt"):
        train(TINY, data=str(empty), out=str(tmp_path / "r1"), steps=1)
    mixed = _png_folder(tmp_path / "mixed", n=3)
    _png_folder(mixed / "grey", n=1, mode="L")
    with pytest.raises(ValueError, match=r"different channel counts: 3 with 3 channel\(s\), e.g. "
                                         r"img0.png, img1.png; 1 with 1 channel\(s\), e.g. grey/img0.png"):
        train(TINY, data=str(mixed), out=str(tmp_path / "r2"), steps=1)
    broken = _png_folder(tmp_path / "broken", n=2)
    (broken / "bad.png").write_bytes(b"definitely not a png")
    with pytest.raises(ValueError, match="1 file.* could not be read as images: bad.png"):
        train(TINY, data=str(broken), out=str(tmp_path / "r3"), steps=1)
    small = _png_folder(tmp_path / "small", n=2)
    Image.fromarray(np.zeros((10, 40, 3), np.uint8)).save(small / "tiny.png")
    with pytest.raises(ValueError, match=r"smaller than the 16 x 16 crop: tiny.png \(10 x 40\).*--crop"):
        train(TINY, data=str(small), out=str(tmp_path / "r4"), steps=1)
    with pytest.raises(ValueError, match=r"img.\.png at scale 0.5 \(12 x 14\)"):  # 24 x 28 halved
        train(TINY, data=str(_png_folder(tmp_path / "half", n=2)), scales=(1.0, 0.5),
              out=str(tmp_path / "r8"), steps=1)
    with pytest.raises(ValueError, match="--units applies to tensor files"):
        train(TINY, data=str(small), units=(0.0, 255.0), out=str(tmp_path / "r5"), steps=1)
    np.save(tmp_path / "flat.npy", np.zeros((4, 16), np.float32))
    with pytest.raises(ValueError, match=r"shape \(4, 16\); .*\(N, C, H, W\) or \(N, H, W\)"):
        train(TINY, data=str(tmp_path / "flat.npy"), out=str(tmp_path / "r6"), steps=1)
    np.save(tmp_path / "bytes.npy", np.full((3, 16, 16), 200, np.uint8))
    with pytest.raises(ValueError, match=r"spans \[200, 200\], outside \[0, 1\]; pass .*--units"):
        train(TINY, data=str(tmp_path / "bytes.npy"), out=str(tmp_path / "r7"), steps=1)


def test_tensor_files_with_units(tmp_path):
    from invsolve.priors.datasets import split_items, tensor_file

    a = torch.from_numpy(np.random.default_rng(0).choice([3.0, 12.0], (5, 20, 20)))
    np.save(tmp_path / "a.npy", a.numpy())
    res = train(TINY, data=str(tmp_path / "a.npy"), units=(3.0, 12.0), out=str(tmp_path / "run"),
                steps=2)
    prior = load_prior(res["out"])
    assert prior.info["units"] == [3.0, 12.0] and prior.module.net.config["in_channels"] == 1
    assert prior.scale * 3.0 + prior.shift == pytest.approx(-1.0)  # the prior acts in units of a
    assert prior.info["split"] == dict(zip(("train", "val"), split_items(5, 0.1, seed=0)))  # indices
    assert "--units 3.0 12.0" in prior.info["reproduce"]
    x = torch.full((1, 1, 20, 20), 7.5)
    assert prior.denoise(x, torch.tensor([1.0])).shape == x.shape
    # .pt files: a tensor, or a dict (an ``invsolve data`` cache) with FILE:KEY
    torch.save({"params": "{}", "data": {"a": a[:, None].float(), "u": torch.zeros(5, 1, 20, 20)}},
               tmp_path / "d.pt")
    assert torch.equal(tensor_file(f"{tmp_path / 'd.pt'}:a", (3, 12)), (a[:, None].float() - 3) / 9)
    with pytest.raises(ValueError, match=r"holds the arrays \['a', 'u'\]; pick one with --data"):
        tensor_file(tmp_path / "d.pt")
    torch.save(torch.rand(3, 2, 16, 16), tmp_path / "two.pt")
    res = train(TINY, data=str(tmp_path / "two.pt"), out=str(tmp_path / "two"), steps=1)
    assert load_prior(res["out"]).module.net.config["in_channels"] == 2


def test_split_items_whole_items_deterministic():
    from invsolve.priors.datasets import split_items

    assert split_items(1, 0.1) == ([0], [])
    assert split_items(2, 0.1)[1] != [] and split_items(10, 0.0) == (list(range(10)), [])
    tr, va = split_items(50, 0.1, seed=3)
    assert len(va) == 5 and sorted(tr + va) == list(range(50))
    assert (tr, va) == split_items(50, 0.1, seed=3) and va != split_items(50, 0.1, seed=4)[1]
    with pytest.raises(ValueError, match="val_fraction"):
        split_items(5, 1.0)


def test_dicom_folder(tmp_path):
    pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    from invsolve.priors.datasets import ct_slice, image_folder

    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy(get_testdata_file(name), tmp_path / name)
    items, names = image_folder(tmp_path)
    assert names == ["CT_small.dcm", "MR_small.dcm"]
    for (im,) in items:  # each mapped to [0, 1] by its own min and max
        assert im.shape[0] == 1 and im.min() == 0 and im.max() == 1
    items, _ = image_folder(tmp_path, dicom_window=(-1000.0, 1000.0))  # CT window in HU
    assert torch.allclose(items[0][0], ct_slice())


def test_builtin_validation_is_the_test_split(tmp_path):
    from invsolve.priors.datasets import shepp_logan, validation_images

    assert torch.equal(validation_images("phantom-ct")[0], shepp_logan())
    assert validation_images("natural-rgb")[0].shape[0] == 3
    assert validation_images("darcy")[0].unique().tolist() == [0.0, 1.0]
    res = train(TINY, out=str(tmp_path / "n"), steps=2)
    assert len(res["val_history"]) == 1 and res["val_history"][0]["level_name"] == "sigma"


def test_cli_help_and_folder(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "folder of images" in capsys.readouterr().out
    folder = _png_folder(tmp_path / "pics", n=2)
    assert main(["--data", str(folder), "--out", str(tmp_path / "cli"), "--steps", "1", "--channels",
                 "8", "--channel-mult", "1", "2", "--num-res-blocks", "1", "--batch", "2", "--crop",
                 "16", "--no-progress", "--threads", "1", "--val-fraction", "0.5"]) == 0
    info = json.loads((tmp_path / "cli" / "prior.json").read_text())
    assert info["config"]["val_fraction"] == 0.5 and len(info["split"]["val"]) == 1
    assert "--val-fraction 0.5" in info["reproduce"]
