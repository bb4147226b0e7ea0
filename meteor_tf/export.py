# `python -m meteor_tf.export` and `import meteor_tf.export` keep working: the command is meteor_tf.cli.export.
import sys

from meteor_tf.cli import export as command

__doc__ = command.__doc__  # absl's usage message (a stray argument) prints the __main__ module's docstring
if __name__ == "__main__":
    command.run()
else:
    sys.modules[__name__] = command  # importers get the command module itself (its FLAGS, main, run)
