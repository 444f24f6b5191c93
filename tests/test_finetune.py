"""Stage 2 end to end on tiny real videos: training, multi-view testing, load_from, resume, distributed runs and bad
input, through the same tools a user runs."""
from __future__ import annotations

import json
import pickle
import re
import socket
import warnings

import numpy as np
import pytest
import timm
import torch

import sts3d.models.image  # noqa: F401  (registers the v3d_* image models with timm)
from sts3d.checkpoint import CheckpointError, inflate_centre, load_pretrained, read_checkpoint, save_checkpoint
from sts3d.config import load_config
from sts3d.data.pipeline import num_segments
from sts3d.engine.video_cli import eval_metric_main, slurm_environment, train_main
from sts3d.engine.video_cli import test_main as run_test_tool
from sts3d.models.builder import build_recognizer

from finetune_helpers import (CONFIGS, NUM_CLASSES, REPO, TOOLS, analysis_tool, run_tool, tiny_config,
                              tiny_videos)

X3D_K400 = "x3d/x3d_s_13x6_STS_k400_video.py"
CSN_SSV2 = "csn/ircsn50_1x8_STS_sthv2_video.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    return tiny_videos(tmp_path_factory.mktemp("finetune") / "videos")


@pytest.fixture(scope="module")
def x3d_run(videos, tmp_path_factory):
    """One epoch of X3D-S + STS with validation and precise-BN (asked for 200 batches; the loader has 6), in CPU
    bf16 autocast (``bf16 = True``; the config's fp16 alone means float32 on a CPU)."""
    root = tmp_path_factory.mktemp("x3d")
    cfg = tiny_config(root / "x3d_tiny.py", X3D_K400, videos,
                      extra="precise_bn = dict(num_iters=200, interval=1)\nbf16 = True")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert train_main([str(cfg), "--work-dir", str(root / "work"), "--validate", "--seed", "0"]) == 0
    return cfg, root / "work", [str(w.message) for w in caught]


def _model(cfg_path, split="train"):
    cfg = load_config(cfg_path)
    return build_recognizer({**cfg.model, "num_segments": num_segments(cfg.data[split].pipeline)})


def test_training_writes_the_seed_checkpoints_logs_and_config(x3d_run):
    cfg, work, caught = x3d_run
    names = {p.name for p in work.iterdir()}
    assert {"epoch_1.pth", "latest.pth", "best_top1_acc_epoch_1.pth", "curves.png", "x3d_tiny.py"} <= names
    checkpoint = read_checkpoint(work / "epoch_1.pth")
    assert checkpoint["meta"]["epoch"] == 1 and checkpoint["meta"]["iter"] == 6  # 12 videos, batch 2
    assert all(k.startswith(("backbone.", "cls_head.")) for k in checkpoint["state_dict"])
    assert "optimizer" in checkpoint
    meta, *rows = [json.loads(line) for line in next(work.glob("*.log.json")).read_text().splitlines()]
    # mmcv's TextLoggerHook: the meta line first (no epoch), then train rows and a val row with what mmaction's
    # analyze_logs.py reads (every row with an epoch has iter and mode; train rows have time, loss_cls, ...)
    assert meta["seed"] == 0 and meta["config_name"] == "x3d_tiny.py" and "epoch" not in meta
    assert {r["mode"] for r in rows} == {"train", "val"}
    assert all({"epoch", "iter", "lr"} <= set(r) for r in rows)
    val = [r for r in rows if r["mode"] == "val"][0]
    assert set(val) >= {"top1_acc", "top5_acc", "mean_class_accuracy"} and 0 <= val["top1_acc"] <= 1
    assert val["iter"] == 4 and rows[-1] is val  # 8 val videos in batches of 2; the epoch's last row
    train_rows = [r for r in rows if r["mode"] == "train"]
    assert [r["iter"] for r in train_rows] == [2, 4, 6]
    assert all({"data_time", "time", "top1_acc", "top5_acc", "loss_cls", "loss", "grad_norm"} <= set(r)
               for r in train_rows)
    assert any("precise_bn" in m and "only 6 batches" in m for m in caught)
    # the dumped config is the resolved one and reads back to the same model
    dumped = load_config(work / "x3d_tiny.py")
    assert dumped.model.cls_head.num_classes == NUM_CLASSES and dumped.seed == 0
    assert _model(work / "x3d_tiny.py").state_dict().keys() == _model(cfg).state_dict().keys()
    log_text = next(work.glob("*.log")).read_text()
    assert "precise-BN: statistics averaged over 6 batches" in log_text and "epoch 1/1" in log_text
    assert "precision bfloat16" in log_text


