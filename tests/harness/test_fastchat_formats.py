"""FastChat llm_judge judgments and data directories: reading, writing, layouts, one-line errors."""

from __future__ import annotations

import json

import pytest

from fusion.common.errors import FusevalError
from harness.formats.fastchat import (
    PairJudgment,
    SingleJudgment,
    load_fastchat_dir,
    pair_outcome,
    read_pair_judgments,
    read_single_judgments,
    write_pair_judgments,
    write_single_judgments,
)

MODELS = ("alpaca-13b", "vicuna-7b")
QUESTIONS = [
    {"question_id": 81, "category": "writing", "turns": ["Write a two-line poem about tea.", "Now make it rhyme."]},
    {"question_id": 111, "category": "math", "turns": ["What is 12 * 3?", "And divided by 4?"],
     "reference": ["36", "9"]},
    {"question_id": 131, "category": "extraction", "turns": ["List the verbs in: 'Cats sleep and purr.'"]},
]


def _answer(model: str, q: dict, k: int) -> dict:
    turns = [f"{model} says answer {i + 1} to {q['question_id']}" for i in range(len(q["turns"]))]
    return {"question_id": q["question_id"], "answer_id": f"{model[:3]}{k}x9Qa", "model_id": model,
            "choices": [{"index": 0, "turns": turns}], "tstamp": 1687221000.25 + k}


def _single(qid, model, prompt_name, score, turn, judgment):
    # Key order as FastChat's gen_judgment writes it; "judge" is a JSON list.
    return {"question_id": qid, "model": model, "judge": ["gpt-4", prompt_name],
            "user_prompt": f"[Instruction]\nPlease act as an impartial judge... [Question]\n{qid}",
            "judgment": judgment, "score": score, "turn": turn, "tstamp": 1687300000.5}


def _pair(qid, g1, g2, prompt_name="pair-v2", turn=1):
    return {"question_id": qid, "model_1": MODELS[0], "model_2": MODELS[1], "g1_winner": g1, "g2_winner": g2,
            "judge": ["gpt-4", prompt_name], "g1_user_prompt": "[User Question]\n...", "g1_judgment": "... [[A]]",
            "g2_user_prompt": "[User Question]\n...", "g2_judgment": "... [[B]]", "turn": turn, "tstamp": 1687300100.0}


SINGLE = [
    _single(81, "alpaca-13b", "single-v1", 7, 1, "The poem is pleasant. Rating: [[7]]"),
    _single(81, "vicuna-7b", "single-v1", 8.5, 1, "Vivid and concise. Rating: [[8.5]]"),
    _single(111, "alpaca-13b", "single-math-v1", -1, 1, "The answer is 36, which matches the reference, but"),
    _single(111, "vicuna-7b", "single-math-v1", 10, 1, "Correct. Rating: [[10]]"),
    _single(81, "alpaca-13b", "single-v1-multi-turn", 6, 2, "The rhyme is forced. Rating: [[6]]"),
    _single(131, "vicuna-7b", "single-v1", 5, 1, "Misses 'purr'. Rating: [[5]]"),
]
PAIR = [
    _pair(81, "model_1", "model_1"),
    _pair(111, "model_2", "error", prompt_name="pair-math-v1"),
    _pair(131, "model_1", "model_2"),
    _pair(81, "tie", "tie", prompt_name="pair-v2-multi-turn", turn=2),
]


def _write(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))
    return path


@pytest.fixture
def checkout(tmp_path):
    """A FastChat checkout with a judged bench (mini_bench) and an unjudged one (plain_bench)."""
    data = tmp_path / "FastChat" / "fastchat" / "llm_judge" / "data"
    bench = data / "mini_bench"
    _write(bench / "question.jsonl", QUESTIONS)
    for m in MODELS:
        _write(bench / "model_answer" / f"{m}.jsonl", [_answer(m, q, k) for k, q in enumerate(QUESTIONS)])
    _write(bench / "reference_answer" / "gpt-4.jsonl", [_answer("gpt-4", QUESTIONS[1], 0)])
    _write(bench / "model_judgment" / "gpt-4_single.jsonl", SINGLE)
    _write(bench / "model_judgment" / "gpt-4_pair.jsonl", PAIR)
    _write(bench / "model_judgment" / "gpt-4_single.jsonl.bk", ["not json"])  # ignored: not *.jsonl
    _write(bench / "model_judgment" / "notes.jsonl", ["not json"])  # ignored: neither _single nor _pair
    _write(data / "judge_prompts.jsonl", [{"name": "single-v1", "type": "single"}])  # a file, not a bench
    (data / "mt_bench" / "misc").mkdir(parents=True)  # a folder without question.jsonl: not a bench
    _write(data / "plain_bench" / "question.jsonl", QUESTIONS[:1])
    _write(data / "plain_bench" / "model_answer" / "vicuna-7b.jsonl", [_answer("vicuna-7b", QUESTIONS[0], 0)])
    return tmp_path / "FastChat"


