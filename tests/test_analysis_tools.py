"""tools/analysis: analyze_logs.py (curves and training time of a json log), eval_metric.py (metrics of saved
scores), report_accuracy.py (fused scores of several models) and print_config.py (the resolved config), and
tools/publish_model.py, run as a user runs them, on logs, score files, configs and checkpoints written to disk."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import re

import numpy as np
import pytest
import torch
import yaml

from sts3d.checkpoint import read_checkpoint, save_checkpoint
from sts3d.config import load_config
from sts3d.data.pipeline import num_segments
from sts3d.engine.log_analysis import key_curves, load_json_log, train_time
from sts3d.engine.metrics import mean_class_accuracy, top_k_accuracy
from sts3d.engine.video_cli import eval_metric_main, report_accuracy_main
from sts3d.engine.video_cli import test_main as run_test_tool
from sts3d.models.builder import build_recognizer

from finetune_helpers import CONFIGS, TOOLS, analysis_tool, run_tool, tiny_config, tiny_videos


def _write_log(path, times=((0.9, 0.2, 0.2), (0.5, 0.3, 0.4))):
    """Two epochs of 5 iterations logged at iterations 2, 4, 5, validation after each, a test row, a meta line."""
    lines = [{"env_info": "x", "seed": 0}]
    for epoch, epoch_times in enumerate(times, start=1):
        for it, t in zip((2, 4, 5), epoch_times):
            lines.append({"mode": "train", "epoch": epoch, "iter": it, "lr": 0.1, "time": t, "data_time": 0.01,
                          "loss": 2.0 / (epoch * it), "top1_acc": 0.1 * epoch})
        lines.append({"mode": "val", "epoch": epoch, "iter": 4, "lr": 0.1, "top1_acc": 0.3 * epoch,
                      "mean_class_accuracy": 0.25 * epoch})
    lines.append({"mode": "test", "checkpoint": "epoch_2.pth", "top1_acc": 0.7})
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


def test_json_log_rows_curves_and_train_time(tmp_path):
    rows = load_json_log(_write_log(tmp_path / "run.log.json"))
    assert len(rows.train) == 6 and len(rows.val) == 2 and rows.iters_per_epoch() == 5
    train, val = key_curves(rows, "top1_acc", "run")
    np.testing.assert_array_equal(train.iters, [2, 4, 5, 7, 9, 10])  # epoch 2 starts after 5 iterations
    np.testing.assert_array_equal(val.iters, [5, 10])  # at the end of each epoch
    np.testing.assert_allclose(val.values, [0.3, 0.6])
    assert val.label == "run (val)" and not train.validation
    (only_val,) = key_curves(rows, "mean_class_accuracy", "run")
    assert only_val.validation
    # the first row of each epoch (the loader's start-up) is left out unless asked for
    timing = train_time(rows)
    assert (timing.slowest_epoch, timing.fastest_epoch) == (2, 1)
    assert timing.slowest == pytest.approx(0.35) and timing.fastest == pytest.approx(0.2)
    assert timing.std_over_epochs == pytest.approx(0.075) and timing.mean_iter_time == pytest.approx(0.275)
    outliers = train_time(rows, include_outliers=True)
    assert outliers.slowest_epoch == 1 and outliers.slowest == pytest.approx(1.3 / 3)


def test_analyze_logs_command_line(tmp_path, capsys):
    tool = analysis_tool("analyze_logs")
    log = _write_log(tmp_path / "a.log.json")
    other = _write_log(tmp_path / "b.log.json", times=((0.5, 0.1, 0.1), (0.5, 0.1, 0.1)))
    out = tmp_path / "curves.png"
    assert tool.main(["plot_curve", str(log), str(other), "--keys", "loss", "top1_acc", "--legend", "a_loss",
                      "a_top1", "b_loss", "b_top1", "--title", "runs", "--out", str(out)]) == 0
    assert out.stat().st_size > 0 and f"save curve to: {out}" in capsys.readouterr().out
    assert tool.main(["cal_train_time", str(log), str(other)]) == 0
    printed = capsys.readouterr().out
    assert f"-----Analyze train time of {log}-----" in printed
    assert "slowest epoch 2, average time is 0.3500" in printed and "average iter time: 0.1000 s/iter" in printed
    # what cannot be drawn or read is one error line naming the file
    for argv, message in ((["plot_curve", str(log), "--keys", "loss_cls", "--out", str(out)], "no row holds"),
                          (["plot_curve", str(log), "--keys", "loss", "--legend", "x", "y", "--out", str(out)],
                           "--legend has 2 names for 1 logs x 1 keys")):
        assert tool.main(argv) == 2
        assert message in capsys.readouterr().err
    broken = tmp_path / "broken.log.json"
    broken.write_text(log.read_text() + "{not json\n")
    assert tool.main(["cal_train_time", str(broken)]) == 2
    assert f"{broken}:11: not a JSON line" in capsys.readouterr().err


@pytest.fixture()
def scored(tmp_path):
    """A config whose test list has 6 videos of 3 classes, and scores for them (video 3 undecodable: null)."""
    rng = np.random.default_rng(0)
    labels = [0, 1, 2, 2, 1, 0]
    (tmp_path / "test.txt").write_text("".join(f"v{i}.mp4 {label}\n" for i, label in enumerate(labels)))
    config = tmp_path / "cfg.py"
    config.write_text(f"data = dict(test=dict(ann_file={str(tmp_path / 'test.txt')!r}))\n"
                      "evaluation = dict(interval=5, save_best='auto', metrics=['top_k_accuracy'])\n")
    scores = rng.random((6, 3)).astype(np.float32)
    return config, labels, scores


def test_eval_metric_reads_our_files_and_mmaction_pickles(scored, tmp_path, capsys):
    config, labels, scores = scored
    kept = [0, 1, 2, 4, 5]
    listed = [s.tolist() for s in scores]
    listed[3] = None
    top1, top2 = top_k_accuracy(scores[kept], [labels[i] for i in kept], (1, 2))
    mean_class = mean_class_accuracy(scores[kept], [labels[i] for i in kept])
    json_file, yaml_file, pkl_file = tmp_path / "r.json", tmp_path / "r.yaml", tmp_path / "r.pkl"
    json_file.write_text(json.dumps(listed))
    yaml_file.write_text(yaml.safe_dump(listed))
    with open(pkl_file, "wb") as file:  # mmaction's --out: a list of float32 arrays
        pickle.dump([None if s is None else np.asarray(s, dtype=np.float32) for s in listed], file)
    for path in (json_file, yaml_file, pkl_file):
        # the config's evaluation dict (hook keys left out) chooses top-k only; --eval-options its k
        assert eval_metric_main([str(config), str(path), "--eval-options",
                                 "metric_options.top_k_accuracy.topk=(1,2)"]) == 0
        header, _, values = capsys.readouterr().out.splitlines()[-3:]
        assert [t.strip() for t in header.split("|")] == ["top-1", "top-2"]
        assert values.split() == [f"{100 * top1:.2f}", "|", f"{100 * top2:.2f}"]
    assert eval_metric_main([str(config), str(json_file), "--eval", "mean_class_accuracy"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].strip() == f"{100 * mean_class:.2f}"


def test_eval_metric_bad_input_is_one_line(scored, tmp_path, capsys):
    config, _, scores = scored
    short = tmp_path / "short.json"
    short.write_text(json.dumps(scores[:4].tolist()))
    assert eval_metric_main([str(config), str(short)]) == 2
    assert "has scores of 4 videos" in capsys.readouterr().err
    nulls = tmp_path / "nulls.json"
    nulls.write_text(json.dumps([None] * 6))
    assert eval_metric_main([str(config), str(nulls)]) == 2
    assert f"{nulls} has no scores: every entry is null" in capsys.readouterr().err

    class Payload:  # a pickle that would run a command when loaded
        def __reduce__(self):
            return os.system, ("echo owned",)

    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps([Payload()]))
    assert eval_metric_main([str(config), str(evil)]) == 2
    assert "is not allowed in a scores file" in capsys.readouterr().err
    assert eval_metric_main([str(config), str(tmp_path / "r.txt")]) == 2
    assert "the extension must be one of" in capsys.readouterr().err


def test_print_config_output_loads_back_to_the_same_settings(tmp_path, capsys):
    config = CONFIGS / "x3d" / "x3d_s_13x6_STS_k400_video.py"  # three _base_ files
    overrides = ["model.cls_head.num_classes=7", "data.test.ann_file=my list.txt", "total_epochs=3"]
    done = run_tool(str(TOOLS / "analysis" / "print_config.py"), str(config), "--cfg-options", *overrides,
                    cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    saved = tmp_path / "resolved.py"
    saved.write_text(done.stdout)  # what `print_config.py CONFIG > resolved.py` leaves
    again, expected = load_config(saved), load_config(config, overrides)
    assert {k: v for k, v in again.items() if k != "filename"} == {k: v for k, v in expected.items()
                                                                    if k != "filename"}
    assert again.model.cls_head.num_classes == 7 and again.data.test.ann_file == "my list.txt"
    assert again.optimizer.type == "SGD"  # from a _base_ file
    # mmaction's flag name for the overrides works too
    tool = analysis_tool("print_config")
    assert tool.print_config_main([str(config), "--options", "total_epochs=4"]) == 0
    assert "\ntotal_epochs = 4\n" in capsys.readouterr().out
    # a config that cannot be read is one line, status 2
    missing = run_tool(str(TOOLS / "analysis" / "print_config.py"), str(tmp_path / "nope.py"), cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.strip() == f"error: config file not found: {tmp_path / 'nope.py'}"


def _fused_expected(models, coefficients, labels, softmax):
    """What report_accuracy.py should print for ``models`` (lists of per-video scores, None where undecoded),
    computed here without the tool's code: the videos every model scored, weighted sums, the project's metrics."""
    kept = [v for v in range(len(labels)) if all(m[v] is not None for m in models)]
    fused = 0
    for model, c in zip(models, coefficients):
        rows = np.array([model[v] for v in kept], dtype=np.float64)
        if softmax:
            rows = np.exp(rows) / np.exp(rows).sum(1, keepdims=True)
        fused = fused + c * rows
    truth = [labels[v] for v in kept]
    top1, top5 = top_k_accuracy(fused, truth, (1, 5))
    return [f"{len(kept)} of {len(labels)} videos scored",
            f"Mean Class Accuracy: {mean_class_accuracy(fused, truth):.4f}",
            f"Top 1 Accuracy: {top1:.4f}", f"Top 5 Accuracy: {top5:.4f}"]


@pytest.fixture()
def fusion_files(tmp_path):
    """Scores of 10 videos over 7 classes from three models, written as an mmaction .pkl, our .json and our .yaml
    (video 2 undecodable for the json's model, video 7 for the yaml's), and a rawframes-style datalist."""
    rng = np.random.default_rng(1)
    labels = [0, 1, 2, 3, 4, 5, 6, 0, 1, 2]
    models = [(rng.normal(size=(10, 7)) * 3).tolist() for _ in range(3)]
    models[1][2] = None
    models[2][7] = None
    pkl, json_file, yaml_file = tmp_path / "rgb.pkl", tmp_path / "other.json", tmp_path / "third.yaml"
    with open(pkl, "wb") as file:
        pickle.dump([np.asarray(s, dtype=np.float32) for s in models[0]], file)
    models[0] = [np.float32(s).tolist() for s in models[0]]  # what the file holds
    json_file.write_text(json.dumps(models[1]))
    yaml_file.write_text(yaml.safe_dump(models[2]))
    datalist = tmp_path / "val.txt"  # mmaction's lists end with the label, after a path (and a frame count)
    datalist.write_text("".join(f"video_{v} 300 {label}\n" for v, label in enumerate(labels)))
    return [pkl, json_file, yaml_file], models, labels, datalist


def test_report_accuracy_fuses_the_files_as_mmaction(fusion_files, tmp_path, capsys):
    files, models, labels, datalist = fusion_files
    done = run_tool(str(TOOLS / "analysis" / "report_accuracy.py"), "--scores", *map(str, files), "--coefficients",
                    "1", "0.5", "2", "--datalist", str(datalist), "--apply-softmax", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == _fused_expected(models, [1, 0.5, 2], labels, softmax=True)
    # without --apply-softmax the raw scores are summed; without --coefficients each file weighs 1
    assert report_accuracy_main(["--scores", *map(str, files[:2]), "--datalist", str(datalist)]) == 0
    raw = capsys.readouterr().out.splitlines()
    assert raw == _fused_expected(models[:2], [1, 1], labels, softmax=False)
    assert raw != _fused_expected(models[:2], [1, 1], labels, softmax=True)


def test_report_accuracy_bad_input_is_one_line(fusion_files, tmp_path, capsys):
    files, models, labels, datalist = fusion_files
    short = tmp_path / "short.json"
    short.write_text(json.dumps(models[1][:9]))
    narrow = tmp_path / "narrow.json"
    narrow.write_text(json.dumps([None if s is None else s[:6] for s in models[1]]))
    nulls = tmp_path / "nulls.json"
    nulls.write_text(json.dumps([None] * 10))
    bad_line = tmp_path / "bad.txt"
    bad_line.write_text("a 0\nb 1\nc\n")
    high = tmp_path / "high.txt"
    high.write_text(datalist.read_text().replace("video_4 300 4", "video_4 300 7"))
    scores = ["--scores", str(files[0]), str(files[1])]
    for argv, message in (
            ([*scores, "--coefficients", "1", "1", "1", "--datalist", str(datalist)],
             "--coefficients has 3 values for 2 score files"),
            (["--scores", str(files[0]), str(short), "--datalist", str(datalist)],
             f"{short} has scores of 9 videos, {files[0]} of 10"),
            (["--scores", str(files[0]), str(narrow), "--datalist", str(datalist)],
             f"{narrow}: video 0 has 6 class scores, other videos 7"),
            ([*scores, "--datalist", str(bad_line)], f"{bad_line}:3: expected 'relative/path label'"),
            ([*scores, "--datalist", str(tmp_path / "val_short.txt")], "annotation file not found"),
            ([*scores, "--datalist", str(high)], f"{high}:5: label 7 is outside the 7 classes scored"),
            (["--scores", str(files[0]), str(nulls), "--datalist", str(datalist)],
             "no video has scores in every score file")):
        assert report_accuracy_main(argv) == 2, argv
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and message in err, err
    (tmp_path / "val_short.txt").write_text("".join(datalist.read_text().splitlines(keepends=True)[:8]))
    assert report_accuracy_main([*scores, "--datalist", str(tmp_path / "val_short.txt")]) == 2
    assert "the score files have scores of 10 videos" in capsys.readouterr().err


def test_publish_model_drops_the_optimizer_and_still_tests(tmp_path, capsys):
    """A stage-2 checkpoint as training writes it (weights, meta with a NumPy score as mmcv's, optimizer state after
    a step), published with the script, then tested: the scores equal the unpublished checkpoint's."""
    cfg = tiny_config(tmp_path / "x3d.py", "x3d/x3d_s_13x6_STS_k400_video.py", tiny_videos(tmp_path / "videos"))
    config = load_config(cfg)
    model = build_recognizer({**config.model, "num_segments": num_segments(config.data.test.pipeline)})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 4, 32, 32)).sum().backward()
    optimizer.step()
    meta = {"epoch": 1, "iter": 6, "seed": 0, "best_score": np.float64(0.5)}
    trained = tmp_path / "work" / "epoch_1.pth"
    save_checkpoint({"meta": meta, "state_dict": model.state_dict(), "optimizer": optimizer.state_dict()}, trained)

    done = run_tool(str(TOOLS / "publish_model.py"), str(trained), "release/x3d_tiny.pth", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    published = tmp_path / done.stdout.strip()
    assert re.fullmatch(r"x3d_tiny-[0-9a-f]{8}\.pth", published.name) and published.parent == tmp_path / "release"
    assert hashlib.sha256(published.read_bytes()).hexdigest()[:8] == published.name[-12:-4]
    assert sorted(p.name for p in published.parent.iterdir()) == [published.name]  # no OUT_FILE, no temporary
    assert published.stat().st_size < trained.stat().st_size
    loaded = read_checkpoint(published)
    assert set(loaded) == {"meta", "state_dict"} and loaded["meta"] == meta
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded["state_dict"][key], value, rtol=0, atol=0)
    outs = []
    for checkpoint in (trained, published):
        outs.append(tmp_path / f"{checkpoint.stem}.json")
        assert run_test_tool([str(cfg), str(checkpoint), "--out", str(outs[-1]), "--device", "cpu"]) == 0
    assert json.loads(outs[0].read_text()) == json.loads(outs[1].read_text())
    capsys.readouterr()

    # a missing file or one without weights is one line, status 2
    tool = TOOLS / "publish_model.py"
    missing = run_tool(str(tool), str(tmp_path / "nope.pth"), "x.pth", cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.strip() == f"error: checkpoint not found: {tmp_path / 'nope.pth'}"
    empty = tmp_path / "empty.pth"
    torch.save({"meta": meta}, empty)
    done = run_tool(str(tool), str(empty), "x.pth", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip() == f"error: {empty}: holds no weights to publish"