def test_multi_view_test_prints_the_table_and_writes_scores(x3d_run, tmp_path, capsys):
    cfg, work, _ = x3d_run
    out = tmp_path / "result.json"
    assert run_test_tool([str(cfg), str(work / "epoch_1.pth"), "--eval", "top_k_accuracy", "mean_class_accuracy",
                      "--out", str(out), "--average-clips", "prob"]) == 0
    printed = capsys.readouterr().out
    assert "top-1" in printed and "top-5" in printed and "mean class accuracy" in printed
    scores = np.array(json.loads(out.read_text()))
    assert scores.shape == (8, NUM_CLASSES)  # the val list's 8 videos, in order
    np.testing.assert_allclose(scores.sum(1), 1, rtol=1e-5)  # mean of per-view softmax
    # top-5 of 4 classes counts every video; top-1 recomputes from the written scores
    ann_file = load_config(cfg).data.test.ann_file
    labels = [int(line.split()[-1]) for line in open(ann_file).read().splitlines()]
    top1 = float(np.mean(scores.argmax(1) == np.array(labels)))
    assert f"{100 * top1:.2f}" in printed and "100.00" in printed
    # raw-score averaging and BN folding give the same ranking of classes
    out_score = tmp_path / "score.json"
    assert run_test_tool([str(cfg), str(work / "epoch_1.pth"), "--average-clips", "score", "--fuse-conv-bn",
                      "--out", str(out_score)]) == 0
    raw = np.array(json.loads(out_score.read_text()))
    assert not np.allclose(raw.sum(1), 1)
    np.testing.assert_array_equal(raw.argmax(1), scores.argmax(1))


