"""The main job (``make demo``): the paper's two stages end to end on the embedded synthetic data, on a CPU.

``python -m sts3d.tools.main_job [--work-dir work_dirs/demo] [--fresh] [--quick]``

1. writes the synthetic shape images and shape-motion videos (``python -m sts3d.data.synthetic``);
2. pre-trains X3D-S on the images (``Image_Pre_Training/train.py``);
3. fine-tunes it on the videos with STS, starting from the image weights (``tools/train.py`` with ``load_from``);
4. tests it with 2 clips x 3 crops per video (``tools/test.py --out``);
5. fine-tunes and tests the same model from scratch (STS on) and from the image weights with STS off;
6. prints the three runs' top-1 / top-5 / mean class accuracy and writes ``summary.json`` and ``summary.png``.

Every step is one of the project's ordinary commands, run as a subprocess from the repository root and printed
first, so any of them can be rerun by hand. Re-running resumes: a step is skipped when its record
(``steps/<name>.json``) says it finished with the same command (and merged config) after the same runs of the
steps it depends on, and its outputs are all there; otherwise its folder is cleared and it runs again, and so does
everything that depends on it. The scratch fine-tuning, which does not need stage 1, runs in the background
alongside it (its output goes to its folder's ``console.log``).
``--fresh`` clears the whole work dir first. ``--quick`` is the same pipeline on tiny data for one epoch each (the
test suite's version); it is no measurement.

The commands run with ``OMP_NUM_THREADS=1`` (unless the environment sets it): X3D-S at these sizes gains nothing
from a second intra-op thread, and on a busy two-core machine two threads ran up to 6x slower than one; the data
loader process uses the other core.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

REPO = Path(__file__).resolve().parents[2]
CONFIG = "Spatiotemporal_Finetuning/configs/recognition/x3d/x3d_s_demo_synthetic.py"
RUNS = ("pretrained_sts", "scratch_sts", "pretrained_plain")
RUN_TITLES = {"pretrained_sts": "image-pretrained, STS", "scratch_sts": "from scratch, STS",
              "pretrained_plain": "image-pretrained, plain 3D"}
METRICS = ("top1", "top5", "mean_class_accuracy")
STEPS_DIR = "steps"  # the marker of a main-job work dir: --fresh clears only folders holding it
EXPERIMENT = "x3d_s_shapes"  # stage 1's run folder under <work dir>/pretrain


@dataclass(frozen=True)
class Plan:
    """Sizes, counts and schedules of one main job: the data sets, stage 1's flags and stage 2's overrides of the
    demo config (shared by all three fine-tuning runs and their tests)."""
    image_classes: int
    image_train_per_class: int
    image_val_per_class: int
    image_size: int
    video_shapes: int
    video_train_per_class: int
    video_val_per_class: int
    video_frames: int
    video_size: int
    pretrain_flags: tuple[str, ...]
    finetune_options: tuple[str, ...] = ()


# The demo: about 4 minutes of stage 1 and 3 minutes per fine-tuning run on two busy CPU cores (docs/main_job.md).
# The images are drawn at 48 px (stage 1's input size); the videos at 56 px (decord misreads 48 px widths), seen at
# 48 px by the config.
FULL = Plan(
    image_classes=6, image_train_per_class=200, image_val_per_class=50, image_size=48,
    video_shapes=4, video_train_per_class=40, video_val_per_class=10, video_frames=16, video_size=56,
    pretrain_flags=(
        "--model", "v3d_x3d_s_224", "--img-size", "48", "--crop-pct", "1.0", "--batch-size", "32",
        "--epochs", "20", "--warmup-epochs", "1", "--opt", "lamb", "--lr", "8e-3", "--weight-decay", "0.02",
        # mild crops: a crop of 8 % of a small image (timm's default) often cuts the shape out
        "--scale", "0.5", "1", "--color-jitter", "0", "--train-interpolation", "bicubic",
        "--workers", "1", "--checkpoint-hist", "1", "--seed", "0"))

# The test suite's version: every step on a few tiny samples, one epoch each.
QUICK = Plan(
    image_classes=2, image_train_per_class=8, image_val_per_class=4, image_size=32,
    video_shapes=2, video_train_per_class=4, video_val_per_class=2, video_frames=8, video_size=32,
    pretrain_flags=(
        "--model", "v3d_x3d_s_224", "--img-size", "32", "--crop-pct", "1.0", "--batch-size", "8",
        "--epochs", "1", "--warmup-epochs", "0", "--opt", "lamb", "--lr", "5e-3", "--color-jitter", "0",
        "--workers", "0", "--checkpoint-hist", "1", "--seed", "0"),
    finetune_options=("total_epochs=1", "data.videos_per_gpu=4", "data.workers_per_gpu=0",
                      "data.test_dataloader.workers_per_gpu=0", "precise_bn.num_iters=1",
                      "precise_bn.interval=1"))


@dataclass
class Step:
    """One command of the job. ``folder`` is cleared before it runs; ``outputs`` must all exist afterwards.
    ``settings`` digests what the command line does not show (a stage-2 step's merged config), so that editing a
    config file reruns the steps that read it."""
    name: str
    title: str
    command: list[str]
    folder: Path
    outputs: list[Path]
    deps: tuple[str, ...] = ()
    settings: str = ""
    background: bool = False


@dataclass
class StepLog:
    """What happened to each step in this invocation: ``(name, title, 'ran' | 'skipped', seconds)``."""
    rows: list[tuple[str, str, str, float]] = field(default_factory=list)


class MainJobError(RuntimeError):
    """A step failed or the work dir cannot be used; the message says which and what to do."""


# ----------------------------------------------------------------------------------------------------- paths

def shown(path: Path | str) -> str:
    """``path`` relative to the repository root when it lies inside it (the printed commands run from there)."""
    path = Path(path).absolute()
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def python_shown() -> str:
    """The interpreter as printed: ``.venv/bin/python`` for the project's venv (the un-resolved path: a venv's
    python is a link to the base interpreter, and only the link's path knows the venv)."""
    return shown(sys.executable) if Path(sys.executable).is_absolute() else sys.executable


def thread_env() -> dict[str, str]:
    return {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


# ----------------------------------------------------------------------------------------------------- steps

def video_options(data: Path, plan: Plan) -> list[str]:
    """``--cfg-options`` pointing the demo config at this job's videos, with the plan's class count."""
    videos = shown(data / "videos")
    ann_train, ann_val = shown(data / "train.txt"), shown(data / "val.txt")
    return [f"data.train.ann_file={ann_train}", f"data.val.ann_file={ann_val}", f"data.test.ann_file={ann_val}",
            f"data.train.data_prefix={videos}", f"data.val.data_prefix={videos}", f"data.test.data_prefix={videos}",
            f"model.cls_head.num_classes={2 * plan.video_shapes}", *plan.finetune_options]


def run_options(run: str, base: list[str], checkpoint: Path) -> list[str]:
    """Per-run overrides: the stage-1 weights for the pretrained runs, STS off for the plain one."""
    options = list(base)
    if run.startswith("pretrained"):
        options.append(f"load_from={shown(checkpoint)}")
    if run.endswith("plain"):
        options.append("model.backbone.reshape_st=False")
    return options


def merged_config(options: Sequence[str]) -> tuple[int, str]:
    """``(total_epochs, digest)`` of the demo config (with its ``_base_`` files) under ``options``."""
    from ..config import load_config, to_plain

    cfg = to_plain(dict(load_config(REPO / CONFIG, options)))
    cfg.pop("filename", None)
    digest = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=repr).encode()).hexdigest()
    return int(cfg["total_epochs"]), digest


