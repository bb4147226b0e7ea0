# `python -m meteor_tf.serve` and `import meteor_tf.serve` keep working: the command is meteor_tf.cli.serve.
import sys

from meteor_tf.cli import serve as command

__doc__ = command.__doc__  # absl's usage message (a stray argument) prints the __main__ module's docstring
if __name__ == "__main__":
    command.run()
else:
    sys.modules[__name__] = command  # importers get the command module itself (its FLAGS, main, run)
