"""The suite YAML: what `fuseval run` builds, serves, answers, judges and compares (DESIGN.md 3.6).

    name: nightly
    candidates:
      - {name: merged, model: /models/merged}                   # an existing checkpoint
      - {name: ties, merge: recipes/ties.yml}                   # a merge recipe (path or inline mapping)
      - {name: fused, fuse: fuse.yml, output: merged}           # a fusion recipe and which of its outputs
    baselines:
      - {name: pivot, model: /models/pivot}
    grid:                                                       # ablations: the product of the axes
      - name: "ties-d{density}"
        axes: {density: [0.3, 0.5, 0.7]}
        candidate: {merge: {merge_method: ties, base_model: /models/pivot, models: [...],
                            parameters: {density: "{density}"}}}
    benchmarks: [zoo, {questions: general, limit: 20, judge: llm}, {lmeval: [fuseval_zoo], limit: 100}]
    backend: {kind: vllm, options: {tensor_parallel_size: 2}}
    judge: {model: gpt-4o, backend: openai, base_url: https://..., api_key_env: JUDGE_KEY}
    generation: {max_new_tokens: 512}
    gate: {baseline: pivot, margin: 0.25}

Relative paths are taken from the suite file's directory. Every problem is one line naming the
file and the key.
"""

from __future__ import annotations

import itertools
import os
import re
import string
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fusion.common.configfile import read_yaml, validate_config, validation_message
from fusion.common.errors import FusevalError
from harness.formats.questions import BUILTIN
from harness.run.generate import GenerationSettings

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]{0,99}$")  # also a directory name: no '/', no '..'


def _check_name(v: str) -> str:
    if not NAME.match(v) or ".." in v:
        raise ValueError(f"{v!r} is not a usable name (letters, digits and . _ + = -; no '/' or '..')")
    return v


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(_Strict):
    """One model of the run: exactly one of `model`, `merge`, `fuse`."""

    name: str = Field(description="Name in the store and the reports.")
    model: str | None = Field(None, description="An existing Hugging Face checkpoint directory (or a served name "
                                                "for the openai backend).")
    merge: str | dict[str, Any] | None = Field(None, description="A merge recipe: a YAML path or the mapping itself.")
    fuse: str | dict[str, Any] | None = Field(None, description="A fusion recipe (fuse.yml path or mapping).")
    output: str = Field("merged", description="fuse: merged (the recipe's fused model: the stage-2 merge, or "
                                               "a joint recipe's one target), control, pivot or target-<source>.")
    fuse_merge: dict[str, Any] | None = Field(None, description="fuse: stage-2 merge override {method, parameters}; "
                                                                "the targets are reused, weighted 1/n where the "
                                                                "method takes weights.")
    fuse_overrides: dict[str, Any] = Field(default_factory=dict, description="fuse: keys merged into the recipe "
                                                                             "(e.g. {train: {lam: 0.7}}).")

    _name = field_validator("name")(classmethod(lambda cls, v: _check_name(v)))

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        given = [k for k in ("model", "merge", "fuse") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of model, merge, fuse (got {', '.join(given) or 'none'})")
        if self.fuse is None and (self.fuse_merge or self.fuse_overrides or self.output != "merged"):
            raise ValueError("output, fuse_merge and fuse_overrides apply to fuse candidates only")
        if not (self.output in ("merged", "control", "pivot") or self.output.startswith("target-")):
            raise ValueError(f"output {self.output!r}: choose merged, control, pivot or target-<source>")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("model", "merge", "fuse") if getattr(self, k) is not None)


class GridSpec(_Strict):
    """An ablation: one candidate per combination of the axes' values, named by `name`'s template."""

    name: str = Field(description="Name template, e.g. 'ties-d{density}'; each axis must appear in it.")
    axes: dict[str, list[Any]] = Field(description="Axis name -> values.")
    candidate: dict[str, Any] = Field(description="A candidate (model/merge/fuse ...) with {axis} placeholders.")


class BenchSpec(_Strict):
    """A question set answered by every model, or lm-eval tasks."""

    questions: str | None = Field(None, description="zoo, general, a question.jsonl, or a directory holding one.")
    name: str | None = Field(None, description="Name in the store (default: zoo/general or the file's directory).")
    limit: int | None = Field(None, ge=1, description="Only N questions, taken from every category in turn "
                                                      "(lm-eval: examples per task).")
    judge: Literal["auto", "programmatic", "llm", "both"] = Field(
        "auto", description="auto: programmatic where the questions carry checks, else the LLM judge.")
    lmeval: list[str] | None = Field(None, description="lm-eval task names (instead of questions).")
    num_fewshot: int | None = Field(None, ge=0, description="lm-eval: few-shot examples.")

    @model_validator(mode="after")
    def _one(self) -> BenchSpec:
        if (self.questions is None) == (self.lmeval is None):
            raise ValueError("give either questions or lmeval")
        if self.lmeval is not None and not self.lmeval:
            raise ValueError("lmeval: name at least one task")
        return self


