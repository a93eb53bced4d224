"""An example user reward for `--reward resources/examples/reward_short_answer.py`.

1 for a response that names the reference answer, minus a little for every word beyond ten: correct and brief wins.
"""


def reward(query: str, response: str, reference: str | None) -> float:
    words = response.split()
    named = reference is not None and reference.casefold() in response.casefold()
    return (1.0 if named else 0.0) - 0.02 * max(0, len(words) - 10)
