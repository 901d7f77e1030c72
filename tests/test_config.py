import json
import re
from dataclasses import replace

import pytest
import torch.nn as nn
import torchvision

import ssnfx


def test_round_trip_and_defaults():
    cfg = ssnfx.ShareConfig(method="swn", combiner="emb", private=["fc.*"],
                            options={"hard_sharing": True})
    assert ssnfx.ShareConfig.from_json(cfg.to_json()) == cfg
    assert ssnfx.ShareConfig().resolved_combiner == "linear"
    assert ssnfx.ShareConfig(method="swn").resolved_combiner == "linear"


@pytest.mark.parametrize("kwargs,match", [
    ({"method": "lora"}, "method"), ({"combiner": "max"}, "combiner"),
    ({"candidates": 0}, "candidates"), ({"groups": True}, "groups"),
    ({"options": {"emb_dim": [2]}}, "options"),
    ({"selection": "hashed"}, "selection")])
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
    ssn = ssnfx.ShareConfig(method="ssn")
    plan = ssnfx.make_plan(gm, 0.5, replace(ssn, combiner="emb", options={"emb_dim": 8}))
    assert plan.options.components == {"emb_dim": 8}
    assert plan.coefficient_params(plan.groups[0]) == 2 * 8 + 8 * 4 + 4
    assert ssnfx.make_plan(gm, 0.5, replace(ssn, combiner="emb")).options.components == {
        "emb_dim": 24}
    assert ssnfx.make_plan(gm, 0.5, ssn).options.components == {}  # SSN, linear: none
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
    plan = ssnfx.make_plan(gm, 0.5, ssnfx.ShareConfig(method="ssn", combiner="emb",
                                                      options={"emb_dim": 12}))
    d = json.loads(plan.to_json())
    d["version"] = 3  # as version 3 wrote it: emb_dim among the options
    d["options"]["emb_dim"] = d["options"].pop("components")["emb_dim"]
    again = ssnfx.SharingPlan.from_dict(d)
    assert again.options == plan.options and again.version == ssnfx.PLAN_VERSION
    d["combiner"], d["options"]["emb_dim"] = "linear", 24  # not Emb: nothing to carry
    d["options"].pop("components", None)
    assert ssnfx.SharingPlan.from_dict(d).options.components == {}



def test_swns_hard_sharing_and_tile_are_its_own_settings():
    gm = ssnfx.trace(nn.Sequential(nn.Linear(256, 256), nn.Linear(256, 256)))
    cfg = ssnfx.ShareConfig(method="swn", options={"hard_sharing": True, "tile": 16})
    plan = ssnfx.make_plan(gm, 0.5, cfg)
    assert plan.options.components == {"hard_sharing": True, "tile": 16}
    assert plan.groups[0].reserved == sum(len(t) for t in plan.groups[0].layout.values())
    # The tile chosen from the budget is what the plan records.
    assert ssnfx.make_plan(gm, 0.5, ssnfx.ShareConfig(method="swn")).options.components == {
        "hard_sharing": False, "tile": 32}
    for bad in (-1, 2.0, "8"):
        with pytest.raises(ssnfx.PlanError, match=r"option 'tile' must be"):
            ssnfx.make_plan(gm, 0.5, ssnfx.ShareConfig(method="swn", options={"tile": bad}))
    # SSN has neither: named, it refuses them; left to the default, they choose SWN even where
    # SWN would not be the default (mobilenet_v3_small takes SSN by default).
    with pytest.raises(ssnfx.PlanError, match=r"\['hard_sharing'\] are settings of neither "
                                              r"method 'ssn'"):
        ssnfx.make_plan(gm, 0.5, ssnfx.ShareConfig(method="ssn", options={"hard_sharing": True}))
    mobile = ssnfx.trace(torchvision.models.mobilenet_v3_small())
    assert ssnfx.make_plan(mobile, 0.1).method == "ssn"
    hard = ssnfx.ShareConfig(options={"hard_sharing": True})
    assert ssnfx.make_plan(mobile, 0.1, hard).method == "swn"


def test_hard_sharing_and_tile_of_older_configs_and_plans_are_swns_own():
    old = {"method": "swn", "hard_sharing": True, "tile": 8}  # fields before plan version 5
    assert ssnfx.ShareConfig.from_dict(old).options == {"hard_sharing": True, "tile": 8}
    gm = ssnfx.trace(nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 64)))
    plan = ssnfx.make_plan(gm, 0.5, ssnfx.ShareConfig.from_dict(old))
    d = json.loads(plan.to_json())
    d["version"] = 4  # as version 4 wrote it: hard_sharing and tile among the options
    d["options"].update(d["options"].pop("components"))
    again = ssnfx.SharingPlan.from_dict(d)
    assert again.options == plan.options and again.version == ssnfx.PLAN_VERSION
    ssn = json.loads(ssnfx.make_plan(gm, 0.5, ssnfx.ShareConfig(method="ssn")).to_json())
    ssn["version"] = 4
    ssn["options"].update(hard_sharing=False, tile=None)  # SSN's: not its settings, dropped
    assert ssnfx.SharingPlan.from_dict(ssn).options.components == {}
