"""The deterministic extractor, table-driven: rule fired, text extracted, verdict."""

import pytest

from harness.judging.extract import clean, find_answer, judge_deterministic, question_options

YES_NO_CASES = [
    # (response, expected, passed, rule, extracted)
    ("The form is invalid.\nANSWER: yes", "yes", True, "answer-tag", "yes"),
    ("answer: No", "no", True, "answer-tag", "no"),
    ("ANSWER: yes\n...on reflection...\nANSWER: no", "no", True, "answer-tag", "no"),  # last wins
    ("**Answer:** Yes", "yes", True, "answer-tag", "yes"),
    ("**ANSWER: NO.**", "no", True, "answer-tag", "no"),
    ("Final answer: yes", "yes", True, "answer-tag", "yes"),
    ("### Final Answer\n\nNo", "no", True, "answer-next-line", "no"),
    ("ANSWER:\n\nyes", "yes", True, "answer-next-line", "yes"),
    ("ANSWER: yes (because the consequent is affirmed)", "yes", True, "answer-tag", "yes"),
    ("ANSWER: Yes, Mira affirms the consequent.", "yes", True, "answer-tag", "yes"),
    ("ANSWER: \"no\"", "no", True, "answer-tag", "no"),
    ("> Answer - no", "no", True, "answer-tag", "no"),
    ("Step 4 shows the inference runs from Q to P. So my answer: yes.", "yes", True, "answer-tag-inline", "yes"),
    ("After checking each step, the answer is no.", "no", True, "answer-is", "no"),
    ("Step 1: ...\nStep 2: ...\nYes, the argument affirms the consequent.", "yes", True, "last-sentence", "yes"),
    ("The rule is a biconditional. No, this is not affirming the consequent!", "no", True, "last-sentence", "no"),
    ("ANSWER: True", "yes", True, "answer-tag", "yes"),
    ("ANSWER: incorrect", "no", True, "answer-tag", "no"),
    ("ANSWER: I'd say yes", "yes", True, "answer-tag", "yes"),
    ("ANSWER: yes", "no", False, "answer-tag", "yes"),  # a wrong answer is a fail
    ("Yes.", "no", False, "last-sentence", "yes"),
]


@pytest.mark.parametrize("response, expected, passed, rule, extracted", YES_NO_CASES)
@pytest.mark.parametrize("qtype", ["YES_NO", "YES_NO_VERIFICATION"])
def test_yes_no(qtype, response, expected, passed, rule, extracted):
    v = judge_deterministic(qtype, response, expected)
    assert (v.passed, v.rule, v.extracted) == (passed, rule, extracted)
    assert v.score == (1.0 if passed else 0.0) and v.unscored_reason is None


@pytest.mark.parametrize("response, reason", [
    ("ANSWER: yes or no, depending on the reading", "ambiguous"),
    ("ANSWER: yes and no", "ambiguous"),
    ("It could go either way; yes in one sense, no in another.", "ambiguous"),
    ("The passage describes a greenhouse and its sprinklers.", "no yes/no answer found"),
    ("ANSWER: it depends on the rule", "answer is not yes/no"),
])
def test_yes_no_unscored_not_failed(response, reason):
    v = judge_deterministic("YES_NO", response, "yes")
    assert v.passed is None and v.score is None and reason in v.unscored_reason


@pytest.mark.parametrize("response, expected, passed, extracted", [
    ("ANSWER: closet", "closet", True, "closet"),
    ("ANSWER: Closet.", "closet", True, "Closet"),
    ("**Answer:** `sufficient`", "sufficient", True, "sufficient"),
    ("ANSWER: silence, because no one spoke", "silence", True, "silence, because no one spoke"),
    ("ANSWER: about 50", "50", True, "about 50"),
    ("ANSWER: 50 people", "50", True, "50 people"),
    ("ANSWER: straw man", "straw man", True, "straw man"),  # multi-word expected: the study lost these
    ("ANSWER: Straw man fallacy", "straw man", True, "Straw man fallacy"),
    ("Final answer:\nconfirmation bias", "confirmation bias", True, "confirmation bias"),
    ("ANSWER: 21 days", "21 days", True, "21 days"),
    ("ANSWER: shelf", "closet", False, "shelf"),
    ("ANSWER: straw", "straw man", False, "straw"),
])
def test_single_word(response, expected, passed, extracted):
    v = judge_deterministic("SINGLE_WORD", response, expected)
    assert (v.passed, v.extracted) == (passed, extracted)