class BackendSpec(_Strict):
    kind: Literal["vllm", "transformers", "openai"] | None = Field(None, description="Default: vllm if installed.")
    options: dict[str, Any] = Field(default_factory=dict, description="Backend options (as -o KEY=VALUE).")
    base_url: str | None = Field(None, description="openai: the endpoint.")
    api_key_env: str | None = Field(None, description="openai: environment variable holding the key.")


class JudgeSpec(_Strict):
    """The LLM judge (benches judged by `llm`): a model on a backend."""

    model: str | None = Field(None, description="Judge model directory or served name.")
    backend: Literal["vllm", "transformers", "openai"] | None = Field(None, description="Default: vllm if installed.")
    options: dict[str, Any] = Field(default_factory=dict, description="Judge backend options.")
    base_url: str | None = Field(None, description="openai: the judge's endpoint.")
    api_key_env: str | None = Field(None, description="openai: environment variable holding the judge's key.")
    name: str | None = Field(None, description="Name of the judge in judgments.")
    structured: bool | None = Field(None, description="Schema-constrained JSON verdicts (default: where possible).")
    repeats: int = Field(1, ge=1, description="Judgments per answer turn.")
    order_check: int = Field(0, ge=0, description="On this many questions of each LLM-judged bench, also judge "
                                                  "each candidate's answers against the first baseline's in both "
                                                  "orders: how often the verdict flips with the order (the "
                                                  "report's judge reliability).")
    max_new_tokens: int = Field(1024, ge=1)
    temperature: float = Field(0.0, ge=0)
    note: str | None = Field(None, description="A caveat printed beside this judge's scores.")


class GateSpec(_Strict):
    baseline: str = Field(description="The baseline the candidates are gated against.")
    margin: float = Field(ge=0, description="The practical margin m: differences inside ±m do not matter.")
    level: float = Field(0.90, gt=0.5, lt=1, description="Two-sided interval level (0.90: one-sided 95% each side).")
    bench: str | None = Field(None, description="Gate on this bench (default: the first question bench).")
    judge: str | None = Field(None, description="Gate on judges whose id contains this (default: the bench's first).")


SUITE_MAX_NEW_TOKENS = 512


class Suite(_Strict):
    name: str = Field(description="The suite's name (runs are grouped by it in the history).")
    candidates: list[ModelSpec] = Field(default_factory=list)
    baselines: list[ModelSpec | str] = Field(default_factory=list, description="Models, or names of candidates.")
    grid: list[GridSpec] = Field(default_factory=list)
    benchmarks: list[BenchSpec | str] = Field(min_length=1)
    backend: BackendSpec = BackendSpec()
    judge: JudgeSpec = JudgeSpec()
    generation: GenerationSettings = Field(GenerationSettings(max_new_tokens=SUITE_MAX_NEW_TOKENS),
                                           description=f"How answers are drawn; max_new_tokens defaults to "
                                                       f"{SUITE_MAX_NEW_TOKENS} in a suite.")
    gate: GateSpec | None = None
    seeds: list[int] | None = Field(None, min_length=1, description="Training seeds for fuse candidates "
                                                                    "(overrides the recipes' seeds).")
    examples: int = Field(3, ge=0, description="Questions shown side by side in the report.")
    positive_control: str | None = Field(
        None, description="The name of a suite whose world has an effect built in (fusion must help there); the "
                          "report shows its latest run's gate verdicts as this suite's positive control.")

    _name = field_validator("name")(classmethod(lambda cls, v: _check_name(v)))
    _control = field_validator("positive_control")(classmethod(lambda cls, v: v if v is None else _check_name(v)))

    @field_validator("generation", mode="before")
    @classmethod
    def _suite_default(cls, v: Any) -> Any:
        """The suite's own default for max_new_tokens, whether or not `generation:` is there."""
        return {"max_new_tokens": SUITE_MAX_NEW_TOKENS, **v} if isinstance(v, dict) else v


def _fill(obj: Any, values: dict[str, Any], where: str) -> Any:
    """Substitute {axis} placeholders; a string that is only '{axis}' takes the value with its type."""
    if isinstance(obj, dict):
        return {k: _fill(v, values, where) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_fill(v, values, where) for v in obj]
    if isinstance(obj, str) and "{" in obj:
        fields = [f for _, f, _, _ in string.Formatter().parse(obj) if f is not None]
        if unknown := [f for f in fields if f not in values]:
            raise FusevalError(f"{where}: placeholder {{{unknown[0]}}} is not an axis ({', '.join(values)})")
        if len(fields) == 1 and obj == "{" + fields[0] + "}":
            return values[fields[0]]
        return obj.format(**values)
    return obj


