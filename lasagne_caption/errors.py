"""One error type for everything a user's input can get wrong.

Library code raises :class:`UserError` with a one-line message that names the
file (or option) and the problem; command-line modules run through
:func:`run_cli`, which prints that line instead of a traceback.
"""
import sys


class UserError(Exception):
    """Bad input from the user: a missing or malformed file, a wrong option."""


def run_cli(main, argv=None):
    """Run ``main(argv)``; turn a :class:`UserError` into ``error: ...`` and exit 2."""
    from .compat import UnsupportedEnvironment
    try:
        code = main(argv)
    except (UserError, UnsupportedEnvironment) as exc:
        print("error: %s" % exc, file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)
