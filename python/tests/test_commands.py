"""cgflow.md / cgflow.al / cgflow.run: the command line's settings as keyword arguments, unknown ones
named, progress reported, and Ctrl-C stopping at a checkpoint from which a resume ends exactly where
an uninterrupted run does."""

import json
import os
import signal
import threading
import time

import numpy as np
import pytest

import cgflow
from conftest import ALDP

MD_SETTINGS = dict(
    system=ALDP / "aldp_obc1.xml",
    positions=ALDP / "min_energy.pdb",
    walkers=4,
    record_every=10,
    checkpoint_every=200,
    seed=5,
    dihedral=[(4, 6, 8, 14), (6, 8, 14, 16)],
    property=["Threads=1"],
    dcd_walkers=0,
)


def cv_frames(out) -> np.ndarray:
    description = json.loads((out / "cv.json").read_text())
    values = np.fromfile(out / "cv.f32", dtype="<f4")
    return values.reshape(description["frames"], 4, 2)


def test_md_runs_with_keyword_settings_and_reports_progress(tmp_path):
    seen = []
    cgflow.md(out=tmp_path / "md", steps=400, progress=lambda *p: seen.append(p), **MD_SETTINGS)
    frames = cv_frames(tmp_path / "md")
    assert frames.shape == (40, 4, 2)
    assert np.all(np.abs(frames) <= np.pi)
    # At least the final report, which always comes; every report names the phase and its size.
    assert seen and seen[-1] == ("steps per walker", 400, 400), seen
    assert all(phase == "steps per walker" and total == 400 for phase, _, total in seen)
    assert [done for _, done, _ in seen] == sorted(done for _, done, _ in seen)


def test_an_exception_in_the_progress_callback_stops_the_run_at_a_checkpoint_and_is_raised(tmp_path):
    def fail(phase, done, total):
        if done >= 400:
            raise RuntimeError("callback says stop")

    with pytest.raises(RuntimeError, match="callback says stop"):
        cgflow.md(out=tmp_path / "md", steps=6000, progress=fail, **MD_SETTINGS)
    frames = cv_frames(tmp_path / "md").shape[0]
    assert 0 < frames < 600 and frames % 20 == 0, frames
    # The process is free for the next command, which resumes the stopped one.
    cgflow.md(out=tmp_path / "md", steps=6000, resume=True, **MD_SETTINGS)
    assert cv_frames(tmp_path / "md").shape[0] == 600


def test_long_calls_release_the_gil(tmp_path):
    ticks = []
    stop = threading.Event()

    def count():
        while not stop.is_set():
            ticks.append(1)
            stop.wait(0.001)

    thread = threading.Thread(target=count)
    thread.start()
    started = time.perf_counter()
    try:
        cgflow.md(out=tmp_path / "md", steps=2000, **MD_SETTINGS)
    finally:
        elapsed = time.perf_counter() - started
        stop.set()
        thread.join()
    # The counting thread ran all along: at least a tick per 10 ms of the call (it ticks about
    # once per ms when it runs; with the GIL held by the call it would not tick at all).
    assert elapsed > 0.05, elapsed
    assert len(ticks) > elapsed / 0.01, (len(ticks), elapsed)


