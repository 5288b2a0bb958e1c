"""The exercise checker: right, wrong (with the first difference) and not yet, each told
apart, on functions whose answers are known."""

import numpy as np
import pytest

from scoreda import exercises


def square(x):
    return np.asarray(x) ** 2


CASES = [(np.arange(4.0),), (np.linspace(-2, 2, 7),)]


def test_a_right_function_is_right_and_the_message_says_so(capsys):
    verdict = exercises.check(lambda x: x * x, square, CASES, name="mine")
    assert verdict.right and verdict.message.startswith("right: mine agrees")
    assert capsys.readouterr().out.strip() == verdict.message


@pytest.mark.parametrize("candidate, start", [
    (lambda x: x * x * (1 + 1e-3), "wrong: case 1 of 2: largest difference 0.009"),
    (lambda x: x[:-1] ** 2, "wrong: case 1 of 2: shape (3,), expected (4,)"),
    (lambda x: np.where(x > 1, np.nan, x * x), "wrong: case 1 of 2: NaN"),
    (lambda x: 1 / 0, "wrong: f raised ZeroDivisionError"),
    (lambda x: None, "not yet: f returns None"),
])
def test_a_wrong_or_unwritten_function_is_told_apart(candidate, start):
    verdict = exercises.check(candidate, square, CASES, name="f", show=False)
    assert not verdict.right and verdict.message.startswith(start), verdict.message


def test_not_implemented_is_not_yet_and_tuples_are_compared_item_by_item():
    def unwritten(x):
        raise NotImplementedError

    assert exercises.check(unwritten, square, CASES, show=False).message.startswith(
        "not yet: unwritten raises NotImplementedError")
    pair = lambda x: (np.sum(x), np.sum(x**2))
    assert exercises.check(pair, pair, CASES, show=False).right
    off = exercises.check(lambda x: (np.sum(x), np.sum(x**2) + 1), pair, CASES, show=False)
    assert off.message.startswith("wrong: case 1 of 2: item 1: largest difference 1")
    with pytest.raises(ValueError, match="at least one case"):
        exercises.check(pair, pair, [])
