"""Every hyper-parameter of a stylization run, with its default: `StyleOptions`, a preset and a
seed beside five small frozen groups (`jaxstyle.option_groups`), the presets' values filled in
(`jaxstyle.presets`), and every option by its name (`OPTION_FIELDS`, `parse_value`).

Each field carries its help text, heading, parser and choices (`jaxstyle.option_fields`);
`jaxstyle.flags` makes the command line's flags from them, so the two cannot drift. Defaults
follow jcjohnson/neural-style where it has an equivalent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from jaxstyle.choices import AUTO_WINOGRAD_SIZE, NEURAL_NEIGHBOUR, PRESETS
from jaxstyle.option_fields import OptionsError, check_fields, option
from jaxstyle.option_groups import (
    ADAM_LEARNING_RATE,
    GROUP_TYPES,
    LBFGS_STEP,
    ObjectiveOptions,
    OptimizationOptions,
    PerformanceOptions,
    PlanOptions,
    VideoOptions,
)
from jaxstyle.presets import PRESET_VALUES

if TYPE_CHECKING:
    from jaxstyle.losses import LossConfig, LossWeights
    from jaxstyle.steps import OptimizerConfig

FIRST_STEP = 0.05
"""With a line search on the relative objective: the largest pixel change (in [0, 1] units)
L-BFGS's first step tries; later steps take their length from the curvature L-BFGS has seen."""


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


_SIMPLE_TYPES = {
    "int": int,
    "float": float,
    "str": str,
    "bool": _parse_bool,
    "bool | None": _parse_bool,
    "int | None": int,
    "float | None": float,
    "str | None": str,
}


def parser_of(name: str):
    """The function that reads option `name` from text (``parse_ints``, `float`, ...)."""
    f = OPTION_FIELDS[name]
    return f.metadata.get("parse") or _SIMPLE_TYPES[f.type]


def parse_value(name: str, text: str):
    """The value of option `name` written as `text` on a command line ("100", "gram", "true").

    Raises:
      OptionsError: an unknown option (the message lists them), an unparsable value, or one
        outside the option's choices.
    """
    if name not in OPTION_FIELDS:
        raise OptionsError(f"unknown option {name!r}; options are "
                           f"{', '.join(sorted(OPTION_FIELDS))}")
    meta = OPTION_FIELDS[name].metadata
    try:
        value = parser_of(name)(text)
    except ValueError as exc:
        raise OptionsError(f"{name}: {text!r} is not a valid value ({exc})") from None
    if meta.get("choices") and value not in meta["choices"]:
        raise OptionsError(f"{name}: expected one of {meta['choices']}, got {value!r}")
    return value


