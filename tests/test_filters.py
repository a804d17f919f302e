"""Filters: one table of bad records per reason code, and the real seed tasks and user-oriented instructions pass."""

from __future__ import annotations

import json

import pytest

from apprentice.generate.filters import FilterConfig, check_example, check_instruction, normalize_no_input

CONFIG = FilterConfig()
GOOD_INSTRUCTION = "Give three tips for staying healthy."


@pytest.mark.parametrize("instruction,reason", [
    ("", "too_short"),
    ("Explain quantum physics.", "too_short"),
    (" ".join(["word"] * 151), "too_long"),
    ("Describe the image of a sunset over the sea.", "blacklisted_word"),
    ("Plot the population of France since 1900.", "blacklisted_word"),
    ("Tell me how to go to the station from here.", "blacklisted_word"),
    ("Summarise the attached FILES in one paragraph.", "blacklisted_word"),
    ("Write a program that sorts a list of numbers.", "write_a_program"),
    ("write a program to reverse a string in Python", "write_a_program"),
    ('"Explain why the sky is blue in simple words."', "starts_with_punctuation"),
    ("- List five fruits that are rich in vitamin C.", "starts_with_punctuation"),
    ("¿Cómo se dice hello en francés, por favor?", "starts_non_ascii"),
    ("Écris une phrase sur le printemps en français.", "starts_non_ascii"),
    (GOOD_INSTRUCTION, None),
    ("Explain the difference between a file system and a database.", "blacklisted_word"),
    ("Describe a mapping between two sets of numbers.", None),  # "mapping" is not the word "map"
    ("   Give four examples of renewable energy sources.  ", None),
    (" ".join(["word"] * 150), None),
])
def test_check_instruction(instruction, reason):
    assert check_instruction(instruction, CONFIG) == reason


LOOP = "The cat sat on the mat and looked at the door. " * 12
TEMPLATE_LOOP = " ".join(f"The tone could also be seen as {w} as the writer asks for help." for w in [
    "worried", "curious", "formal", "sad", "assertive", "confident", "concerned", "calm", "tense", "warm", "cold",
    "kind",
])


@pytest.mark.parametrize("instruction,input,output,reason", [
    (GOOD_INSTRUCTION, "", "", "empty_output"),
    (GOOD_INSTRUCTION, "", "  \n\t", "empty_output"),
    (GOOD_INSTRUCTION, "", "N/A", "na_output"),
    (GOOD_INSTRUCTION, "", "<no output>", "na_output"),
    (GOOD_INSTRUCTION, "", "<nooutput>", "na_output"),
    (GOOD_INSTRUCTION, "", "No output.", "na_output"),
    (GOOD_INSTRUCTION, "", "1. Eat well.\n2. Sleep.\n\n5. Instruction: Name a fruit.", "leaked_marker"),
    (GOOD_INSTRUCTION, "", "Eat well.\nInstruction: Write a haiku about rain.", "leaked_marker"),
    (GOOD_INSTRUCTION, "", "Output: eat vegetables, sleep, exercise.", "leaked_marker"),
    (GOOD_INSTRUCTION, "3. Input: nothing", "Eat vegetables, sleep and move.", "leaked_marker"),
    (GOOD_INSTRUCTION, "", "Eat well.\n\n### Instruction:\nSay hi.", "leaked_marker"),
    ("Summarize the article in the link below.", "", "The article says the economy grew.",
     "references_url_or_attachment"),
    ("Please see the attached document and list its main points.", "", "1. Growth.", "references_url_or_attachment"),
    ("Describe the following website in two sentences.", "", "It sells shoes.", "references_url_or_attachment"),
    ("Summarize this article for a busy reader.", "https://example.com/news/42", "The economy grew by 3%.",
     "references_url_or_attachment"),
    ("Read https://example.com/post and list the author's arguments.", "", "1. Taxes are too high.",
     "references_url_or_attachment"),
    (GOOD_INSTRUCTION, "", "As shown in the attached chart, sleep matters.", "references_url_or_attachment"),
    ("Design a logo for a coffee shop called Bean There.", "", "A brown cup with steam.", "asks_for_media"),
    ("Can you create a short video about recycling habits?", "", "Scene 1: a bin.", "asks_for_media"),
    ("Name an animal that lives in the Arctic ocean.", "", "Here it is: ![polar bear](bear.png)", "asks_for_media"),
    ("Describe your favourite holiday in a few lines.", "", "[Image of a beach] It was sunny.", "asks_for_media"),
    (GOOD_INSTRUCTION, "", LOOP, "repetition_loop"),
    (GOOD_INSTRUCTION, "", "Eat well. " + "ha" * 30, "repetition_loop"),
    (GOOD_INSTRUCTION, "", "\n".join(["Drink more water every day."] * 10), "repetition_loop"),
    (GOOD_INSTRUCTION, "", TEMPLATE_LOOP, "repetition_loop"),
    (GOOD_INSTRUCTION, "the " * 25, "Eat.", "repetition_loop"),
    ("Fix the spelling in this sentence.", "I lik apples.", "I lik apples.", "echoes_input"),
    ("Fix the spelling in this sentence.", "I lik apples.", '  "I lik   apples."  ', "echoes_input"),
    (GOOD_INSTRUCTION, "", "Give three tips for staying healthy.", "echoes_input"),
])
def test_check_example_rejects(instruction, input, output, reason):
    assert check_example(instruction, input, output, CONFIG) == reason


