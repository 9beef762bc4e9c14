"""settings_rules.py: one rule per setting, shared by the config model and the reader."""

from __future__ import annotations

from typing import Any

import pytest

from token_worker.config import Config, ProfileSettings, RedisSettings, parse_config
from token_worker.settings_rules import (
    NUMBERS,
    REDIS_DEFAULTS,
    REDIS_KEYS,
    SECTIONS,
    Number,
    redis_value,
)

from .support import config_data


def test_the_rules_cover_exactly_the_models_tables_keys_and_defaults() -> None:
    assert SECTIONS == tuple(Config.model_fields)
    assert REDIS_KEYS == tuple(RedisSettings.model_fields)
    assert REDIS_DEFAULTS == RedisSettings().model_dump()
    defaults = parse_config(config_data())
    for key, rule in NUMBERS.items():
        section, name = key.split(".")
        if section == "profiles":
            assert ProfileSettings.model_fields[name].default is None  # refresh's margin
            continue
        held = getattr(getattr(defaults, section), name)
        assert held == rule.default and type(held) is type(rule.default), key


@pytest.mark.parametrize(("rule", "given", "held"), [
    (Number(5.0, gt=0, le=300), 7, 7.0), (Number(5.0, gt=0, le=300), 300, 300.0),
    (Number(5.0, gt=0, le=300), 1e-9, 1e-9), (Number(0, ge=0, le=16), 0, 0),
    (Number(0, ge=0, le=16), 16, 16),
])
def test_a_number_in_bounds_is_held_as_the_settings_type(rule: Number[Any], given: Any,
                                                         held: Any) -> None:
    value = rule.value(given)
    assert value == held and type(value) is type(held)


@pytest.mark.parametrize(("rule", "given"), [
    (Number(5.0, gt=0, le=300), 0), (Number(5.0, gt=0, le=300), 300.0000001),
    (Number(5.0, gt=0, le=300), float("nan")), (Number(5.0, gt=0, le=300), True),
    (Number(5.0, gt=0, le=300), 2**1100), (Number(5.0, gt=0, le=300), "5"),
    (Number(0, ge=0, le=16), -1), (Number(0, ge=0, le=16), 2.0), (Number(0, ge=0, le=16), False),
])
def test_anything_else_is_refused_naming_only_the_bounds(rule: Number[Any], given: Any) -> None:
    with pytest.raises(ValueError, match=r"^must be a (whole|finite) number, (greater than|at "
                                         r"least) [0-9.]+ and at most [0-9.]+$"):
        rule.value(given)


def test_every_redis_key_has_a_rule_that_takes_its_default() -> None:
    for key in REDIS_KEYS:
        assert redis_value(key, REDIS_DEFAULTS[key]) == REDIS_DEFAULTS[key], key
