"""One error shape for every script: exactly one ``error:`` line on stderr and exit code 2.

``ArgumentParser`` turns argparse's syntax errors (which would print a ``usage:``
block) into ConfigError and refuses a non-finite number for every ``type=float``
argument, and ``script_main`` wraps a script's ``main(argv)``: a ConfigError
anywhere inside becomes the one line, Ctrl-C one line saying what was kept (exit
130), and when the script fails the empty directories its output checks found
missing are removed again (util/paths.py). ``quiet_stderr`` holds back what
native code (TensorFlow's C++ logging) writes to stderr while loading, so a
failed load is only the error line.
"""

import argparse
import contextlib
import functools
import math
import os
import sys
import tempfile

from util.errors import ConfigError
from util.paths import forget_created_dirs, remove_created_dirs


def finite_float(text):
    """argparse type of every ``type=float`` argument: NaN and infinities are refused (NaN
    passes every range check and, as a threshold, flags nothing)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose syntax errors are ConfigErrors (one line, exit 2 under script_main)
    and whose floats are finite."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register("type", float, finite_float)

    def error(self, message):
        raise ConfigError(f"{message} (see {self.prog} --help)")


def error_line(message):
    """The one line a failed command prints: ``error: ...`` with inner newlines joined."""
    return "error: " + " ".join(str(message).split("\n")).strip()


#: what Ctrl-C leaves of a script that writes each output whole (util/atomic.py)
WHOLE_OUTPUTS = "its outputs are written whole or not at all, so none is half-written"


def script_main(main=None, *, kept=WHOLE_OUTPUTS):
    """Decorator for a script's ``main(argv=None) -> exit code``.

    ConfigError -> the error line and 2; KeyboardInterrupt (Ctrl-C) -> one line saying
    what was interrupted and ``kept`` (what the script leaves), and 130. On any failure
    (non-zero code or exception) the directories created for outputs are removed when
    they are empty.
    """
    if main is None:
        return functools.partial(script_main, kept=kept)

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
        except KeyboardInterrupt:
            module = sys.modules.get(main.__module__)
            name = os.path.basename(getattr(module, "__file__", None) or main.__module__)
            print(error_line(f"interrupted (Ctrl-C): {name} stopped; {kept}"), file=sys.stderr)
            code = 130
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
