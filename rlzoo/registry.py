"""The algorithm registry: one `Algorithm` record per file in `algorithms/`.

    from rlzoo import get_algorithm
    algo = get_algorithm("grpo")
    cfg = algo.Config(beta=0.0)
    adv, state = algo.advantages(rollout, cfg, algo.init_state(cfg))
    loss, metrics = algo.loss(stats, rollout, adv, cfg, state)
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import pkgutil
from typing import Any, Callable, Iterable, Mapping

from rlzoo.rollout import POLICY_OUTPUTS, ROLLOUT_FIELDS, Rollout, validate

FAMILIES = {
    "policy-loss": "ratio / trust-region policy losses (PPO, GRPO and relatives)",
    "advantage": "outcome advantage estimators (paired with a policy loss)",
    "reinforce": "plain policy-gradient estimators",
    "preference": "pairwise log-ratio margin losses (DPO family)",
    "self-play": "log-ratio regression, self-play and Nash losses",
    "critic": "value-based methods (learned critic)",
}

INVARIANTS = ("finite", "mask", "permutation", "jit", "microbatch", "sharding")
"""Properties every registered algorithm is tested for (tests/test_registry_invariants.py)."""

Needs = frozenset[str] | Callable[[Any], frozenset[str]]


def _no_state(cfg: Any) -> tuple:
    return ()


@dataclasses.dataclass(frozen=True, eq=False)
class Algorithm:
    """Everything the trainer needs to run one algorithm."""

    name: str
    """Registry name, `rlzoo train --algo NAME`."""
    family: str
    """One of `FAMILIES`."""
    paper: str
    """Title, year and arXiv id (or URL) of the paper."""
    Config: type
    """Frozen dataclass of hyper-parameters whose defaults are the paper's."""
    advantages: Callable
    """(rollout, cfg, state) -> (adv [B, T], state); outside the gradient."""
    loss: Callable
    """(stats, rollout, adv, cfg, state) -> (scalar loss, metrics dict)."""
    init_state: Callable[[Any], Any] = _no_state
    """cfg -> initial algorithm state pytree (`()` for stateless methods)."""
    needs: Needs = frozenset()
    """Optional Rollout fields and PolicyStats outputs the algorithm reads, as a
    set or a function of the config (e.g. `ref_logprobs` only when β > 0)."""
    post_update: Callable | None = None
    """(state, metrics, cfg) -> state, called after each optimiser step with
    the loss metrics, for methods whose state reacts to the update (dual
    variables, adaptive bounds)."""
    reference_logprobs: Callable | None = None
    """(latest [B, T], previous [B, T], cfg) -> [B, T]: the reference log-probs
    as a function of the two newest frozen iterates, for methods whose
    reference moves with the iterate sequence (APO's Nesterov extrapolation).
    When set, the trainer keeps the previous reference iterate too (both equal
    the initial policy until the first `--ref-refresh-every` refresh)."""
    pairwise: bool = False
    """Rows come in preference pairs (group_size = 2); the trainer builds pairs
    from larger on-policy groups for these."""
    exemptions: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Registry-wide invariants (see `INVARIANTS`) that do not hold for this
    algorithm, each with the reason, e.g. {"microbatch": "ratio variance is a
    whole-batch statistic"}. The tests skip exactly these and print why."""

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"{self.name}: unknown family {self.family!r}; choose one of {sorted(FAMILIES)}")
        if not dataclasses.is_dataclass(self.Config):
            raise TypeError(f"{self.name}: Config must be a dataclass")
        if not callable(self.needs):
            self._check_needs(self.needs)
        unknown = set(self.exemptions) - set(INVARIANTS)
        if unknown:
            raise ValueError(f"{self.name}: exemptions name unknown invariants {sorted(unknown)}; known: {INVARIANTS}")

    def _check_needs(self, needs: Iterable[str]) -> frozenset[str]:
        unknown = set(needs) - ROLLOUT_FIELDS - POLICY_OUTPUTS
        if unknown:
            raise ValueError(
                f"{self.name}: needs names unknown fields {sorted(unknown)}; Rollout fields are "
                f"{sorted(ROLLOUT_FIELDS)}, PolicyStats outputs {sorted(POLICY_OUTPUTS)}"
            )
        return frozenset(needs)

    def required(self, cfg: Any) -> frozenset[str]:
        """The fields this algorithm reads under `cfg`."""
        return self._check_needs(self.needs(cfg) if callable(self.needs) else self.needs)

    def policy_outputs(self, cfg: Any) -> frozenset[str]:
        """The PolicyStats extras (entropy, values, topk_logprobs) to compute."""
        return self.required(cfg) & POLICY_OUTPUTS

    def validate(self, rollout: Rollout, cfg: Any) -> Rollout:
        """Check the rollout and that every field this algorithm reads is present."""
        return validate(rollout, self.required(cfg) & ROLLOUT_FIELDS)

    def make_config(self, **overrides: Any) -> Any:
        """The Config with `overrides`, rejecting unknown field names by name."""
        names = [f.name for f in dataclasses.fields(self.Config)]
        unknown = [k for k in overrides if k not in names]
        if unknown:
            hints = {k: difflib.get_close_matches(k, names, n=3) for k in unknown}
            text = ", ".join(f"{k!r}" + (f" (did you mean {' / '.join(v)}?)" if v else "") for k, v in hints.items())
            raise ValueError(f"{self.name} has no config field {text}; fields: {', '.join(names)}")
        return self.Config(**overrides)


class UnknownAlgorithmError(LookupError):
    """Raised for a name that is not in the registry; the message lists close matches."""


def regulariser_needs(*, kl_coef: float = 0.0, entropy_coef: float = 0.0) -> frozenset[str]:
    """The fields a KL-to-reference term and an entropy term read, when their
    coefficients are non-zero (for an algorithm's `needs(cfg)`)."""
    return frozenset(
        ({"ref_logprobs"} if kl_coef else set()) | ({"entropy"} if entropy_coef else set())
    )


_REGISTRY: dict[str, Algorithm] = {}
_LOADED = False


def register(algorithm: Algorithm) -> Algorithm:
    """Add an algorithm; a second, different record under one name is an error."""
    existing = _REGISTRY.get(algorithm.name)
    if existing is not None and existing.loss is not algorithm.loss:
        raise ValueError(f"algorithm {algorithm.name!r} is already registered by {existing.loss.__module__}")
    _REGISTRY[algorithm.name] = algorithm
    return algorithm


def _load_all() -> None:
    """Import every module of `rlzoo.algorithms` once, so each registers itself."""
    global _LOADED
    if _LOADED:
        return
    package = importlib.import_module("rlzoo.algorithms")
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"rlzoo.algorithms.{info.name}")
    _LOADED = True


def get_algorithm(name: str) -> Algorithm:
    """The algorithm called `name`; an unknown name lists the close matches."""
    _load_all()
    key = name.strip().lower().replace("-", "_")
    if key in _REGISTRY:
        return _REGISTRY[key]
    close = difflib.get_close_matches(key, list(_REGISTRY), n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownAlgorithmError(f"unknown algorithm {name!r}.{hint} `rlzoo list` shows all {len(_REGISTRY)}.")


def list_algorithms(family: str | None = None) -> list[Algorithm]:
    """All registered algorithms (optionally of one family), sorted by name."""
    _load_all()
    return [a for _, a in sorted(_REGISTRY.items()) if family is None or a.family == family]
