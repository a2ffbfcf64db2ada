"""The errors a user can meet, each carrying the exit code the command ends with.

Every expected failure is raised as one of these and turned into a one-line message on stderr
and an exit code in exactly one place (``cli.app.main``). Anything else is a bug.

    SourceprepError ............................. 1  general failure
     ├── UsageError ............................. 2  a command-line value that makes no sense
     ├── ModelNotFound .......................... 3  the model is not on the endpoint / not configured
     ├── ServerUnreachable ...................... 4  connection refused, DNS failure, connect timeout
     ├── ConfigError ............................ 5  the config file cannot be read or is invalid
     ├── DoesNotFit ............................. 6  the model cannot fit in memory (predicted or reported OOM)
     ├── ServerError ............................ 1  the server answered with an error we cannot classify
     │    ├── ServerBusy ........................ 1  the server's queue is full (HTTP 503)
     │    └── DeadlineExceeded .................. 1  the server did not finish within our deadline
     ├── Unsupported ............................ 1  the endpoint's server cannot do what was asked
     └── Interrupted ............................ 130 Ctrl-C
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    MODEL_NOT_FOUND = 3
    SERVER_UNREACHABLE = 4
    BAD_CONFIG = 5
    DOES_NOT_FIT = 6
    INTERRUPTED = 130


class SourceprepError(Exception):
    """Base of every error a user may see; the message is one line that names the thing and the fix."""

    exit_code: int = ExitCode.ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(SourceprepError):
    exit_code = ExitCode.USAGE


class ModelNotFound(SourceprepError):
    exit_code = ExitCode.MODEL_NOT_FOUND


class ServerUnreachable(SourceprepError):
    exit_code = ExitCode.SERVER_UNREACHABLE


class ConfigError(SourceprepError):
    exit_code = ExitCode.BAD_CONFIG


class DoesNotFit(SourceprepError):
    exit_code = ExitCode.DOES_NOT_FIT


class ServerError(SourceprepError):
    """The server answered with an error; ``status`` is its HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ServerBusy(ServerError):
    pass


class DeadlineExceeded(ServerError):
    pass


class Unsupported(SourceprepError):
    pass


class Interrupted(SourceprepError):
    exit_code = ExitCode.INTERRUPTED