@pytest.mark.parametrize("response, expected, passed", [
    ("ANSWER: A", "A", True),
    ("ANSWER: b", "B", True),
    ("ANSWER: X", "X", True),  # the study's a/b-only rule lost every X/Y task
    ("ANSWER: Option X", "X", True),
    ("**Answer:** Reply X distorts more.", "X", True),
    ("ANSWER: Mo", "Mo", True),
    ("ANSWER: Dee, Bo, Cy, Ava", "Dee, Bo, Cy, Ava", True),
    ("ANSWER: Dee > Bo > Cy > Ava", "Dee, Bo, Cy, Ava", True),
    ("ANSWER: diary, atlas, novel, and dictionary.", "diary, atlas, novel, dictionary", True),
    ("ANSWER: Bo, Dee, Cy, Ava", "Dee, Bo, Cy, Ava", False),
    ("ANSWER: Y", "X", False),
    ("ANSWER: Beta", "Alpha", False),
])
def test_ranking(response, expected, passed):
    assert judge_deterministic("RANKING", response, expected).passed is passed


def test_ranking_and_single_word_without_answer_are_unscored():
    for qtype in ("RANKING", "SINGLE_WORD"):
        v = judge_deterministic(qtype, "I considered both options carefully.", "A")
        assert v.passed is None and v.unscored_reason == "no answer found"


def test_free_form_is_left_to_the_llm_judge():
    v = judge_deterministic("FREE_FORM", "ANSWER: the claim is wrong", "wrong")
    assert v.passed is None and "LLM judge" in v.unscored_reason


def test_empty_response_is_a_model_failure():
    v = judge_deterministic("YES_NO", "   ", "yes")
    assert v.passed is False and v.rule == "empty-response"


@pytest.mark.parametrize("raw, cleaned", [("**Yes.**", "Yes"), ("'no'!", "no"), ("`X`;", "X"), ("  “A” ", "A")])
def test_clean(raw, cleaned):
    assert clean(raw) == cleaned


def test_find_answer_reports_none():
    assert find_answer("nothing here") == (None, "none")


