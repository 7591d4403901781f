"""Regional precision policies and choosing, per region, the fastest configuration that satisfies one.

`max_accuracy_drop` is in percentage points of top-1 accuracy, measured against the FP32 result of the same
model and backend. Without labels the drop is in top-1 agreement with FP32 (1.0 = same predictions), and for
embedding models in mean cosine similarity to FP32 (x100), both on the same scale.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from ..errors import PolicyError
from ..limits import MAX_NESTING, too_deep
from ..output import atomic_write
from ..precision.plan import PRECISIONS
from ..results import AccuracyStats, LatencyStats, RunResult, baseline_of

FORMAT_VERSION = 1
MAX_POLICY_BYTES = 1_000_000  # real policies are a few hundred bytes; a 28 MB one took minutes and gigabytes
_TOLERANCE = 1e-9  # points; 100 * (1 - 0.97) is 3.0000000000000027, which must still pass a 3-point limit
_FIELDS = ("region", "allowed_precisions", "max_accuracy_drop", "calibration_set")


@dataclass(frozen=True)
class RegionPolicy:
    """What one region accepts: precisions, the largest accuracy drop (percentage points) and, optionally,
    the calibration set INT8 configurations must have been calibrated on."""

    region: str
    allowed_precisions: tuple[str, ...]
    max_accuracy_drop: float  # percentage points, e.g. 0.5 allows 76.0% -> 75.5%
    calibration_set: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed_precisions", tuple(p.lower() for p in self.allowed_precisions))
        if not self.region or not isinstance(self.region, str):
            raise PolicyError(f"region {self.region!r}, field 'region': give a non-empty region name.")
        unknown = [p for p in self.allowed_precisions if p not in PRECISIONS]
        if unknown or not self.allowed_precisions:
            raise PolicyError(f"region {self.region!r}, field 'allowed_precisions': {list(self.allowed_precisions)} "
                              f"must be a non-empty list drawn from {list(PRECISIONS)}.")
        if not isinstance(self.max_accuracy_drop, (int, float)) or isinstance(self.max_accuracy_drop, bool) \
                or not 0 <= self.max_accuracy_drop <= 100:
            raise PolicyError(f"region {self.region!r}, field 'max_accuracy_drop': {self.max_accuracy_drop!r} must be "
                              "a number of percentage points between 0 and 100 (e.g. 0.5).")
        object.__setattr__(self, "max_accuracy_drop", float(self.max_accuracy_drop))

    def allows(self, precision: str) -> bool:
        return precision in self.allowed_precisions

    def to_json(self) -> dict:
        return {"region": self.region, "allowed_precisions": list(self.allowed_precisions),
                "max_accuracy_drop": self.max_accuracy_drop, "calibration_set": self.calibration_set}

    @classmethod
    def from_dict(cls, data: object, *, source: str = "<dict>", index: int = 0) -> "RegionPolicy":
        """Validate one policy entry; PolicyError names `source`, the region and the field."""
        if not isinstance(data, dict):
            raise PolicyError(f"{source}: entry {index} of 'regions' is {type(data).__name__}, expected a mapping "
                              f"with fields {list(_FIELDS)}.")
        region = data.get("region")
        if not isinstance(region, str) or not region:
            raise PolicyError(f"{source}: entry {index} of 'regions', field 'region': missing or not a string. "
                              "Give each entry a region name.")
        unknown = set(data) - set(_FIELDS)
        if unknown:
            raise PolicyError(f"{source}: region {region!r}: unknown field(s) {sorted(unknown)}; allowed fields are "
                              f"{list(_FIELDS)}.")
        for required in ("allowed_precisions", "max_accuracy_drop"):
            if required not in data:
                raise PolicyError(f"{source}: region {region!r}, field {required!r} is missing.")
        allowed = data["allowed_precisions"]
        if not isinstance(allowed, list) or not all(isinstance(p, str) for p in allowed):
            raise PolicyError(f"{source}: region {region!r}, field 'allowed_precisions': {allowed!r} must be a list "
                              f"of precision names from {list(PRECISIONS)}.")
        calibration = data.get("calibration_set")
        if calibration is not None and not isinstance(calibration, str):
            raise PolicyError(f"{source}: region {region!r}, field 'calibration_set': {calibration!r} must be a "
                              "calibration set name or null.")
        try:
            return cls(region, tuple(allowed), data["max_accuracy_drop"], calibration)
        except PolicyError as exc:
            raise PolicyError(f"{source}: {exc}") from exc


@dataclass
class PolicyTable:
    """An ordered set of region policies, read from and written to YAML or JSON."""

    policies: list[RegionPolicy] = field(default_factory=list)

    def __post_init__(self) -> None:
        duplicates = [r for r, n in Counter(p.region for p in self.policies).items() if n > 1]
        if duplicates:
            raise PolicyError(f"region(s) {duplicates} appear more than once: keep one policy per region.")

    def __iter__(self) -> Iterator[RegionPolicy]:
        return iter(self.policies)

    def __len__(self) -> int:
        return len(self.policies)

    def __getitem__(self, region: str) -> RegionPolicy:
        for policy in self.policies:
            if policy.region == region:
                return policy
        raise KeyError(f"No policy for region {region!r}; regions are {self.regions}.")

    @property
    def regions(self) -> list[str]:
        return [p.region for p in self.policies]

    def to_json(self) -> dict:
        return {"version": FORMAT_VERSION, "units": {"max_accuracy_drop": "percentage points"},
                "regions": [p.to_json() for p in self.policies]}

    @classmethod
    def from_dict(cls, data: object, *, source: str = "<dict>") -> "PolicyTable":
        if not isinstance(data, dict) or not isinstance(data.get("regions"), list):
            raise PolicyError(f"{source}: expected a mapping with a 'regions' list of policies "
                              "(see workbench/scenarios/default_policy.yaml).")
        policies = [RegionPolicy.from_dict(entry, source=source, index=i) for i, entry in enumerate(data["regions"])]
        try:
            return cls(policies)
        except PolicyError as exc:
            raise PolicyError(f"{source}: {exc}") from exc

    @classmethod
    def load(cls, path: str | Path) -> "PolicyTable":
        """Read a .yaml/.yml or .json policy file."""
        path = Path(path)
        kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
        if path.exists() and not path.is_file():
            raise PolicyError(f"{path}: not a regular file (a folder, FIFO or device). Pass a .yaml or .json file.")
        if path.is_file() and path.stat().st_size > MAX_POLICY_BYTES:
            raise PolicyError(f"{path}: {path.stat().st_size / 1e6:.1f} MB is far more than a policy file holds "
                              f"(at most {MAX_POLICY_BYTES / 1e6:.0f} MB): pass the policy, not a data file.")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise PolicyError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}). Save the policy file "
                              "as UTF-8.") from exc
        except OSError as exc:
            raise PolicyError(f"{path}: cannot read the policy file ({exc}). Check the path.") from exc
        try:
            data = json.loads(text) if kind == "JSON" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            raise PolicyError(f"{path}: not valid {kind} ({exc}). Fix the syntax.") from exc
        except RecursionError as exc:  # nested beyond what the parser can follow
            raise _nesting_error(path, kind) from exc
        except ValueError as exc:  # e.g. an integer longer than Python converts (4,300 digits)
            raise PolicyError(f"{path}: a number in it cannot be read ({exc}). Numbers in a policy are accuracy "
                              "drops such as 0.5.") from exc
        if too_deep(data):
            raise _nesting_error(path, kind)
        return cls.from_dict(data, source=str(path))

    def save(self, path: str | Path) -> Path:
        """Write YAML (.yaml/.yml) or JSON (.json), chosen by the suffix."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".json":
            text = json.dumps(self.to_json(), indent=2) + "\n"
        elif suffix in (".yaml", ".yml"):
            text = yaml.safe_dump(self.to_json(), sort_keys=False)
        else:
            raise PolicyError(f"{path}: unknown policy file suffix {suffix!r}; use .yaml, .yml or .json.")
        atomic_write(path, text.encode("utf-8"))  # creates missing folders
        return path


