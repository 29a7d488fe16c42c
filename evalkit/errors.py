"""The one exception type the CLI turns into a clean one-line error (exit code 2)."""


class EvalkitError(Exception):
    """Bad input or an environment problem the user can fix.

    The CLI prints ``error: <message>`` on one line and exits with code 2. Raise it for anything
    that is not a bug in evalkit: a missing path, a malformed task file, an unusable sandbox.
    """

    exit_code = 2
