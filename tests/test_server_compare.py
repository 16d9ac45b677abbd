"""eval/server_compare.py's summary of a replay (the server runs themselves take minutes and are
run by hand: python -m eval.server_compare)."""

from eval.replay import ReplayResult, ReplayTurn
from eval.server_compare import summarize


def test_summary_counts_resumed_turns_whose_previous_prompt_was_cached():
    result = ReplayResult(programs={"a": 10.0, "b": 20.0}, turns=[
        ReplayTurn("a", 0, 0.0, 1.0, 2.0, prompt_tokens=100, cached_tokens=0),
        ReplayTurn("a", 1, 3.0, 0.5, 1.0, prompt_tokens=130, cached_tokens=99),  # all but the last token
        ReplayTurn("a", 2, 5.0, 0.5, 1.0, prompt_tokens=160, cached_tokens=40),  # lost most of it
        ReplayTurn("b", 0, 0.0, 1.0, 2.0, prompt_tokens=50, cached_tokens=0),
    ])
    row = summarize("x", result)
    assert row["resumed_turns"] == 2
    assert row["resumed_with_previous_prompt_cached"] == 0.5
    assert row["resumed_cached_token_share"] == (99 + 40) / (130 + 160)
    assert row["prompt_tokens_recomputed"] == 100 + 31 + 120 + 50
    assert row["avg_jct_s"] == 15.0