def test_loads_a_checkout_with_its_benches(checkout):
    data = load_fastchat_dir(checkout)
    assert data.root == checkout / "fastchat" / "llm_judge" / "data"
    assert sorted(data.benches) == ["mini_bench", "plain_bench"]
    b = data.bench("mini_bench")
    assert [q.question_id for q in b.questions] == [81, 111, 131] and b.questions[1].reference == ["36", "9"]
    assert sorted(b.answers) == list(MODELS) and all(len(a) == 3 for a in b.answers.values())
    assert b.answers["vicuna-7b"][2].choices[0].turns == ["vicuna-7b says answer 1 to 131"]
    assert list(b.references) == ["gpt-4"] and b.references["gpt-4"][0].question_id == 111
    assert list(b.single) == ["gpt-4"] and list(b.pair) == ["gpt-4"]
    assert len(b.files) == 1 + 2 + 1 + 2  # questions, answers, reference, judgments; .bk and notes skipped
    assert len(data.files) == len(b.files) + 2


def test_single_judgment_values(checkout):
    single = load_fastchat_dir(checkout).bench("mini_bench").single["gpt-4"]
    assert len(single) == 6
    assert [s.score for s in single] == [7, 8.5, None, 10, 6, 5]  # FastChat's -1 reads as missing
    assert isinstance(single[0].score, int) and isinstance(single[1].score, float)
    assert single[2].judge == ("gpt-4", "single-math-v1") and single[2].judgment.endswith("but")
    assert [s.turn for s in single] == [1, 1, 1, 1, 2, 1] and single[4].question_id == 81


def test_pair_judgment_values(checkout):
    pair = load_fastchat_dir(checkout).bench("mini_bench").pair["gpt-4"]
    assert [(p.g1_winner, p.g2_winner) for p in pair] == [
        ("model_1", "model_1"), ("model_2", "error"), ("model_1", "model_2"), ("tie", "tie")]
    assert [p.outcome for p in pair] == ["model_1", None, "tie", "tie"]
    assert pair[3].turn == 2 and pair[1].judge == ("gpt-4", "pair-math-v1")


def test_unjudged_bench_loads_with_empty_parts(checkout):
    plain = load_fastchat_dir(checkout).bench("plain_bench")
    assert len(plain.questions) == 1 and list(plain.answers) == ["vicuna-7b"]
    assert plain.references == {} and plain.single == {} and plain.pair == {}


def test_same_data_from_checkout_data_dir_or_bench_dir(checkout):
    data_dir = checkout / "fastchat" / "llm_judge" / "data"
    via_data = load_fastchat_dir(data_dir)
    via_llm_judge = load_fastchat_dir(checkout / "fastchat" / "llm_judge")
    via_bench = load_fastchat_dir(data_dir / "mini_bench")
    assert list(via_bench.benches) == ["mini_bench"] and via_bench.bench().name == "mini_bench"
    assert via_data.root == via_llm_judge.root == data_dir
    for d in (via_data, via_llm_judge, via_bench):
        b = d.bench("mini_bench")
        assert len(b.single["gpt-4"]) == 6 and len(b.pair["gpt-4"]) == 4 and len(b.answers) == 2


def test_choosing_a_bench(checkout):
    data = load_fastchat_dir(checkout)
    with pytest.raises(FusevalError, match="several benches; choose one of: mini_bench, plain_bench"):
        data.bench()
    with pytest.raises(FusevalError, match="no bench 'mt_bench'"):
        data.bench("mt_bench")


