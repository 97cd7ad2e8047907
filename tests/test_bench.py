"""The benchmark compares like with like: same loss on both paths, same augmentation, a CLI that writes sane numbers."""

import copy
import gzip
import json
import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms

from conftest import run_cli
from tune_norm import augment, bench, data
from tune_norm.config import TrainConfig
from tune_norm.errors import UserError
from tune_norm.outcome import Outcome
from tune_norm.train import Trainer, l1_penalty

N = 32


def pil_images(images: torch.Tensor) -> list:
    return [Image.fromarray(im.numpy(), mode="L") for im in images]


@pytest.mark.parametrize("channels_last, tolerance", [(True, 1e-3), (False, 1e-6)])
def test_fast_path_and_baseline_path_give_the_same_loss_and_gradients(data_root, channels_last, tolerance):
    """One Trainer step on a 32-image set vs the baseline study's per-image input path, from the same weights.

    channels_last runs other oneDNN kernels, so float32 sums round differently (about 1e-4 of a gradient's norm);
    with it off the two paths agree to the last bits.
    """
    full, _ = data.load_raw(data_root)
    images, labels = full.images[:N], full.labels[:N]
    cfg = TrainConfig(batch_size=N, epochs=1, augment=False, dropout=0.0, l1=1e-3, device="cpu", threads=2,
                      channels_last=channels_last)
    trainer = Trainer(cfg, data.MNIST(data.Split(images, labels), bench.EMPTY, bench.EMPTY))
    assert trainer.memory_format == (torch.channels_last if channels_last else torch.contiguous_format)
    baseline_model = copy.deepcopy(trainer.model).to(memory_format=torch.contiguous_format)  # the same weights
    order = torch.randperm(N, generator=torch.Generator().manual_seed(cfg.seed))  # the trainer's shuffle

    # the baseline study's path: PIL image -> ToTensor -> Normalize, one image at a time, contiguous
    to_input = transforms.Compose([transforms.ToTensor(), transforms.Normalize((data.MEAN,), (data.STD,))])
    x = torch.stack([to_input(im) for im in pil_images(images[order])])
    assert x.is_contiguous() and torch.equal(x, data.normalize(images[order]))
    baseline_model.train()
    baseline_loss = (F.nll_loss(baseline_model(x), labels[order])
                     + cfg.l1 * l1_penalty(list(baseline_model.parameters())))
    baseline_loss.backward()

    metrics = trainer.train_epoch()  # one step: the whole set is one batch
    assert metrics["train_loss"] == pytest.approx(baseline_loss.item(), rel=tolerance / 10)
    for (name, ours), theirs in zip(trainer.model.named_parameters(), baseline_model.parameters()):
        assert ours.grad is not None, name
        assert (ours.grad - theirs.grad).norm() <= tolerance * theirs.grad.norm(), name


def test_the_baseline_transforms_are_the_baseline_studys_literal_ones_and_augment_uses_the_same_numbers():
    rot, aff, jit, _, norm = bench.baseline_transforms().transforms
    assert list(rot.degrees) == [-6, 6] and list(rot.fill) == [1]
    assert list(aff.degrees) == [-7, 7] and list(aff.shear) == [-10, 10] and aff.fill == 0
    assert tuple(aff.translate) == (0.1, 0.1) and tuple(aff.scale) == (0.8, 1.2)
    assert jit.brightness == jit.contrast == jit.saturation == (0.6, 1.4) and jit.hue == (-0.1, 0.1)
    assert norm.mean == (0.1307,) and norm.std == (0.3081,)
    # the batched augmentation's constants are the same numbers (tests/test_augment.py checks the behaviour)
    assert [-augment.ROTATION_DEG, augment.ROTATION_DEG] == list(rot.degrees) and augment.ROTATION_FILL == 1
    assert (augment.AFFINE_DEG, augment.SHEAR_DEG, augment.TRANSLATE_FRAC, augment.SCALE) == (7, 10, 0.1, (0.8, 1.2))
    assert (1 - augment.BRIGHTNESS, 1 + augment.CONTRAST) == jit.brightness
    assert (data.MEAN, data.STD) == (0.1307, 0.3081)


