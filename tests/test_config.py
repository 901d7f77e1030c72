import re

import pytest

import ssnfx


def test_round_trip_and_defaults():
    cfg = ssnfx.ShareConfig(method="swn", combiner="emb", private=["fc.*"], hard_sharing=True)
    assert ssnfx.ShareConfig.from_json(cfg.to_json()) == cfg
    assert ssnfx.ShareConfig().resolved_combiner == "linear"
    assert ssnfx.ShareConfig(method="swn").resolved_combiner == "linear"


@pytest.mark.parametrize("kwargs,match", [
    ({"method": "lora"}, "method"), ({"combiner": "max"}, "combiner"),
    ({"candidates": 0}, "candidates"), ({"groups": True}, "groups"), ({"emb_dim": 2.5}, "emb_dim"),
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
