"""The one error type the CLI turns into a one-line message and exit status 2."""


class HarnessError(Exception):
    """Bad input or an unusable resource: the message is shown to the user as is."""


def unknown_name(kind: str, name: str, valid) -> HarnessError:
    choices = ", ".join(sorted(valid)) or "(none registered)"
    return HarnessError(f"unknown {kind} {name!r}; valid choices: {choices}")


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message, for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__