def test_torchvision_cache_is_verified(data_root, tmp_path):
    bad = tmp_path / "bad" / "MNIST" / "raw"
    bad.mkdir(parents=True)
    with gzip.open(bad / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(b"not mnist")
    with pytest.raises(UserError, match="checksum"):
        bench.torchvision_root(tmp_path / "bad", cache=tmp_path / "cache")


def test_bench_cli_writes_sane_numbers(tmp_path):
    out = tmp_path / "out.json"
    # one thread: two on a shared, busy 2-core machine can stall for a minute (see docs/bench.md)
    res = run_cli("bench", "--steps", "5", "--no-packing", "--threads", "1", "--json", out,
                  env={"TUNE_NORM_CACHE": str(tmp_path / "cache")})
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in (tmp_path / "cache" / "MNIST" / "raw").iterdir()) == sorted(data.FILES)
    r = json.loads(out.read_text())
    cpu = r["cpu"]
    assert set(cpu["pipelines"]) == {"baseline", "tune_norm", "model_step", "tune_norm_contiguous",
                                     "tune_norm_torch_dropout"}
    for p in cpu["pipelines"].values():
        assert math.isfinite(p["images_per_s"]) and p["images_per_s"] > 0
        assert p["sec_per_epoch"] == pytest.approx(60_000 / p["images_per_s"])
        assert len(p["rounds_images_per_s"]) == 3
    assert set(cpu["ratios"]) == {"tune_norm_vs_baseline", "model_fraction", "channels_last_speedup",
                                 "fast_dropout_speedup"}
    assert all(math.isfinite(v) and v > 0 for v in cpu["ratios"].values())
    assert "packing" not in cpu and r["settings"]["steps"] == 5
    assert "| ratio (median of per-round ratios) | value |" in res.stdout
    command = "tune-norm bench --device auto --threads 1 --batch-size 64 --steps 5 --rounds 3 --no-packing"
    assert r["command"] == command and f"Command: `{command}`" in res.stdout
    assert res.stderr.endswith(f"results: {out}\n")
    if not torch.cuda.is_available():
        assert r["gpu"] is None and "GPU: not measured (no CUDA device)" in res.stdout


def test_the_command_line_repeats_the_run():
    assert bench.command_line("cpu", 2, 32, 5, 1, True) == (
        "tune-norm bench --device cpu --threads 2 --batch-size 32 --steps 5 --rounds 1 --packing")
    assert bench.command_line("auto", 1, 64, 200, 3, False).endswith("--rounds 3 --no-packing")


def test_told_writes_the_results_as_json_and_names_the_file(tmp_path):
    results = {"settings": {"steps": 5}, "command": "tune-norm bench"}
    assert bench.told(results, "table\n") == Outcome("table\n")  # no --json: nothing written
    done = bench.told(results, "table\n", tmp_path / "r.json")
    assert done == Outcome("table\n", [f"results: {tmp_path / 'r.json'}"])
    assert (tmp_path / "r.json").read_text() == json.dumps(results, indent=2) + "\n"


