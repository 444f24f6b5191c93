"""The main job end to end in its --quick form (tiny data, one epoch per stage, on the CPU): the summary's keys,
ranges and files, metrics that recompute from those files, and resuming."""
import json
import math
from pathlib import Path

import numpy as np

from sts3d.engine.metrics import mean_class_accuracy, top_k_accuracy
from sts3d.tools import main_job

ROOT = Path(__file__).resolve().parents[1]


def run_job(work_dir: Path, capfd, *flags: str) -> str:
    assert main_job.main(["--work-dir", str(work_dir), "--quick", *flags]) == 0
    return capfd.readouterr().out


def test_quick_job_end_to_end_then_resumes(tmp_path, capfd):
    out = run_job(tmp_path, capfd)
    # every step printed its command before running it, and the rerunnable form names the ordinary tools
    for tool in ("-m sts3d.data.synthetic images", "-m sts3d.data.synthetic videos", "Image_Pre_Training/train.py",
                 "tools/train.py", "tools/test.py"):
        assert tool in out
    assert out.count("$ OMP_NUM_THREADS=") == 9

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary) == {"pretrained_sts", "scratch_sts", "pretrained_plain"}
    for run, entry in summary.items():
        assert set(entry) >= {"top1", "top5", "mean_class_accuracy", "result_file", "ann_file"}
        for metric in ("top1", "top5", "mean_class_accuracy"):
            assert isinstance(entry[metric], float) and 0.0 <= entry[metric] <= 1.0
        result_file, ann_file = ROOT / entry["result_file"], ROOT / entry["ann_file"]
        assert result_file.is_file() and ann_file.is_file()
        assert result_file.resolve() == (tmp_path / run / "test" / "scores.json").resolve()
        # the metrics recompute from the two files, by hand
        scores = np.asarray(json.loads(result_file.read_text()))
        labels = [int(line.split()[-1]) for line in ann_file.read_text().splitlines() if line.strip()]
        assert scores.shape == (len(labels), 4)  # 2 shapes x 2 directions
        assert np.allclose(scores.sum(1), 1.0, atol=1e-4)  # averaged softmax probabilities
        top1, top5 = top_k_accuracy(scores, labels, (1, 5))
        assert math.isclose(entry["top1"], top1) and math.isclose(entry["top5"], top5) and top5 == 1.0
        assert math.isclose(entry["mean_class_accuracy"], mean_class_accuracy(scores, labels))
    assert (tmp_path / "summary.png").stat().st_size > 0

    # a rerun with the same settings skips every step and rewrites the same summary
    before = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/train/epoch_1.pth")}
    out = run_job(tmp_path, capfd)
    assert out.count("skipped. Command:") == 9 and "$ OMP_NUM_THREADS=" not in out
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert json.loads((tmp_path / "summary.json").read_text()) == summary


def test_a_changed_step_or_dependency_is_not_done(tmp_path):
    """Only the record's bookkeeping is exercised here (no training): a step whose record names another command
    is not done, and a step whose dependency ran again is not done either."""
    (tmp_path / main_job.STEPS_DIR).mkdir()
    step = main_job.Step("b", "b", ["python", "x"], tmp_path / "b", [tmp_path / "b" / "out"], ("a",))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "out").write_text("")
    record = {"command": ["python", "x"], "deps": {"a": "id1"}, "run_id": "id2", "seconds": 1.0}
    main_job.record_path(tmp_path, "b").write_text(json.dumps(record))
    assert main_job.is_done(step, tmp_path, {"a": "id1"})
    assert not main_job.is_done(step, tmp_path, {"a": "id3"})  # the dependency ran again
    step.command = ["python", "y"]
    assert not main_job.is_done(step, tmp_path, {"a": "id1"})  # other settings
    step.command = ["python", "x"]
    step.settings = "another config digest"
    assert not main_job.is_done(step, tmp_path, {"a": "id1"})  # an edited config file
    step.settings = ""
    (tmp_path / "b" / "out").unlink()
    assert not main_job.is_done(step, tmp_path, {"a": "id1"})  # incomplete outputs


def test_refuses_a_foreign_work_dir(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main_job.main(["--work-dir", str(tmp_path), "--quick", "--fresh"]) == 1
    assert "not a main job's work dir" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"
