import pytest

from reglab import ConfigError, RunConfig, validate
from reglab.config import validate_param


@pytest.mark.parametrize("field, value, fragment", [
    ("step_size", -1.0, "'step_size' parameter of RunConfig must be a float in the range (0, inf). Got -1.0"),
    ("step_size", 0.0, "(0, inf)"),
    ("weight_decay", -0.1, "[0, inf)"),
    ("steps", 0, "'steps'"),
    ("batch_size", 0, "'batch_size'"),
    ("device", "tpu", "one of 'auto', 'cpu', 'cuda'"),
    ("loss", "l1", "'loss'"),
])
def test_bad_values_name_parameter_range_and_value(field, value, fragment):
    with pytest.raises(ConfigError) as err:
        validate(RunConfig(**{field: value}))
    assert fragment in str(err.value)


def test_batch_size_larger_than_data_is_refused_with_the_data_size():
    with pytest.raises(ConfigError, match=r"\[1, 100\].*Got 101"):
        validate(RunConfig(batch_size=101), n_train=100)
    validate(RunConfig(batch_size=100), n_train=100)


def test_rank_larger_than_width_is_refused():
    with pytest.raises(ConfigError, match=r"'rank'.*\[1, 50\].*Got 51"):
        validate(RunConfig(width=50, rank=51))
    validate(RunConfig(width=50, rank=50))


def test_nan_and_bool_are_not_numbers():
    with pytest.raises(ConfigError):
        validate_param("step_size", float("nan"))
    with pytest.raises(ConfigError):
        validate_param("steps", True)


def test_text_stamp_round_trips_and_hash_is_stable():
    cfg = RunConfig(step_size=0.05, batch_size=16, rank=4, data_options={"p": 59}, betas=(0.9, 0.98))
    text = cfg.to_text()
    assert text.startswith("reglab:")
    again = RunConfig.from_text(text)
    assert again == cfg and again.short_hash() == cfg.short_hash()
    assert cfg.replace(step_size=0.06).short_hash() != cfg.short_hash()
    assert RunConfig().to_text() == "reglab:{}"
    # the hash is a pure function of the values (no id(), no dict order)
    assert RunConfig(data_options={"a": 1, "b": 2}).short_hash() == RunConfig(data_options={"b": 2, "a": 1}).short_hash()


def test_bad_stamp_and_unknown_field_are_clear():
    with pytest.raises(ConfigError, match="Not a reglab config stamp"):
        RunConfig.from_text("reglab:{oops")
    with pytest.raises(ConfigError, match="Unknown RunConfig parameter.*learning_rate"):
        RunConfig.from_dict({"learning_rate": 0.1})


def test_the_default_evaluation_interval_adapts_to_a_short_run():
    assert validate(RunConfig(steps=30)).eval_every == 30
    assert RunConfig().eval_every == 50 and RunConfig(steps=30, eval_every=10).eval_every == 10