def test_eval_options_and_eval_config_choose_the_metrics(x3d_run, tmp_path, capsys):
    """test.py's --eval-options (and its old name --options) over the config's eval_config, as mmaction read them."""
    cfg, work, _ = x3d_run
    checkpoint = str(work / "epoch_1.pth")
    out = tmp_path / "result.json"
    assert run_test_tool([str(cfg), checkpoint, "--eval", "top_k_accuracy", "--out", str(out), "--eval-options",
                          "metric_options.top_k_accuracy.topk=(1,3)"]) == 0
    header, _, values = capsys.readouterr().out.splitlines()[-3:]
    assert [title.strip() for title in header.split("|")] == ["top-1", "top-3"]
    scores = np.array(json.loads(out.read_text()))
    labels = [int(line.split()[-1]) for line in open(load_config(cfg).data.test.ann_file).read().splitlines()]
    top3 = np.mean([label in np.argsort(-row)[:3] for row, label in zip(scores, labels)])
    assert values.split()[-1] == f"{100 * top3:.2f}"
    # a config's eval_config is the default; --options is taken with mmaction's deprecation warning
    with_eval_config = tmp_path / "with_eval_config.py"
    with_eval_config.write_text(f"_base_ = [{str(cfg)!r}]\neval_config = dict(metrics=['mean_class_accuracy'])\n")
    with pytest.warns(FutureWarning, match="top-level topk"):
        assert run_test_tool([str(with_eval_config), checkpoint, "--options", "topk=2", "metrics=top_k_accuracy"]) == 0
    captured = capsys.readouterr()
    assert "--options is deprecated" in captured.err
    assert [title.strip() for title in captured.out.splitlines()[-3].split("|")] == ["top-2"]
    assert run_test_tool([str(with_eval_config), checkpoint]) == 0
    assert capsys.readouterr().out.splitlines()[-3].strip() == "mean class accuracy"
    # a misspelt setting is one line before any video is read; the two names together are refused
    assert run_test_tool([str(cfg), checkpoint, "--eval-options", "metric_options.top_k_accuracy.k=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --eval-options: metric_options.top_k_accuracy has no setting 'k'"
    with pytest.raises(SystemExit):
        run_test_tool([str(cfg), checkpoint, "--options", "topk=2", "--eval-options", "topk=3"])


def test_analysis_tools_read_a_real_run(x3d_run, tmp_path, capsys):
    """analyze_logs.py draws and times the run's json log; eval_metric.py gives test.py's table from its --out."""
    cfg, work, _ = x3d_run
    log = next(work.glob("*.log.json"))
    analyze = analysis_tool("analyze_logs")
    assert analyze.main(["plot_curve", str(log), "--keys", "loss_cls", "top1_acc", "mean_class_accuracy", "--out",
                         str(tmp_path / "curves.pdf")]) == 0
    assert (tmp_path / "curves.pdf").read_bytes().startswith(b"%PDF")
    assert analyze.main(["cal_train_time", str(log)]) == 0
    assert "average iter time:" in capsys.readouterr().out
    out = tmp_path / "result.pkl"
    assert run_test_tool([str(cfg), str(work / "epoch_1.pth"), "--out", str(out)]) == 0
    table = capsys.readouterr().out.splitlines()[-3:]
    assert eval_metric_main([str(cfg), str(out)]) == 0
    assert capsys.readouterr().out.splitlines()[-3:] == table


def test_segment_model_trains_and_tests(videos, tmp_path):
    """ir-CSN-50 in the SSv2 form: 4 one-frame segments folded into time, no flip; --test-last reports the
    evaluation dict's metrics and topk, as mmaction's train.py tested."""
    cfg = tiny_config(tmp_path / "csn_tiny.py", CSN_SSV2, videos, segments=True,
                      extra="evaluation = dict(metric_options=dict(top_k_accuracy=dict(topk=(1, 3))))")
    assert train_main([str(cfg), "--work-dir", str(tmp_path / "work"), "--seed", "1", "--validate", "--test-last"]) == 0
    scores = json.loads((tmp_path / "work" / "epoch_1_test.json").read_text())
    assert len(scores) == 8 and all(len(s) == NUM_CLASSES for s in scores)
    log_text = next((tmp_path / "work").glob("*.log")).read_text()
    assert re.search(r"test of epoch_1.pth: top-1 [\d.]+  top-3 [\d.]+  mean class accuracy [\d.]+", log_text)
    assert re.search(r"\| val top-1 [\d.]+  top-3 [\d.]+  mean class accuracy [\d.]+", log_text)


def _stage1_checkpoint(path, model_name, num_classes=6):
    model = timm.create_model(model_name, num_classes=num_classes)
    save_checkpoint({"state_dict": model.state_dict(), "arch": model_name, "epoch": 3}, path)
    return model


def test_load_from_maps_a_stage1_checkpoint(tmp_path):
    image = _stage1_checkpoint(tmp_path / "model_best.pth.tar", "v3d_x3d_s_224")
    model = _model(CONFIGS / X3D_K400)
    report = load_pretrained(model, tmp_path / "model_best.pth.tar")
    image_state, video_state = image.state_dict(), model.state_dict()
    feature_keys = [k for k in image_state if k.startswith("get_feature.")]
    assert all(torch.equal(video_state["backbone." + k[len("get_feature."):]], image_state[k]) for k in feature_keys)
    torch.testing.assert_close(video_state["cls_head.fc1.weight"], image_state["fc1.weight"])
    # X3D: the image classifier matches nothing in the head (fc2 starts fresh), as in the original
    assert "cls_head.fc2.weight" in report.missing
    assert len(report.loaded) == len(feature_keys) + 1


def test_inflate_rebuilds_three_tap_kernels_from_the_centre(tmp_path):
    image = _stage1_checkpoint(tmp_path / "slowonly.pth.tar", "v3d_slowonly50_224")
    model = _model(CONFIGS / "slowonly/slowonly50_1x8_STS_sthv2_video.py")
    head_before = model.cls_head.fc_cls.weight.clone()
    load_pretrained(model, tmp_path / "slowonly.pth.tar", inflate=True)
    state = model.state_dict()
    inflated = 0
    for key, value in image.state_dict().items():
        if value.dim() == 5 and value.shape[2] == 3:
            c = value[:, :, 1]
            expected = torch.stack((c / 9, c / 3, c / 9), dim=2)
            torch.testing.assert_close(state["backbone." + key[len("get_feature."):]], expected)
            inflated += 1
    assert inflated > 0 and torch.equal(model.cls_head.fc_cls.weight, head_before)  # the head stays random
    assert inflate_centre({"w": torch.ones(2, 2, 3, 1, 1)})["w"][0, 0, :, 0, 0].tolist() == pytest.approx(
        [1 / 9, 1 / 3, 1 / 9])


def test_load_from_of_another_network_fails_loudly(videos, tmp_path, capsys):
    _stage1_checkpoint(tmp_path / "csn.pth.tar", "v3d_csn50_ir_224")
    cfg = tiny_config(tmp_path / "x3d.py", X3D_K400, videos)
    code = train_main([str(cfg), "--work-dir", str(tmp_path / "work"),
                       "--cfg-options", f"load_from={tmp_path / 'csn.pth.tar'}"])
    error = capsys.readouterr().err
    assert code == 2 and "no backbone weight fits this model" in error and len(error.strip().splitlines()) == 1


def test_bad_settings_stop_before_training(videos, tmp_path, capsys):
    cfg = tiny_config(tmp_path / "x3d.py", X3D_K400, videos)
    for option, message in (("evaluation.interval=0", "evaluation.interval must be a positive whole number"),
                            ("data.train.pipeline.1.clip_lenn=2", "unknown argument 'clip_lenn'"),
                            ("model.backbone.reshape_stt=false", "unexpected keyword argument 'reshape_stt'")):
        code = train_main([str(cfg), "--work-dir", str(tmp_path / "work"), "--validate", "--cfg-options", option])
        error = capsys.readouterr().err
        assert code == 2 and message in error and len(error.strip().splitlines()) == 1, error
        assert not (tmp_path / "work").exists()


def test_resume_continues_exactly(videos, tmp_path):
    cfg = tiny_config(tmp_path / "x3d.py", X3D_K400, videos, extra="total_epochs = 2")
    assert train_main([str(cfg), "--work-dir", str(tmp_path / "straight"), "--seed", "3"]) == 0
    # no --seed: the checkpoint's seed is kept, so the second epoch draws what it drew in the straight run
    assert train_main([str(cfg), "--work-dir", str(tmp_path / "resumed"),
                       "--resume-from", str(tmp_path / "straight" / "epoch_1.pth")]) == 0
    straight = read_checkpoint(tmp_path / "straight" / "epoch_2.pth")
    resumed = read_checkpoint(tmp_path / "resumed" / "epoch_2.pth")
    assert resumed["meta"]["epoch"] == 2 and resumed["meta"]["iter"] == straight["meta"]["iter"] == 12
    assert not (tmp_path / "resumed" / "epoch_1.pth").exists()  # epoch 1 was not trained again
    for key, value in straight["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=1e-5, atol=1e-6)


def test_two_process_training_and_testing(videos, tmp_path):
    """dist_train.sh / dist_test.sh with 2 gloo processes, run from the tools' parent folder as in the seed."""
    cfg = tiny_config(tmp_path / "x3d.py", X3D_K400, videos)
    work = tmp_path / "work"
    # --test-last / --test-best: both processes test the checkpoints rank 0 wrote, once they are on disk
    train = run_tool(str(TOOLS / "dist_train.sh"), str(cfg), "2", "--work-dir", str(work), "--validate",
                     "--test-last", "--test-best", "--seed", "0", cwd=TOOLS.parent, env={"PORT": str(free_port())})
    assert train.returncode == 0, train.stderr[-3000:]
    assert "2 process(es)" in train.stderr and (work / "epoch_1.pth").is_file()
    assert read_checkpoint(work / "epoch_1.pth")["meta"]["iter"] == 3  # 12 videos / (2 processes x 2)
    last = json.loads((work / "epoch_1_test.json").read_text())
    assert json.loads((work / "best_top1_acc_epoch_1_test.json").read_text()) == last and len(last) == 8
    log_text = next(work.glob("*.log")).read_text()
    assert "test of epoch_1.pth: top-1" in log_text and "test of best_top1_acc_epoch_1.pth" in log_text
    rows = [json.loads(line) for line in next(work.glob("*.log.json")).read_text().splitlines()[1:]]  # after meta
    assert {row["mode"] for row in rows} == {"train", "val", "test"}
    dist_out, single_out = tmp_path / "dist.pkl", tmp_path / "single.json"
    test = run_tool(str(TOOLS / "dist_test.sh"), str(cfg), str(work / "epoch_1.pth"), "2", "--out",
                    str(dist_out), cwd=REPO, env={"PORT": str(free_port())})
    assert test.returncode == 0, test.stderr[-3000:]
    single = run_tool(str(TOOLS / "test.py"), str(cfg), str(work / "epoch_1.pth"), "--out", str(single_out),
                      cwd=tmp_path)
    assert single.returncode == 0, single.stderr[-3000:]
    with open(dist_out, "rb") as file:  # .pkl: mmaction's list of per-video float32 arrays
        dist_scores = pickle.load(file)
    single_scores = json.loads(single_out.read_text())
    assert all(isinstance(s, np.ndarray) and s.dtype == np.float32 for s in dist_scores)
    assert len(dist_scores) == len(single_scores) == 8  # every video once, no padding duplicates
    np.testing.assert_allclose(dist_scores, single_scores, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(single_scores, last, rtol=1e-5, atol=1e-7)


def test_bad_annotation_lines_stop_before_training(videos, tmp_path, capsys):
    for text, message in [("train/a.mp4 0\nno_label_here\n", "bad.txt:2: expected"),
                          ("train/a.mp4 0\ntrain/b.mp4 7\n", "bad.txt:2: label 7 is outside [0, 4)")]:
        (tmp_path / "bad.txt").write_text(text)
        cfg = tiny_config(tmp_path / "x3d.py", X3D_K400, videos,
                          extra=f"data['train']['ann_file'] = {str(tmp_path / 'bad.txt')!r}")
        assert train_main([str(cfg), "--work-dir", str(tmp_path / "work")]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "work").exists()  # nothing written


def test_unreadable_videos_are_skipped_and_counted(videos, tmp_path, capsys):
    (tmp_path / "corrupt.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, np.uint8).tobytes())
    (tmp_path / "empty.mp4").write_bytes(b"")
    good = (videos / "train.txt").read_text()
    bad = f"{tmp_path / 'corrupt.mp4'} 0\n{tmp_path / 'empty.mp4'} 1\n{tmp_path / 'missing.mp4'} 2\n"
    (tmp_path / "train.txt").write_text(good + bad)
    (tmp_path / "test.txt").write_text((videos / "val.txt").read_text() + bad)
    # absolute paths in the lists: joined to the data prefix they stay as they are
    cfg = tiny_config(tmp_path / "x3d.py", X3D_K400, videos, extra=(
        f"data['train']['ann_file'] = {str(tmp_path / 'train.txt')!r}\n"
        f"data['test']['ann_file'] = {str(tmp_path / 'test.txt')!r}\n"
        "data['videos_per_gpu'] = 3"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert train_main([str(cfg), "--work-dir", str(tmp_path / "work"), "--seed", "0"]) == 0
    err = capsys.readouterr().err
    log = next((tmp_path / "work").glob("*.log")).read_text()
    for text in (err, log):
        assert "skipping unreadable video" in text and "unreadable videos skipped and replaced" in text
    # each skip is said once on the console: the log line, not a Python warning beside it
    assert not [w for w in caught if "skipping unreadable video" in str(w.message)]
    out = tmp_path / "scores.json"
    with pytest.warns(RuntimeWarning, match="3 undecodable videos left out"):
        assert run_test_tool([str(cfg), str(tmp_path / "work" / "epoch_1.pth"), "--out", str(out)]) == 0
    scores = json.loads(out.read_text())
    assert len(scores) == 11 and scores[8:] == [None, None, None] and all(s is not None for s in scores[:8])
    assert "8 of 11 videos scored" in capsys.readouterr().out
    # no video decodable at all: one error line and status 2, not a traceback
    (tmp_path / "bad.txt").write_text(bad)
    assert run_test_tool([str(cfg), str(tmp_path / "work" / "epoch_1.pth"),
                          "--cfg-options", f"data.test.ann_file={tmp_path / 'bad.txt'}"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].strip().startswith("error: no video of the test set could be decoded")
    # the same in validation: the epoch is kept (saved, unvalidated), not lost to an error
    assert train_main([str(cfg), "--work-dir", str(tmp_path / "work_val"), "--seed", "0", "--validate",
                       "--cfg-options", f"data.val.ann_file={tmp_path / 'bad.txt'}"]) == 0
    log = next((tmp_path / "work_val").glob("*.log")).read_text()
    assert "epoch 1 not validated: no video of the validation set could be decoded" in log
    assert (tmp_path / "work_val" / "epoch_1.pth").is_file() and not list((tmp_path / "work_val").glob("best_*"))


def test_a_checkpoint_of_another_model_is_one_clear_error(x3d_run, videos, tmp_path, capsys):
    _, work, _ = x3d_run
    cfg = tiny_config(tmp_path / "r2plus1d.py", "r2plus1d/r2plus1d_r34_8x8_STS_k400_video.py", videos)
    assert run_test_tool([str(cfg), str(work / "epoch_1.pth")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "epoch_1.pth" in err


def test_slurm_script_arguments_and_command(tmp_path):
    result = run_tool(str(TOOLS / "slurm_train.sh"), "gpu", "sts", "cfg.py", "16", "--validate",
                      cwd=tmp_path, env={"DRY_RUN": "1", "SRUN_ARGS": "--time=1:00:00"})
    assert result.returncode == 0, result.stderr
    words = result.stdout.split()
    assert words[:3] == ["srun", "-p", "gpu"]
    assert {"--job-name=sts", "--gres=gpu:8", "--ntasks=16", "--ntasks-per-node=8", "--time=1:00:00"} <= set(words)
    assert words[-4:] == ["cfg.py", "--launcher", "slurm", "--validate"] and words[-5].endswith("tools/train.py")
    usage = run_tool(str(TOOLS / "slurm_train.sh"), "gpu", cwd=tmp_path)
    assert usage.returncode == 2 and "usage" in usage.stderr
    env = slurm_environment({"SLURM_PROCID": "3", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1",
                             "SLURM_NODELIST": "n[1-2]", "MASTER_ADDR": "n1", "PORT": "29999"})
    assert env == {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_PORT": "29999"}