def _nesting_error(path: Path, kind: str) -> PolicyError:
    return PolicyError(f"{path}: the {kind} nests more than {MAX_NESTING} levels deep; a policy file is a mapping "
                       "with a 'regions' list (see workbench/scenarios/default_policy.yaml).")


def default_policies() -> PolicyTable:
    """North America (INT8, <= 2 points), EU (FP16 at most, <= 0.5), South-East Asia (INT8, <= 3)."""
    source = resources.files(__package__).joinpath("default_policy.yaml")
    return PolicyTable.from_dict(yaml.safe_load(source.read_text(encoding="utf-8")), source=str(source))


# ---- choosing -------------------------------------------------------------------------------------------------


@dataclass
class CandidateCheck:
    """How one result fares against one region policy."""

    config: str
    precision: str
    backend: str
    latency_ms: float | None  # median at the compared batch size
    drop_points: float | None  # accuracy drop vs FP32 in percentage points
    metric: str | None  # "top1", "top1_agreement" or "cosine" (see headline_metric)
    ok: bool
    reason: str

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class RegionChoice:
    """The fastest configuration satisfying a region's policy, or None with the reason why none does."""

    region: str
    policy: RegionPolicy
    choice: RunResult | None
    reason: str
    batch: int | None
    checks: list[CandidateCheck]

    @property
    def config(self) -> str | None:
        return self.choice.label if self.choice else None

    def to_json(self) -> dict:
        return {"region": self.region, "policy": self.policy.to_json(), "choice": self.config,
                "choice_cache_key": self.choice.cache_key if self.choice else None, "reason": self.reason,
                "batch": self.batch, "checks": [c.to_json() for c in self.checks]}