def test_ctrl_c_stops_at_a_checkpoint_and_resume_ends_where_an_uninterrupted_run_does(tmp_path):
    steps = 6000
    cgflow.md(out=tmp_path / "whole", steps=steps, **MD_SETTINGS)

    def ctrl_c_once(phase, done, total, sent=[]):
        # SIGINT to this process, as Ctrl-C sends it, once the run is 400 steps in.
        if done >= 400 and not sent:
            sent.append(done)
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt, match="continue with --resume"):
        cgflow.md(out=tmp_path / "cut", steps=steps, progress=ctrl_c_once, **MD_SETTINGS)
    stopped_at = cv_frames(tmp_path / "cut").shape[0]
    assert 0 < stopped_at < steps // 10, stopped_at
    assert stopped_at % 20 == 0  # at a checkpoint: 200 steps = 20 frames
    cgflow.md(out=tmp_path / "cut", steps=steps, resume=True, **MD_SETTINGS)
    whole, cut = cv_frames(tmp_path / "whole"), cv_frames(tmp_path / "cut")
    # Nothing lost, nothing repeated; the frames before the stop are the uninterrupted run's bit for
    # bit, and the next ones agree to round-off (OpenMM rebuilds its neighbour list on restore, so
    # sums run in another order and the trajectories drift apart slowly, as for the command line).
    assert cut.shape == whole.shape == (steps // 10, 4, 2)
    np.testing.assert_array_equal(cut[:stopped_at], whole[:stopped_at])
    np.testing.assert_allclose(cut[stopped_at : stopped_at + 5], whole[stopped_at : stopped_at + 5], atol=1e-4)
    assert not np.any(np.all(cut[1:] == cut[:-1], axis=(1, 2)))


def test_unknown_and_malformed_settings_raise_value_errors_naming_them(tmp_path):
    with pytest.raises(ValueError, match="unknown setting 'walkerz'.*walkers"):
        cgflow.md(out=tmp_path / "x", steps=10, walkerz=3, **MD_SETTINGS)
    with pytest.raises(ValueError, match="--steps"):
        cgflow.md(out=tmp_path / "x", steps="many", **MD_SETTINGS)
    with pytest.raises(ValueError, match="resume is a switch"):
        cgflow.md(out=tmp_path / "x", steps=10, resume="yes", **MD_SETTINGS)
    with pytest.raises(ValueError, match="no command"):
        cgflow.run("fly")
    with pytest.raises(FileNotFoundError):
        cgflow.md(out=tmp_path / "x", steps=10, **{**MD_SETTINGS, "system": tmp_path / "missing.xml"})
    config = cgflow_al_tiny_config()
    config["energy_training"]["learning_rate"] = 1e-3
    with pytest.raises(ValueError, match="unknown field `learning_rate`"):
        cgflow.al(config, tmp_path / "al", reference="none")
    with pytest.raises(ValueError, match="give 'preset' as its own argument"):
        cgflow.al("tiny", tmp_path / "al", preset="fast")
    with pytest.raises(ValueError, match="invalid value 'huge'"):
        cgflow.al("huge", tmp_path / "al")
    with pytest.raises(ValueError, match="given once, not as a list"):
        cgflow.md(out=tmp_path / "x", steps=[10, 20], **MD_SETTINGS)
    # A negative value reaches its option as a value (clap then refuses it for an unsigned option),
    # not as an unknown option '-5'.
    with pytest.raises(ValueError, match="invalid value '-5' for '--record-every"):
        cgflow.md(out=tmp_path / "x", steps=10, **{**MD_SETTINGS, "record_every": -5})


def cgflow_al_tiny_config() -> dict:
    """The tiny preset's settings, as `cgflow al --preset tiny --print-config` prints them (from the
    Rust side, to the process's stdout: so in a child process)."""
    import subprocess
    import sys

    code = "import cgflow; cgflow.run('al', preset='tiny', print_config=True)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def test_al_with_a_settings_dict_equals_the_preset(tmp_path, tiny_model):
    config = cgflow_al_tiny_config()
    out = tmp_path / "al"
    cgflow.al(config, out, system=ALDP / "aldp_obc1.xml", structure=ALDP / "min_energy.pdb", reference="none")
    ours = json.loads((out / "summary.json").read_text())
    preset = json.loads((tiny_model.parent / "summary.json").read_text())
    assert ours["evaluations"] == preset["evaluations"] and ours["iterations"] == preset["iterations"]
    assert (out / "model" / "weights.safetensors").read_bytes() == (tiny_model / "weights.safetensors").read_bytes()
    with pytest.raises(ValueError, match="already holds a run"):
        cgflow.al(config, out, reference="none")
