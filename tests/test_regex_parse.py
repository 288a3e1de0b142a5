"""pipeline/regex_parse.py reads CPython's private regex parser: this fails loudly, naming the module to
update, when a Python upgrade changes the shape of what it reads."""

from __future__ import annotations

import re
import sys

import pytest

UPGRADE = (
    f"CPython {sys.version.split()[0]} changed the private regex parser (re._parser, re._constants) that "
    "pipeline/regex_parse.py wraps for pipeline/regex_edges.py (written against Python 3.11): update them"
)


def test_the_private_regex_parse_tree_has_the_shape_regex_edges_reads():
    try:
        from pipeline import regex_parse as sre

        tree = sre.parse(r"^(?i:ab)(?:cd|[e-g])x*?$")
        assert [op for op, _ in tree] == [sre.AT, sre.SUBPATTERN, sre.BRANCH, sre.MIN_REPEAT, sre.AT]
        assert tree[0][1] is sre.AT_BEGINNING and tree[-1][1] is sre.AT_END
        group, flags, _, items = tree[1][1]
        assert (
            group is None and flags & re.IGNORECASE and list(items) == [(sre.LITERAL, 97), (sre.LITERAL, 98)]
        )
        assert [list(alt) for alt in tree[2][1][1]] == [
            [(sre.LITERAL, 99), (sre.LITERAL, 100)],
            [(sre.IN, [(sre.RANGE, (101, 103))])],
        ]
        low, high, repeated = tree[3][1]
        assert (low, high, list(repeated)) == (0, sre.MAXREPEAT, [(sre.LITERAL, 120)])
        assert sre.max_width(tree, list(tree)) >= sre.MAXREPEAT
        assert sre.max_width(tree, list(tree)[:3]) == 4
        assert sre.global_flags(sre.parse("(?i)a")) & re.IGNORECASE
        assert [op for op, _ in sre.parse("a++|(?=b)|(?!c)")[0][1][1][0]] == [sre.POSSESSIVE_REPEAT]
        assert [op for alt in sre.parse("(?=b)|(?!c)|b+")[0][1][1] for op, _ in alt] == [
            sre.ASSERT,
            sre.ASSERT_NOT,
            sre.MAX_REPEAT,
        ]
    except Exception as e:  # an import, attribute or shape error: all mean the same upgrade
        pytest.fail(f"{UPGRADE}: {type(e).__name__}: {e}")
