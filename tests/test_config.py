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
