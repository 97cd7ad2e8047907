"""Search-space YAML files: a small schema, validated into frozen dataclasses with errors naming file and key."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .config import FIELDS, TrainConfig, from_mapping, load_yaml
from .errors import UserError

DISTRIBUTIONS = ("choice", "uniform", "loguniform", "randint")
SCHEDULERS = ("asha", "fifo")
SEARCHERS = ("optuna", "random", "grid")
METRICS = ("val_acc", "val_loss", "train_acc", "train_loss", "test_acc", "test_loss",
           "best_val_acc", "test_acc_at_best_val", "best_test_acc", "best_test_loss")
TUNING_METRICS = tuple(m for m in METRICS if "test" not in m)  # the test set is reported, never tuned on
TOP_KEYS = ("name", "description", "metric", "mode", "num_samples", "scheduler", "search", "resources",
            "max_failures", "num_to_keep", "epoch_timeout_s", "space", "grid", "seeds")


@dataclass(frozen=True)
class Param:
    """One searched or fixed key: ``kind`` is const or one of DISTRIBUTIONS."""

    name: str
    kind: str
    values: tuple = ()  # choice options, or (low, high) for ranges, or (value,) for const
    when: tuple[str, Any] | None = None  # sampled only when another key has this value

    def candidates(self) -> list[Any]:
        """Values to check the config against: every option, or a range's ends."""
        if self.kind == "randint":
            return [self.values[0], self.values[1] - 1]
        return list(self.values)


@dataclass(frozen=True)
class Scheduler:
    type: str = "asha"
    grace_period: int = 2  # epochs every trial gets before ASHA may stop it
    reduction_factor: float = 3.0


@dataclass(frozen=True)
class Searcher:
    type: str = "optuna"
    max_concurrent: int = 0  # 0 = as many as the resources allow
    seed: int = 0


@dataclass(frozen=True)
class Resources:
    cpus_per_trial: float = 1.0
    gpus_per_trial: float | None = None  # None = 0.25 when Ray sees a GPU, else 0


@dataclass(frozen=True)
class SearchSpec:
    name: str
    params: tuple[Param, ...]
    grid: tuple[dict, ...] = ()
    seeds: tuple[int, ...] = ()
    metric: str = "val_acc"
    mode: str = "max"
    num_samples: int = 8
    scheduler: Scheduler = field(default_factory=Scheduler)
    search: Searcher = field(default_factory=Searcher)
    resources: Resources = field(default_factory=Resources)
    max_failures: int = 2
    num_to_keep: int = 2
    epoch_timeout_s: float = 1800.0
    description: str = ""
    source: str = ""  # the file it came from, for messages
    warnings: tuple[str, ...] = ()

    @property
    def planned(self) -> int:
        """Trials the search means to run: every grid cell (rows x seeds), else num_samples."""
        if self.search.type == "grid":
            return len(self.grid) * max(len(self.seeds), 1)
        return self.num_samples

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data, as recorded in an experiment's tune_norm.json (read back by from_dict)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSpec:
        """A recorded spec (to_dict's output), lenient for old folders: missing keys take their defaults and
        unknown keys are ignored. Not a validation: the spec was checked when its search ran."""
        values = _known(cls, data)
        params = [p for p in values.get("params") or () if isinstance(p, Mapping) and "name" in p]
        values.update(
            name=str(values.get("name", "")),
            params=tuple(Param(name=str(p["name"]), kind=str(p.get("kind") or "const"),
                               values=tuple(p.get("values") or ()),
                               when=tuple(p["when"]) if p.get("when") else None) for p in params),
            grid=tuple(dict(row) for row in values.get("grid") or () if isinstance(row, Mapping)),
            seeds=tuple(int(s) for s in values.get("seeds") or ()),
            scheduler=Scheduler(**_known(Scheduler, values.get("scheduler"))),
            search=Searcher(**_known(Searcher, values.get("search"))),
            resources=Resources(**_known(Resources, values.get("resources"))),
            warnings=tuple(values.get("warnings") or ()),
        )
        return cls(**values)

    @property
    def constants(self) -> dict[str, Any]:
        return {p.name: p.values[0] for p in self.params if p.kind == "const"}

    @property
    def max_epochs(self) -> int:
        epochs = [c.get("epochs", self.constants.get("epochs", TrainConfig.epochs)) for c in self.cells()] or [
            max(p.candidates()) for p in self.params if p.name == "epochs" and p.kind != "const"
        ] or [self.constants.get("epochs", TrainConfig.epochs)]
        return int(max(epochs))

    def cells(self) -> list[dict[str, Any]]:
        """For a grid: every row x seed as a full config mapping (constants under the row)."""
        if self.search.type != "grid":
            return []
        if not self.seeds:
            return [{**self.constants, **row} for row in self.grid]
        return [{**self.constants, **row, "seed": s} for row in self.grid for s in self.seeds]

    def with_overrides(self, **changes: Any) -> SearchSpec:
        """Apply CLI overrides (num_samples=..., scheduler__grace_period=..., set={key: value}) and re-check."""
        spec = self
        sets = changes.pop("set", None) or {}
        for key, value in changes.items():
            if value is None:
                continue
            if "__" in key:
                part, sub = key.split("__")
                spec = replace(spec, **{part: replace(getattr(spec, part), **{sub: value})})
            else:
                spec = replace(spec, **{key: value})
        if not sets:
            return check_spec(spec)
        check_spec(spec)  # what is wrong without --set is the file's (or another option's) fault
        shown = " ".join(f"--set {k}={v}" for k, v in sets.items())
        for k in sets:
            if k not in FIELDS:
                raise UserError(f"--set {k}={sets[k]}: unknown config key {k!r}; valid keys are {', '.join(FIELDS)}")
        params = [p for p in spec.params if p.name not in sets]
        params += [Param(k, "const", (v,)) for k, v in sets.items()]
        try:
            return check_spec(replace(spec, params=tuple(params)))
        except UserError as e:
            raise UserError(f"{shown}: {str(e).removeprefix(spec.source + ': ')}") from None


