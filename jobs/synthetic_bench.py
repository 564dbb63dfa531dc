"""A synthetic bench of the reference study's shape, for runs where its task file is absent.

The study's bench (``../shared/reference/skillmix``) is 40 skills × 5 eval tasks, query types
YES_NO 122, FREE_FORM 33, SINGLE_WORD 23, RANKING 22, skills in six categories. What a
simulated sweep and the makespan estimate read of a bench is its *shape*: task and skill
counts, the split, and how long each rendered prompt is (the engine counts 4 characters a
token). :func:`write_paper_shaped_bench` writes a native bench (``skills.jsonl``,
``tasks.jsonl``) with those counts and field lengths drawn around the study's means, measured
on its files:

==================  ==============  ====================================
field               study mean      here
==================  ==============  ====================================
passage             431 chars       250-610 chars (uniform), ~61 words
question            72 chars        50-95
skill description   171 chars       130-210
procedure           5.5 steps       5 or 6 steps of 95-160 chars
when_to_use         163 chars       120-200
constraints         4 of 117 chars  4 of 90-145
examples            252 / 236       195-285 each
==================  ==============  ====================================

so the mean prompt comes out near the study's: at seed 0, 206 tokens without a skill block and
756 with the curated one (481 over both conditions), against the study's 202, 745 and 473. The text is pseudo-English from a fixed word list: deterministic for a
seed, meaningless to read, and every task answerable only in form (a deterministic judge
scores it like any other).
"""

from __future__ import annotations

import random
from pathlib import Path

from harness.bench import Bench, QueryType, Skill, Task
from harness.bench.load import load_native, write_native

# The study's catalog (skills.json): skills per category.
STUDY_CATEGORIES = (("rhetorical", 14), ("reasoning", 12), ("logical", 11), ("literary", 1),
                    ("theory of the mind", 1), ("physical knowledge", 1))
# The study's eval split (tasks_eval.json): tasks per query type.
STUDY_QUERY_TYPES = ((QueryType.YES_NO, 122), (QueryType.FREE_FORM, 33), (QueryType.SINGLE_WORD, 23),
                     (QueryType.RANKING, 22))

_WORDS = (
    "argument claim evidence premise conclusion speaker council report budget vendor harbor village teacher "
    "analyst manager witness season market contract ledger figure pattern outcome measure survey factor "
    "record sample choice reason policy review notice signal proposal chapter letter mayor editor engineer "
    "because although therefore however whereas unless before after during against between without across "
    "carefully quickly plainly rarely openly quietly firmly nearly largely mostly partly simply directly "
    "assumes implies suggests reports claims notes argues insists denies admits credits blames compares "
    "answers measures records predicts explains rejects accepts observes follows states cites ignores "
    "the a an this that each every their its her his our some many few most several either neither "
    "is was were has had will would could should might must may can does did seems appears remains "
    "cause effect sequence timeline quarter region account summary pressure shortage surplus safety "
    "garden bridge river factory station library bakery clinic studio museum office island orchard"
).split()


def _text(rng: random.Random, low: int, high: int) -> str:
    """Sentences of pseudo-English, between ``low`` and ``high`` characters (uniform)."""
    target = rng.randint(low, high)
    sentences, length = [], 0
    while length < target:
        words = rng.choices(_WORDS, k=rng.randint(6, 14))
        sentence = " ".join(words).capitalize() + "."
        room = target - length
        if len(sentence) > room + 20:  # trim the last sentence to land near the target
            sentence = sentence[: max(20, room)].rstrip() + "."
        sentences.append(sentence)
        length += len(sentence) + 1
    return " ".join(sentences)


def _spread(total: int, weights: tuple[tuple[object, int], ...]) -> list:
    """``total`` items over the keys of ``weights`` in proportion (largest remainder), in order."""
    whole = sum(w for _, w in weights)
    shares = [(key, total * w / whole) for key, w in weights]
    counts = {key: int(share) for key, share in shares}
    left = total - sum(counts.values())
    for key, _ in sorted(shares, key=lambda s: -(s[1] - int(s[1])))[:left]:
        counts[key] += 1
    return [key for key, _ in weights for _ in range(counts[key])]


def _expected(rng: random.Random, query_type: QueryType) -> tuple[str, str]:
    """(the question's closing words, the expected answer) for a query type."""
    if query_type == QueryType.YES_NO:
        return "Answer yes or no.", rng.choice(("yes", "no"))
    if query_type == QueryType.SINGLE_WORD:
        return "Answer with one word.", rng.choice(("X", "Y", "first", "second", "neither"))
    if query_type == QueryType.RANKING:
        return "Which passage shows it, Alpha or Beta?", rng.choice(("Alpha", "Beta"))
    return "Which pattern is this?", " ".join(rng.choices(_WORDS, k=2))


def paper_shaped_bench(tasks: int = 200, skills: int = 40, seed: int = 0, name: str = "paper-shaped") -> Bench:
    """The bench :func:`write_paper_shaped_bench` writes (validated, not yet on disk)."""
    if skills < 1 or tasks < skills:
        raise ValueError(f"need at least one skill and a task per skill: tasks={tasks}, skills={skills}")
    rng = random.Random(seed)
    categories = _spread(skills, STUDY_CATEGORIES)
    skill_records = []
    for i, category in enumerate(categories):
        name_words = rng.sample(_WORDS[:40], 2)
        skill_records.append(Skill(
            name=f"{name_words[0]}-{name_words[1]}-{i:02d}", category=str(category),
            description=_text(rng, 130, 210),
            procedure=[_text(rng, 95, 160) for _ in range(rng.choice((5, 6)))],
            when_to_use=_text(rng, 120, 200),
            constraints=[_text(rng, 90, 145) for _ in range(4)],
            example_positive=_text(rng, 195, 285), example_negative=_text(rng, 195, 285),
            uid=f"syn-skill-{seed}-{i:02d}"))
    query_types = _spread(tasks, STUDY_QUERY_TYPES)
    rng.shuffle(query_types)
    task_records = []
    for i, query_type in enumerate(query_types):
        skill = skill_records[i % skills]  # 5 tasks a skill at the study's counts
        closing, expected = _expected(rng, query_type)
        task_records.append(Task(
            uid=f"syn-{seed}-{i:04d}", skill=skill.name, query_type=query_type,
            question=f"{_text(rng, 40, 70)[:-1]}? {closing}", passage=_text(rng, 250, 610), expected=expected,
            must_identify=[_text(rng, 30, 70) for _ in range(4)], correct_conclusion=expected, split="eval",
            title=_text(rng, 15, 35)[:-1], difficulty=rng.choice(("intermediate", "advanced"))))
    return Bench(name=name, skills={s.name: s for s in skill_records}, tasks=tuple(task_records))


def write_paper_shaped_bench(folder: Path, tasks: int = 200, skills: int = 40, seed: int = 0) -> Path:
    """Write a native bench of the study's shape into ``folder`` (replacing its two files) and
    check that it loads; the same arguments always write the same bytes. Returns ``folder``."""
    folder = Path(folder)
    write_native(paper_shaped_bench(tasks, skills, seed, name=folder.name), folder)
    load_native(folder)  # the files read back as a bench, cross-record checks included
    return folder
