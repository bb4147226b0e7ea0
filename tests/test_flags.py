import pytest
from absl import flags

from meteor_tf import flags as mflags
from meteor_tf.config import ExperimentConfig


@pytest.fixture()
def parsed():
    mflags.define_flags()
    FLAGS = flags.FLAGS

    def parse(*argv):
        FLAGS.unparse_flags()
        FLAGS(["prog", *argv])
        return mflags.config_from_flags()

    yield parse
    FLAGS.unparse_flags()


def test_defaults_equal_the_config_defaults(parsed):
    assert parsed() == ExperimentConfig()


def test_flags_reach_the_config(parsed):
    c = parsed("--depth=50", "--pretrain=imagenet", "--head_units=64,32", "--head_dropout=0.1,0.2",
               "--nofine_tune", "--class_dirs=yes,no")
    assert (c.depth, c.pretrain, c.head_units, c.head_dropout, c.fine_tune, c.class_dirs) == \
        (50, "imagenet", (64, 32), (0.1, 0.2), False, ("yes", "no"))


def test_column_overrides_are_parsed_by_their_flags(parsed):
    parsed()
    assert mflags.parse_column("depth=50 pretrain=imagenet fine_tune=false") == \
        {"depth": "50", "pretrain": "imagenet", "fine_tune": False}
    assert mflags.config_from_flags(mflags.parse_column("depth=34")).depth == 34
    with pytest.raises(ValueError, match="not an experiment flag"):
        mflags.parse_column("colour=blue")
    with pytest.raises(Exception):
        mflags.parse_column("pretrain=imagenet21k")


def test_every_config_field_has_a_flag(parsed):
    parsed()
    missing = [f for f in ExperimentConfig.flat_names() if f not in flags.FLAGS]
    assert missing == []
