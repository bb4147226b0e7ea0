import pytest

from meteor_tf.config import ExperimentConfig


def test_paper_learning_rates_are_the_defaults():
    c = ExperimentConfig(pretrain="imagenet")
    assert (c.lr_head_value, c.lr_fine_tune_value) == (0.03, 0.001)
    assert ExperimentConfig(pretrain="none").lr_fine_tune_value == 0.0002
    assert ExperimentConfig(lr_head=0.5).lr_head_value == 0.5


def test_normalisation_follows_the_weights():
    assert ExperimentConfig(pretrain="imagenet").normalization == "torch"
    assert ExperimentConfig(pretrain="imagenet", depth=50, layout="keras").normalization == "caffe"
    assert ExperimentConfig(pretrain="fashion_mnist").normalization == "unit"


def test_run_id_is_stable_and_ignores_execution_settings():
    a = ExperimentConfig(depth=34)
    assert a.derived_run_id() == ExperimentConfig(depth=34).derived_run_id()
    assert a.derived_run_id() == ExperimentConfig(depth=34, strategy="cpu", output_dir="elsewhere").derived_run_id()
    assert a.derived_run_id() != ExperimentConfig(depth=34, seed=1).derived_run_id()
    assert ExperimentConfig(run_id="mine").derived_run_id() == "mine"


@pytest.mark.parametrize("change, message", [
    (dict(depth=20), "--depth=20"),
    (dict(layout="keras", depth=18), "depth 50 and 101 only"),
    (dict(image_size=16), "at least 32"),
    (dict(head_units=(10,), head_dropout=(0.5, 0.2)), "same number"),
    (dict(augment="flip"), "--augment='flip'"),
])
def test_bad_settings_name_the_flag(change, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ExperimentConfig(**change)


def test_round_trip_through_dict():
    c = ExperimentConfig(head_units=(64, 32), head_dropout=(0.1, 0.1))
    assert ExperimentConfig.from_dict(c.to_dict()) == c


def test_run_ids_are_those_of_the_flat_config_before_the_parts():
    # pinned from the flat 44-field ExperimentConfig of commit b8e2b99: existing run directories are still found
    assert ExperimentConfig().derived_run_id() == "resnet18-fashion_mnist-none-224px-10fold-ft-ce0b25a8"
    assert ExperimentConfig(depth=50, pretrain="imagenet", layout="keras", image_size=64, sgdr_t_mul=1.5,
                            fmnist_backbone="pretrain", fmnist_epochs=3).derived_run_id() == \
        "resnet50-imagenet-none-64px-10fold-ft-8e5f710d"


def test_flat_names_read_and_replace_through_their_parts():
    from meteor_tf.config import ModelConfig, SGDRConfig

    c = ExperimentConfig(depth=34, sgdr_t_mul=3.0, fmnist_backbone="pretrain", fmnist_epochs=4, output_dir="o")
    assert (c.model.depth, c.train.sgdr.t_mul, c.fmnist.epochs, c.runtime.output_dir) == (34, 3.0, 4, "o")
    assert (c.depth, c.sgdr_t_mul, c.fmnist_epochs, c.output_dir) == (34, 3.0, 4, "o")
    d = c.replace(sgdr_m_mul=0.5, image_size=64)
    assert d.train.sgdr == SGDRConfig(t_mul=3.0, m_mul=0.5) and d.model.image_size == 64 and c.model.image_size == 224
    assert c.replace(model=ModelConfig(depth=50)).model.depth == 50
    assert ExperimentConfig.from_dict(c.to_nested_dict()) == c == ExperimentConfig.from_dict(c.to_dict())
    assert set(c.to_dict()) == set(ExperimentConfig.flat_names()) and len(c.to_dict()) == 47  # b8e2b99's 46 and fold_workers
    with pytest.raises(AttributeError):
        c.dept  # noqa: B018
    with pytest.raises(TypeError, match="dept"):
        ExperimentConfig(dept=18)


@pytest.mark.parametrize("part, change, message", [
    ("ModelConfig", dict(depth=20), "--depth=20"),
    ("DataConfig", dict(augment="flip"), "--augment='flip'"),
    ("SGDRConfig", dict(t_mul=0.5), "--sgdr_t_mul=0.5 is out of range"),
    ("PretrainConfig", dict(epochs=3), "--fmnist_epochs=3 set"),
    ("RuntimeConfig", dict(strategy="gpu"), "--strategy='gpu'"),
])
def test_each_part_checks_its_own_settings_by_their_flag_names(part, change, message):
    import meteor_tf.config as cfg

    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        getattr(cfg, part)(**change)


def test_the_classifier_is_built_from_the_model_part_alone():
    from meteor_tf.config import ModelConfig
    from meteor_tf.models.classifier import build_classifier_from_config

    model = build_classifier_from_config(ModelConfig(depth=18, image_size=32, head_units=(8,), head_dropout=(0.1,)))
    assert model.input.shape == (None, 32, 32, 1) and model.get_layer("backbone").depth == 18
