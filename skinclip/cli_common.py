"""Pieces shared by the command lines of skinclip, skinvl and the explorer: strict argument
parsing, argument types, and turning user errors into one logged line and exit status 2."""

from __future__ import annotations

import argparse
import logging


def positive_int(text: str) -> int:
    """An argparse type: an integer of 1 or more."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 1 to 65535."""
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, got {value}")
    return value


class StrictParser(argparse.ArgumentParser):
    """An ArgumentParser without prefix matching (``--epoch 1`` is an error, not a silent
    ``--epochs 1``); its subcommands' parsers are of the same class."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self._has_commands = False

    def add_subparsers(self, **kwargs):
        self._has_commands = True
        return super().add_subparsers(**kwargs)

    def parse_known_args(self, args=None, namespace=None):
        # argparse hands a subcommand's unknown options up to the top-level parser, whose
        # error shows the top-level usage; the subcommand's own usage says what it accepts.
        namespace, extras = super().parse_known_args(args, namespace)
        if extras and not self._has_commands:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


def first_line(err: BaseException, limit: int = 300) -> str:
    """The first line of an error's message (a library's can run to pages), or its repr."""
    text = str(err).strip()
    return text.splitlines()[0][:limit] if text else repr(err)


def exit_code(log: logging.Logger, command, *args) -> int:
    """Run a subcommand: 0 on success; 2, with the message logged and no traceback, for the
    errors that mean bad input (a missing file, an invalid value)."""
    try:
        command(*args)
    except (FileNotFoundError, ValueError) as err:
        log.error("%s", err)
        return 2
    return 0


LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


def configure_logging(ours: tuple[str, ...], verbose: bool = False) -> None:
    """Our own packages' progress at INFO (DEBUG when ``verbose``); everything else at WARNING
    unless ``verbose``, since open_clip logs every loading step at INFO on the root logger."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format=LOG_FORMAT)
    for name in ours:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)
