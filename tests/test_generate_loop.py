"""The generation state machine (apprentice.generate.loop), fed answers directly: the request plan and the data do
not depend on the order answers arrive in; the window, the request cap and the target hold."""

import random

import pytest
from sample_tasks import SEED_INSTRUCTIONS

from apprentice.generate.filters import FilterConfig
from apprentice.generate.loop import ALPACA, SELF_INSTRUCT, Generation, Plan
from apprentice.generate.seeds import Instance, SeedTask
from apprentice.models.base import Completion

SEEDS = [SeedTask(f"s{i}", f"s{i}", text, [Instance("", f"answer {i}")], "Classify" in text)
         for i, text in enumerate(SEED_INSTRUCTIONS)]
WORDS = "amber basil cedar delta ember fjord garnet harbor indigo juniper kettle lantern meadow nectar".split()


def answer(request) -> Completion:
    """A teacher that is a function of the prompt: new instructions (some too short), examples (some unparseable)."""
    prompt = request.messages[-1]["content"] if request.is_chat else request.prompt
    rng = random.Random(prompt)
    if "tasks that people ask" in prompt:  # bootstrap: chat lists "9. ...", completion continues "Task 9:"
        lines = [f"Describe the {' '.join(rng.sample(WORDS, 5))} carefully." for _ in range(8)]
        lines[rng.randrange(8)] = "Hi."
        if request.is_chat:
            return Completion("\n".join(f"{n}. {line}" for n, line in enumerate(lines, start=9)), "stop", 10, 20)
        return Completion(" " + "\n".join(f"Task {n}: {line}" for n, line in enumerate(lines, start=9))[8:],
                          "stop", 10, 20)
    if "List of 20 tasks" in prompt:
        items = [f"{n}. Instruction: Describe the {' '.join(rng.sample(WORDS, 5))}.\n{n}. Input:\n<noinput>\n"
                 f"{n}. Output:\nIt is {rng.choice(WORDS)}." for n in range(4, 8)]
        return Completion(" " + "\n###\n".join(items)[len("4. Instruction: "):], "stop", 10, 20)
    if rng.random() < 0.25:
        return Completion("no idea", "stop", 10, 2)
    return Completion(f"Input: <noinput>\nOutput: {' '.join(rng.choices(WORDS, k=8))}.", "stop", 10, 12)


def drive(state: Generation, order: str, seed: int = 0) -> tuple[list, list, int]:
    """Run `state` to the end, answering the jobs in flight in the given order; returns kept, rejected, requests."""
    rng = random.Random(seed)
    kept, rejected, in_flight = [], [], []
    in_flight.extend(state.new_jobs())
    while not state.finished:
        assert in_flight, "a running state must always have requests in flight"
        if order == "fifo":
            job = in_flight.pop(0)
        elif order == "lifo":
            job = in_flight.pop()
        else:
            job = in_flight.pop(rng.randrange(len(in_flight)))
        for outcome in state.receive(job.id, answer(job.request)):
            kept += outcome.kept
            rejected += outcome.rejected
        in_flight.extend(state.new_jobs())
        assert state.in_flight <= state.plan.window + state.plan.bootstrap_new  # the last bootstrap may overshoot
    return kept, rejected, state.created


def make(strategy=SELF_INSTRUCT, num=20, max_requests=500, window=30, chat=True, **kwargs) -> Generation:
    plan = Plan(strategy=strategy, chat=chat, seed=3, num=num, max_requests=max_requests, window=window)
    return Generation(plan, SEEDS, FilterConfig(), teacher="t", **kwargs)


@pytest.mark.parametrize("strategy, chat", [(SELF_INSTRUCT, True), (SELF_INSTRUCT, False), (ALPACA, False)])
def test_the_data_does_not_depend_on_the_order_answers_arrive_in(strategy, chat):
    results = [drive(make(strategy, chat=chat), order, seed) for order, seed in
               [("fifo", 0), ("lifo", 0), ("random", 1), ("random", 2)]]
    kept, rejected, _ = results[0]
    assert len(kept) == 20 and len({r["instruction"] for r in kept}) == 20
    assert {r["reason"] for r in rejected} >= ({"too_short", "unparseable"} if strategy == SELF_INSTRUCT else set())
    for other in results[1:]:
        assert other[0] == kept and other[1] == rejected


def test_the_seed_changes_the_plan():
    first = drive(make(), "fifo")[0]
    plan = Plan(strategy=SELF_INSTRUCT, chat=True, seed=4, num=20, max_requests=500, window=6)
    assert drive(Generation(plan, SEEDS, FilterConfig()), "fifo")[0] != first


def test_bootstrap_prompts_show_six_seeds_and_two_kept_instructions_once_there_are_two():
    state = make(num=30)
    jobs, kept = [], []
    in_flight = state.new_jobs()
    jobs += in_flight
    while not state.finished:
        job = in_flight.pop(0)
        for outcome in state.receive(job.id, answer(job.request)):
            kept += [r["instruction"] for r in outcome.kept]
        new = state.new_jobs()
        for bootstrap in (j for j in new if j.kind == "bootstrap"):
            prompt = bootstrap.request.messages[0]["content"]
            shown_kept = sum(instruction in prompt for instruction in kept)
            assert (len(bootstrap.seed_ids), shown_kept) == ((6, 2) if len(kept) >= 2 else (8, 0))
            assert (bootstrap.request.temperature, bootstrap.request.top_p) == (0.7, 0.5)
            assert bootstrap.request.presence_penalty == 2.0
        jobs += new
        in_flight += new
    assert sum(j.kind == "bootstrap" and len(j.seed_ids) == 6 for j in jobs) >= 2


