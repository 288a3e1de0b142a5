"""CPython's parse tree of a regex: the one module that reads the private `re._parser` and `re._constants`.

`pipeline.regex_edges` walks the tree that `parse` returns, a list of (opcode, argument) pairs whose
opcodes are the names below. No public API gives it; its shape has held since Python 3.11 named these
modules, and tests/test_regex_parse.py fails with a clear message on an upgrade that changes it.
"""

from __future__ import annotations

from re import _constants, _parser
from typing import Any

AT, ASSERT, ASSERT_NOT = _constants.AT, _constants.ASSERT, _constants.ASSERT_NOT
AT_BEGINNING, AT_END = _constants.AT_BEGINNING, _constants.AT_END
LITERAL, IN, RANGE = _constants.LITERAL, _constants.IN, _constants.RANGE
SUBPATTERN, BRANCH = _constants.SUBPATTERN, _constants.BRANCH
MAX_REPEAT, MIN_REPEAT, POSSESSIVE_REPEAT = (
    _constants.MAX_REPEAT,
    _constants.MIN_REPEAT,
    _constants.POSSESSIVE_REPEAT,
)
# A repeat or width without an upper bound reaches this.
MAXREPEAT = _constants.MAXREPEAT


def parse(pattern: str) -> Any:
    """The tree of `pattern`: a sequence of (opcode, argument) pairs."""
    return _parser.parse(pattern)


def global_flags(parsed: Any) -> int:
    """The flags set for the whole pattern (`re.IGNORECASE`, inline `(?i)` at its start, ...)."""
    return parsed.state.flags


def max_width(parsed: Any, items: list[Any]) -> int:
    """The most characters that `items`, a sequence of pairs of the tree `parsed`, can match."""
    return _parser.SubPattern(parsed.state, items).getwidth()[1]