def test_an_unwritable_json_file_is_one_error_line_and_exit_2_and_the_table_still_printed(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    done = bench.told({"a": 1}, "table\n", blocker / "r.json")
    assert done.out == "table\n" and done.exit_code == 2
    assert done.err == [f"error: cannot write {blocker / 'r.json'}: Not a directory"]


@pytest.mark.parametrize("mode", [[], ["--search"]])
def test_an_unwritable_json_file_is_refused_before_the_bench_runs(tmp_path, mode):
    """It used to be found only after the whole benchmark had run."""
    blocker = tmp_path / "file"
    blocker.write_text("kept")
    for target, words in ((blocker / "r.json", f"the folder {blocker} does not exist"), (tmp_path, "is a folder")):
        res = run_cli("bench", *mode, "--json", target)
        assert res.returncode == 2 and res.stderr.startswith("error: ") and words in res.stderr, res.stderr[-2000:]
        assert len(res.stderr.strip().splitlines()) == 1 and not res.stdout, (res.stdout, res.stderr)
    assert blocker.read_text() == "kept" and sorted(p.name for p in tmp_path.iterdir()) == ["file"]


# -- bench --search: FLOPs, peak, the mini-search through Ray vs direct ------------------------------
def test_step_flops_from_shapes_agree_with_torch_flop_counter():
    """The count from layer shapes vs torch's FlopCounterMode on one real forward + backward step."""
    from torch.utils.flop_counter import FlopCounterMode

    from tune_norm import flops
    from tune_norm.model import Net

    model, batch = Net(), 16
    x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    with FlopCounterMode(display=False) as fwd:
        out = model(x)
    with FlopCounterMode(display=False) as bwd:
        F.nll_loss(out, y).backward()
    assert fwd.get_total_flops() == flops.forward_flops(model) * batch  # forward: exact
    counted = (fwd.get_total_flops() + bwd.get_total_flops()) / batch
    # 3x forward counts the first conv's input gradient, which torch skips (the images need none): ~1.5%
    assert flops.step_flops_per_image(model) == pytest.approx(counted, rel=0.02)
    assert flops.step_flops_per_image(model) >= counted


@pytest.mark.parametrize("vendor, flags, per_cycle", [
    ("GenuineIntel", "fma avx2 avx512f", 64), ("AuthenticAMD", "fma avx2 avx512f", 32),
    ("GenuineIntel", "fma avx2", 32), ("GenuineIntel", "sse2", 16)])
def test_cpu_peak_from_isa_flags(vendor, flags, per_cycle):
    from tune_norm import flops

    peak = flops.cpu_peak(4, f"vendor_id\t: {vendor}\ncpu MHz\t\t: 2500.000\nflags\t\t: {flags}\n")
    assert peak.flops_per_cycle == per_cycle and peak.gflops == pytest.approx(4 * 2.5 * per_cycle)
    assert "GHz" in peak.assumption
    assert math.isfinite(flops.cpu_peak(1).gflops) and flops.cpu_peak(1).gflops > 0  # this machine's


@pytest.mark.parametrize("args, message", [(["--search-trials", "0"], "search trials must be at least 1"),
                                           (["--levers", "warp"], "unknown lever 'warp'"),
                                           (["--search-images", "60000"], "at most the 55000")])
def test_bench_search_refuses_bad_sizes_before_work(args, message, tmp_path):
    res = run_cli("bench", "--search", *args, "--json", tmp_path / "out.json")
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("text, levers", [("eval,checkpoint,compile", ("eval", "checkpoint", "compile")),
                                          (" eval , compile", ("eval", "compile")), ("none", ()), ("", ())])
def test_levers_are_a_comma_list_or_none(text, levers):
    from tune_norm import searchbench

    assert searchbench.parse_levers(text) == levers


def test_the_search_command_line_repeats_the_run():
    from tune_norm import searchbench

    ms = searchbench.MiniSearch(trials=2, epochs=2, images=640, threads=1, rounds=1)
    assert searchbench.command_line(ms, (), 2) == (
        "tune-norm bench --search --threads 1 --search-trials 2 --search-epochs 2 --search-images 640 "
        "--search-rounds 1 --levers none --lever-rounds 2")
    assert searchbench.command_line(ms, ("eval", "checkpoint"), 5).endswith("--levers eval,checkpoint --lever-rounds 5")


def test_bench_search_refuses_bad_levers_before_work_and_writes_nothing(tmp_path):
    from tune_norm import searchbench

    with pytest.raises(UserError, match="unknown lever 'warp'"):
        searchbench.bench(threads=0, levers="eval, warp", json_path=tmp_path / "out.json", log=pytest.fail)
    assert not (tmp_path / "out.json").exists()


@pytest.mark.slow
def test_bench_search_cli_prints_ray_overhead_and_share_of_peak(tmp_path):
    out = tmp_path / "search.json"
    res = run_cli("bench", "--search", "--search-trials", "2", "--search-epochs", "2", "--search-images", "640",
                  "--levers", "eval,checkpoint", "--lever-rounds", "2", "--json", out, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "| Ray overhead: Ray wall / direct wall (goal <= 1.1) |" in res.stdout and "% of peak" in res.stdout
    r = json.loads(out.read_text())
    search, step = r["search"], r["step"]
    (only,) = search["rounds"]
    assert only["ray"]["epochs"] == only["direct"]["epochs"] == 4  # the same trials on both paths
    numbers = [search["ray_overhead"], search["ray_overhead_after_startup"], search["ray_trials_per_hour"],
               search["direct_trials_per_hour"], step["achieved_gflops"], step["peak_gflops"], step["share_of_peak"],
               step["step_flops_per_image"], r["levers"]["checkpoint"]["save_s"],
               *r["levers"]["eval"]["speedups_vs_reference"].values()]
    assert all(math.isfinite(v) and v > 0 for v in numbers)
    assert 0 < step["share_of_peak"] < 1 and search["ray_per_epoch_gap_s"] >= 0
    assert search["ray_overhead"] == pytest.approx(only["ray"]["wall_s"] / only["direct"]["wall_s"])
    assert len(set(r["levers"]["eval"]["accuracies"].values())) == 1  # every eval variant, the same accuracy


@pytest.mark.slow
def test_eval_batch_changes_no_metric(data_root):
    """Trainer.evaluate at EVAL_BATCH (500) gives the accuracy and loss of the old batch of 1000, after training."""
    from tune_norm import train

    cfg = TrainConfig(threads=1, device="cpu", epochs=1, subset=6400, val_size=5000)
    tr = Trainer(cfg, data.load(data_root, val_size=5000, subset=6400))
    tr.train_epoch()
    new = tr.evaluate("val")
    old_batch, train.EVAL_BATCH = train.EVAL_BATCH, 1000
    try:
        old = tr.evaluate("val")
    finally:
        train.EVAL_BATCH = old_batch
    assert old_batch == 500 and new["val_acc"] == old["val_acc"] and 50 < new["val_acc"] < 100
    assert new["val_loss"] == pytest.approx(old["val_loss"], rel=1e-6)
