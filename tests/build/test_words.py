"""Word expansion as BuildKit's shell lexer does it."""

import pytest

from asupermachine import BuildError
from asupermachine.build.words import expand, expand_words, split_assignments

VARIABLES = {"A": "1", "B": "two words", "EMPTY": ""}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$A", "1"),
        ("${A}x", "1x"),
        ('"$B"', "two words"),
        ("'$A'", "$A"),
        ("${EMPTY:-default}", "default"),
        ("${EMPTY-default}", ""),
        ("${UNSET-default}", "default"),
        ("${UNSET:-d$A}", "d1"),
        ("${A:+set}", "set"),
        ("${UNSET+set}", ""),
        ("a\\ b", "a b"),
        ('"a \\"q\\" \\n"', 'a "q" \\n'),
        ("\\$A", "$A"),
        ("$", "$"),
        ("${A}${B}", "1two words"),
    ],
)
def test_a_word_expands_as_docker_expands_it(text: str, expected: str) -> None:
    assert expand(text, VARIABLES) == expected


def test_words_split_at_blanks_an_expansion_brings_but_not_inside_quotes() -> None:
    assert expand_words('$B "$B" x', VARIABLES) == ["two", "words", "two words", "x"]
    assert expand_words('"" a', VARIABLES) == ["", "a"]


def test_a_required_variable_that_is_unset_fails_with_its_message() -> None:
    with pytest.raises(BuildError, match="UNSET: give it"):
        expand("${UNSET:?give it}", VARIABLES)
    with pytest.raises(BuildError, match="unterminated"):
        expand('"open', VARIABLES)


def test_assignments_split_at_unquoted_blanks_keeping_quotes_for_expansion() -> None:
    assert split_assignments("A=1 B=\"two words\" C=x\\ y D='q r'") == ["A=1", 'B="two words"', "C=x\\ y", "D='q r'"]
