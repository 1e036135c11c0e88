"""COPY's wildcards and .dockerignore, as docker matches them."""

from asupermachine.build.patterns import IgnoreRules, match_names, pattern_regex


def test_wildcards_stop_at_slashes_and_classes_negate_with_either_mark() -> None:
    assert pattern_regex("*.txt").match("a.txt") and not pattern_regex("*.txt").match("d/a.txt")
    assert pattern_regex("file?").match("file1") and not pattern_regex("file?").match("file/")
    assert pattern_regex("[^a]x").match("bx") and not pattern_regex("[!a]x").match("ax")
    assert match_names("*.py", ["a.py", "b.txt", "c.py"]) == ["a.py", "c.py"]


def test_dockerignore_takes_the_last_matching_rule_and_covers_directories_below() -> None:
    rules = IgnoreRules.parse("# comment\n*.log\n!keep.log\nbuild/\n**/cache\n/abs/*.tmp\n")
    assert rules.ignores("debug.log") and not rules.ignores("keep.log")
    assert rules.ignores("build") and rules.ignores("build/out/x.o")
    assert rules.ignores("cache") and rules.ignores("deep/down/cache/file")
    assert rules.ignores("abs/x.tmp") and not rules.ignores("other/x.tmp")
    assert not rules.ignores("src/main.py")
