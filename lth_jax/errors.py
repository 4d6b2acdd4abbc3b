"""One exception type for bad input, so callers (main.py) can print one line."""


class LthError(ValueError):
    """Bad configuration or input. The message is one line: what is wrong,
    what is allowed, how to fix it."""


def check(condition, message: str) -> None:
    if not condition:
        raise LthError(message)


def unknown(kind: str, name, valid) -> LthError:
    return LthError(f"unknown {kind} {name!r}; valid names: {', '.join(sorted(valid))}")
