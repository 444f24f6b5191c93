"""Dataset preparation: annotation lists from class folders or SSv2 json files, ffmpeg resizing, decode checks.

The scripts under ``Spatiotemporal_Finetuning/tools/data/`` are thin command lines over these functions. Lists use
the seed's format (``relative/path/video.ext <int label>`` per line, relative to a ``data_prefix``), the one
:func:`sts3d.data.video.read_annotations` reads.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, TypeVar

from tqdm import tqdm

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov")
SSV2_FILES = {"labels": "something-something-v2-labels.json", "train": "something-something-v2-train.json",
              "val": "something-something-v2-validation.json"}

Item = TypeVar("Item")
Result = TypeVar("Result")


class PrepareError(ValueError):
    """Bad input to a preparation step; the message names the file (and entry) at fault."""


@dataclass(frozen=True)
class ListEntry:
    path: str  # relative to the list's data_prefix, '/'-separated
    label: int


# ------------------------------------------------------------------------------------------------ label maps

def read_label_map(path: Path) -> list[str]:
    """Class names in id order, one per line; blank or repeated names are errors naming ``file:line``."""
    if not path.is_file():
        raise PrepareError(f"{path}: label map not found")
    names: list[str] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        name = line.strip()
        if not name:
            raise PrepareError(f"{path}:{number}: blank class name")
        if name in seen:
            raise PrepareError(f"{path}:{number}: class {name!r} already listed on line {seen[name]}")
        seen[name] = number
        names.append(name)
    if not names:
        raise PrepareError(f"{path}: label map is empty")
    return names


def write_label_map(path: Path, classes: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{name}\n" for name in classes))


def write_list(path: Path, entries: Iterable[ListEntry]) -> int:
    """Write an annotation list; returns the number of lines."""
    lines = []
    for entry in entries:
        # a newline in a name would split the entry; the format has no escaping
        if "\n" in entry.path or "\r" in entry.path:
            raise PrepareError(f"{entry.path!r}: a video name with a line break cannot go in an annotation list")
        lines.append(f"{entry.path} {entry.label}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines))
    return len(lines)


# --------------------------------------------------------------------------------- folder-per-class trees

def has_extension(path: Path, extensions: Sequence[str]) -> bool:
    return path.suffix.lower() in extensions


def normalise_extensions(extensions: Sequence[str]) -> tuple[str, ...]:
    """``['mp4', '.MKV']`` -> ``('.mp4', '.mkv')``."""
    return tuple("." + ext.lower().lstrip(".") for ext in extensions)


def class_folders(split_dir: Path) -> list[str]:
    """The class folder names of one split, sorted: their order is the label ids of a derived label map."""
    if not split_dir.is_dir():
        raise PrepareError(f"{split_dir}: split folder not found")
    names = sorted(child.name for child in split_dir.iterdir() if child.is_dir() and not child.name.startswith("."))
    if not names:
        raise PrepareError(f"{split_dir}: no class folders")
    return names


def scan_class_tree(split_dir: Path, classes: Sequence[str], extensions: Sequence[str] = VIDEO_EXTENSIONS,
                    relative_to: Optional[Path] = None) -> list[ListEntry]:
    """List ``split_dir/<class>/<video>`` with the ids of ``classes``; paths are relative to ``relative_to``
    (default ``split_dir``). A class folder missing from ``classes`` is an error naming it."""
    ids = {name: index for index, name in enumerate(classes)}
    base = split_dir if relative_to is None else relative_to
    entries = []
    for name in class_folders(split_dir):
        if name not in ids:
            raise PrepareError(f"{split_dir / name}: class folder {name!r} is not in the label map")
        videos = sorted(path for path in (split_dir / name).iterdir()
                        if path.is_file() and has_extension(path, extensions))
        entries += [ListEntry(video.relative_to(base).as_posix(), ids[name]) for video in videos]
    if not entries:
        raise PrepareError(f"{split_dir}: no videos with extension {', '.join(extensions)}")
    return entries


# ----------------------------------------------------------------------------------- Something-Something V2

def _load_json(path: Path) -> object:
    if not path.is_file():
        raise PrepareError(f"{path}: not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise PrepareError(f"{path}:{err.lineno}: invalid json ({err.msg})") from None


def read_ssv2_labels(path: Path) -> list[str]:
    """``something-something-v2-labels.json`` (class name -> id string) -> class names in id order."""
    table = _load_json(path)
    if not isinstance(table, dict) or not table:
        raise PrepareError(f"{path}: expected a non-empty object mapping class name to id")
    by_id: dict[int, str] = {}
    for name, value in table.items():
        try:
            index = int(value)
        except (TypeError, ValueError):
            raise PrepareError(f"{path}: class {name!r} has id {value!r}, not an integer") from None
        if index in by_id:
            raise PrepareError(f"{path}: classes {by_id[index]!r} and {name!r} share id {index}")
        by_id[index] = name
    if sorted(by_id) != list(range(len(by_id))):
        raise PrepareError(f"{path}: ids are not 0..{len(by_id) - 1}")
    return [by_id[index] for index in range(len(by_id))]


def ssv2_class(template: str) -> str:
    """The class of an SSv2 entry: its template without the square brackets around the placeholders."""
    return template.replace("[", "").replace("]", "")


def read_ssv2_split(path: Path, classes: Sequence[str], extension: str = ".webm") -> list[ListEntry]:
    """One SSv2 split json (a list of ``{"id", "template", ...}``) -> ``<id>.webm <label>`` entries."""
    items = _load_json(path)
    if not isinstance(items, list):
        raise PrepareError(f"{path}: expected a list of videos")
    ids = {name: index for index, name in enumerate(classes)}
    entries = []
    for position, item in enumerate(items):
        if not isinstance(item, dict) or "id" not in item or "template" not in item:
            raise PrepareError(f"{path}: entry {position} has no 'id' and 'template'")
        name = ssv2_class(item["template"])
        if name not in ids:
            raise PrepareError(f"{path}: entry {position} (id {item['id']}): class {name!r} is not in the labels")
        entries.append(ListEntry(f"{item['id']}{extension}", ids[name]))
    return entries


def split_missing(entries: Sequence[ListEntry], data_prefix: Path) -> tuple[list[ListEntry], list[ListEntry]]:
    """``(present, missing)`` under ``data_prefix``."""
    present, missing = [], []
    for entry in entries:
        (present if (data_prefix / entry.path).is_file() else missing).append(entry)
    return present, missing


# ------------------------------------------------------------------------------------------------ parallel

def run_parallel(function: Callable[[Item], Result], items: Sequence[Item], jobs: int,
                 desc: str) -> list[Result]:
    """``[function(item) for item in items]`` on ``jobs`` threads with a progress bar. Threads suffice: the work
    is an ffmpeg subprocess or decord's native decoding, both outside the GIL."""
    results: list[Optional[Result]] = [None] * len(items)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(function, item): index for index, item in enumerate(items)}
        for future in tqdm(as_completed(futures), total=len(futures), desc=desc, unit="video"):
            results[futures[future]] = future.result()
    return results  # type: ignore[return-value]


