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
import typing
from types import MappingProxyType
from typing import Any, Callable, Iterable, Literal, Mapping

from rlzoo.config import field_docs
from rlzoo.pieces import ConfigBase
from rlzoo.rollout import POLICY_OUTPUTS, ROLLOUT_FIELDS, Rollout, validate

FAMILIES = {
    "policy-loss": "ratio / trust-region policy losses (PPO, GRPO and relatives)",
    "advantage": "outcome advantage estimators (paired with a policy loss)",
    "reinforce": "plain policy-gradient estimators",
    "preference": "pairwise log-ratio margin losses (DPO family)",
    "self-play": "log-ratio regression, self-play and Nash losses",
    "critic": "value-based methods (learned critic)",
}

COMPOSABLE = frozenset({"policy-loss", "advantage", "reinforce"})
"""Families whose loss reads a plain [B, T] advantage and whose estimator
produces one: any estimator of these pairs with any loss of these
(`rlzoo train --algo grpo --advantage bnpo`)."""

INVARIANTS = ("finite", "mask", "permutation", "jit", "microbatch", "sharding")
"""Properties every registered algorithm is tested for (tests/test_registry_invariants.py)."""

Needs = frozenset[str] | Callable[[Any], frozenset[str]]

Reduction = Literal["sum", "mean", "max", "min"]
"""How a loss metric combines over the microbatches of one minibatch:
"sum" for quantities normalised by whole-minibatch counts (losses built
with `ops.aggregate*`, which add up exactly), "mean" for per-microbatch
statistics (fractions, means), "max"/"min" for extremes."""

DEFAULT_REDUCTIONS: Mapping[str, Reduction] = MappingProxyType({
    "loss": "sum", "policy_loss": "sum", "value_loss": "sum", "pg_loss": "sum",
    "pref_loss": "sum", "sft_loss": "sum", "nll": "sum", "ratio_max": "max",
})
"""Reductions of the metrics the shared ops produce; every other metric is
averaged unless the algorithm declares it in `metric_reductions`."""


def _no_state(cfg: Any) -> tuple:
    return ()


def _no_topk(cfg: Any) -> int:
    return 0