def build_steps(work_dir: Path, plan: Plan) -> list[Step]:
    """The job's steps in order (each after the ones it depends on)."""
    py = [python_shown()]
    images, videos = work_dir / "data" / "images", work_dir / "data" / "videos"
    pretrain = work_dir / "pretrain"
    best = pretrain / EXPERIMENT / "model_best.pth.tar"
    steps = [
        Step("images", "synthetic images", py + [
            "-m", "sts3d.data.synthetic", "images", shown(images), "--classes", str(plan.image_classes),
            "--train-per-class", str(plan.image_train_per_class), "--val-per-class", str(plan.image_val_per_class),
            "--size", str(plan.image_size), "--seed", "0"], images, [images / "synthetic.json"]),
        Step("videos", "synthetic videos", py + [
            "-m", "sts3d.data.synthetic", "videos", shown(videos), "--shapes", str(plan.video_shapes),
            "--train-per-class", str(plan.video_train_per_class), "--val-per-class", str(plan.video_val_per_class),
            "--frames", str(plan.video_frames), "--size", str(plan.video_size), "--seed", "0"],
            videos, [videos / "synthetic.json"]),
    ]
    pretrain_step = Step("pretrain", "stage 1: image pre-training of X3D-S", py + [
        "Image_Pre_Training/train.py", shown(images), *plan.pretrain_flags, "--output", shown(pretrain),
        "--experiment", EXPERIMENT], pretrain, [best, pretrain / EXPERIMENT / "last.pth.tar"], ("images",))
    base = video_options(videos, plan)
    train, test = {}, {}
    for run in RUNS:
        options = run_options(run, base, best)
        run_dir = work_dir / run
        epochs, settings = merged_config(options)
        checkpoint = run_dir / "train" / f"epoch_{epochs}.pth"
        scores = run_dir / "test" / "scores.json"
        pretrained = run.startswith("pretrained")
        train[run] = Step(f"{run}_train", f"stage 2: fine-tune ({RUN_TITLES[run]})", py + [
            "Spatiotemporal_Finetuning/tools/train.py", CONFIG, "--work-dir", shown(run_dir / "train"), "--validate",
            "--seed", "0", "--cfg-options", *options], run_dir / "train", [checkpoint],
            ("videos", "pretrain") if pretrained else ("videos",), settings, background=not pretrained)
        test[run] = Step(f"{run}_test", f"test, 2 clips x 3 crops ({RUN_TITLES[run]})", py + [
            "Spatiotemporal_Finetuning/tools/test.py", CONFIG, shown(checkpoint), "--out", shown(scores),
            "--eval", "top_k_accuracy", "mean_class_accuracy", "--cfg-options", *options],
            run_dir / "test", [scores], (f"{run}_train",), settings)
    # the scratch run needs no stage 1: it trains alongside it
    steps += [train["scratch_sts"], pretrain_step]
    for run in ("pretrained_sts", "pretrained_plain"):
        steps += [train[run], test[run]]
    steps.append(test["scratch_sts"])
    return steps


