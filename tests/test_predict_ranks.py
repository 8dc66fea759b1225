"""Prediction over many scenes as several ranks: environment, sharding, torchrun end to end."""

import os
import random
import re
import shutil
import subprocess
import sys

import lightning
import numpy as np
import pytest
import rasterio
import torch
from tests.test_predict import _image, _task

from demgen.errors import DemgenError
from demgen.inference import ranks
from demgen.inference.ranks import rank_device, shard, world
from demgen.inference.scene import predict_scene
from demgen.tasks.registry import load_task

LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK",
               "GROUP_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS",
               "SLURM_LOCALID")  # fmt: skip


@pytest.fixture
def checkpoint(tmp_path):
    """A small real U-Net regression task in Lightning's checkpoint format."""
    torch.manual_seed(0)
    task = _task(pointwise=False, pixel_size=10.0)
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams),
                "pytorch-lightning_version": lightning.__version__}, path)  # fmt: skip
    return path


@pytest.fixture
def no_launcher(monkeypatch):
    for name in LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_world_from_torchrun_slurm_and_nothing(no_launcher):
    assert world() == (0, 1, 0)
    for name, value in {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1"}.items():
        no_launcher.setenv(name, value)
    assert world() == (5, 8, 1)
    no_launcher.setenv("SLURM_STEP_NUM_TASKS", "6")  # srun's step, not the allocation
    assert world() == (5, 6, 1)
    for name, value in {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}.items():
        no_launcher.setenv(name, value)
    assert world() == (3, 4, 1)  # torchrun inside a SLURM job: torchrun's ranks
    # Lightning's launcher sets no RANK: node 0 is the local rank, else NODE_RANK * per node
    assert world({"WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == (1, 2, 1)
    env = {"WORLD_SIZE": "8", "LOCAL_RANK": "1", "NODE_RANK": "1", "LOCAL_WORLD_SIZE": "4"}
    assert world(env) == (5, 8, 1)
    for bad in ({"WORLD_SIZE": "8", "LOCAL_RANK": "1", "NODE_RANK": "1"},
                {"RANK": "4", "WORLD_SIZE": "4"}, {"RANK": "x", "WORLD_SIZE": "4"}):  # fmt: skip
        with pytest.raises(DemgenError):
            world(bad)


def test_shard_takes_every_item_once():
    rng = random.Random(0)
    for n in (0, 1, 4, 7, 13):
        items = [f"scene_{i:02d}.tif" for i in range(n)]
        for size in range(1, 6):
            parts = [shard(items, r, size) for r in range(size)]
            assert sorted(x for p in parts for x in p) == items
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
            shuffled = rng.sample(items, n)  # each rank may list them in its own order
            assert [shard(shuffled, r, size) for r in range(size)] == parts
    assert shard(["b", "a", "d", "c"], 0, 2) == ["a", "c"]  # round-robin in sorted order
    with pytest.raises(ValueError):
        shard(items, 2, 2)


def test_rank_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert rank_device(1) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert [rank_device(i) for i in range(3)] == ["cuda:0", "cuda:1", "cuda:0"]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # srun --gpus-per-task=1
    assert rank_device(3) == "cuda:0"
    assert ranks.__all__ == ["rank_device", "shard", "world"]


SUMMARY = re.compile(r"rank (\d+)/(\d+): predicted (\d+), skipped (\d+), failed (\d+)")


def _summaries(text):
    return {int(m[1]): tuple(map(int, m.groups()[1:])) for m in SUMMARY.finditer(text)}


def _stat(path):
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


def test_torchrun_shards_scenes_and_a_rerun_predicts_only_the_missing(
    tmp_path, checkpoint, one_thread
):
    scenes = [_image(tmp_path, n=48, name=f"s{i}.tif", seed=i) for i in range(4)]
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    env["OMP_NUM_THREADS"] = "1"
    predict = ["-m", "demgen", "predict", str(checkpoint), *map(str, scenes), "-o", f"{out}/",
               "-q", "--precision", "32"]  # fmt: skip
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", "2", *predict]  # fmt: skip

    def launch(cmd):
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env,
                              cwd=tmp_path)  # fmt: skip

    r = launch(torchrun)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _summaries(r.stdout) == {0: (2, 2, 0, 0), 1: (2, 2, 0, 0)}
    dems = [out / f"s{i}_dem.tif" for i in range(4)]
    task = load_task(checkpoint)
    for scene, dem in zip(scenes, dems, strict=True):  # as one process predicts them
        ref = predict_scene(task, scene, tmp_path / "ref.tif", precision="32", progress=False)
        with rasterio.open(dem) as got, rasterio.open(ref) as want:
            assert got.transform == want.transform and got.crs == want.crs
            np.testing.assert_allclose(got.read(), want.read(), rtol=0, atol=1e-5)
        ref.unlink()

    # Rank 0 has s0 and s2 (sorted, round-robin), rank 1 s1 and s3. s0 becomes unreadable,
    # its output and s2's are lost, a killed writer of s2 left its temporary file behind.
    shutil.copy(scenes[0], tmp_path / "s0.good")
    scenes[0].write_bytes(os.urandom(3000))
    dems[0].unlink()
    dems[2].unlink()
    partial = out / ".s2_dem.tif.deadbeef.tmp.tif"
    partial.write_bytes(b"half a GeoTIFF")
    kept = {d: _stat(d) for d in (dems[1], dems[3])}
    r = launch(torchrun)
    assert r.returncode != 0 and re.search(r"exitcode\s*:\s*2\b", r.stderr), r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("demgen predict: error:")]
    assert len(errors) == 1 and str(scenes[0].name) in errors[0], r.stderr
    assert "not a readable raster" in errors[0]
    got = _summaries(r.stdout)
    assert got[0] == (2, 1, 0, 1)  # s0 failed, then s2 was predicted again
    assert got.get(1, (2, 0, 2, 0)) == (2, 0, 2, 0)  # rank 1 may be stopped before it logs
    assert dems[2].exists() and not dems[0].exists() and not partial.exists()
    assert {d: _stat(d) for d in kept} == kept  # untouched: not rewritten

    # s0 restored: a plain single-process rerun predicts s0 and only s0.
    shutil.copy(tmp_path / "s0.good", scenes[0])
    kept = {d: _stat(d) for d in dems[1:]}
    r = launch([sys.executable, *predict])
    assert r.returncode == 0, r.stderr
    assert _summaries(r.stdout) == {0: (1, 1, 3, 0)}
    assert f"wrote {dems[0]}" in r.stdout
    assert {d: _stat(d) for d in kept} == kept
    assert sorted(p.name for p in out.iterdir()) == [d.name for d in dems]
