"""What every command shares: logging set-up, exit status 2 on bad input, and the absl flags parsers.

Two flag styles: `train` and `tune` share the experiment flags on absl's global FLAGS (`global_entry_point`); every
other command has a FlagValues of its own (`own_entry_point`), so importing them side by side never clashes.
Either way --help (and --helpfull) print the command's docstring and its flags with their defaults and exit 0, and a
bad or out-of-range flag is one line on stderr naming it, exit status 2, before any work starts.
"""

from __future__ import annotations

import logging
import sys
from typing import Callable, List

from absl import app, flags

from meteor_tf.quiet_tf import import_tensorflow

BAD_INPUT = 2  # the exit status of every refusal: a flag, file or folder the command cannot use
HELP_ARGS = ("help", "--help", "-h", "--helpfull")


def setup_logging(quiet_tensorflow: bool = False) -> None:
    """INFO lines of meteor_tf on stderr with the time; `quiet_tensorflow` drops TensorFlow's INFO lines (about
    saving, logged through absl), which would drown ours."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    logging.getLogger("meteor_tf").setLevel(logging.INFO)
    if quiet_tensorflow:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_quiet_tensorflow)


def _quiet_tensorflow(record: logging.LogRecord) -> bool:
    # a filter, since TensorFlow's import resets the absl logger's level
    return record.levelno >= logging.WARNING or record.name not in ("absl", "tensorflow")


def bad_input(error) -> int:
    """One line on stderr saying what to fix (the flag or file it names), no traceback; returns exit status 2."""
    print(f"error: {error}", file=sys.stderr)
    return BAD_INPUT


def no_positional_args(argv: List[str]) -> None:
    """Commands take flags only: a stray word is a usage error (absl prints the usage)."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])} (flags start with --)")


def own_flags_parser(own: flags.FlagValues, doc: str, tensorflow: bool = True) -> Callable[[List[str]], List[str]]:
    """An `app.run(flags_parser=...)` for a command with its own FlagValues: --help prints the command's docstring
    and its flags only, a bad flag is one line on stderr and exit 2, and absl's own flags (logging) keep their
    defaults. TensorFlow is imported (quietly) after parsing unless `tensorflow` is False."""
    return _flags_parser(own, doc, own.get_help, tensorflow)


def global_flags_parser(doc: str, modules: List[str]) -> Callable[[List[str]], List[str]]:
    """An `app.run(flags_parser=...)` for a command on absl's global FLAGS (`train`, `tune`): --help and --helpfull
    print the docstring and the flags defined in `modules` with their defaults and exit 0 (absl's own --help lists
    only flags defined in `__main__` and exits 1); a bad flag is one line, exit 2."""

    def help_text() -> str:
        # run with -m, a command defines its flags in __main__
        texts = (flags.FLAGS.module_help(module) for module in dict.fromkeys([*modules, "__main__"]))
        return "\n".join(text for text in texts if text)

    return _flags_parser(flags.FLAGS, doc, help_text, True)


def _flags_parser(values: flags.FlagValues, doc: str, help_text: Callable[[], str],
                  tensorflow: bool) -> Callable[[List[str]], List[str]]:
    def parse(argv: List[str]) -> List[str]:
        if any(a in HELP_ARGS for a in argv[1:]):
            print(doc)
            print(help_text())
            raise SystemExit(0)
        try:
            rest = values(argv)
        except flags.Error as e:
            print(f"error: {e} (--help lists the flags)", file=sys.stderr)
            raise SystemExit(BAD_INPUT)
        if values is not flags.FLAGS:
            flags.FLAGS.mark_as_parsed()  # absl's own flags (logging) keep their defaults
        if tensorflow:
            import_tensorflow()  # after --help and flag errors, which need no TensorFlow
        return rest

    return parse


def own_entry_point(main: Callable[[List[str]], int], own: flags.FlagValues, doc: str,
                    tensorflow: bool = True) -> Callable[[], None]:
    """The console-script `run()` of a command with its own FlagValues."""

    def run() -> None:
        app.run(main, flags_parser=own_flags_parser(own, doc, tensorflow))

    return run


def global_entry_point(main: Callable[[List[str]], int], doc: str, modules: List[str]) -> Callable[[], None]:
    """The console-script `run()` of a command on the global FLAGS, listing the flags of `modules` in --help."""

    def run() -> None:
        app.run(main, flags_parser=global_flags_parser(doc, modules))

    return run
