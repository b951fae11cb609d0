"""The demo's task: short made-up facts, as supervised (prompt, completion) pairs.

A fact is a prompt and the completion the model should learn, ending with the end-of-text
token so that greedy sampling stops right after it. The loss is cross-entropy on the
completion only (weights 0 on the prompt).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from tinkex_actors import types
from tinkex_actors.errors import ValidationError
from tinkex_actors.tokenizer import TokenizerHandle

__all__ = ["Fact", "build_datum", "load_facts"]

_FACTS_FILE = "facts.tsv"


@dataclass(frozen=True)
class Fact:
    """A prompt and the completion to learn."""

    prompt: str
    completion: str


def load_facts(path: Path | None = None) -> list[Fact]:
    """Facts from a TSV file (``prompt<TAB>completion``; ``#`` comments), default the shipped one.

    Raises:
        ValidationError: a line without a TAB, an empty prompt or completion, or no facts.
    """
    if path is None:
        text = resources.files("tinkex_actors.demo").joinpath(_FACTS_FILE).read_text("utf-8")
        where = _FACTS_FILE
    else:
        text, where = path.read_text("utf-8"), str(path)
    facts: list[Fact] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        prompt, tab, completion = line.partition("\t")
        if not tab or not prompt.strip() or not completion.strip():
            raise ValidationError(
                f"line {number}: expected 'prompt<TAB>completion', got {line[:60]!r}",
                field=f"facts[{where}]",
            )
        facts.append(Fact(prompt, completion))
    if not facts:
        raise ValidationError(f"no facts in {where}", field="facts")
    return facts


def build_datum(fact: Fact, tokenizer: TokenizerHandle, eos: Sequence[int]) -> types.Datum:
    """The next-token datum of ``prompt + completion + eos``, trained on the completion only."""
    prompt = tokenizer.encode(fact.prompt)
    completion = tokenizer.encode(fact.completion) + list(eos)
    tokens = prompt + completion
    weights = [0.0] * (len(prompt) - 1) + [1.0] * len(completion)
    return types.Datum(
        types.ModelInput.from_ints(tokens[:-1]),
        {"target_tokens": tokens[1:], "weights": weights},
    )
