"""The usage example in asupermachine.testing's docstring runs as written."""

from __future__ import annotations

import textwrap

import asupermachine.testing


def test_the_module_docstring_example_runs() -> None:
    doc = asupermachine.testing.__doc__
    assert doc is not None
    example = textwrap.dedent(doc.split("::\n", 1)[1])
    exec(compile(example, "asupermachine.testing example", "exec"), {})
