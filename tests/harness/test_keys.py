"""Content keys are a stored format: the values every existing store and world directory holds.

These constants were computed by the code before the harness was split into sub-packages (main at
214ad72). If one of them changes, existing stores stop reusing their answers and judgments, and
existing worlds are rebuilt: that needs a schema or world version bump, never a silent change.
"""

from __future__ import annotations

from fusion.common.hashing import derived_seed, digest
from fusion.zoo import WorldSpec
from harness.formats.exchange import fastchat_model_hash
from harness.formats.questions import Question
from harness.judges.programmatic import ProgrammaticJudge
from harness.run.generate import GenerationSettings
from harness.run.lmeval import task_key
from harness.run.resolve import endpoint_hash, judge_identity
from harness.store import answer_key, judgment_key, question_key

QUESTION = Question(question_id=7, category="arithmetic", turns=["What is 2+3?", "Double it."],
                    checks=[{"type": "numeric", "answer": 5}, None])


def test_store_keys_are_unchanged() -> None:
    qkey = question_key(QUESTION.category, QUESTION.turns)
    assert qkey == "ee85a36239259349b09f9839"
    assert answer_key("m" * 24, qkey, 0, GenerationSettings().digest()) == "baa3f24a081563c0038c2340"
    assert judgment_key("programmatic/prog-v1", "a" * 24, None, 1, 0, "r" * 24) == "f17dd38d79c5ef34c1f6a02f"


def test_generation_and_task_keys_are_unchanged() -> None:
    assert GenerationSettings().digest() == "84f68fcfe59efbee"
    assert GenerationSettings(max_new_tokens=64, samples=2, temperature=0.0, seed=3).digest() == "2b12cc8b9db26431"
    assert task_key(["fuseval_zoo"], 20, None) == "467e42a4c4ec8f5c"


def test_judge_and_model_identities_are_unchanged(tmp_path) -> None:
    judge = ProgrammaticJudge()
    assert (judge.id, judge.ref_version(QUESTION, 1)) == ("programmatic/prog-v1", "4b104354a1dd7cf86b5b5198")
    assert fastchat_model_hash("gpt-4") == "bb3201efe85046c3c1ca0522"
    url = "http://127.0.0.1:8000/v1"
    assert endpoint_hash(url, "judge") == digest("endpoint", url, "judge") == "00a1ab35c81b5e653b032349"
    assert judge_identity(None, "openai", "judge", url) == ("judge", "judge@00a1ab35c8")


def test_world_key_and_derived_seeds_are_unchanged() -> None:
    assert WorldSpec().key() == "07fa990ff9"
    # the engine's per-tensor seeds and the zoo's per-tensor generators (sha256 of "seed:name", 63 bits)
    assert derived_seed(0, "model.embed_tokens.weight") == 2045469590490294478
