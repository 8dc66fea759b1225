"""The command line: help at every level, one-line errors with exit code 2, no tracebacks."""

import subprocess
import sys

import pytest

from demgen.data.synth import SCENE_FILES


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "demgen", *args], capture_output=True, text=True, cwd=cwd,
        timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("cmd", [[], ["synth"], ["demo"]])
def test_help(cmd):
    r = run(*cmd, "--help")
    assert r.returncode == 0
    assert "usage: demgen" in r.stdout
    if cmd:
        assert "--" in r.stdout and len(r.stdout.splitlines()) > 5


def test_no_command_prints_help_and_fails():
    r = run()
    assert r.returncode == 2 and "synth" in r.stdout


@pytest.mark.parametrize(
    "args, expect",
    [
        (["synth", "out", "--size", "abc"], "expected a whole number"),
        (["synth", "out", "--size", "0"], "expected a positive number"),
        (["synth", "out", "--relief", "moon"], "invalid choice"),
        (["synth"], "required"),
        (["synth", "out", "--size", "16"], "size"),
        (["synth", "out", "--sun-elevation", "95"], "sun"),
        (["demo", "--precision", "fp8"], "invalid choice"),
        (["demo", "--minutes", "-1"], "--minutes must be positive"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_are_one_line_exit_2(tmp_path, args, expect):
    r = run(*args, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert expect in lines[0] and "error" in lines[0]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_demo_refuses_existing_nonempty_out(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("precious")
    r = run("demo", "--fast", "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and "already exists" in r.stderr
    assert (tmp_path / "run" / "keep.txt").read_text() == "precious"


def test_synth_writes_scenes_and_refuses_to_overwrite(tmp_path):
    r = run("synth", str(tmp_path / "w"), "--size", "64", "--scenes", "2", "--seed", "5", "-q")
    assert r.returncode == 0, r.stderr
    for name in ("scene_000", "scene_001"):
        files = {p.name for p in (tmp_path / "w" / name).iterdir()}
        assert set(SCENE_FILES) <= files
    r = run("synth", str(tmp_path / "w"), "--size", "64", "-q")
    assert r.returncode == 2 and "already exists" in r.stderr
    r = run("synth", str(tmp_path / "w"), "--size", "64", "-q", "--overwrite")
    assert r.returncode == 0