# Phrase answers to SINGLE_WORD / RANKING: decided only when exactly one option (or the expected
# answer) is named, un-negated; otherwise uncertain. The forms are the ones a 4B model wrote
# where the v1 extractor read a correct answer as wrong.
PHRASE_CASES = [
    # (qtype, question, response, expected, outcome, extracted)
    ("RANKING", "Who commits the sunk-cost fallacy, Ben or Ana?",
     "ANSWER: Ben's reasoning exhibits the sunk-cost fallacy.", "Ben", True, "Ben's reasoning exhibits the sunk-cost fallacy"),
    ("RANKING", "Which study is better controlled, Study 1 or Study 2?", "ANSWER: Study 2", "Study 2", True, "Study 2"),
    ("SINGLE_WORD", "Which study is better controlled? Answer with the number.", "ANSWER: Study 2", "2", True, "Study 2"),
    ("SINGLE_WORD", "What lives in the hollow? Answer with one word.", "ANSWER: A family of squirrels.", "squirrels", True,
     "A family of squirrels"),
    ("SINGLE_WORD", "Name the fallacy in two words.", "ANSWER: Straw-man — Calder misrepresented the claim", "straw man",
     True, "Straw-man — Calder misrepresented the claim"),
    ("SINGLE_WORD", "Is it a 'necessary' or a 'sufficient' condition?", "ANSWER: It is “sufficient” here", "sufficient",
     True, "It is “sufficient” here"),
    ("RANKING", "Which alarm is more likely real, A or B?", "ANSWER: Alarm A is a real fault", "A", True,
     "Alarm A is a real fault"),  # the article 'a' is not option A
    ("RANKING", "Which alarm is more likely real, A or B?", "ANSWER: Alarm B, clearly", "A", False, "Alarm B, clearly"),
    ("SINGLE_WORD", "Name the form: 'ponens', 'tollens', or 'fallacy'.", "ANSWER: modus tollens", "ponens", False,
     "modus tollens"),
    # traps: both options named, a negated option, no candidate at all
    ("RANKING", "Which alarm is more likely real, A or B?", "ANSWER: A rather than B", "A", None, "A rather than B"),
    ("RANKING", "Who commits the fallacy, Ben or Ana?", "ANSWER: Ben and Ana both do", "Ben", None, "Ben and Ana both do"),
    ("RANKING", "Who commits the fallacy, Ben or Ana?", "ANSWER: not Ben, I think", "Ben", None, "not Ben, I think"),
    ("SINGLE_WORD", "Is it a 'necessary' or a 'sufficient' condition?", "ANSWER: it is not sufficient", "sufficient",
     None, "it is not sufficient"),
    ("RANKING", "Which alarm is more likely real, A or B?", "ANSWER: Alarm A is not the real one", "A", None,
     "Alarm A is not the real one"),
    ("SINGLE_WORD", "What lives in the hollow? Answer with one word.", "ANSWER: some small animals", "squirrels", None,
     "some small animals"),
]


@pytest.mark.parametrize("qtype, question, response, expected, outcome, extracted", PHRASE_CASES)
def test_phrase_answers_decided_only_when_one_option_is_named(qtype, question, response, expected, outcome, extracted):
    v = judge_deterministic(qtype, response, expected, question_options(question))
    assert (v.passed, v.extracted) == (outcome, extracted)
    assert v.uncertain is (outcome is None)
    if outcome is None:
        assert v.unscored_reason.startswith("uncertain: the answer names") and v.rule == "answer-tag+phrase"
    else:
        assert v.score == float(outcome) and v.rule in ("answer-tag", "answer-tag+phrase")


@pytest.mark.parametrize("question, options", [
    ("Name the argument form in one word (for example 'ponens', 'tollens', or 'fallacy').", ["ponens", "tollens", "fallacy"]),
    ("In one word, what does the critic do to the scientist's claim: 'exaggerates' or 'summarises'?",
     ["exaggerates", "summarises"]),
    ("Which of Lee, Mo, and Nia will go to the wrong room? Answer with the name.", ["Lee", "Mo", "Nia"]),
    ("Which claim is true, P or Q? Answer with the letter.", ["P", "Q"]),
    ("Which study, Study 1 or Study 2, is better?", ["Study 1", "Study 2"]),
    ("In one word, which quality does 'graveyard' map onto the office?", []),  # one quoted word is not a choice
    ("Which item is furthest to the right? Answer with one word.", []),
])
def test_question_options(question, options):
    assert question_options(question) == options


def test_undecided_extractions_are_uncertain_but_model_faults_are_not():
    assert judge_deterministic("YES_NO", "ANSWER: yes and no", "yes").uncertain
    assert judge_deterministic("SINGLE_WORD", "no tag at all", "closet").uncertain
    assert judge_deterministic("RANKING", "ANSWER: Dee, Bo", "Dee, Bo, Cy, Ava").uncertain
    assert not judge_deterministic("FREE_FORM", "ANSWER: x", "x").uncertain  # not the extractor's call
    decided = judge_deterministic("SINGLE_WORD", "ANSWER: shelf", "closet")
    assert decided.passed is False and not decided.uncertain
