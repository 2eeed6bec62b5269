"""Reading YAML config files with one-line errors that name the file and the key."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from fusion.common.errors import FusevalError


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error, not "the last one wins"."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping (first at line {seen[key].line + 1})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | os.PathLike) -> Any:
    """The parsed YAML of a file; a missing file, malformed YAML or a duplicated key is a FusevalError naming it."""
    path = Path(path)
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except FileNotFoundError:
        raise FusevalError(f"{path}: config file not found") from None
    except UnicodeDecodeError as e:
        raise FusevalError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise FusevalError(f"{path}: malformed YAML{where} ({getattr(e, 'problem', e)})") from None


def validation_message(path: str, err: ValidationError) -> str:
    """One line for a pydantic error: the file, the key and what is wrong with it."""
    errors = err.errors()
    # A misspelled key shows up as an unknown key plus a missing one: the unknown key is the news.
    e = next((x for x in errors if x["type"] == "extra_forbidden"), errors[0])
    loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
    if e["type"] == "extra_forbidden":
        missing = [".".join(map(str, x["loc"])) for x in errors if x["type"] == "missing"]
        hint = f" (and '{missing[0]}' is missing: a misspelling?)" if missing else ""
        return f"{path}: unknown key '{loc}'{hint}"
    if e["type"] == "missing":
        return f"{path}: missing required key '{loc}'"
    return f"{path}: {loc}: {e['msg']}"


M = TypeVar("M", bound=BaseModel)


def validate_config(model: type[M], data: Any, source: str) -> M:
    """A config mapping validated by a pydantic model; a non-mapping or a bad key is one line naming `source`."""
    if not isinstance(data, dict):
        raise FusevalError(f"{source}: expected a mapping at the top level")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise FusevalError(validation_message(source, e)) from None
