"""StyleOptions' groups: how options are made, read, replaced, stored, and named as flags."""

import dataclasses
import json

import pytest

from jaxstyle import (
    ObjectiveOptions,
    OptimizationOptions,
    PerformanceOptions,
    PlanOptions,
    StyleOptions,
    VideoOptions,
)
from jaxstyle.flags import as_flags, as_typed, option_flags
from jaxstyle.option_fields import OptionsError
from jaxstyle.options import OPTION_FIELDS
from jaxstyle.presets import PRESET_VALUES

GROUPS = {"objective": ObjectiveOptions, "optimization": OptimizationOptions,
          "plan": PlanOptions, "performance": PerformanceOptions, "video": VideoOptions}


def test_every_option_lives_in_one_small_group():
    names = [f.name for kind in GROUPS.values() for f in dataclasses.fields(kind)]
    assert len(names) == len(set(names)) == len(OPTION_FIELDS) - 2  # preset and seed
    assert [f.name for f in dataclasses.fields(StyleOptions)] == ["preset", "seed", *GROUPS]
    assert all(len(dataclasses.fields(kind)) <= 20 for kind in GROUPS.values())
    # The presets set groups, each option in the group that holds it.
    for preset in PRESET_VALUES.values():
        for group, values in preset.items():
            assert set(values) <= {f.name for f in dataclasses.fields(GROUPS[group])}


def test_options_are_made_by_name_or_by_group_and_read_through_their_group():
    by_name = StyleOptions(size=256, style_weight=3.0, passes=2)
    by_group = StyleOptions(plan=PlanOptions(size=256),
                            objective=ObjectiveOptions(style_weight=3.0),
                            video=VideoOptions(passes=2))
    assert by_name == by_group
    read = by_name.plan.size, by_name.objective.style_weight, by_name.video.passes
    assert read == (256, 3.0, 2)
    # A name beside its group overrides the group's value.
    plan = StyleOptions(plan=PlanOptions(size=256, tile_size=512), size=128).plan
    assert (plan.size, plan.tile_size) == (128, 512)
    # What the group leaves None is the preset's.
    assert ObjectiveOptions().style_weight is None
    assert StyleOptions(preset="neural-style").objective.style_weight == 100.0
    assert by_name.replace(iterations=7, plan=PlanOptions(size=64)).optimization.iterations == 7
    with pytest.raises(TypeError, match="no option 'colour'"):
        StyleOptions(colour="red")
    with pytest.raises(OptionsError, match="plan: must be a PlanOptions"):
        StyleOptions(plan=ObjectiveOptions())


def test_a_group_checks_its_own_values():
    with pytest.raises(OptionsError, match=r"tile_overlap: must be under half of `tile_size`"):
        PlanOptions(tile_size=64, tile_overlap=40)
    with pytest.raises(OptionsError, match=r"lbfgs_history: must be in \[1, 10000\]"):
        OptimizationOptions(lbfgs_history=0)
    with pytest.raises(OptionsError, match="temporal_frames: must be frame distances"):
        VideoOptions(temporal_frames=(2, 1))
    with pytest.raises(OptionsError, match="precision: expected one of"):
        PerformanceOptions(precision="float8")
    assert PlanOptions(scales=[64, 128]).scales == (64, 128)  # lists become tuples


def test_stored_options_come_back_and_a_wrong_shape_is_named():
    options = StyleOptions(preset="fast", scales=(32, 64), style_layer_weights=(1, 2, 3, 4, 5))
    stored = json.loads(json.dumps(options.to_dict()))
    assert set(stored) == {"preset", "seed", *GROUPS}
    assert StyleOptions.from_dict(stored) == options
    assert options.by_name()["scales"] == (32, 64) and len(options.by_name()) == len(OPTION_FIELDS)
    for broken, message in [
        ({k: v for k, v in stored.items() if k != "plan"}, "no 'plan'"),
        ({**stored, "plan": {k: v for k, v in stored["plan"].items() if k != "size"}},
         "no 'size' in plan"),
        ({**stored, "plan": {**stored["plan"], "colour": 1}}, "unknown option 'plan.colour'"),
        ({**stored, "size": 64}, "unknown option 'size'"),
        ({**stored, "video": 3}, "video: expected a group of options"),
    ]:
        with pytest.raises(OptionsError, match=message):
            StyleOptions.from_dict(broken)


def test_options_name_options_neutrally_and_the_command_line_writes_flags():
    for field in OPTION_FIELDS.values():
        assert "--" not in field.metadata["help"], field.name
    assert as_flags("with `style_loss` gram, not `other`") == "with --style-loss gram, not `other`"
    assert as_typed("tile_overlap: must be under half of `tile_size` (got 40)") == (
        "--tile-overlap: must be under half of --tile-size (got 40)")
    helps = {spec.dest: spec.kwargs["help"] for spec in option_flags(video=True)}
    assert "`" not in "".join(helps.values())
    assert "(overrides --style-scale)" in helps["style_scales"]
