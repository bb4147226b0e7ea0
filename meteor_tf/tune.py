# `python -m meteor_tf.tune` and `import meteor_tf.tune` keep working: the command is meteor_tf.cli.tune.
import sys

from meteor_tf.cli import tune as command

__doc__ = command.__doc__  # absl's usage message (a stray argument) prints the __main__ module's docstring
if __name__ == "__main__":
    command.run()
else:
    sys.modules[__name__] = command  # importers get the command module itself (its FLAGS, main, run)