@pytest.mark.parametrize("instruction,input,output", [
    (GOOD_INSTRUCTION, "", "1. Eat a balanced diet.\n2. Exercise regularly.\n3. Get enough sleep."),
    ("Fix the spelling in this sentence.", "I lik apples.", "I like apples."),
    ("Capitalize the sentence properly.", "the cat sat.", "The cat sat."),  # edits are not echoes
    ("Extract the domain name from the URL.", "https://www.example.com/a/b?c=1", "example.com"),
    ("Convert the citation to MLA style.", "Doe, J. (2020). Title. https://doi.org/10.1/x", "Doe, John. Title."),
    ("Summarize the following article in one sentence.", "The council met on Monday and voted to build a park.",
     "The council voted to build a park."),
    ("Write HTML that adds an image to a page.", "", '<img src="cat.png" alt="A cat">'),
    ("Make a table chart of the items I bought.", "", "Item | Price\nShirt | $10"),
    ("Write a short song with a chorus.", "", ("Verse one line here\nChorus: we sing along tonight\n" * 3)),
    ("Print a separator line in Markdown.", "", "Use three dashes: ---\n" + "-" * 60),
    ("Why do people like film photography when phones generate good photos?", "", "The look of grain."),
    ("Is the number 7 prime?", "", "Yes."),
])
def test_check_example_accepts_good_records(instruction, input, output):
    assert check_example(instruction, input, output, CONFIG) is None


def test_echo_rouge_option_catches_near_copies():
    near_copy = ("Rewrite the sentence more formally.", "the meeting is at noon on monday ok",
                 "The meeting is at noon on Monday, ok.")
    assert check_example(*near_copy, CONFIG) is None
    assert check_example(*near_copy, FilterConfig(echo_rouge=0.9)) == "echoes_input"


def test_thresholds_are_options():
    assert check_instruction("Explain quantum physics.", FilterConfig(min_words=3)) is None
    assert check_instruction("Describe the image of a cat.", FilterConfig(blacklist=())) is None
    lines = "\n".join(["Drink more water every day."] * 5)
    assert check_example(GOOD_INSTRUCTION, "", lines, CONFIG) is None
    assert check_example(GOOD_INSTRUCTION, "", lines, FilterConfig(loop_line_repeats=5)) == "repetition_loop"


@pytest.mark.parametrize("text,expected", [
    ("<noinput>", ""), ("<no input>", ""), ("No input", ""), ("No input.", ""), ("N/A", ""), ("n/a", ""),
    ("none", ""), ("None.", ""), ("  ", ""), ("", ""), ("-", ""), ("Null", ""),
    ("None of the above", "None of the above"), ("The input is empty?", "The input is empty?"),
    ("I lik apples.", "I lik apples."),
])
def test_normalize_no_input(text, expected):
    assert normalize_no_input(text) == expected


def test_real_seed_and_user_oriented_records_pass(shared_data):
    """The 175 seed tasks and the 252 user-oriented instructions are human-written, good records: all pass
    check_example. Alpaca's instruction rules are stricter than the humans were: 4 seeds fail them."""
    folder = shared_data / "self_instruct"
    seeds = [json.loads(line) for line in (folder / "seed_tasks.jsonl").read_text().splitlines()]
    users = [json.loads(line) for line in (folder / "user_oriented_instructions.jsonl").read_text().splitlines()]
    failures = [(task["id"], check_example(task["instruction"], instance["input"], instance["output"], CONFIG))
                for task in seeds + users for instance in task["instances"]]
    assert [failure for failure in failures if failure[1]] == []
    assert len(failures) == 175 + 252
    instruction_failures = {task["id"]: check_instruction(task["instruction"], CONFIG) for task in seeds}
    assert {key: value for key, value in instruction_failures.items() if value} == {
        "seed_task_12": "too_short", "seed_task_79": "too_short", "seed_task_139": "write_a_program",
        "seed_task_169": "blacklisted_word",
    }


def test_alpaca_eval_outputs_rejects_are_real_defects(shared_data):
    """Of the 805 text-davinci-003 answers in AlpacaEval, the few rejected are the known machine-data defects."""
    rows = json.loads((shared_data / "alpaca_eval" / "text_davinci_003.model_outputs.json").read_text())
    reasons = [check_example(row["instruction"], "", row["output"], CONFIG) for row in rows]
    rejected = sorted(reason for reason in reasons if reason)
    assert rejected == sorted(["repetition_loop"] * 4 + ["leaked_marker"] * 3 + ["empty_output"] * 2 + ["na_output"])