def _known(kind: type, data: Any) -> dict[str, Any]:
    """The keys of a recorded mapping that ``kind`` (a dataclass) has, without nulls (they take the defaults)."""
    if not isinstance(data, Mapping):
        return {}
    return {k: v for k, v in data.items() if k in kind.__dataclass_fields__ and v is not None}


class _Reader:
    """Validation helpers that prefix every message with the file (and key)."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, message: str) -> UserError:
        return UserError(f"{self.source}: {key}: {message}")

    def mapping(self, key: str, value: Any, allowed: tuple[str, ...]) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a mapping, got {value!r}")
        unknown = [k for k in value if k not in allowed]
        if unknown:
            raise self.fail(f"{key}.{unknown[0]}" if key else unknown[0],
                            f"unknown key; expected one of {', '.join(allowed)}")
        return value

    def number(self, key: str, value: Any, kind: type = float, low: float | None = None,
               high: float | None = None, low_open: bool = False) -> Any:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok and kind is int:
            ok = float(value) == int(value)
        if not ok:
            raise self.fail(key, f"expected {'a whole number' if kind is int else 'a number'}, got {value!r}")
        if low is not None and (value <= low if low_open else value < low):
            raise self.fail(key, f"expected a number {'>' if low_open else '>='} {low}, got {value!r}")
        if high is not None and value > high:
            raise self.fail(key, f"expected a number <= {high}, got {value!r}")
        return kind(value)


def _param(r: _Reader, name: str, value: Any) -> Param:
    key = f"space.{name}"
    if name not in FIELDS:
        raise r.fail(key, f"unknown config key; valid keys are {', '.join(FIELDS)}")
    if not isinstance(value, dict):
        if isinstance(value, (list, tuple)):
            raise r.fail(key, "a list is ambiguous; write {choice: [...]} to search over it")
        return Param(name, "const", (value,))
    r.mapping(key, value, DISTRIBUTIONS + ("when",))
    kinds = [k for k in DISTRIBUTIONS if k in value]
    if len(kinds) != 1:
        raise r.fail(key, f"expected exactly one distribution of {', '.join(DISTRIBUTIONS)}")
    kind, args = kinds[0], value[kinds[0]]
    when = None
    if "when" in value:
        cond = value["when"]
        if not isinstance(cond, dict) or len(cond) != 1:
            raise r.fail(f"{key}.when", "expected one condition such as {norm: group}")
        when = next(iter(cond.items()))
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise r.fail(f"{key}.choice", f"expected a non-empty list, got {args!r}")
        return Param(name, kind, tuple(args), when)
    if not (isinstance(args, list) and len(args) == 2):
        raise r.fail(f"{key}.{kind}", f"expected [low, high], got {args!r}")
    number = int if kind == "randint" else float
    low, high = (r.number(f"{key}.{kind}", a, number) for a in args)
    if low >= high:
        raise r.fail(f"{key}.{kind}", f"expected low < high, got [{low}, {high}]")
    if kind == "loguniform" and low <= 0:
        raise r.fail(f"{key}.{kind}", f"expected low > 0 for a log scale, got {low}")
    return Param(name, kind, (low, high), when)


def parse(data: dict, source: str = "<search space>") -> SearchSpec:
    """Validate a loaded YAML mapping into a SearchSpec."""
    r = _Reader(source)
    r.mapping("", data, TOP_KEYS)
    space = data.get("space") or {}
    if not isinstance(space, dict):
        raise r.fail("space", f"expected a mapping of config keys, got {space!r}")
    # conditional keys after the keys they depend on, so define-by-run sampling can see the condition
    params = tuple(sorted((_param(r, str(k), v) for k, v in space.items()), key=lambda p: p.when is not None))
    sched = r.mapping("scheduler", data.get("scheduler"), tuple(Scheduler.__dataclass_fields__))
    search = r.mapping("search", data.get("search"), tuple(Searcher.__dataclass_fields__))
    res = r.mapping("resources", data.get("resources"), tuple(Resources.__dataclass_fields__))
    grid = data.get("grid") or []
    if not isinstance(grid, list) or not all(isinstance(g, dict) for g in grid):
        raise r.fail("grid", "expected a list of config mappings")
    for i, row in enumerate(grid):
        for k in row:
            if k not in FIELDS:
                raise r.fail(f"grid[{i}].{k}", f"unknown config key; valid keys are {', '.join(FIELDS)}")
    seeds = data.get("seeds", ())
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = list(range(1, r.number("seeds", seeds, int, 1) + 1))
    if not isinstance(seeds, (list, tuple)):
        raise r.fail("seeds", f"expected a count or a list of seeds, got {seeds!r}")
    name = data.get("name") or Path(source).stem
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
        raise r.fail("name", f"expected letters, digits, - and _ only, got {name!r}")
    spec = SearchSpec(
        name=name,
        description=str(data.get("description", "")),
        params=params,
        grid=tuple(grid),
        seeds=tuple(r.number("seeds", s, int) for s in seeds),
        metric=data.get("metric", "val_acc"),
        mode=data.get("mode", "max"),
        num_samples=data.get("num_samples", 8),
        scheduler=Scheduler(**sched),
        search=Searcher(**search),
        resources=Resources(**res),
        max_failures=data.get("max_failures", 2),
        num_to_keep=data.get("num_to_keep", 2),
        epoch_timeout_s=data.get("epoch_timeout_s", 1800.0),
        source=source,
    )
    return check_spec(spec)


def check_spec(spec: SearchSpec) -> SearchSpec:
    """Check every setting and every value the space can produce; return the spec with its warnings."""
    r = _Reader(spec.source)
    if not isinstance(spec.name, str) or not spec.name.replace("-", "").replace("_", "").isalnum():
        raise r.fail("name", f"expected letters, digits, - and _ only, got {spec.name!r}")
    if spec.metric not in METRICS:
        raise r.fail("metric", f"expected one of {', '.join(TUNING_METRICS)}, got {spec.metric!r}")
    if spec.metric not in TUNING_METRICS:
        raise r.fail("metric", f"{spec.metric} is measured on the test set, which is only reported, never tuned on; "
                               f"tune on one of {', '.join(TUNING_METRICS)}")
    if spec.mode not in ("max", "min"):
        raise r.fail("mode", f"expected max or min, got {spec.mode!r}")
    r.number("num_samples", spec.num_samples, int, 1)
    r.number("max_failures", spec.max_failures, int, -1)
    r.number("num_to_keep", spec.num_to_keep, int, 1)
    r.number("epoch_timeout_s", spec.epoch_timeout_s, float, 0, low_open=True)
    if spec.scheduler.type not in SCHEDULERS:
        raise r.fail("scheduler.type", f"expected one of {', '.join(SCHEDULERS)}, got {spec.scheduler.type!r}")
    if spec.search.type not in SEARCHERS:
        raise r.fail("search.type", f"expected one of {', '.join(SEARCHERS)}, got {spec.search.type!r}")
    r.number("search.max_concurrent", spec.search.max_concurrent, int, 0)
    r.number("resources.cpus_per_trial", spec.resources.cpus_per_trial, float, 0, low_open=True)
    if spec.resources.gpus_per_trial is not None:
        r.number("resources.gpus_per_trial", spec.resources.gpus_per_trial, float, 0, high=1, low_open=True)
    for p in spec.params:
        if p.when is not None:
            other = next((q for q in spec.params if q.name == p.when[0]), None)
            if other is None or p.when[1] not in other.values:
                raise r.fail(f"space.{p.name}.when", f"{p.when[0]} can never be {p.when[1]!r} in this space")
            if other.when is not None:
                raise r.fail(f"space.{p.name}.when", f"{p.when[0]} is itself conditional; conditions do not nest")
    if spec.search.type == "grid":
        if not spec.grid:
            raise r.fail("grid", "a grid search needs a non-empty list of configs")
        if spec.seeds and any("seed" in row for row in spec.grid):
            raise r.fail("seeds", "give seeds either in the grid rows or as seeds:, not both")
        if any(p.kind != "const" for p in spec.params):
            raise r.fail("space", "a grid search takes constants only in space; list the variations under grid")
        for i, cell in enumerate(spec.cells()):
            _check_config(r, f"grid[{i // max(len(spec.seeds), 1)}]", cell)
    else:
        if spec.grid:
            raise r.fail("grid", f"a grid list needs search.type grid, not {spec.search.type}")
        if spec.seeds:
            raise r.fail("seeds", f"seeds repeat the rows of a grid; this {spec.search.type} search samples seed "
                                  "like any other key in space")
        for where, values in _probes(spec):
            _check_config(r, where, values)
    if spec.metric.startswith(("val", "best_val", "test_acc_at")):
        sizes = [c.get("val_size", TrainConfig.val_size) for c in spec.cells()] or [
            spec.constants.get("val_size", TrainConfig.val_size)]
        if min(sizes) == 0:
            raise r.fail("metric", f"{spec.metric} needs a validation split, but val_size is 0")
    warnings = []
    if spec.scheduler.type == "asha":
        r.number("scheduler.grace_period", spec.scheduler.grace_period, int, 1)
        r.number("scheduler.reduction_factor", spec.scheduler.reduction_factor, float, 1, low_open=True)
        if spec.scheduler.grace_period > spec.max_epochs:
            raise r.fail("scheduler.grace_period",
                         f"grace period {spec.scheduler.grace_period} is longer than the "
                         f"{spec.max_epochs} epochs (max_t)")
        l1 = next((p for p in spec.params if p.name == "l1"), None)
        if l1 is not None and max(l1.candidates()) > 0 and spec.scheduler.grace_period < spec.max_epochs / 4:
            warnings.append(
                f"ASHA's grace period ({spec.scheduler.grace_period} epochs) is under a quarter of max_t "
                f"({spec.max_epochs}); L1 runs peak late and may be stopped early")
    return replace(spec, warnings=tuple(warnings))


def _probes(spec: SearchSpec) -> Iterator[tuple[str, dict]]:
    """One config per candidate value of each searched key, the rest at constants / first options."""
    base = dict(spec.constants)
    for p in spec.params:
        if p.kind != "const" and p.when is None:
            base.setdefault(p.name, p.candidates()[0])
    yield "space", base
    for p in spec.params:
        if p.kind == "const":
            continue
        for v in p.candidates():
            values = {**base, p.name: v}
            if p.when is not None:
                values[p.when[0]] = p.when[1]
            yield f"space.{p.name}", values


def _check_config(r: _Reader, where: str, values: dict) -> None:
    try:
        from_mapping(values)
    except UserError as e:
        raise r.fail(where, str(e)) from None
    except TypeError as e:
        raise r.fail(where, f"a value has the wrong type ({e})") from None


def load(path: Path | str) -> SearchSpec:
    """Read and validate a search-space YAML file."""
    path = Path(path)
    data = load_yaml(path)
    if not data:
        raise UserError(f"{path} is empty; a search space needs at least a space: or grid: section (see "
                        "search_spaces/)")
    return parse(data, source=str(path))
