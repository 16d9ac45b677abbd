"""BFCL v4 multi-turn programs as agent programs.

The data comes from the PyPI package `bfcl-eval` (Apache 2.0; installed with --no-deps by
scripts/setup.sh, since none of its dependencies is needed to read it), loaded with
importlib.resources from `bfcl_eval/data/`. `data_dir` (`--traces DIR`) points at a copy of
that folder instead (same layout: `BFCL_v4_multi_turn_*.json`, `possible_answer/`,
`multi_turn_func_doc/`).

Per program: the system prompt holds the JSON schemas of its involved tool classes (what a
real agent puts there; shared by every program with the same classes). Each user turn with k
ground-truth calls is k+1 LLM calls: one per call (output = the call string) followed by that
tool's execution, then the answer. Text is rendered in the Llama-3 chat format and tokenized
with the Llama-3 tokenizer.

What BFCL does not have is drawn, and said here:
- tool durations: log-normal, median `tool_median_s` (default 1 s), sigma 1.0, clipped to
  [10 ms, 60 s] -- an assumption spanning the range Continuum (arXiv 2511.02230) reports for
  agent tool calls, from milliseconds to tens of seconds;
- tool results and final answers: filler text of log-normal length (median 40 tokens, 1,000
  for the long_context category, whose point is long tool outputs), an assumption;
- the next user message arrives right after the answer (BFCL's user is scripted): a pause of
  0 s named "user".
"""

from __future__ import annotations

import importlib.resources
import json
import random
from pathlib import Path
from typing import Optional, Union

from eval.traces.format import Program, TraceFormatError, Turn
from eval.traces.sampling import lognormal
from eval.traces.tokenizer import encode

BFCL_PACKAGE = "bfcl_eval"
BFCL_VERSION = "2026.3.23"  # pinned in scripts/setup.sh; test_traces.py freezes its programs
FUNC_DOC_DIR = "multi_turn_func_doc"
CLASS_DOCS = {
    "GorillaFileSystem": "gorilla_file_system", "VehicleControlAPI": "vehicle_control",
    "TradingBot": "trading_bot", "TravelAPI": "travel_booking", "MessageAPI": "message_api",
    "TwitterAPI": "posting_api", "TicketAPI": "ticket_api", "MathAPI": "math_api",
}
CATEGORIES = ("base", "long_context", "miss_func", "miss_param")
_FILLER = "the tool returned ok with fields id name value status and a short message ".split()


def _header(role: str) -> str:
    return f"<|start_header_id|>{role}<|end_header_id|>\n\n"



def _filler(rnd: random.Random, median_tokens: float) -> str:
    n = int(lognormal(rnd, median_tokens, 0.8, 4, 20 * median_tokens))
    return " ".join(rnd.choice(_FILLER) for _ in range(n))


def package_data_dir():
    """`bfcl_eval/data` inside the installed package (a Traversable)."""
    try:
        return importlib.resources.files(BFCL_PACKAGE) / "data"
    except ModuleNotFoundError:
        raise FileNotFoundError(
            f"BFCL traces come from the PyPI package bfcl-eval: pip install --no-deps bfcl-eval=={BFCL_VERSION} "
            "(bash scripts/setup.sh does), or pass a copy of its data folder") from None


def _read_jsonl(path) -> list[dict]:
    rows = []
    with path.open() as f:
        for line_no, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise TraceFormatError(f"{path}:{line_no}: {e}") from None
    return rows


def load_bfcl(
    category: str = "base",
    data_dir: Optional[Union[str, Path]] = None,
    limit: Optional[int] = None,
    tool_median_s: float = 1.0,
    seed: int = 0,
) -> list[Program]:
    if category not in CATEGORIES:
        raise ValueError(f"unknown BFCL category {category!r}; one of {CATEGORIES}")
    data_dir = package_data_dir() if data_dir is None else Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"BFCL traces not found at {data_dir}: give the bfcl_eval/data folder of bfcl-eval")
    rows = _read_jsonl(data_dir / f"BFCL_v4_multi_turn_{category}.json")[:limit]
    answers = {r["id"]: r["ground_truth"] for r in _read_jsonl(data_dir / "possible_answer" / f"BFCL_v4_multi_turn_{category}.json")}
    docs = {cls: _read_jsonl(data_dir / FUNC_DOC_DIR / f"{stem}.json") for cls, stem in CLASS_DOCS.items()}
    result_median = 1000 if category == "long_context" else 40
    programs = []
    for row in rows:
        rnd = random.Random(f"{seed}/{row['id']}")
        excluded = set(row.get("excluded_function") or ())
        try:
            schemas = [json.dumps(doc) for cls in row["involved_classes"] for doc in docs[cls] if doc["name"] not in excluded]
            truth = answers[row["id"]]
        except KeyError as e:
            raise TraceFormatError(f"{data_dir}: program {row.get('id')!r} refers to unknown {e}") from None
        system = encode(_header("system") + "You can call these tools:\n" + "\n".join(schemas) + "<|eot_id|>")
        turns: list[Turn] = []
        pending_append = ""
        for user_turn, calls in zip(row["question"], truth):
            user_text = "".join(m["content"] for m in user_turn if m.get("role") == "user")
            pending_append += _header("user") + user_text + "<|eot_id|>" + _header("assistant")
            for call in calls:
                turns.append(Turn(encode(pending_append), encode(call + "<|eot_id|>"), call.split("(")[0],
                                  lognormal(rnd, tool_median_s, 1.0, 0.01, 60.0)))
                pending_append = _header("ipython") + _filler(rnd, result_median) + "<|eot_id|>" + _header("assistant")
            turns.append(Turn(encode(pending_append), encode(_filler(rnd, 40) + "<|eot_id|>"), "user", 0.0))
            pending_append = ""
        turns[-1].tool_name, turns[-1].tool_duration_s = None, 0.0
        programs.append(Program(row["id"], 0.0, system, turns))
    return programs