def expand_grid(grid: GridSpec, where: str) -> list[ModelSpec]:
    """The candidates of one grid, in axis order; zero combinations is an error."""
    for axis in grid.axes:
        if "{" + axis + "}" not in grid.name:
            raise FusevalError(f"{where}: name {grid.name!r} must contain {{{axis}}} so each candidate is named apart")
    combos = list(itertools.product(*grid.axes.values()))
    if not grid.axes or not combos:
        raise FusevalError(f"{where}: expands to zero candidates (an axis has no values)")
    out = []
    for combo in combos:
        values = dict(zip(grid.axes, combo))
        spec = _fill({**grid.candidate, "name": grid.name}, values, where)
        spec["name"] = str(spec["name"])
        try:
            out.append(ModelSpec.model_validate(spec))
        except ValidationError as e:
            raise FusevalError(validation_message(where, e)) from None
    return out


class LoadedSuite(BaseModel):
    """A suite with its grids expanded, baselines resolved and paths made absolute."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    path: Path
    suite: Suite
    models: list[ModelSpec]                       # baselines first, then candidates (grids included)
    roles: dict[str, str]                         # name -> baseline | candidate
    grids: dict[str, dict[str, dict[str, Any]]]   # grid name template -> candidate name -> axis values
    benches: list[BenchSpec]


def expand_path(p: str, where: str) -> str:
    """~ and $VAR / ${VAR} in a path; an unset variable is an error, not a literal '$'."""
    out = os.path.expandvars(os.path.expanduser(p))
    if m := re.search(r"\$\{?(\w+)", out):
        raise FusevalError(f"{where}: {p!r} uses ${m.group(1)}, which is not set in the environment")
    return out


def _abs(p: str, here: Path, where: str = "path") -> str:
    q = Path(expand_path(p, where))
    return str(q if q.is_absolute() else (here / q).resolve())


def _pathlike(ref: str) -> bool:
    return os.sep in ref or ref.startswith((".", "$", "~"))


def load_suite(path: str | os.PathLike, data: dict | None = None) -> LoadedSuite:
    """Read, validate and expand a suite; `data` instead of reading the file (its path still names errors)."""
    path = Path(path)
    suite = validate_config(Suite, read_yaml(path) if data is None else data, str(path))
    here = path.resolve().parent
    candidates = list(suite.candidates)
    grids: dict[str, dict[str, dict[str, Any]]] = {}
    for i, g in enumerate(suite.grid):
        expanded = expand_grid(g, f"{path}: grid[{i}]")
        combos = [dict(zip(g.axes, c)) for c in itertools.product(*g.axes.values())]
        grids[g.name] = {m.name: v for m, v in zip(expanded, combos)}
        candidates += expanded
    names = {m.name for m in candidates}
    baselines = []
    for i, b in enumerate(suite.baselines):
        if isinstance(b, str):
            if b not in names:
                raise FusevalError(f"{path}: baselines[{i}]: {b!r} is neither a candidate nor a baseline model")
            continue
        baselines.append(b)
    roles = {b.name: "baseline" for b in baselines}
    roles |= {(b if isinstance(b, str) else b.name): "baseline" for b in suite.baselines}
    models = baselines + candidates
    seen: set[str] = set()
    for m in models:
        if m.name in seen:
            raise FusevalError(f"{path}: two models are named {m.name!r}")
        seen.add(m.name)
        roles.setdefault(m.name, "candidate")
    if not models:
        raise FusevalError(f"{path}: no candidates or baselines")
    if suite.gate and suite.gate.baseline not in {n for n, r in roles.items() if r == "baseline"}:
        raise FusevalError(f"{path}: gate.baseline {suite.gate.baseline!r} is not a baseline of this suite "
                           f"(baselines: {', '.join(n for n, r in roles.items() if r == 'baseline') or 'none'})")
    fixed = []
    for m in models:
        upd: dict[str, Any] = {}
        where = f"{path}: {roles[m.name]} {m.name!r}"
        # On an openai backend a model is the endpoint's name for it (`Qwen/Qwen2.5-7B-Instruct`), not a path.
        if m.model is not None and suite.backend.kind != "openai" and _pathlike(m.model):
            upd["model"] = _abs(m.model, here, where)
        for key in ("merge", "fuse"):
            if isinstance(getattr(m, key), str):
                upd[key] = _abs(getattr(m, key), here, where)
        fixed.append(m.model_copy(update=upd))
    benches = []
    for b in suite.benchmarks:
        spec = BenchSpec(questions=b) if isinstance(b, str) else b
        if spec.questions and spec.questions not in BUILTIN:
            spec = spec.model_copy(update={"questions": _abs(spec.questions, here, f"{path}: benchmarks")})
        benches.append(spec)
    if suite.judge.model and suite.judge.backend != "openai" and _pathlike(suite.judge.model):
        judge = suite.judge.model_copy(update={"model": _abs(suite.judge.model, here, f"{path}: judge.model")})
        suite = suite.model_copy(update={"judge": judge})
    return LoadedSuite(path=path, suite=suite, models=fixed, roles=roles, grids=grids, benches=benches)