def test_nothing_to_load_names_the_path(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(FusevalError, match=r"empty: no FastChat data found"):
        load_fastchat_dir(tmp_path / "empty")
    with pytest.raises(FusevalError, match=r"nowhere: not a directory"):
        load_fastchat_dir(tmp_path / "nowhere")


def test_round_trip_keeps_fastchat_format(tmp_path):
    src_single = _write(tmp_path / "in_single.jsonl", SINGLE)
    src_pair = _write(tmp_path / "in_pair.jsonl", PAIR)
    single, pair = read_single_judgments(src_single), read_pair_judgments(src_pair)
    write_single_judgments(tmp_path / "out" / "gpt-4_single.jsonl", single)
    write_pair_judgments(tmp_path / "out" / "gpt-4_pair.jsonl", pair)
    # Written lines equal FastChat's originals, -1 included, key order included.
    for name, original in (("gpt-4_single.jsonl", SINGLE), ("gpt-4_pair.jsonl", PAIR)):
        lines = (tmp_path / "out" / name).read_text().splitlines()
        assert [json.loads(ln) for ln in lines] == original
        assert [list(json.loads(ln)) for ln in lines] == [list(o) for o in original]
    assert read_single_judgments(tmp_path / "out" / "gpt-4_single.jsonl") == single
    assert read_pair_judgments(tmp_path / "out" / "gpt-4_pair.jsonl") == pair


def test_missing_score_is_written_as_minus_one(tmp_path):
    rec = SingleJudgment(question_id="q-7", model="m", judge=("judge-x", "single-v1"), user_prompt="p",
                         judgment="I cannot rate this.", score=None, turn=1)
    write_single_judgments(tmp_path / "j_single.jsonl", [rec])
    line = json.loads((tmp_path / "j_single.jsonl").read_text())
    assert line["score"] == -1 and "tstamp" not in line and line["judge"] == ["judge-x", "single-v1"]
    assert read_single_judgments(tmp_path / "j_single.jsonl")[0].score is None


def test_other_tools_keys_are_kept(tmp_path):
    # FastChat's pairwise mode with a single-grade judge writes m1_score/m2_score and no turn.
    line = {k: v for k, v in _pair(81, "model_1", "model_1").items() if k != "turn"} | {"m1_score": 8, "m2_score": 6}
    (p,) = read_pair_judgments(_write(tmp_path / "x_pair.jsonl", [line]))
    assert p.turn is None and p.model_dump()["m1_score"] == 8
    write_pair_judgments(tmp_path / "y_pair.jsonl", [p])
    assert json.loads((tmp_path / "y_pair.jsonl").read_text()) == line


@pytest.mark.parametrize("bad, line_no, where", [
    ('{"question_id": 81, "model": ', 2, "not valid JSON"),
    (json.dumps({k: v for k, v in SINGLE[0].items() if k != "score"}), 2, "field 'score'"),
    (json.dumps(SINGLE[0] | {"judge": ["gpt-4"]}), 2, "field 'judge"),
    (json.dumps(SINGLE[0] | {"turn": 0}), 2, "field 'turn'"),
])
def test_bad_single_line_names_file_line_and_field(tmp_path, bad, line_no, where):
    path = _write(tmp_path / "gpt-4_single.jsonl", [SINGLE[0], bad, SINGLE[1]])
    with pytest.raises(FusevalError) as e:
        read_single_judgments(path)
    assert str(e.value).startswith(f"{path}:{line_no}: ") and where in str(e.value) and "\n" not in str(e.value)


def test_bad_winner_names_file_line_and_field(tmp_path):
    path = _write(tmp_path / "gpt-4_pair.jsonl", [PAIR[0], PAIR[1], _pair(131, "model_3", "model_1")])
    with pytest.raises(FusevalError, match=r"gpt-4_pair\.jsonl:3: field 'g1_winner'"):
        read_pair_judgments(path)


def test_bad_judgment_file_inside_a_bench_names_it(checkout):
    path = checkout / "fastchat" / "llm_judge" / "data" / "mini_bench" / "model_judgment" / "gpt-4_pair.jsonl"
    _write(path, [PAIR[0], "[1, 2]", PAIR[1]])
    with pytest.raises(FusevalError, match=rf"{path}:2: expected a JSON object"):
        load_fastchat_dir(checkout)


def test_crash_truncated_last_line_is_dropped(tmp_path):
    path = tmp_path / "gpt-4_single.jsonl"
    path.write_text(json.dumps(SINGLE[0]) + "\n" + json.dumps(SINGLE[1])[:40])  # FastChat killed mid-append
    assert [s.score for s in read_single_judgments(path)] == [7]


W = ("model_1", "model_2", "tie", "error")
# Written out by hand: both orders agree -> that winner; a flip or a tie in either -> tie; an error -> missing.
TRUTH = {
    ("model_1", "model_1"): "model_1", ("model_1", "model_2"): "tie", ("model_1", "tie"): "tie",
    ("model_2", "model_1"): "tie", ("model_2", "model_2"): "model_2", ("model_2", "tie"): "tie",
    ("tie", "model_1"): "tie", ("tie", "model_2"): "tie", ("tie", "tie"): "tie",
}


@pytest.mark.parametrize("g1", W)
@pytest.mark.parametrize("g2", W)
def test_pair_outcome_truth_table(g1, g2):
    assert pair_outcome(g1, g2) == TRUTH.get((g1, g2))  # every pair with an error is absent: None


@pytest.mark.parametrize("g1", W)
@pytest.mark.parametrize("g2", W)
def test_pair_outcome_matches_fastchat_show_result(g1, g2):
    # show_result.py drops a row with an error in either game, counts a row as a tie when game 1 is a
    # tie or the games disagree, and otherwise credits game 1's winner.
    if "error" in (g1, g2):
        fastchat = None
    elif g1 == "tie" or g1 != g2:
        fastchat = "tie"
    else:
        fastchat = g1
    assert pair_outcome(g1, g2) == fastchat


def test_pair_outcome_rejects_unknown_winners():
    with pytest.raises(ValueError, match="unknown winner 'A'"):
        pair_outcome("A", "model_1")
    assert PairJudgment.model_validate(_pair(1, "tie", "model_2")).outcome == "tie"
