"""What the ``voice`` command's exit status means, and the one place a failed call becomes a message and a status.

0: done. 1: the server refused or failed the request (its ``CODE: message`` on stderr). 2: the command line is
wrong (argparse's own status), names a file that is not there, or sends audio to a terminal. 3: the gateway cannot be reached or a service
behind it is unavailable (or did not answer in time). 4: the key is missing, wrong, revoked, or lacks the scope.
130: interrupted (Ctrl-C). 141: the reader of stdout went away (a player closed), as a shell reports SIGPIPE.
"""

from __future__ import annotations

import sys

import grpc

OK = 0
REFUSED = 1
USAGE = 2
UNAVAILABLE = 3
NOT_ALLOWED = 4
# As a shell reports a process ended by SIGINT (Ctrl-C) or SIGPIPE (the reader of its output went away).
INTERRUPTED = 130
READER_GONE = 141

_BY_CODE = {
    grpc.StatusCode.UNAVAILABLE: UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: UNAVAILABLE,
    grpc.StatusCode.UNAUTHENTICATED: NOT_ALLOWED,
    grpc.StatusCode.PERMISSION_DENIED: NOT_ALLOWED,
}


def exit_code_for(code: grpc.StatusCode) -> int:
    return _BY_CODE.get(code, REFUSED)


def report_failure(code: grpc.StatusCode, message: str, key: str | None, key_source: str) -> int:
    """Prints ``error: CODE: message`` (and, when the key was refused, where it came from) and returns the exit
    status for ``code``."""
    print(f"error: {code.name}: {message}", file=sys.stderr)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        where = f"the key from {key_source}" if key else f"no key (none in {key_source})"
        print(
            f"hint: this call sent {where}; pass --key, set VOICE_API_KEY, or run `make run` once "
            "to save the local admin key",
            file=sys.stderr,
        )
    return exit_code_for(code)