# ---------------------------------------------------------------------------------------------- running steps

def record_path(work_dir: Path, name: str) -> Path:
    return work_dir / STEPS_DIR / f"{name}.json"


def read_record(work_dir: Path, name: str) -> Optional[dict[str, Any]]:
    try:
        return json.loads(record_path(work_dir, name).read_text())
    except (OSError, ValueError):
        return None


def is_done(step: Step, work_dir: Path, dep_ids: dict[str, str]) -> bool:
    """Finished before with this command and settings, after these runs of its dependencies, and its outputs are
    there."""
    record = read_record(work_dir, step.name)
    return (record is not None and record.get("command") == step.command and record.get("deps") == dep_ids
            and record.get("settings", "") == step.settings and all(p.is_file() for p in step.outputs))


def command_line(step: Step) -> str:
    env = " ".join(f"{k}={v}" for k, v in thread_env().items())
    return f"{env} {shlex.join(step.command)}"


@dataclass
class Background:
    """A step running alongside the next ones: its process, start time, console log and dependency run ids; a
    watcher thread notes when the process ends (the job may look at it only later)."""
    step: Step
    process: subprocess.Popen
    start: float
    console: Path
    dep_ids: dict[str, str]
    end: Optional[float] = None
    watcher: Optional[threading.Thread] = None

    def watch(self) -> None:
        def note_end() -> None:
            self.process.wait()
            self.end = time.perf_counter()

        self.watcher = threading.Thread(target=note_end, daemon=True)
        self.watcher.start()


