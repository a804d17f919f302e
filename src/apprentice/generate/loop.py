"""The generation state machine: which requests to send, and what each answer adds to the data. Pure: no I/O.

A run is a sequence of jobs (one request each), numbered in the order they are created. Answers may arrive in any
order, but they are *committed* strictly in job order, and new jobs are created only at commit points, from the
committed state and `seed`. So the request plan, and with the same answers the final data, do not depend on timing
or concurrency: replaying a run's answers from the response cache rebuilds exactly the same state (which is how
`run.py` resumes).

Jobs by strategy:

* `alpaca`: one job shows 3 seed tasks and parses up to 16 new (instruction, input, output) tasks.
* `self-instruct`: a *bootstrap* job shows 8 instructions (6 seeds + 2 kept ones when there are 2) and parses new
  instructions; each one that passes the instruction filters and is no near duplicate of a seed, a kept or an
  already proposed instruction spawns an *instance* job asking for its input and output.

Where the output comes from (`Plan.outputs`):

* `inline`: the output the generating prompt wrote (Alpaca's one-pass outputs, self-instruct's instance outputs),
  which reproduces Alpaca exactly.
* `teacher`: every candidate that passes the instruction filters and the near-duplicate check is put to the teacher
  again as a user would ask it (an *answer* job: one chat turn with the instruction and its input, or the Alpaca
  template for a teacher without a chat template), and that reply becomes the output; the output filters apply to
  it. The instruction is reserved in the near-duplicate index when its answer job is planned. At most as many
  answers are asked for as records are still missing; the other candidates wait, in order, for a failed answer.
  A clone must learn what the teacher answers when asked, not what a few-shot prompt makes it write.

Every candidate ends as one kept record or one rejection with a stable reason code (the parse failures of
`parse.py`, the filter codes of `filters.py`, `near_duplicate`, `request_cap`).

    state = Generation(plan, seeds, filters)
    jobs = state.new_jobs()            # send these
    outcomes = state.receive(job.id, completion)   # as answers arrive; commits what is ready, in order
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from apprentice.generate.filters import FilterConfig, check_example, check_instruction, normalize_no_input
from apprentice.generate.parse import Failure, Task, parse_alpaca_tasks, parse_instance, parse_instruction_list
from apprentice.generate.prompts import (
    alpaca_prompt,
    bootstrap_prompt,
    instance_prompt,
    looks_like_classification,
)
from apprentice.generate.rouge import RougeLIndex
from apprentice.generate.seeds import SeedTask
from apprentice.generate.parse import TRUNCATED
from apprentice.models.base import FAILED, Completion, Request
from apprentice.evaluate.answer import PromptStyle
from apprentice.train.templates import ALPACA_TEMPLATE

ALPACA = "alpaca"
SELF_INSTRUCT = "self-instruct"
STRATEGIES = (ALPACA, SELF_INSTRUCT)
TEACHER_OUTPUTS, INLINE_OUTPUTS = "teacher", "inline"
OUTPUT_SOURCES = (TEACHER_OUTPUTS, INLINE_OUTPUTS)

NEAR_DUPLICATE = "near_duplicate"
REQUEST_CAP = "request_cap"
REQUEST_FAILED = "request_failed"

# Example tasks in an instance prompt are drawn from seeds at most this long (instruction + input + output), when
# there are enough of them: long demonstrations crowd a small teacher's context.
_SHORT_EXAMPLE_CHARS = 500


@dataclass(frozen=True)
class Plan:
    """What decides the requests; saved with the run so that a resumed run plans exactly the same requests."""

    strategy: str  # ALPACA or SELF_INSTRUCT
    chat: bool  # chat teacher (messages) or completion teacher (prompt)
    seed: int  # seeds every random choice and is sent with every request
    num: int  # records to keep
    max_requests: int  # requests to create at most, whatever happens (a garbage teacher cannot loop forever)
    window: int  # requests created ahead of the oldest one not yet committed
    threshold: float = 0.7  # ROUGE-L F above this against a seed or kept instruction: near duplicate
    alpaca_examples: int = 3  # seed tasks shown in an Alpaca prompt
    alpaca_limit: int = 16  # new tasks taken from one Alpaca answer
    alpaca_max_tokens: int = 3072
    bootstrap_seeds: int = 6  # seed instructions shown in a bootstrap prompt...
    bootstrap_kept: int = 2  # ... plus this many kept ones, once there are that many
    bootstrap_new: int = 8  # new instructions asked for (and taken) per bootstrap prompt
    bootstrap_max_tokens: int = 320  # 8 one-line instructions; more only lets a small teacher ramble
    instance_examples: int = 2  # worked seed examples shown in an instance prompt
    instance_max_tokens: int = 300  # Self-Instruct's limit: an input and an output of about 100 words fit
    outputs: str = INLINE_OUTPUTS  # TEACHER_OUTPUTS: each record's output is the teacher's answer to it
    answer_chat: bool = True  # answer jobs as one chat turn; False: the Alpaca template as a prompt to continue
    answer_max_tokens: int = 512
    answer_temperature: float = 0.0  # 0 = greedy, as `apprentice answer` asks the evaluation prompts


@dataclass(frozen=True)
class Job:
    id: int
    kind: str  # "alpaca" | "bootstrap" | "instance" | "answer"
    request: Request
    seed_ids: tuple[str, ...]  # seed tasks shown in the prompt (instance jobs: those of the bootstrap prompt)
    instruction: str = ""  # instance jobs: the instruction to complete
    classification: bool = False
    parent: int | None = None  # instance jobs: the bootstrap job that proposed the instruction
    example_ids: tuple[str, ...] = ()  # instance jobs: seed tasks shown as worked examples
    first_number: int = 0  # the list number the teacher's answer starts at
    input: str = ""  # answer jobs: the input that goes with the instruction
    inline_output: str = ""  # answer jobs: the output the generating prompt wrote, kept for the record
    similar: tuple[str, float] = ("", 0.0)  # answer jobs: the nearest seed or kept instruction and its ROUGE-L F


@dataclass
class Outcome:
    """What committing one answer produced, in order."""

    job: Job
    completion: Completion
    kept: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)


class Generation:
    """The committed state of a run and the jobs in flight."""

    def __init__(self, plan: Plan, seeds: Sequence[SeedTask], filters: FilterConfig, teacher: str = "",
                 preloaded: Sequence[str] = (), salt: str = ""):
        """`preloaded`: instructions kept before (a run continued from its data.jsonl), with `salt` so that its
        plan does not repeat the first one's requests."""
        if plan.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {plan.strategy!r}")
        self.plan = plan
        self.seeds = list(seeds)
        self.filters = filters
        self.teacher = teacher
        self.salt = salt
        self.kept: list[str] = []  # kept instructions, in order
        # seeds + kept instructions (the near-duplicate reference for kept records) and, for self-instruct, seeds +
        # every instruction ever proposed (so no two instance jobs ask for near-duplicate instructions)
        self.index = RougeLIndex(plan.threshold)
        self.proposed = RougeLIndex(plan.threshold)
        self.index_texts: list[str] = []
        self.proposed_texts: list[str] = []
        for task in self.seeds:
            self._add(self.index, self.index_texts, task.instruction)
            self._add(self.proposed, self.proposed_texts, task.instruction)
        self.preloaded = len(preloaded)
        for instruction in preloaded:
            self._add(self.index, self.index_texts, instruction)
            self._add(self.proposed, self.proposed_texts, instruction)
            self.kept.append(instruction)
        self.created = 0  # jobs created (= requests planned)
        self.committed = 0  # jobs committed; the next to commit has this id
        self.generators_committed = 0
        self._uncommitted: dict[int, Job] = {}
        self._answers: dict[int, Completion] = {}
        self._unsent: list[Job] = []
        self._examples = _example_pools(self.seeds)
        # teacher outputs: candidates accepted but not yet asked, (generating job, task), in the order they came
        self._waiting_answers: list[tuple[Job, Task, tuple[str, float]]] = []

    # ---- status -------------------------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return len(self.kept) >= self.plan.num

    @property
    def capped(self) -> bool:
        """No more requests may be created and every created one is committed, short of the target."""
        return not self.done and self.created >= self.plan.max_requests and not self._uncommitted

    @property
    def finished(self) -> bool:
        return self.done or self.capped

    @property
    def in_flight(self) -> int:
        return len(self._uncommitted)

    # ---- planning -----------------------------------------------------------------------------------------------

    def new_jobs(self) -> list[Job]:
        """Jobs created since the last call: the first prompts, then what each commit planned."""
        if self.created == 0:
            self._plan_generators()
        jobs, self._unsent = self._unsent, []
        return jobs

    def _plan_generators(self) -> None:
        # Called at start and after every single commit, never at a time set by when answers arrive.
        while not self.finished and self._wants_generator():
            self._create_generator()

    def _wants_generator(self) -> bool:
        # jobs (and waiting candidates) that may each give one record; an instance job's answer job replaces it
        one_record = sum(1 for job in self._uncommitted.values() if job.kind in ("instance", "answer"))
        generators = len(self._uncommitted) - one_record
        instances = one_record + len(self._waiting_answers)
        # the window counts requests planned: a bootstrap job will bring its instance jobs along (and with teacher
        # outputs, an answer job per record)
        spawn = self.plan.bootstrap_new if self.plan.strategy == SELF_INSTRUCT else 0
        if self.teacher_outputs:
            spawn = 2 * spawn if spawn else self.plan.alpaca_limit
        if self.created >= self.plan.max_requests or instances + generators * (1 + spawn) >= self.plan.window:
            return False
        # Near the target, stop creating prompts whose records would likely be surplus: an instance job may give one
        # record, a prompt as many as prompts have given so far on average (before any has: half what it may give).
        if self.generators_committed:
            per_generator = max(1.0, (len(self.kept) - self.preloaded) / self.generators_committed)
        else:
            per_generator = (self.plan.bootstrap_new if spawn else self.plan.alpaca_limit) / 2
        return len(self.kept) + instances + generators * per_generator < self.plan.num

    @property
    def teacher_outputs(self) -> bool:
        return self.plan.outputs == TEACHER_OUTPUTS

    def _rng(self, job_id: int) -> random.Random:
        return random.Random(f"{self.plan.seed}/{self.salt}/{job_id}")

    def _new_job(self, **fields) -> Job:
        job = Job(id=self.created, **fields)
        self.created += 1
        self._uncommitted[job.id] = job
        self._unsent.append(job)
        return job

    def _request(self, text: str, max_tokens: int, temperature: float, top_p: float, stop: tuple[str, ...],
                 presence_penalty: float = 0.0) -> Request:
        content = {"messages": ({"role": "user", "content": text},)} if self.plan.chat else {"prompt": text}
        return Request(**content, max_tokens=max_tokens, temperature=temperature, top_p=top_p, stop=stop,
                       seed=self.plan.seed, presence_penalty=presence_penalty)

    def _create_generator(self) -> None:
        rng = self._rng(self.created)
        if self.plan.strategy == ALPACA:
            shown = rng.sample(self.seeds, min(self.plan.alpaca_examples, len(self.seeds)))
            text = alpaca_prompt([(t.instruction, t.instances[0].input, t.instances[0].output) for t in shown])
            # the Alpaca settings: sample freely, stop before task 20
            request = self._request(text, self.plan.alpaca_max_tokens, 1.0, 1.0, ("\n20", "20."))
            self._new_job(kind="alpaca", request=request, seed_ids=tuple(t.id for t in shown),
                          first_number=len(shown) + 1)
            return
        kept_count = min(self.plan.bootstrap_kept, len(self.kept))
        seed_count = min(self.plan.bootstrap_seeds + self.plan.bootstrap_kept - kept_count, len(self.seeds))
        seeds = rng.sample(self.seeds, seed_count)
        kept = rng.sample(self.kept, kept_count)
        shown = [t.instruction for t in seeds] + kept
        rng.shuffle(shown)
        first = len(shown) + 1
        text = bootstrap_prompt(shown, self.plan.bootstrap_new, self.plan.chat)
        last = first + self.plan.bootstrap_new
        stop = (f"\n{last}.",) if self.plan.chat else ("\n\n", f"Task {last}:")
        # Self-Instruct's settings: moderate temperature, a narrow nucleus, a strong push away from repeats
        request = self._request(text, self.plan.bootstrap_max_tokens, 0.7, 0.5, stop, presence_penalty=2.0)
        self._new_job(kind="bootstrap", request=request, seed_ids=tuple(t.id for t in seeds), first_number=first)

    def _create_instance(self, parent: Job, instruction: str) -> None:
        rng = self._rng(self.created)
        classification = looks_like_classification(instruction)
        pool = self._examples[classification]
        shown = rng.sample(pool, min(self.plan.instance_examples, len(pool)))
        examples = [(t.instruction, t.instances[0].input, t.instances[0].output) for t in shown]
        text = instance_prompt(instruction, examples, classification, self.plan.chat)
        # greedy: the example should be the teacher's best answer, not a sample. With teacher outputs the inline
        # output is not used: stop where it (or, after a class label, a repeated one) would begin, so no one pays
        # for it and a small teacher's "Output: x\n\nOutput: x ..." loops end at once
        stop = ("\nTask:", "\nOutput:") if self.teacher_outputs else ("\nTask:",)
        request = self._request(text, self.plan.instance_max_tokens, 0.0, 1.0, stop)
        self._new_job(kind="instance", request=request, seed_ids=parent.seed_ids, instruction=instruction,
                      classification=classification, parent=parent.id, example_ids=tuple(t.id for t in shown))

    def _create_answer(self, parent: Job, task: Task, similar: tuple[str, float]) -> None:
        """Ask the teacher the candidate's instruction as a user would: the reply becomes the record's output."""
        style = PromptStyle(chat=True) if self.plan.answer_chat else PromptStyle(chat=False, template=ALPACA_TEMPLATE)
        request = style.request(task.instruction, task.input, self.plan.answer_max_tokens,
                                self.plan.answer_temperature, seed=self.plan.seed)
        self._new_job(kind="answer", request=request, seed_ids=parent.seed_ids, instruction=task.instruction,
                      parent=parent.id, example_ids=parent.example_ids, input=task.input,
                      inline_output=task.output, similar=similar)

    def _answers_wanted(self) -> bool:
        asked = sum(1 for job in self._uncommitted.values() if job.kind == "answer")
        return len(self.kept) + asked < self.plan.num

    def _ask_waiting(self) -> None:
        """Plan answer jobs for waiting candidates while records are still missing (after a failed answer)."""
        while self._waiting_answers and self._answers_wanted() and self.created < self.plan.max_requests:
            self._create_answer(*self._waiting_answers.pop(0))

    # ---- committing ---------------------------------------------------------------------------------------------

    def receive(self, job_id: int, completion: Completion) -> list[Outcome]:
        """Take one answer; commit it and any answers after it that were waiting, in job order."""
        if job_id in self._uncommitted:
            self._answers[job_id] = completion
        outcomes = []
        while not self.finished and self.committed in self._answers:
            job = self._uncommitted.pop(self.committed)
            outcomes.append(self._commit(job, self._answers.pop(self.committed)))
            self.committed += 1
            self._ask_waiting()
            self._plan_generators()
        if self.finished:  # answers still in flight add nothing: the run ends here, whenever they arrive
            self._uncommitted.clear()
            self._answers.clear()
            self._unsent.clear()
            self._waiting_answers.clear()
        return outcomes

    def _commit(self, job: Job, completion: Completion) -> Outcome:
        outcome = Outcome(job, completion)
        if completion.finish_reason == FAILED:  # what it would have proposed (or answered) is lost, not guessed
            self._reject(outcome, REQUEST_FAILED, "request", input_text=job.input,
                         raw=str(completion.raw.get("error", "")))
            if job.kind in ("alpaca", "bootstrap"):
                self.generators_committed += 1
            return outcome
        if job.kind == "alpaca":
            items = parse_alpaca_tasks(completion.text, job.first_number, completion.finish_reason,
                                       self.plan.alpaca_limit)
            for item in items:
                if self.done:
                    break
                if isinstance(item, Failure):
                    self._reject(outcome, item.reason, "response", raw=item.text)
                else:
                    self._consider_task(outcome, item)
            self.generators_committed += 1
        elif job.kind == "bootstrap":
            items = parse_instruction_list(completion.text, job.first_number, completion.finish_reason,
                                           continued=not self.plan.chat, limit=self.plan.bootstrap_new)
            for item in items:
                if isinstance(item, Failure):
                    self._reject(outcome, item.reason, "response", raw=item.text)
                else:
                    self._consider_instruction(outcome, item)
            self.generators_committed += 1
        elif job.kind == "instance":
            parsed = parse_instance(completion.text, job.classification, completion.finish_reason,
                                    continued=not self.plan.chat, needs_output=not self.teacher_outputs)
            if isinstance(parsed, Failure):
                self._reject(outcome, parsed.reason, "example", instruction=job.instruction, raw=parsed.text)
            else:
                self._consider_task(outcome, Task(job.instruction, parsed[0], parsed[1]), checked_instruction=True)
        else:
            self._commit_answer(outcome)
        return outcome

    def _commit_answer(self, outcome: Outcome) -> None:
        job, completion = outcome.job, outcome.completion
        output = completion.text.strip()
        reason = TRUNCATED if completion.finish_reason == "length" else check_example(
            job.instruction, job.input, output, self.filters)
        if reason:
            self._reject(outcome, reason, "answer", instruction=job.instruction, input_text=job.input,
                         output=output, raw=completion.text)
            return
        self._keep(outcome, Task(job.instruction, job.input, output), job.similar)

    def _consider_instruction(self, outcome: Outcome, instruction: str) -> None:
        reason = check_instruction(instruction, self.filters)
        if reason:
            self._reject(outcome, reason, "instruction", instruction=instruction)
            return
        match = self.proposed.query(instruction)
        if match.score > self.plan.threshold:
            self._reject(outcome, NEAR_DUPLICATE, "instruction", instruction=instruction,
                         similar=(self.proposed_texts[match.index], match.score))
            return
        if self.created >= self.plan.max_requests:
            self._reject(outcome, REQUEST_CAP, "instruction", instruction=instruction)
            return
        self._add(self.proposed, self.proposed_texts, instruction)
        self._create_instance(outcome.job, instruction)

    def _consider_task(self, outcome: Outcome, task: Task, checked_instruction: bool = False) -> None:
        instruction, input_text, output = task.instruction, normalize_no_input(task.input), task.output
        reason = None if checked_instruction else check_instruction(instruction, self.filters)
        stage = "instruction"
        if reason is None and not self.teacher_outputs:  # a teacher answer is checked when it arrives
            reason, stage = check_example(instruction, input_text, output, self.filters), "example"
        if reason:
            self._reject(outcome, reason, stage, instruction=instruction, input_text=input_text, output=output)
            return
        match = self.index.query(instruction)
        similar = (self.index_texts[match.index], match.score) if match.index is not None else ("", 0.0)
        if match.score > self.plan.threshold:
            self._reject(outcome, NEAR_DUPLICATE, "instruction", instruction=instruction, input_text=input_text,
                         output=output, similar=similar)
            return
        self._add(self.index, self.index_texts, instruction)
        task = Task(instruction, input_text, output)
        if not self.teacher_outputs:
            self._keep(outcome, task, similar)
            return
        if self.created >= self.plan.max_requests:
            self._reject(outcome, REQUEST_CAP, "instruction", instruction=instruction, input_text=input_text)
            return
        if self._answers_wanted():
            self._create_answer(outcome.job, task, similar)
        else:
            self._waiting_answers.append((outcome.job, task, similar))

    def _keep(self, outcome: Outcome, task: Task, similar: tuple[str, float]) -> None:
        self.kept.append(task.instruction)
        job = outcome.job
        record = {
            "instruction": task.instruction, "input": task.input, "output": task.output,
            "output_from": self.plan.outputs,
            "teacher": self.teacher, "strategy": self.plan.strategy, "seed_ids": list(job.seed_ids),
            "example_ids": list(job.example_ids), "job": job.id, "parent_job": job.parent,
            "request_id": job.request.key(), "most_similar": similar[0], "most_similar_score": similar[1],
        }
        if job.kind == "answer":
            record["inline_output"] = job.inline_output
        outcome.kept.append(record)

    def _reject(self, outcome: Outcome, reason: str, stage: str, *, instruction: str = "", input_text: str = "",
                output: str = "", raw: str = "", similar: tuple[str, float] | None = None) -> None:
        job = outcome.job
        record = {"reason": reason, "stage": stage, "instruction": instruction or job.instruction, "input": input_text,
                  "output": output, "raw": raw, "job": job.id, "request_id": job.request.key()}
        if similar is not None:
            record["most_similar"], record["most_similar_score"] = similar
        outcome.rejected.append(record)

    @staticmethod
    def _add(index: RougeLIndex, texts: list[str], instruction: str) -> None:
        index.add(instruction)
        texts.append(instruction)


def _example_pools(seeds: Sequence[SeedTask]) -> dict[bool, list[SeedTask]]:
    """Seeds to show as worked examples in instance prompts: classification ones for classification prompts."""
    def short(tasks: list[SeedTask]) -> list[SeedTask]:
        fits = [t for t in tasks if len(t.instruction) + len(t.instances[0].input) + len(t.instances[0].output)
                <= _SHORT_EXAMPLE_CHARS]
        return fits if len(fits) >= 4 else tasks

    ordinary = [t for t in seeds if not t.is_classification] or list(seeds)
    classifying = [t for t in seeds if t.is_classification] or list(seeds)
    return {False: short(ordinary), True: short(classifying)}
