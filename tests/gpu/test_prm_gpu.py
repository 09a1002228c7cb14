"""The real Qwen2.5-Math-PRM-7B on a GPU: the model card's example gets the card's step rewards.

Opt-in (``-m gpu``); skips without a CUDA GPU or when the model cannot be had from the Hugging
Face hub (or its local cache). The example and the expected rewards are the card's "Quick Start"
(https://huggingface.co/Qwen/Qwen2.5-Math-PRM-7B): ``[1.0, 0.1904296875, 0.9765625, 1.0]``
in bfloat16. Other kernels move the second reward by a few hundredths, so the test allows 0.05
and requires every step's verdict at 0.5 to match.
"""

from __future__ import annotations

import pytest

from reasoning.protocols import JudgeRequest
from reasoning.types import Completion, FinishReason, Problem, Segment

pytestmark = pytest.mark.gpu

MODEL = "Qwen/Qwen2.5-Math-PRM-7B"
QUERY = (
    "Sue lives in a fun neighborhood.  One weekend, the neighbors decided to play a prank on Sue.  On "
    "Friday morning, the neighbors placed 18 pink plastic flamingos out on Sue's front yard.  On "
    "Saturday morning, the neighbors took back one third of the flamingos, painted them white, and put "
    "these newly painted white flamingos back out on Sue's front yard.  Then, on Sunday morning, they "
    "added another 18 pink plastic flamingos to the collection. At noon on Sunday, how many more pink "
    "plastic flamingos were out than white plastic flamingos?"
)
RESPONSE = [
    "To find out how many more pink plastic flamingos were out than white plastic flamingos at noon on "
    "Sunday, we can break down the problem into steps. First, on Friday, the neighbors start with 18 "
    "pink plastic flamingos.",
    "On Saturday, they take back one third of the flamingos. Since there were 18 flamingos, (1/3 "
    "\\times 18 = 6) flamingos are taken back. So, they have (18 - 6 = 12) flamingos left in their "
    "possession. Then, they paint these 6 flamingos white and put them back out on Sue's front yard. "
    "Now, Sue has the original 12 pink flamingos plus the 6 new white ones. Thus, by the end of "
    "Saturday, Sue has (12 + 6 = 18) pink flamingos and 6 white flamingos.",
    "On Sunday, the neighbors add another 18 pink plastic flamingos to Sue's front yard. By the end of "
    "Sunday morning, Sue has (18 + 18 = 36) pink flamingos and still 6 white flamingos.",
    "To find the difference, subtract the number of white flamingos from the number of pink flamingos: "
    "(36 - 6 = 30). Therefore, at noon on Sunday, there were 30 more pink plastic flamingos out than "
    "white plastic flamingos. The answer is (\\boxed{30}).",
]
CARD_REWARDS = [1.0, 0.1904296875, 0.9765625, 1.0]


@pytest.fixture(scope="module")
def model_path() -> str:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(MODEL)
    except Exception as e:  # noqa: BLE001 - no hub, no cache: nothing to test with
        pytest.skip(f"{MODEL} is not available from the hub or its cache: {e}")


def card_request() -> JudgeRequest:
    """The card's four steps as the loop would hand them over: three written, the last drafted."""
    prefix = tuple(Segment(s + "\n\n", "draft") for s in RESPONSE[:-1])
    step = Completion(RESPONSE[-1] + "\n\n", (1,), FinishReason.STOP)
    return JudgeRequest(Problem("card", QUERY), (), prefix, step, len(prefix))


@pytest.mark.parametrize("backend", ["hf", "vllm"])
def test_qwen_math_prm_gives_the_cards_step_rewards(model_path, backend):
    from rewards.prm import PRMJudge

    kwargs: dict = {}
    if backend == "vllm":
        pytest.importorskip("vllm")
        kwargs = {"max_model_len": 4096, "gpu_memory_utilization": 0.5, "enforce_eager": True}
    with PRMJudge(model_path, "qwen2.5-math-prm", backend=backend, dtype="bfloat16", device="cuda",
                  engine_kwargs=kwargs) as judge:
        steps = judge.step_scores([card_request()])[0]
        last = judge.score([card_request()])[0]
    assert steps == pytest.approx(CARD_REWARDS, abs=0.05)
    assert [s > 0.5 for s in steps] == [r > 0.5 for r in CARD_REWARDS]
    assert last == pytest.approx(steps[-1])
