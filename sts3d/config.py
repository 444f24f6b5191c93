"""Python config files, as the seed's (mmcv-style): module-level names are the settings, ``_base_`` inherits.

A config is a ``.py`` file whose top-level names (not starting with ``_``, not modules or functions) are its
settings. ``_base_`` (a path or a list of paths, relative to the file) names files whose settings it starts from;
its own values are merged over them key by key, and a dict holding ``_delete_=True`` replaces the inherited dict
instead. ``--cfg-options a.b=value`` pairs are merged last: values are Python literals where they parse, strings
otherwise, a key given twice keeps the later value, and a number picks a list element (``pipeline.1.clip_len=8``).
"""
from __future__ import annotations

import ast
import copy
import pprint
import types
from pathlib import Path
from typing import Any, Iterable, Union

BASE_KEY = "_base_"
DELETE_KEY = "_delete_"


class ConfigError(ValueError):
    """A config file or override that cannot be read; the message names the file or the option."""


class ConfigDict(dict):
    """A dict whose keys are also attributes (``cfg.model.backbone.depth``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __deepcopy__(self, memo):
        return ConfigDict({k: copy.deepcopy(v, memo) for k, v in self.items()})


def to_config_dict(value: Any) -> Any:
    if isinstance(value, dict):
        return ConfigDict({k: to_config_dict(v) for k, v in value.items()})
    if isinstance(value, list):
        return [to_config_dict(v) for v in value]
    if isinstance(value, tuple):
        return tuple(to_config_dict(v) for v in value)
    return value


def to_plain(value: Any) -> Any:
    """Plain dicts / lists / tuples all the way down (for dumping and for passing to constructors)."""
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_plain(v) for v in value)
    return value


def merge(base: dict, update: dict) -> dict:
    """``update`` merged over ``base`` key by key; a dict in ``update`` with ``_delete_=True`` replaces."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and value.get(DELETE_KEY):
            merged[key] = {k: copy.deepcopy(v) for k, v in value.items() if k != DELETE_KEY}
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _read_file(path: Path, chain: tuple[Path, ...]) -> dict:
    if path in chain:
        raise ConfigError(f"{path}: circular _base_ inheritance")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.suffix != ".py":
        raise ConfigError(f"{path}: configs are Python files (.py)")
    source = path.read_text()
    namespace: dict[str, Any] = {"__file__": str(path)}
    try:
        exec(compile(source, str(path), "exec"), namespace)
    except SyntaxError as error:
        raise ConfigError(f"{path}:{error.lineno}: {error.msg}") from None
    except Exception as error:  # the file's own code failed: say where
        raise ConfigError(f"{path}: {type(error).__name__}: {error}") from None
    settings = {k: v for k, v in namespace.items()
                if not k.startswith("_") and not isinstance(v, (types.ModuleType, types.FunctionType, type))}
    bases = namespace.get(BASE_KEY, [])
    bases = [bases] if isinstance(bases, str) else list(bases)
    merged: dict = {}
    for base in bases:
        merged = merge(merged, _read_file((path.parent / base).resolve(), chain + (path,)))
    return merge(merged, settings)


def load_config(path: Union[str, Path], options: Iterable[str] = ()) -> ConfigDict:
    """Read a config file (with its ``_base_`` files) and apply ``key=value`` overrides."""
    cfg = _read_file(Path(path).resolve(), ())
    cfg = apply_options(cfg, options)
    cfg = to_config_dict(cfg)
    cfg["filename"] = str(path)
    return cfg


def parse_value(text: str) -> Any:
    """A Python literal where ``text`` parses as one (``1``, ``0.1``, ``[1, 2]``, ``None``, ``True``); ``true`` /
    ``false`` in any case as booleans, as mmcv's ``DictAction`` reads them (the string ``'false'`` would count as
    true); else the string itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        return text


def apply_options(cfg: dict, options: Iterable[str], flag: str = "--cfg-options") -> dict:
    """Merge ``flag``'s pairs (``a.b.c=value``) into ``cfg``; the later of two equal keys wins."""
    cfg = copy.deepcopy(cfg)
    for option in options:
        key, sep, text = option.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag}: expected key=value, got {option!r}")
        where = f"{flag} {option!r}"
        *parents, leaf = key.split(".")
        node = cfg
        for i, part in enumerate(parents):
            if isinstance(node, list):
                node = _list_item(node, part, where)
                continue
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, (dict, list)):
                raise ConfigError(f"{where}: {'.'.join(parents[:i + 1])} is not a dict")
            node = child
        if isinstance(node, list):
            node[_list_index(node, leaf, where)] = parse_value(text)
        else:
            node[leaf] = parse_value(text)
    return cfg


def _list_index(items: list, part: str, where: str) -> int:
    """A list element named by its position (``data.train.pipeline.1.clip_len=8``, as mmcv allows)."""
    if not part.lstrip("-").isdigit() or not -len(items) <= int(part) < len(items):
        raise ConfigError(f"{where}: {part!r} is not an index of a list of {len(items)}")
    return int(part)


def _list_item(items: list, part: str, where: str) -> Any:
    return items[_list_index(items, part, where)]


def format_config(cfg: dict) -> str:
    """The resolved config as the text of a Python file that :func:`load_config` reads back to the same settings
    (``filename``, which :func:`load_config` sets, is left out)."""
    lines = [f"# resolved config written by sts3d from {cfg.get('filename', '?')}"]
    for key, value in to_plain(cfg).items():
        if key != "filename":
            lines.append(f"{key} = {pprint.pformat(value, width=110, sort_dicts=False)}")
    return "\n".join(lines) + "\n"


def dump_config(cfg: dict, path: Union[str, Path]) -> Path:
    """Write :func:`format_config`'s text to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(format_config(cfg))
    return path
