"""Instructions the generate tests use as seed tasks (written for these tests), and a seed file made of them."""

import json
from pathlib import Path

SEED_INSTRUCTIONS = [
    "Give three tips for keeping a houseplant alive.",
    "Translate the sentence into Spanish.",
    "Classify the sentiment of the review as positive or negative.",
    "Write a limerick about a forgetful cat.",
    "Explain what a prime number is to a child.",
    "Suggest a name for a bakery that sells only bread.",
    "Convert the temperature from Celsius to Fahrenheit.",
    "Summarize the paragraph in one sentence.",
    "Name the largest planet in the solar system.",
]


def write_seed_file(path: Path, instructions: list[str]) -> Path:
    """A Self-Instruct seed file of `instructions`: every other one with an input, the classifications marked."""
    lines = [json.dumps({"id": f"s{i}", "name": f"seed_{i}", "instruction": text,
                         "instances": [{"input": "" if i % 2 else "some input", "output": f"answer {i}"}],
                         "is_classification": "Classify" in text})
             for i, text in enumerate(instructions)]
    path.write_text("\n".join(lines) + "\n")
    return path