@dataclass(frozen=True, init=False)
class StyleOptions:
    """Hyper-parameters of `jaxstyle.stylize`: a preset and a seed, and the options in five groups.

    Read an option through its group: ``options.objective.style_weight``, ``options.plan.size``,
    ``options.optimization.iterations``. Make options by naming those to change, whichever group
    holds them (every option's name is unique across groups)::

        StyleOptions(preset="fast", size=512, style_weight=10.0)
        StyleOptions(preset="fast", plan=PlanOptions(size=512),
                     objective=ObjectiveOptions(style_weight=10.0))  # the same

    An option named beside its group overrides the group's value; `replace` takes the same
    names. An option a group leaves None is the preset's (`PRESET_VALUES`), filled in here.

    Attributes:
      preset: which `PRESETS` fills in what the groups leave None.
      seed: the run's randomness (noise init, random weights, sliced Wasserstein directions).
      objective: what the picture should be (`ObjectiveOptions`).
      optimization: how it is optimized (`OptimizationOptions`).
      plan: at what sizes (`PlanOptions`).
      performance: how it is computed (`PerformanceOptions`).
      video: what `jaxstyle.video` adds (`VideoOptions`).

    Raises:
      OptionsError: on creation, an invalid value; the message names the option.
      TypeError: on creation, a name that is no option.
    """

    preset: str = option(
        "balanced",
        "optimizer",
        "'balanced': an objective whose terms are relative to their targets, so that "
        "`style_strength` means the same for any pair, size and network, a line search, and a "
        "stop once the picture stops changing; 'neural-style' reproduces neural-style's runs "
        "(its objective and weights, L-BFGS with unit steps for `iterations`); 'fast' is "
        "neural-style's objective with a line search and a stop once the loss stalls; "
        "'neural-neighbour' replaces each output hypercolumn by its nearest style hypercolumn "
        "and pulls the picture towards those (Neural Neighbor Style Transfer, Kolkin et al. "
        "2022; its knob is `content_alpha`). "
        "Options named below as set by the preset can still be given",
        choices=PRESETS,
    )
    seed: int = option(
        0,
        "run control",
        "seed for the noise initialisation, random weights and the sliced Wasserstein directions",
    )
    objective: ObjectiveOptions = field(default_factory=ObjectiveOptions)
    optimization: OptimizationOptions = field(default_factory=OptimizationOptions)
    plan: PlanOptions = field(default_factory=PlanOptions)
    performance: PerformanceOptions = field(default_factory=PerformanceOptions)
    video: VideoOptions = field(default_factory=VideoOptions)

    def __init__(self, **options):
        for f in _TOP_FIELDS:
            object.__setattr__(self, f.name, options.pop(f.name, f.default))
        if self.preset not in PRESETS:
            raise OptionsError(f"preset: expected one of {PRESETS}, got {self.preset!r}")
        check_fields(self, _TOP_FIELDS)
        groups = {}
        for name, kind in GROUP_TYPES.items():
            group = options.pop(name, None)
            if group is None:
                group = kind()
            elif not isinstance(group, kind):
                raise OptionsError(f"{name}: must be a {kind.__name__} (got {group!r})")
            own = {k: options.pop(k) for k in list(options) if _OWNER.get(k) == name}
            groups[name] = dataclasses.replace(group, **own) if own else group
        if options:
            raise TypeError(f"StyleOptions: no option {next(iter(options))!r}")
        filled = set()
        for name, values in PRESET_VALUES[self.preset].items():
            missing = {k: v for k, v in values.items() if getattr(groups[name], k) is None}
            if missing:
                groups[name] = dataclasses.replace(groups[name], **missing)
                filled |= missing.keys()
        for name, group in groups.items():  # frozen: set once, here, before anything reads them
            object.__setattr__(self, name, group)
        object.__setattr__(self, "_filled_by_preset", frozenset(filled))
        try:
            # Weights and layer names, as the objective checks them. Validation only: deciding
            # 'auto' would start JAX's backend, which must wait for jax.distributed.initialize
            # in a multi-host batch.
            self.loss_weights()
        except ValueError as exc:
            raise OptionsError(str(exc)) from None
        if self.preset == NEURAL_NEIGHBOUR:
            self._check_neighbour()
        else:
            for name, value in (("style_rotations", self.objective.style_rotations),
                                ("final_pass", self.plan.final_pass)):
                if value:
                    raise OptionsError(f"{name}: only with preset {NEURAL_NEIGHBOUR}")

    def _check_neighbour(self) -> None:
        """Refuses, by name, what the neural-neighbour objective does not compose with yet."""
        objective = self.objective
        defaults = {f.name: f.default for f in dataclasses.fields(objective)}
        refused = {
            "style_loss": (objective.style_loss != defaults["style_loss"],
                           "it matches neighbours, not style statistics"),
            "style_layers": (objective.style_layers != defaults["style_layers"],
                             "it stacks every ReLU of the network's first four blocks"),
            "style_layer_weights": (objective.style_layer_weights is not None,
                                    "it stacks every ReLU of the network's first four blocks"),
            "tile_size": (self.plan.tile_size is not None, "tiles do not compose with it yet"),
            "temporal_weight": (self.video.temporal_weight > 0,
                                "the temporal video term does not compose with it yet"),
        }
        for name, (bad, why) in refused.items():
            if bad:
                raise OptionsError(f"{name}: not with preset {NEURAL_NEIGHBOUR}: {why}")

    def loss_config(self, convolution: str | None = None, model_range: float = 1.0
                    ) -> LossConfig:
        """The objective's static configuration (`jaxstyle.losses.LossConfig`) these options make,
        with `convolution` in place of `network_convolution()` when given, for a network whose
        preprocessing spans `model_range` model units per pixel range
        (`jaxstyle.Preprocessing.model_range`; it matters to the relative normalisation only).
        The weights are not part of it but `loss_weights()`.

        Raises:
          ValueError: an invalid layer name (the message names the option).
        """
        # Imported here, not at the top: reading the options (for the CLI's help) must not load
        # JAX.
        from jaxstyle.losses import LossConfig
        from jaxstyle.style_losses import style_loss_named

        return LossConfig(
            content_layers=tuple(self.objective.content_layers),
            style_layers=tuple(self.objective.style_layers),
            pooling=self.objective.pooling,
            style_loss=style_loss_named(self.objective.style_loss, self.seed,
                                        self.objective.histogram_weight),
            content_loss=self.objective.content_loss,
            weight_normalization=self.objective.weight_normalization,
            precision=self.performance.precision,
            convolution=convolution or self.network_convolution(),
            model_range=model_range,
        )

    def loss_weights(self) -> LossWeights:
        """The objective's weights (`jaxstyle.losses.LossWeights`, traced: other values reuse the
        compiled objective): the style weight times the style strength, and the others as given.

        Raises:
          ValueError: an invalid weight, or style layer weights that do not match the style
            layers (the message names the option).
        """
        from jaxstyle.losses import LossWeights

        return LossWeights.create(
            self.loss_config(convolution="direct"),
            content_weight=self.objective.content_weight,
            style_weight=self.objective.style_weight * self.objective.style_strength,
            tv_weight=self.objective.tv_weight,
            style_layer_weights=self.objective.style_layer_weights,
            temporal_weight=self.video.temporal_weight,
        )

    def network_convolution(self, size: int | None = None) -> str:
        """``convolution`` with 'auto' decided: Winograd where it pays for its compilation (a
        CPU, float32, an output of `AUTO_WINOGRAD_SIZE` px or more), else direct; for a scale
        whose longest side is `size` (default: the run's largest)."""
        if self.performance.convolution != "auto":
            return self.performance.convolution
        import jax

        plan = self.plan
        largest = size if size is not None else max(plan.scales) if plan.scales else plan.size
        big = largest == 0 or largest >= AUTO_WINOGRAD_SIZE
        cpu = jax.default_backend() == "cpu"
        return "winograd" if cpu and big and self.performance.precision == "float32" else "direct"

    def optimizer_config(self, model_range: float, pixel_units: bool = False) -> OptimizerConfig:
        """The optimizer's settings, with Adam's rate converted from pixel units to the
        variable's (`model_range`: model-space units per pixel range, from
        `jaxstyle.Preprocessing.model_range`; `pixel_units`: the variable is in pixels)."""
        from jaxstyle.steps import OptimizerConfig

        if self.optimization.optimizer == "adam":
            rate = self.optimization.learning_rate or ADAM_LEARNING_RATE
            rate = rate if pixel_units else rate * model_range
        else:
            rate = self.optimization.learning_rate or LBFGS_STEP
        # A relative objective's values are O(1), so its gradient is far too small to step
        # along unscaled: the first step's length is set in pixels instead.
        scaled_start = (self.objective.weight_normalization == "relative"
                        and self.optimization.lbfgs_linesearch != "none")
        pixel_range = 1.0 if pixel_units else model_range
        return OptimizerConfig(self.optimization.optimizer, rate, self.optimization.lbfgs_history,
                               self.optimization.lbfgs_linesearch, self.optimization.ema_decay,
                               FIRST_STEP * pixel_range if scaled_start else 0.0,
                               grey_level=pixel_range / 255)

    def at_scale(self, size: int) -> StyleOptions:
        """These options for one scale of the run, whose longest side is `size`: 'auto'
        convolution decided there, so the coarse scales of a schedule run direct convolutions,
        which compile in a fraction of Winograd's time and cost no more there."""
        if self.performance.convolution != "auto":
            return self
        return self.replace(convolution=self.network_convolution(size))

    def replace(self, **changes) -> StyleOptions:
        """A copy with `changes`, named as `StyleOptions` takes them (``style_weight=...``,
        ``plan=PlanOptions(...)``, ``preset=...``); a new ``preset`` also replaces what the old
        one filled in."""
        current = {"preset": self.preset, "seed": self.seed,
                   **{name: getattr(self, name) for name in GROUP_TYPES}}
        kept = frozenset(n for n in self._filled_by_preset
                         if n not in changes and _OWNER[n] not in changes)
        new_preset = changes.get("preset", self.preset) != self.preset
        if new_preset:
            for name in GROUP_TYPES:
                own = {n: None for n in kept if _OWNER[n] == name}
                current[name] = dataclasses.replace(current[name], **own) if own else current[name]
        result = StyleOptions(**{**current, **changes})
        if not new_preset:  # what the preset filled in and is not changed stays the preset's
            object.__setattr__(result, "_filled_by_preset", result._filled_by_preset | kept)
        return result

    def to_dict(self) -> dict:
        """``preset``, ``seed`` and each group as a dict of its options: what checkpoints and
        reports store (`from_dict` reads it back)."""
        groups = {name: getattr(self, name) for name in GROUP_TYPES}
        return {"preset": self.preset, "seed": self.seed,
                **{name: {f.name: getattr(group, f.name) for f in dataclasses.fields(group)}
                   for name, group in groups.items()}}

    @classmethod
    def from_dict(cls, d: Mapping) -> StyleOptions:
        """The options `to_dict` gave (lists, as JSON writes tuples, back to tuples).

        Raises:
          OptionsError: a key missing or unknown (named), or an invalid value.
        """
        groups = {name: [f.name for f in dataclasses.fields(kind)]
                  for name, kind in GROUP_TYPES.items()}
        for name in [*(f.name for f in _TOP_FIELDS), *groups]:
            if name not in d:
                raise OptionsError(f"no {name!r}")
        unknown = [k for k in d if k not in groups and k not in ("preset", "seed")]
        for name, keys in groups.items():
            if not isinstance(d[name], Mapping):
                raise OptionsError(f"{name}: expected a group of options, got {d[name]!r}")
            if missing := [k for k in keys if k not in d[name]]:
                raise OptionsError(f"no {missing[0]!r} in {name}")
            unknown += [f"{name}.{k}" for k in d[name] if k not in keys]
        if unknown:
            raise OptionsError(f"unknown option {unknown[0]!r}")

        def typed(value):
            return tuple(value) if isinstance(value, list) else value

        return cls(preset=d["preset"], seed=d["seed"], **{
            name: kind(**{k: typed(v) for k, v in d[name].items()})
            for name, kind in GROUP_TYPES.items()})

    def by_name(self) -> dict:
        """Every option by its name, the groups flattened (``{"preset": ..., "size": ...}``):
        the names the command line, sweeps and the studio use."""
        return {name: getattr(getattr(self, _OWNER[name]) if name in _OWNER else self, name)
                for name in OPTION_FIELDS}


_TOP_FIELDS = tuple(f for f in dataclasses.fields(StyleOptions) if f.name not in GROUP_TYPES)
_OWNER = {f.name: name for name, kind in GROUP_TYPES.items() for f in dataclasses.fields(kind)}
"""Which group holds each option (``preset`` and ``seed`` are `StyleOptions`' own)."""
OPTION_FIELDS = {f.name: f for f in (*_TOP_FIELDS, *(f for kind in GROUP_TYPES.values()
                                                     for f in dataclasses.fields(kind)))}
"""Every option's field by its name: `StyleOptions`' own, then each group's."""
assert len(OPTION_FIELDS) == len(_TOP_FIELDS) + len(_OWNER), "an option name in two groups"


def preset_values(name: str) -> dict:
    """``{preset: value}`` for each preset that fills in option `name` (empty: none does)."""
    group = _OWNER.get(name)
    return {preset: groups[group][name] for preset, groups in PRESET_VALUES.items()
            if name in groups.get(group, {})}
