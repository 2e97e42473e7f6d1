"""Kiln: node-graph latent diffusion. `python main.py --help` lists the commands."""
import os
import sys

from kiln.cli import COMMANDS, main


def _leave_now(code: int) -> None:
    """End a headless command without tearing the interpreter down.

    When a command returns, its files are written and closed; unwinding torch's
    modules and objects at exit would add about a second to every `main.py run`
    on a small CPU. The editor exits the ordinary way.
    """
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # the reader of a pipe left
        code = code or 1
    os._exit(code)


if __name__ == "__main__":
    exit_code = main(sys.argv[1:])
    if sys.argv[1:2] and sys.argv[1] in COMMANDS:
        _leave_now(exit_code)
    sys.exit(exit_code)
