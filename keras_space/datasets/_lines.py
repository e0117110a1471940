"""Reading a text data file line by line, every refusal naming `path:line`."""

import numpy as np


def decoded_lines(path, what):
    """(line number, text) of each non-empty line of the UTF-8 file `path` (`what` it holds)."""
    with open(path, "rb") as f:
        raw = f.read()
    for lineno, encoded in enumerate(raw.splitlines(), 1):
        try:
            line = encoded.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(
                f"{path}:{lineno}: not UTF-8 ({e.reason} at byte {e.start}); {what} files are UTF-8"
            ) from e
        if line:
            yield lineno, line


def finite_score(path, lineno, field, text, hint=""):
    """`text` as a finite float, or a ValueError naming `path:line` and the field
    (`hint` is added to the message for a value that is not finite)."""
    try:
        value = float(text)
    except ValueError as e:
        raise ValueError(f"{path}:{lineno}: {field} {text!r} is not a number") from e
    if not np.isfinite(value):
        raise ValueError(f"{path}:{lineno}: {field} {text!r} is not finite{hint}")
    return value