class Runner:
    """Runs the steps in order, skipping finished ones; a ``background`` step runs alongside the following steps
    (on a two-core machine the scratch fine-tuning shares the CPU with stage 1, which it does not need) and is
    waited for before any step that depends on it, and at the end."""

    def __init__(self, work_dir: Path, count: int) -> None:
        self.work_dir, self.count, self.log = work_dir, count, StepLog()
        self.running: dict[str, Background] = {}

    def run(self, step: Step, number: int) -> None:
        for dep in step.deps:
            if dep in self.running:
                print(f"\n(waiting for {self.running[dep].step.title}, which runs in the background)", flush=True)
                self.wait(dep)
        dep_ids = {d: (read_record(self.work_dir, d) or {}).get("run_id", "") for d in step.deps}
        where = " (in the background)" if step.background else ""
        print(f"\n=== [{number}/{self.count}] {step.title}{where} ===", flush=True)
        if is_done(step, self.work_dir, dep_ids):
            record = read_record(self.work_dir, step.name)
            print(f"done before with the same settings ({record['seconds']:.0f} s then); skipped. Command:\n"
                  f"  {command_line(step)}", flush=True)
            self.log.rows.append((step.name, step.title, "skipped", 0.0))
            return
        record_path(self.work_dir, step.name).unlink(missing_ok=True)
        if step.folder.exists():  # never mix two runs' files
            shutil.rmtree(step.folder)
        print(f"$ {command_line(step)}", flush=True)
        # every command is a Python one: run it with this interpreter, whichever way its path was printed
        argv, env = [sys.executable, *step.command[1:]], {**os.environ, **thread_env()}
        start = time.perf_counter()
        if step.background:
            step.folder.mkdir(parents=True)
            console = step.folder / "console.log"
            with open(console, "w") as out:
                process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
            print(f"(its output goes to {shown(console)})", flush=True)
            self.running[step.name] = job = Background(step, process, start, console, dep_ids)
            job.watch()
            return
        returncode = subprocess.run(argv, cwd=REPO, env=env).returncode
        self.finish(step, returncode, time.perf_counter() - start, dep_ids, "its output is above")

    def wait(self, name: str) -> None:
        job = self.running.pop(name)
        job.watcher.join()
        self.finish(job.step, job.process.returncode, job.end - job.start, job.dep_ids,
                    f"its output is in {shown(job.console)}")

    def wait_all(self) -> None:
        for name in list(self.running):
            print(f"\n(waiting for {self.running[name].step.title}, which runs in the background)", flush=True)
            self.wait(name)

    def stop_all(self) -> None:
        """End the background steps this job started (on an error or Ctrl-C): no orphans keep training."""
        for job in self.running.values():
            job.process.terminate()
            job.process.wait()
        self.running.clear()

    def finish(self, step: Step, returncode: int, seconds: float, dep_ids: dict[str, str], output: str) -> None:
        if returncode != 0:
            raise MainJobError(f"step '{step.name}' failed (exit status {returncode}) after {seconds:.0f} s; "
                               f"{output}. Fix the cause and run the main job again: finished steps are kept.")
        missing = [shown(p) for p in step.outputs if not p.is_file()]
        if missing:
            raise MainJobError(f"step '{step.name}' finished but did not write {', '.join(missing)}")
        record_path(self.work_dir, step.name).write_text(json.dumps(
            {"command": step.command, "settings": step.settings, "deps": dep_ids, "run_id": uuid.uuid4().hex,
             "seconds": round(seconds, 1)}, indent=1) + "\n")
        print(f"({step.title}: {seconds:.0f} s)", flush=True)
        self.log.rows.append((step.name, step.title, "ran", seconds))


# ------------------------------------------------------------------------------------------------- summary

def run_metrics(result_file: Path, ann_file: Path) -> dict[str, float]:
    """top-1 / top-5 / mean class accuracy recomputed from a ``test.py --out`` file and its annotation list."""
    from ..data.video import read_annotations
    from ..engine.video_test import evaluate_scores

    scores = json.loads(result_file.read_text())
    labels = [r.label for r in read_annotations(ann_file)]
    if len(scores) != len(labels):
        raise MainJobError(f"{shown(result_file)} has {len(scores)} score lists, {shown(ann_file)} lists "
                           f"{len(labels)} videos")
    results = evaluate_scores(scores, labels)
    return {"top1": results["top1_acc"], "top5": results["top5_acc"],
            "mean_class_accuracy": results["mean_class_accuracy"]}


def summarize(work_dir: Path) -> dict[str, dict[str, Any]]:
    ann_file = work_dir / "data" / "videos" / "val.txt"
    summary = {}
    for run in RUNS:
        result_file = work_dir / run / "test" / "scores.json"
        summary[run] = {**run_metrics(result_file, ann_file), "result_file": shown(result_file),
                        "ann_file": shown(ann_file)}
    return summary


def format_summary(summary: dict[str, dict[str, Any]]) -> str:
    header = f"{'run':<28} | {'top-1':>6} | {'top-5':>6} | {'mean class':>10}"
    rows = [f"{RUN_TITLES[run]:<28} | {100 * m['top1']:6.2f} | {100 * m['top5']:6.2f} | "
            f"{100 * m['mean_class_accuracy']:10.2f}" for run, m in summary.items()]
    return "\n".join([header, "-" * len(header), *rows])


