"""Every grid specification and every trainer setting either runs or is refused with a message:
no other exception escapes (hypothesis)."""
import dataclasses

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gofau.lab import config, grid

FIELDS = [f.name for f in dataclasses.fields(config.TrainConfig)]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 300), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from(["sgd", "adam", "hybrid", "multiplicative", "resnet9", "cpu", "tpu", "auto",
                                     "cifar10-jpeg", "none", "", "linear"]))
names = st.one_of(st.sampled_from(FIELDS), st.sampled_from(["lrr", "seeds", "over", "axes"]))
values = st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=3), scalars, max_size=2))
blocks = st.dictionaries(names, values, max_size=4)
specs = st.one_of(
    st.fixed_dictionaries({}, optional=dict(description=values, base=blocks, axes=blocks,
                                            grids=st.lists(blocks, max_size=2),
                                            tune=st.one_of(values, st.fixed_dictionaries(
                                                {}, optional=dict(over=names, seeds=values))))),
    values)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=specs)
def test_any_grid_runs_or_is_refused_with_a_message(tmp_path, spec):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    try:
        rows = grid.run_grid(path, tmp_path / "out", dry_run=True)
    except (ValueError, TypeError) as e:
        assert str(e)
    else:
        assert all(r["status"] == "planned" for r in rows)
    assert not (tmp_path / "out").exists()


@settings(max_examples=300, deadline=None)
@given(settings_=st.dictionaries(st.sampled_from(FIELDS), scalars, max_size=6))
def test_any_trainer_setting_is_accepted_or_refused_with_a_message(settings_):
    try:
        config.validate(config.TrainConfig(**settings_))
    except (ValueError, TypeError) as e:
        assert str(e)
