"""Command-line gin macros that nothing reads are mistakes: `--gin.TRAIN_STEP=2` (for TRAIN_STEPS)
would otherwise be accepted silently and the run would use the gin file's value.

A macro is read when some binding of the parsed config refers to it (`%NAME`, in any scope).
"""
from __future__ import annotations

import difflib
import re
from typing import Iterable

from protlm.errors import ConfigError

# `NAME = value` or `scope/NAME = value`: a macro (a binding of a parameter has a dot in its key).
_MACRO_BINDING = re.compile(r"^\s*([A-Za-z_][\w/]*)\s*=")


def bound_macros(bindings: Iterable[str]) -> list[str]:
    """The macro names the binding strings set, in order."""
    names = []
    for binding in bindings:
        for line in binding.splitlines():
            found = _MACRO_BINDING.match(line)
            if found:
                names.append(found.group(1))
    return names


def read_macros() -> set[str]:
    """The macros some binding of gin's current config refers to."""
    import gin  # pylint: disable=import-outside-toplevel

    config = gin.config._CONFIG  # pylint: disable=protected-access  (gin has no public listing)
    suffix = "/gin.macro"          # a `%NAME` reference is one to the configurable gin.macro in scope NAME
    return {ref.scoped_selector[: -len(suffix)] for ref in gin.config.iterate_references(config)
            if ref.scoped_selector.endswith(suffix)}


def check_command_line_macros(bindings: Iterable[str]) -> None:
    """Raises `ConfigError` for a macro set in `bindings` that no binding reads.

    Call after the gin files and bindings are parsed.
    """
    read = read_macros()
    for name in bound_macros(bindings):
        if name in read:
            continue
        close = difflib.get_close_matches(name, sorted(read), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else f"macros read here: {', '.join(sorted(read))}"
        raise ConfigError(f"the macro {name} set on the command line is read by no gin binding ({hint}); "
                          "fix its name or remove it")