def find_videos(root: Path, extensions: Sequence[str] = VIDEO_EXTENSIONS) -> list[Path]:
    """Every video under ``root`` (recursively, sorted); hidden files and folders are left out."""
    if not root.is_dir():
        raise PrepareError(f"{root}: folder not found")
    return sorted(path for path in root.rglob("*")
                  if path.is_file() and has_extension(path, extensions)
                  and not any(part.startswith(".") for part in path.relative_to(root).parts))


# ------------------------------------------------------------------------------------------------ resizing

def find_ffmpeg() -> str:
    """The system's ``ffmpeg`` if on PATH, else the binary the ``imageio-ffmpeg`` wheel carries."""
    system = shutil.which("ffmpeg")
    if system:
        return system
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        raise PrepareError("ffmpeg not found: install it (e.g. `apt-get install ffmpeg`) or "
                           "`pip install imageio-ffmpeg`") from None


def resize_command(ffmpeg: str, source: Path, target: Path, short_side: int, crf: int = 23,
                   preset: str = "veryfast") -> list[str]:
    """ffmpeg arguments scaling the shorter side to ``short_side``; ``-2`` keeps the aspect ratio and rounds the
    other side to an even number, which yuv420p H.264 requires. Audio is dropped: training never reads it."""
    scale = f"scale=w='if(gt(iw,ih),-2,{short_side})':h='if(gt(iw,ih),{short_side},-2)'"
    return [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", str(source),
            "-map", "0:v:0", "-vf", scale, "-c:v", "libx264", "-preset", preset, "-crf", str(crf),
            "-pix_fmt", "yuv420p", "-an", "-threads", "1", "-f", "mp4", str(target)]


def is_up_to_date(source: Path, target: Path) -> bool:
    return target.is_file() and target.stat().st_mtime >= source.stat().st_mtime


def resize_one(ffmpeg: str, source: Path, target: Path, short_side: int, crf: int = 23,
               preset: str = "veryfast") -> Optional[str]:
    """Resize ``source`` into ``<target>.part``, then rename that to ``target``; a half-written file never carries
    the final name. Returns ``None``, or the reason it failed (ffmpeg's last error line)."""
    partial = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    command = resize_command(ffmpeg, source, partial, short_side, crf, preset)
    try:
        done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              errors="replace")
        if done.returncode != 0 or not partial.is_file() or partial.stat().st_size == 0:
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            return lines[-1].strip() if lines else f"ffmpeg exited with {done.returncode}"
        os.replace(partial, target)
        return None
    finally:
        partial.unlink(missing_ok=True)


@dataclass
class ResizePlan:
    todo: list[tuple[Path, Path]]  # (source, target)
    up_to_date: int


def plan_resize(src_root: Path, dst_root: Path, extensions: Sequence[str] = VIDEO_EXTENSIONS) -> ResizePlan:
    """Pair every video under ``src_root`` with ``dst_root/<same relative path>.mp4``; pairs whose output is
    newer than the source are counted as done (so an interrupted run resumes)."""
    if src_root.resolve() == dst_root.resolve():
        raise PrepareError(f"{dst_root}: the output folder must differ from the input folder")
    targets: dict[Path, Path] = {}
    todo, up_to_date = [], 0
    for source in find_videos(src_root, extensions):
        target = dst_root / source.relative_to(src_root).with_suffix(".mp4")
        if target in targets:
            raise PrepareError(f"{source}: same output {target} as {targets[target]}")
        targets[target] = source
        if is_up_to_date(source, target):
            up_to_date += 1
        else:
            todo.append((source, target))
    return ResizePlan(todo, up_to_date)


# ------------------------------------------------------------------------------------------------ checking

def check_video(path: Path, decoder: str = "decord") -> Optional[str]:
    """Open ``path`` and decode its first, middle and last frames; ``None`` if all went well, else the reason."""
    from .video import open_video  # imports torch; only the checker needs it

    try:
        reader = open_video(path, decoder)
        count = len(reader)
        frames = reader.get(sorted({0, count // 2, count - 1}))
    except FileNotFoundError:
        return "missing"
    except Exception as err:  # a checker reports every way a decoder can fail, whatever its exception type
        message = str(err).strip().splitlines()
        return f"{type(err).__name__}: {message[0] if message else 'no message'}"
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[1] == 0 or frames.shape[2] == 0:
        return f"decoded frames have shape {tuple(frames.shape)}"
    return None