@dataclasses.dataclass(frozen=True, eq=False)
class Algorithm:
    """Everything the trainer acts on for one algorithm: it never reads an
    algorithm's Config by attribute name, only what this record declares."""

    name: str
    """Registry name, `rlzoo train --algo NAME`."""
    family: str
    """One of `FAMILIES`."""
    paper: str
    """Title, year and arXiv id (or URL) of the paper."""
    Config: type
    """Frozen dataclass of hyper-parameters whose defaults are the paper's
    (a subclass of `rlzoo.pieces.ConfigBase`)."""
    advantages: Callable
    """(rollout, cfg, state) -> (targets, state); outside the gradient.
    `targets` is the advantage [B, T], or a dict of per-row [B, ...] /
    per-token [B, T, ...] arrays (e.g. {"advantages", "returns"} for a
    critic, {"row_targets"} for a regression loss); minibatches select
    their rows from every leaf."""
    loss: Callable | None
    """(stats, rollout, targets, cfg, state) -> (scalar loss, metrics dict).
    None for an estimator-only paper: it is paired with `default_loss`."""
    init_state: Callable[[Any], Any] = _no_state
    """cfg -> initial algorithm state pytree (`()` for stateless methods)."""
    needs: Needs = frozenset()
    """Optional Rollout fields and PolicyStats outputs the algorithm reads
    beyond those of its shared Config pieces (added by `required`), as a set
    or a function of the config."""
    topk: int | Callable[[Any], int] = _no_topk
    """k of `topk_logprobs` / `old_topk_logprobs` (an int or cfg -> int), when
    the algorithm needs them."""
    prepare: Callable | None = None
    """(rollout, cfg, state) -> rollout: the algorithm's own row transform,
    applied to each step's scored rollout before advantages (e.g. building
    preference pairs from groups of K)."""
    group_filter: Callable | None = None
    """(rollout, cfg) -> [G] bool or None: the groups worth training on
    (DAPO's dynamic sampling keeps groups whose rewards differ). When it
    returns a mask, the experience layer samples more prompts (up to
    `--max-sampling-rounds` batches) until the batch is full of kept groups,
    and rejected groups that remain get sample_weight 0."""
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
    plain_advantage: bool = True
    """`advantages` returns the plain [B, T] advantage and `loss` reads only
    that (so estimator and loss can be paired with others'); False for
    algorithms whose targets are a dict."""
    pairwise: bool = False
    """Rows come in preference pairs (group_size = 2 after `prepare`); runs
    need at least 2 samples per prompt."""
    metric_reductions: Mapping[str, Reduction] = dataclasses.field(default_factory=dict)
    """How the algorithm's own loss metrics combine over microbatches (see
    `Reduction`), beyond `DEFAULT_REDUCTIONS`; other metrics are averaged."""
    estimator_fields: tuple[str, ...] = ()
    """The Config fields only `advantages` reads. Pairing this algorithm's
    loss with another estimator drops them; using it as the estimator of
    another loss keeps only them. An estimator-only record (loss None) owns
    all its fields."""
    default_loss: str | None = None
    """Estimator-only records: the registered algorithm whose loss the paper
    pairs this estimator with."""
    loss_defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Estimator-only records: the paper's values of the paired loss's fields."""
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
        if (self.loss is None) != (self.default_loss is not None):
            raise ValueError(f"{self.name}: an estimator-only record (loss=None) names its default_loss, and only it")
        names = {f.name for f in dataclasses.fields(self.Config)}
        missing = set(self.estimator_fields) - names
        if missing:
            raise ValueError(f"{self.name}: estimator_fields {sorted(missing)} are not Config fields")
        bad = {k: v for k, v in self.metric_reductions.items() if v not in typing.get_args(Reduction)}
        if bad:
            raise ValueError(f"{self.name}: metric_reductions {bad}: use one of {typing.get_args(Reduction)}")

    def _check_needs(self, needs: Iterable[str]) -> frozenset[str]:
        unknown = set(needs) - ROLLOUT_FIELDS - POLICY_OUTPUTS
        if unknown:
            raise ValueError(
                f"{self.name}: needs names unknown fields {sorted(unknown)}; Rollout fields are "
                f"{sorted(ROLLOUT_FIELDS)}, PolicyStats outputs {sorted(POLICY_OUTPUTS)}"
            )
        return frozenset(needs)

    def required(self, cfg: Any) -> frozenset[str]:
        """The fields this algorithm reads under `cfg` (its own and its Config pieces')."""
        own = self.needs(cfg) if callable(self.needs) else self.needs
        shared = cfg.needs() if isinstance(cfg, ConfigBase) else frozenset()
        return self._check_needs(set(own) | shared)

    def policy_outputs(self, cfg: Any) -> frozenset[str]:
        """The PolicyStats extras (entropy, values, topk_logprobs) to compute."""
        return self.required(cfg) & POLICY_OUTPUTS

    def topk_size(self, cfg: Any) -> int:
        """k of the top-k log-probs this algorithm reads under `cfg` (0: none)."""
        k = self.topk(cfg) if callable(self.topk) else self.topk
        wants = self.required(cfg) & {"topk_logprobs", "old_topk_logprobs"}
        if wants and k < 1:
            raise ValueError(f"{self.name}: needs {sorted(wants)} but declares no top-k size (Algorithm.topk)")
        return k if wants else 0

    def reduction(self, metric: str) -> Reduction:
        """How `metric` combines over microbatches."""
        return self.metric_reductions.get(metric, DEFAULT_REDUCTIONS.get(metric, "mean"))

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


_REGISTRY: dict[str, Algorithm] = {}
"""Records as registered (estimator-only records with loss None)."""
_RESOLVED: dict[str, Algorithm] = {}
"""Estimator-only records paired with their default loss, built once."""
_LOADED = False


def register(algorithm: Algorithm) -> Algorithm:
    """Add an algorithm; a second, different record under one name is an error."""
    existing = _REGISTRY.get(algorithm.name)
    if existing is not None and existing.advantages is not algorithm.advantages:
        raise ValueError(f"algorithm {algorithm.name!r} is already registered by {existing.advantages.__module__}")
    _REGISTRY[algorithm.name] = algorithm
    _RESOLVED.pop(algorithm.name, None)
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


def registered(name: str) -> Algorithm:
    """The record as registered (an estimator-only paper's without its loss)."""
    return _lookup(name)


def _lookup(name: str) -> Algorithm:
    _load_all()
    key = name.strip().lower().replace("-", "_")
    if key in _REGISTRY:
        return _REGISTRY[key]
    close = difflib.get_close_matches(key, list(_REGISTRY), n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownAlgorithmError(f"unknown algorithm {name!r}.{hint} `rlzoo list` shows all {len(_REGISTRY)}.")


def _resolve(record: Algorithm) -> Algorithm:
    if record.loss is not None:
        return record
    if record.name not in _RESOLVED:
        _RESOLVED[record.name] = compose(_lookup(record.default_loss), record, loss_defaults=record.loss_defaults,
                                         name=record.name, family=record.family, paper=record.paper)
    return _RESOLVED[record.name]


def get_algorithm(name: str, advantage: str | None = None) -> Algorithm:
    """The algorithm called `name` (an estimator-only paper comes paired with
    its default loss); with `advantage`, its loss paired with that
    algorithm's estimator. An unknown name lists the close matches."""
    record = _lookup(name)
    if advantage is None:
        return _resolve(record)
    if record.loss is None:  # an estimator-only paper: its paper's loss, with the other estimator
        return compose(_lookup(record.default_loss), _lookup(advantage), loss_defaults=record.loss_defaults,
                       name=f"{record.name}+{advantage}")
    return compose(record, _lookup(advantage))


def list_algorithms(family: str | None = None) -> list[Algorithm]:
    """All registered algorithms (optionally of one family), sorted by name."""
    _load_all()
    return [_resolve(a) for _, a in sorted(_REGISTRY.items()) if family is None or a.family == family]


# --------------------------------------------------------------------------
# Pairing an estimator with a loss
# --------------------------------------------------------------------------

def _estimator_field_names(record: Algorithm) -> tuple[str, ...]:
    if record.loss is None:
        return tuple(f.name for f in dataclasses.fields(record.Config))
    return record.estimator_fields


def compose(loss_algo: Algorithm, estimator: Algorithm, *, loss_defaults: Mapping[str, Any] | None = None,
            name: str | None = None, family: str | None = None, paper: str | None = None) -> Algorithm:
    """`estimator`'s advantages feeding `loss_algo`'s loss, as one record.

    The Config is flat: the estimator's fields, then the loss algorithm's
    fields except its own estimator's (`estimator_fields`), with
    `loss_defaults` replacing the loss's defaults. Each function receives its
    own Config type, built from these values. The record keeps the loss
    algorithm's declarations (needs, prepare, filter, top-k, reductions) and
    adds the estimator's needs and state."""
    for role, record in (("loss", loss_algo), ("estimator", estimator)):
        if record.family not in COMPOSABLE:
            raise ValueError(
                f"{record.name} ({record.family}) cannot serve as the {role} of a pairing: only the "
                f"{', '.join(sorted(COMPOSABLE))} families read and produce plain [B, T] advantages"
            )
    if loss_algo.loss is None:
        raise ValueError(f"{loss_algo.name} is an estimator only; pair it as --advantage {loss_algo.name}")
    if loss_algo.init_state is not _no_state or loss_algo.post_update is not None:
        raise ValueError(f"{loss_algo.name} keeps state that its own advantages maintain; it runs with its own estimator only")
    hints_loss = typing.get_type_hints(loss_algo.Config)
    hints_est = typing.get_type_hints(estimator.Config)
    est_names = _estimator_field_names(estimator)
    est_fields = {f.name: f for f in dataclasses.fields(estimator.Config) if f.name in est_names}
    loss_fields = {f.name: f for f in dataclasses.fields(loss_algo.Config) if f.name not in loss_algo.estimator_fields}
    if not (loss_algo.plain_advantage and estimator.plain_advantage):
        odd = loss_algo.name if not loss_algo.plain_advantage else estimator.name
        raise ValueError(f"{odd}'s targets are not a plain [B, T] advantage; it runs with its own estimator and loss only")
    # A field both halves have (e.g. std_eps) is one setting that both read.
    shared = set(est_fields) & set(loss_fields)
    for fname in sorted(shared):
        if hints_est[fname] != hints_loss[fname]:
            raise ValueError(f"{estimator.name} and {loss_algo.name} both have a field {fname!r} of different types")
    loss_defaults = dict(loss_defaults or {})
    unknown = sorted(set(loss_defaults) - set(loss_fields))
    if unknown:
        raise ValueError(f"loss_defaults name fields {unknown} that {loss_algo.name}'s loss does not have")

    def field_spec(fname, f, tp, default_override=dataclasses.MISSING):
        if default_override is not dataclasses.MISSING:
            default = dataclasses.field(default=default_override, metadata=f.metadata)
        elif f.default is not dataclasses.MISSING:
            default = dataclasses.field(default=f.default, metadata=f.metadata)
        else:
            default = dataclasses.field(default_factory=f.default_factory, metadata=f.metadata)
        return (fname, tp, default)

    specs = [field_spec(n, f, hints_est[n]) for n, f in est_fields.items()]
    specs += [field_spec(n, f, hints_loss[n], loss_defaults.get(n, dataclasses.MISSING))
              for n, f in loss_fields.items() if n not in shared]
    label = name or f"{loss_algo.name}+{estimator.name}"

    def loss_config(cfg):
        return loss_algo.Config(**{n: getattr(cfg, n) for n in loss_fields})

    def estimator_config(cfg):
        return estimator.Config(**{n: getattr(cfg, n) for n in est_fields})

    def post_init(cfg):
        ConfigBase.__post_init__(cfg)
        object.__setattr__(cfg, "_parts", (loss_config(cfg), estimator_config(cfg)))

    docs = {**field_docs(loss_algo.Config), **field_docs(estimator.Config)}
    Config = dataclasses.make_dataclass(
        "Config", specs, bases=(ConfigBase,), frozen=True,
        namespace={"__post_init__": post_init, "__field_docs__": docs,
                   "__module__": estimator.Config.__module__,
                   "__doc__": f"{estimator.name}'s estimator fields, then {loss_algo.name}'s loss fields."},
    )
    return Algorithm(
        name=label, family=family or loss_algo.family,
        paper=paper or f"{loss_algo.paper}; advantages: {estimator.paper}",
        Config=Config,
        advantages=lambda rollout, cfg, state: estimator.advantages(rollout, cfg._parts[1], state),
        loss=lambda stats, rollout, adv, cfg, state: loss_algo.loss(stats, rollout, adv, cfg._parts[0], state),
        init_state=lambda cfg: estimator.init_state(cfg._parts[1]),
        needs=lambda cfg: estimator.required(cfg._parts[1]) | loss_algo.required(cfg._parts[0]),
        topk=lambda cfg: max(loss_algo.topk_size(cfg._parts[0]), estimator.topk_size(cfg._parts[1])),
        prepare=loss_algo.prepare, group_filter=_paired_filter(loss_algo),
        pairwise=loss_algo.pairwise, metric_reductions={**estimator.metric_reductions, **loss_algo.metric_reductions},
        estimator_fields=tuple(est_fields), exemptions={**estimator.exemptions, **loss_algo.exemptions},
    )


def _paired_filter(loss_algo: Algorithm):
    if loss_algo.group_filter is None:
        return None
    return lambda rollout, cfg: loss_algo.group_filter(rollout, cfg._parts[0])
