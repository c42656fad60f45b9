"""Errors a user can cause. The CLI prints them as one line and exits with their code."""


class PyctrError(Exception):
    """A user-facing error: one clear line on stderr, exit code 125 (as Docker)."""

    exit_code = 125

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class NotFoundError(PyctrError):
    """No such container, image or network."""


class ConflictError(PyctrError):
    """The object exists already, or is in use."""


def last_words(who: str, error: BaseException) -> None:
    """What a forked helper (a monitor, a keeper, a runner) says on stderr before its os._exit:
    one line, and nothing if stderr is gone."""
    import os

    try:
        os.write(2, f"pyctr {who}: {error}\n".encode())
    except OSError:
        pass
