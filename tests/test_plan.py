import json

import pytest
import torchvision

import ssnfx
from ssnfx.core.plan import matrix_shape


@pytest.fixture(scope="module")
def resnet_gm():
    return ssnfx.trace(torchvision.models.resnet18())


@pytest.mark.parametrize("method", ["ssn", "swn"])
def test_json_round_trip(resnet_gm, method):
    plan = ssnfx.make_plan(resnet_gm, 0.1, ssnfx.ShareConfig(method=method))
    again = ssnfx.SharingPlan.from_json(plan.to_json())
    assert again == plan
    assert json.loads(again.to_json()) == json.loads(plan.to_json())


def test_version_1_plans_select_blocks(resnet_gm):
    """Plans written before groups had a selection (version 1) still load, selecting blocks;
    an unknown selection is refused by name."""
    d = ssnfx.make_plan(resnet_gm, 0.1).to_dict()
    d["version"] = 1
    for g in d["groups"]:
        del g["selection"]
    assert [g.selection for g in ssnfx.SharingPlan.from_dict(d).groups] == ["blocks"]
    d["groups"][0]["selection"] = "hashed"
    with pytest.raises(ssnfx.PlanError, match=r"groups\[0\].selection is 'hashed'"):
        ssnfx.SharingPlan.from_dict(d)


def test_version_2_plans_read_their_hyper_into_options(resnet_gm):
    """Before version 3 a plan's options were an untyped ``hyper`` dict (with entries since
    dropped); they read into the typed options, and the plan is written back as the current
    version."""
    plan = ssnfx.make_plan(resnet_gm, 0.1, ssnfx.ShareConfig(method="swn", generation="jit"))
    d = plan.to_dict()
    d["version"] = 2
    options = d.pop("options")
    components = options.pop("components")
    d["hyper"] = {**options, **components, "retired": 1}  # all flat then
    again = ssnfx.SharingPlan.from_dict(d)
    assert again.options == plan.options and again.options.generation == "jit"
    assert again.version == ssnfx.PLAN_VERSION == 7 and "options" in again.to_dict()


def test_options_are_typed_and_checked(resnet_gm):
    d = ssnfx.make_plan(resnet_gm, 0.1).to_dict()
    d["options"]["retired"] = 1
    with pytest.raises(ssnfx.PlanError, match=r"plan.options has unknown entries \['retired'\]"):
        ssnfx.SharingPlan.from_dict(d)
    d["options"] = {"generation": "lazy"}
    with pytest.raises(ssnfx.PlanError, match="plan.options.generation is 'lazy'"):
        ssnfx.SharingPlan.from_dict(d)


def test_each_default_is_written_once():
    # ShareConfig's settings that a plan records default to PlanOptions' defaults.
    import dataclasses

    from ssnfx.core.options import PlanOptions

    config = ssnfx.ShareConfig()
    # (refine_at is planned; components are the method's and combiner's own, not fields;
    # jit_numel is the auto mode's rule, recorded with the plan.)
    shared = [f.name for f in dataclasses.fields(PlanOptions)
              if f.name not in ("refine_at", "components", "jit_numel")]
    assert all(getattr(config, n) == getattr(PlanOptions(), n) for n in shared)


def test_newer_version_is_refused(resnet_gm):
    d = ssnfx.make_plan(resnet_gm, 0.1).to_dict()
    d["version"] = ssnfx.PLAN_VERSION + 1
    with pytest.raises(ssnfx.PlanError, match="newer than this ssnfx"):
        ssnfx.SharingPlan.from_dict(d)


@pytest.mark.parametrize("text,match", [("{", "not valid JSON"), ("[]", "not a SharingPlan"),
                                        ('{"version": 1}', "malformed")])
def test_malformed_plans(text, match):
    with pytest.raises(ssnfx.PlanError, match=match):
        ssnfx.SharingPlan.from_json(text)


def test_counts_add_up(resnet_gm):
    plan = ssnfx.make_plan(resnet_gm, 0.1)
    assert plan.original_params == 11_689_512
    assert plan.private_params == sum(s.numel for s in plan.slots if not s.shared)
    assert plan.shared_params == plan.private_params + sum(
        g.numel + plan.coefficient_params(g) for g in plan.groups)
    assert sorted(n for g in plan.groups for n in g.slots) == sorted(
        s.name for s in plan.slots if s.shared)


def test_biases_and_norms_private_by_default_and_configurable(resnet_gm):
    plan = ssnfx.make_plan(resnet_gm, 0.1)
    assert not plan.slot("bn1.weight").shared and not plan.slot("fc.bias").shared
    assert plan.slot("fc.weight").shared
    plan = ssnfx.make_plan(resnet_gm, 0.1, ssnfx.ShareConfig(share_biases=True, share_norms=True,
                                                            private=("fc.*",)))
    assert plan.slot("bn1.weight").shared and not plan.slot("fc.weight").shared


def test_matrix_shape():
    assert matrix_shape((64, 3, 7, 7)) == (64, 147)
    assert matrix_shape((10,)) == (10, 1)
    assert matrix_shape(()) == (1, 1)


@pytest.mark.parametrize("edit,message", [
    ({"version": "2"}, "the plan's version must be an int, got '2': the plan is damaged"),
    ({"version": None}, "the plan's version must be an int, got None"),
    ({"method": "lora"}, "plan.method is 'lora', not one of ('ssn', 'swn')"),
    ({"combiner": "max"}, "plan.combiner is 'max', not one of ('rr', 'avg', 'wavg', 'emb', "
                          "'linear')"),
])
def test_damaged_plans_name_the_field(resnet_gm, edit, message):
    d = {**ssnfx.make_plan(resnet_gm, 0.1).to_dict(), **edit}
    with pytest.raises(ssnfx.PlanError) as err:
        ssnfx.SharingPlan.from_dict(d)
    assert message in str(err.value) and "make it again with ssnfx.make_plan" in str(err.value)


def test_from_json_wants_text(resnet_gm):
    d = ssnfx.make_plan(resnet_gm, 0.1).to_dict()
    with pytest.raises(ssnfx.PlanError, match="expects the plan's JSON text, got dict; use "
                                              "SharingPlan.from_dict"):
        ssnfx.SharingPlan.from_json(d)


def test_version_6_plans_without_a_strategy_were_one_group(resnet_gm):
    d = ssnfx.make_plan(resnet_gm, 0.1).to_dict()
    assert d["options"]["strategy"] == "auto"
    del d["options"]["strategy"]
    assert ssnfx.SharingPlan.from_dict(d).options.strategy == "auto"  # this version's default
    d["version"] = 6
    assert ssnfx.SharingPlan.from_dict(d).options.strategy == "single"
