from pathlib import Path

import pytest

from nmt_bert.config import Config, config_from_dict, config_to_dict, load_config, save_config
from nmt_bert.errors import UserError


def test_defaults_are_the_dataclass_defaults():
    config = load_config()
    assert config.model.encoder == "multilingual-e5-small"
    assert config.train.cache_encoder is True
    assert config.decode.beam_size == 5


def test_recipe_overrides_only_what_it_names(tmp_path: Path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  lr: 0.001\n  stage2_steps: 10\nmodel:\n  adapter: linear\n")
    config = load_config(recipe)
    assert config.train.lr == 0.001
    assert config.train.stage2_steps == 10
    assert config.model.adapter == "linear"
    assert config.train.stage1_steps == Config().train.stage1_steps


def test_set_overrides_recipe_and_parses_yaml_scalars(tmp_path: Path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  lr: 0.001\n")
    config = load_config(recipe, ["train.lr=2e-4", "train.cache_encoder=false", "model.encoder=x/y"])
    assert config.train.lr == pytest.approx(2e-4)
    assert config.train.cache_encoder is False
    assert config.model.encoder == "x/y"


def test_int_is_accepted_for_float_and_stored_as_float():
    config = load_config(None, ["train.lr=1"])
    assert isinstance(config.train.lr, float) and config.train.lr == 1.0


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lrr=1", "unknown key 'train.lrr'"),
        ("trian.lr=1", "unknown section 'trian'"),
        ("train.stage1_steps=1.5", "'train.stage1_steps' must be int"),
        ("train.cache_encoder=maybe", "'train.cache_encoder' must be bool"),
        ("model.adapter=deep", "'model.adapter' must be one of mlp, linear, none"),
        ("train.lr", "expected section.key=value"),
        ("model.d_model=250", "divisible by model.heads"),
    ],
)
def test_bad_overrides_are_rejected_naming_the_key(override, message):
    with pytest.raises(UserError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_config(None, [override])


def test_recipe_with_unknown_key_names_the_file(tmp_path: Path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("decode:\n  beam: 4\n")
    with pytest.raises(UserError, match=r"bad\.yaml: unknown key 'decode\.beam'"):
        load_config(recipe)


def test_invalid_yaml_names_file_and_line(tmp_path: Path):
    recipe = tmp_path / "broken.yaml"
    recipe.write_text("train:\n  lr: [1,\n")
    with pytest.raises(UserError, match=r"broken\.yaml: line \d+ invalid YAML"):
        load_config(recipe)


def test_save_and_reload_round_trip(tmp_path: Path):
    config = load_config(None, ["train.lr=3e-4", "decode.beam_size=4"])
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config
    assert config_from_dict(config_to_dict(config)) == config


def test_bundled_recipes_load_by_path_and_by_name():
    from nmt_bert.config import bundled_recipes

    names = bundled_recipes()
    assert {"fast-cpu", "bible-es-en", "bible-es-en-gpu"} <= set(names)
    for name in names:
        by_path = load_config(Path(__file__).parents[1] / "recipes" / f"{name}.yaml")
        assert load_config(name) == by_path
    assert load_config("fast-cpu") != load_config(None)


def test_an_unknown_recipe_name_lists_the_bundled_ones():
    with pytest.raises(UserError, match="bundled: .*fast-cpu"):
        load_config("fast-gpu")


def test_every_adapter_kind_the_config_names_has_a_class():
    import typing

    from nmt_bert.config import ModelConfig
    from nmt_bert.model.adapters import ADAPTERS

    assert set(typing.get_args(typing.get_type_hints(ModelConfig)["adapter"])) == set(ADAPTERS)


def test_bundled_recipes_override_only_what_differs_from_the_defaults():
    import yaml

    from nmt_bert.config import RECIPES

    defaults = config_to_dict(Config())
    for recipe in sorted(RECIPES.glob("*.yaml")):
        for section, values in yaml.safe_load(recipe.read_text()).items():
            for key, value in values.items():
                assert defaults[section][key] != value, f"{recipe.name}: {section}.{key} repeats the default"