def test_a_teacher_whose_answers_are_all_rejected_stops_at_the_request_cap():
    state = make(num=5, max_requests=9)
    in_flight = state.new_jobs()
    while not state.finished:
        job = in_flight.pop(0)
        state.receive(job.id, Completion("nothing useful", "stop"))
        in_flight += state.new_jobs()
    assert state.capped and not state.done and state.created == 9 and state.kept == []


def test_near_the_target_no_surplus_prompts_are_planned():
    state = make(num=1, window=50)
    jobs = state.new_jobs()
    assert [job.kind for job in jobs] == ["bootstrap"]  # one prompt may give the one record asked for


def test_preloaded_instructions_count_and_are_not_repeated():
    kept, _, _ = drive(make(num=6), "fifo")
    preloaded = [r["instruction"] for r in kept]
    state = make(num=10, preloaded=preloaded, salt="segment-6")
    more, _, _ = drive(state, "fifo")
    assert len(more) == 4 and not {r["instruction"] for r in more} & set(preloaded)


# ---- teacher outputs: every record's output is the teacher's answer to its instruction -----------------------------

def teacher_answer(request) -> Completion:
    """`answer` for the generating prompts; an answer job (the record's instruction, asked as a user would) gets a
    reply that names the instruction, or an empty one (rejected) when it mentions amber."""
    prompt = request.messages[-1]["content"] if request.is_chat else request.prompt
    if "tasks that people ask" in prompt or "List of 20 tasks" in prompt or "Task:" in prompt:
        return answer(request)
    if "amber" in prompt:
        return Completion("   ", "stop", 10, 0)
    return Completion(f"Answer: {prompt.splitlines()[0]}", "stop", 10, 5)


def drive_teacher(state: Generation, order: str, seed: int = 0) -> tuple[list, list, list]:
    rng = random.Random(seed)
    kept, rejected, jobs = [], [], []
    in_flight = state.new_jobs()
    jobs += in_flight
    while not state.finished:
        job = in_flight.pop(0 if order == "fifo" else rng.randrange(len(in_flight)))
        for outcome in state.receive(job.id, teacher_answer(job.request)):
            kept += outcome.kept
            rejected += outcome.rejected
        new = state.new_jobs()
        jobs += new
        in_flight += new
        asked = sum(j.kind == "answer" for j in in_flight)
        assert len(kept) + asked <= state.plan.num  # never more answers asked for than records are missing
    return kept, rejected, jobs


def make_teacher(strategy=SELF_INSTRUCT, chat=True, answer_chat=True, num=12) -> Generation:
    plan = Plan(strategy=strategy, chat=chat, seed=3, num=num, max_requests=500, window=30, outputs="teacher",
                answer_chat=answer_chat, answer_max_tokens=77, answer_temperature=0.0)
    return Generation(plan, SEEDS, FilterConfig(), teacher="t")


@pytest.mark.parametrize("strategy, chat", [(SELF_INSTRUCT, True), (SELF_INSTRUCT, False), (ALPACA, False)])
def test_teacher_outputs_are_the_answers_and_do_not_depend_on_arrival_order(strategy, chat):
    runs = [drive_teacher(make_teacher(strategy, chat), order, seed) for order, seed in
            [("fifo", 0), ("random", 1), ("random", 2)]]
    kept, rejected, jobs = runs[0]
    assert len(kept) == 12 and all(r["output_from"] == "teacher" for r in kept)
    for other in runs[1:]:
        assert other[0] == kept and other[1] == rejected
    answers = {j.id: j for j in jobs if j.kind == "answer"}
    for record in kept:
        job = answers[record["job"]]
        message = record["instruction"] + (f"\n\n{record['input']}" if record["input"] else "")
        assert job.request.messages == ({"role": "user", "content": message},)  # as `apprentice answer` asks
        assert (job.request.max_tokens, job.request.temperature) == (77, 0.0)
        assert record["output"] == f"Answer: {record['instruction']}"
        assert record["request_id"] == job.request.key() and record["parent_job"] == job.parent
        assert "inline_output" in record
    failed = [r for r in rejected if r["stage"] == "answer"]
    assert failed and {r["reason"] for r in failed} == {"empty_output"}


def test_teacher_outputs_without_a_chat_template_use_the_alpaca_template():
    from apprentice.train.templates import ALPACA_TEMPLATE

    kept, _, jobs = drive_teacher(make_teacher(answer_chat=False), "fifo")
    answers = {j.id: j for j in jobs if j.kind == "answer"}
    for record in kept:
        request = answers[record["job"]].request
        assert request.prompt == ALPACA_TEMPLATE.render_prompt(record["instruction"], record["input"])


def test_a_cut_answer_is_rejected_and_a_waiting_candidate_is_asked_instead():
    state = make_teacher(num=1)
    [bootstrap] = state.new_jobs()
    state.receive(bootstrap.id, answer(bootstrap.request))
    instances = state.new_jobs()
    assert {j.kind for j in instances} == {"instance"} and len(instances) >= 3
    asked = []
    for job in instances:
        state.receive(job.id, Completion("Input: <noinput>\nOutput: fine.", "stop"))
        asked += [j for j in state.new_jobs() if j.kind == "answer"]
    assert len(asked) == 1  # one record is missing: one answer asked for, the other candidates wait
    [outcome] = state.receive(asked[0].id, Completion("A long answer that was cut", "length"))
    assert [(r["reason"], r["stage"]) for r in outcome.rejected] == [("truncated", "answer")]
    [second] = [j for j in state.new_jobs() if j.kind == "answer"]
    assert second.instruction != asked[0].instruction
    [outcome] = state.receive(second.id, Completion("A good answer.", "stop"))
    assert state.done and outcome.kept[0]["output"] == "A good answer."
