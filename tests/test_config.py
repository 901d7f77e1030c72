import json
import re

import pytest
import torch.nn as nn

import ssnfx


def test_round_trip_and_defaults():
    cfg = ssnfx.ShareConfig(method="swn", combiner="emb", private=["fc.*"], hard_sharing=True)
    assert ssnfx.ShareConfig.from_json(cfg.to_json()) == cfg
    assert ssnfx.ShareConfig().resolved_combiner == "linear"
    assert ssnfx.ShareConfig(method="swn").resolved_combiner == "linear"


@pytest.mark.parametrize("kwargs,match", [
    ({"method": "lora"}, "method"), ({"combiner": "max"}, "combiner"),
    ({"candidates": 0}, "candidates"), ({"groups": True}, "groups"),
    ({"options": {"emb_dim": [2]}}, "options"),
    ({"tile": -1}, "tile"), ({"selection": "hashed"}, "selection")])
def test_bad_values_name_the_field(kwargs, match):
    with pytest.raises(ssnfx.PlanError, match=match):
        ssnfx.ShareConfig(**kwargs)


def test_unknown_field():
    with pytest.raises(ssnfx.PlanError, match="unknown ShareConfig field"):
        ssnfx.ShareConfig.from_dict({"budget": 3})


@pytest.mark.parametrize("field", ["private", "leaf_modules"])
def test_a_string_for_a_tuple_of_names(field):
    # tuple("fc.*") would be four one-letter patterns, and "*" alone matches every name.
    with pytest.raises(ssnfx.PlanError, match=re.escape(
            f"ShareConfig.{field} must be a tuple of names, got the string 'fc.*'; write "
            f"{field}=('fc.*',)")):
        ssnfx.ShareConfig(**{field: "fc.*"})


def test_a_components_own_settings_are_checked_by_the_plan():
    # Emb declares emb_dim (its default 24); the plan records it resolved, and counts with it.
    net = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 16))
    gm = ssnfx.trace(net)
    plan = ssnfx.make_plan(gm, 0.5, ssnfx.ShareConfig(combiner="emb", options={"emb_dim": 8}))
    assert plan.options.components == {"emb_dim": 8}
    assert plan.coefficient_params(plan.groups[0]) == 2 * 8 + 8 * 4 + 4
    assert ssnfx.make_plan(gm, 0.5, ssnfx.ShareConfig(combiner="emb")).options.components == {
        "emb_dim": 24}
    assert ssnfx.make_plan(gm, 0.5).options.components == {}  # linear declares none
    with pytest.raises(ssnfx.PlanError, match=r"Embedding's option 'emb_dim' must be of the "
                                              r"type of its default 24, got 2.5"):
        ssnfx.make_plan(gm, 0.5, ssnfx.ShareConfig(combiner="emb", options={"emb_dim": 2.5}))
    with pytest.raises(ssnfx.PlanError, match=r"\['temperature'\] are settings of neither "
                                              r"method 'swn' nor combiner 'linear'"):
        ssnfx.make_plan(gm, 0.5, ssnfx.ShareConfig(options={"temperature": 2.0}))


def test_emb_dim_of_older_configs_and_plans_is_embs_own_setting():
    old = {"combiner": "emb", "emb_dim": 12}  # a ShareConfig written when emb_dim was a field
    assert ssnfx.ShareConfig.from_dict(old).options == {"emb_dim": 12}
    gm = ssnfx.trace(nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 16)))
    plan = ssnfx.make_plan(gm, 0.5, ssnfx.ShareConfig(combiner="emb", options={"emb_dim": 12}))
    d = json.loads(plan.to_json())
    d["version"] = 3  # as version 3 wrote it: emb_dim among the options
    d["options"]["emb_dim"] = d["options"].pop("components")["emb_dim"]
    again = ssnfx.SharingPlan.from_dict(d)
    assert again.options == plan.options and again.version == ssnfx.PLAN_VERSION
    d["combiner"], d["options"]["emb_dim"] = "linear", 24  # not Emb: nothing to carry
    d["options"].pop("components", None)
    assert ssnfx.SharingPlan.from_dict(d).options.components == {}