def common_batch(results: Iterable[RunResult]) -> int | None:
    """The batch size most results were measured at (their headline batch), so latencies are comparable."""
    counts = Counter(stats.batch for r in results for stats in r.latency)
    return max(counts, key=lambda b: (counts[b], b)) if counts else None


def latency_at(result: RunResult, batch: int) -> LatencyStats | None:
    return next((stats for stats in result.latency if stats.batch == batch), None)


METRICS = ("top1", "top1_agreement", "cosine")


def headline_metric(stats: AccuracyStats | None) -> tuple[float | None, str | None]:
    """The accuracy number policies compare: top1 (labelled data), else top1_agreement, else cosine (embeddings)."""
    for name in METRICS:
        value = getattr(stats, name) if stats is not None else None
        if value is not None:
            return value, name
    return None, None


def accuracy_drop(result: RunResult, baseline: RunResult | None) -> tuple[float | None, str | None, str]:
    """(drop vs FP32 in percentage points, metric used, problem); the metric is chosen by `headline_metric`.

    Agreement and cosine are measured against FP32 itself, so their FP32 reference is 1.0 unless recorded.
    """
    if baseline is None:
        return None, None, f"no FP32 result of {result.model} on {result.backend} to measure the drop against"
    value, metric = headline_metric(result.accuracy)
    if metric is None:
        return None, None, "no accuracy measured (top-1, agreement or cosine)"
    reference = getattr(baseline.accuracy, metric) if baseline.accuracy is not None else None
    if reference is None:
        if metric == "top1":
            return None, None, "the FP32 result has no top-1 to compare with"
        reference = 1.0
    return 100.0 * (reference - value), metric, ""


def check(policy: RegionPolicy, result: RunResult, baseline: RunResult | None, batch: int) -> CandidateCheck:
    """Does `result` satisfy `policy`? The reason names the first rule it breaks."""
    stats = latency_at(result, batch)
    drop, metric, problem = accuracy_drop(result, baseline)
    label = result.label
    if not policy.allows(result.precision):
        reason = f"no {result.precision.upper()} allowed"
    elif (policy.calibration_set and result.precision == "int8"
          and result.calibration != policy.calibration_set):
        reason = (f"{label} was calibrated on {result.calibration!r}, the policy requires "
                  f"{policy.calibration_set!r}")
    elif stats is None:
        reason = f"{label} was not measured at batch {batch}"
    elif drop is None:
        reason = f"{label}: {problem}"
    elif drop > policy.max_accuracy_drop + _TOLERANCE:
        reason = f"{label} drops {drop:.2f} > {policy.max_accuracy_drop:g} points ({metric})"
    else:
        reason = ""
    return CandidateCheck(label, result.precision, result.backend, stats.median if stats else None, drop, metric,
                          ok=not reason, reason=reason)


def choose(policies: PolicyTable | Iterable[RegionPolicy], results: Iterable[RunResult], *,
           batch: int | None = None, tie_tolerance: float = 0.05) -> list[RegionChoice]:
    """Per region, the fastest result (median latency at `batch`, default: the most common batch) that the policy
    allows, or a RegionChoice with `choice=None` and a reason listing why every candidate fails.

    Medians within `tie_tolerance` (fraction) of the fastest count as a tie, won by the more precise configuration
    (fp32 > fp16 > int8), then the smaller drop: timing noise alone should not pick a lower precision.
    """
    if not 0 <= tie_tolerance < 1:
        raise ValueError(f"tie_tolerance={tie_tolerance!r}: give a fraction in [0, 1), e.g. 0.05 for 5 %.")
    results = list(results)
    batch = batch or common_batch(results)
    choices = []
    for policy in policies:
        checks = [check(policy, r, baseline_of(r, results, batch=batch), batch) for r in results]
        passing = [(c, r) for c, r in zip(checks, results) if c.ok]
        if passing:
            fastest_check, _ = min(passing, key=lambda pair: pair[0].latency_ms)
            ties = [p for p in passing if p[0].latency_ms <= fastest_check.latency_ms * (1 + tie_tolerance)]
            best_check, best = min(ties, key=lambda p: (PRECISIONS.index(p[1].precision), p[0].drop_points,
                                                        p[0].latency_ms))
            reason = (f"fastest allowed: {best_check.config}, {best_check.latency_ms:.3f} ms at batch {batch}, "
                      f"drop {best_check.drop_points:.2f} <= {policy.max_accuracy_drop:g} points")
            if best_check is not fastest_check:
                reason += (f" (within {tie_tolerance:.0%} of {fastest_check.config} at "
                           f"{fastest_check.latency_ms:.3f} ms: a tie, won by higher precision or smaller drop)")
            if not best.accelerated:
                reason += f"; note: {best.backend} does not accelerate {best.precision} on this machine"
        else:
            best = None
            reasons = list(dict.fromkeys(c.reason for c in checks))
            reason = " and ".join(reasons) if reasons else "no results to choose from"
        choices.append(RegionChoice(policy.region, policy, best, reason, batch, checks))
    return choices