def val_curve(train_dir: Path) -> list[tuple[int, float]]:
    """``(epoch, val top-1)`` pairs from a fine-tuning run's json log (empty if it has none)."""
    points = []
    for log in sorted(train_dir.glob("*.log.json")):
        for line in log.read_text().splitlines():
            row = json.loads(line)
            if row.get("mode") == "val" and "top1_acc" in row:
                points.append((int(row["epoch"]), float(row["top1_acc"])))
    return points


def plot_summary(summary: dict[str, dict[str, Any]], work_dir: Path, path: Path) -> None:
    """Left: the three runs' test metrics as bars; right: their validation top-1 per epoch (same colours)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2))
    bars, curves = fig.subplots(1, 2)
    width = 0.25
    labels = ["top-1", "top-5", "mean class"]
    for i, run in enumerate(RUNS):
        values = [100 * summary[run][m] for m in METRICS]
        xs = [j + (i - 1) * width for j in range(len(METRICS))]
        drawn = bars.bar(xs, values, width, label=RUN_TITLES[run])
        bars.bar_label(drawn, fmt="%.1f", fontsize=7)
        points = val_curve(work_dir / run / "train")
        if points:
            curves.plot([e for e, _ in points], [100 * v for _, v in points], marker="o", label=RUN_TITLES[run])
    bars.set_xticks(range(len(METRICS)), labels)
    bars.set_ylim(0, 105)
    bars.set_ylabel("% of validation videos")
    bars.set_title("test: 2 clips x 3 crops")  # the runs' colours: the legend on the right
    curves.set_xlabel("epoch")
    curves.set_ylabel("val top-1 (%), 1 centre clip")
    curves.set_ylim(0, 105)
    curves.set_title("validation during fine-tuning")
    curves.legend(fontsize=8)
    curves.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    tmp.replace(path)


def write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=1) + "\n")
    tmp.replace(path)


# ---------------------------------------------------------------------------------------------------- main

def prepare_work_dir(work_dir: Path, fresh: bool) -> None:
    """Create the work dir, or check that an existing one is a main job's (so nothing else is ever cleared)."""
    ours = (work_dir / STEPS_DIR).is_dir()
    if work_dir.exists() and not ours and any(work_dir.iterdir()):
        raise MainJobError(f"{work_dir} exists, is not empty and is not a main job's work dir (no {STEPS_DIR}/); "
                           "choose another --work-dir")
    if fresh and work_dir.exists():
        print(f"--fresh: clearing {shown(work_dir)}", flush=True)
        shutil.rmtree(work_dir)
    (work_dir / STEPS_DIR).mkdir(parents=True, exist_ok=True)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sts3d.tools.main_job", description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", type=Path, default=Path("work_dirs/demo"),
                        help="where data, runs and the summary go; relative paths are relative to the repository "
                             "root (default: %(default)s)")
    parser.add_argument("--fresh", action="store_true", help="clear the work dir first (no resuming)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny data and one epoch per stage: checks the pipeline, measures nothing")
    args = parser.parse_args(argv)
    work_dir = args.work_dir if args.work_dir.is_absolute() else REPO / args.work_dir
    plan = QUICK if args.quick else FULL
    start = time.perf_counter()
    try:
        prepare_work_dir(work_dir, args.fresh)
        steps = build_steps(work_dir, plan)
        runner = Runner(work_dir, len(steps) + 1)
        try:
            for number, step in enumerate(steps, start=1):
                runner.run(step, number)
            runner.wait_all()
        finally:
            runner.stop_all()
        print(f"\n=== [{runner.count}/{runner.count}] summary ===", flush=True)
        summary = summarize(work_dir)
    except MainJobError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    write_json(work_dir / "summary.json", summary)
    plot_summary(summary, work_dir, work_dir / "summary.png")
    print(format_summary(summary))
    print(f"\nwrote {shown(work_dir / 'summary.json')} and {shown(work_dir / 'summary.png')}")
    print("\nwall time per step (this invocation):")
    for name, title, state, seconds in runner.log.rows:
        print(f"  {name:<22} {state:<8} {seconds:7.1f} s   {title}")
    print(f"  {'total':<22} {'':<8} {time.perf_counter() - start:7.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
