"""One error shape for every script: exactly one ``error:`` line on stderr and exit code 2.

``ArgumentParser`` turns argparse's syntax errors (which would print a ``usage:``
block) into ConfigError, and ``script_main`` wraps a script's ``main(argv)``: a
ConfigError anywhere inside becomes the one line, and when the script fails
the empty directories its output checks found missing are removed again
(util/paths.py). ``quiet_stderr`` holds back what native code (TensorFlow's
C++ logging) writes to stderr while loading, so a failed load is only the
error line.
"""

import argparse
import contextlib
import functools
import os
import sys
import tempfile

from util.errors import ConfigError
from util.paths import forget_created_dirs, remove_created_dirs


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose syntax errors are ConfigErrors (one line, exit 2 under script_main)."""

    def error(self, message):
        raise ConfigError(f"{message} (see {self.prog} --help)")


def error_line(message):
    """The one line a failed command prints: ``error: ...`` with inner newlines joined."""
    return "error: " + " ".join(str(message).split("\n")).strip()


def script_main(main):
    """Decorator for a script's ``main(argv=None) -> exit code``.

    ConfigError -> the error line and 2. On any failure (non-zero code or exception)
    the directories created for outputs are removed when they are empty.
    """
    @functools.wraps(main)
    def run(argv=None):
        forget_created_dirs()
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # no TF INFO/WARNING lines
        # a path that is not valid UTF-8 is printed with escapes instead of crashing
        for stream in (sys.stdout, sys.stderr):
            if hasattr(stream, "reconfigure"):
                stream.reconfigure(errors="backslashreplace")
        try:
            code = main(argv)
        except ConfigError as err:
            print(error_line(err), file=sys.stderr)
            code = 2
        except BaseException:
            remove_created_dirs()
            raise
        if code:
            remove_created_dirs()
        return code
    return run


@contextlib.contextmanager
def quiet_stderr():
    """Holds back what is written to file descriptor 2 inside the block (also by C++ code);
    replays it when the block succeeds, drops it when the block raises."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real stderr (captured by a test)
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        ok = False
        try:
            yield
            ok = True
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if ok:
                held.seek(0)
                data = held.read()
                if data:
                    os.write(2, data)
