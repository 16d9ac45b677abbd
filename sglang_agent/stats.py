"""One view of many workers: `/agent/stats` of every worker behind a gateway (or of the workers
named), side by side and summed.

    python -m sglang_agent.stats --url http://GATEWAY        # the workers its GET /workers lists
    python -m sglang_agent.stats --url http://W1 --url http://W2 [--json]

Counts and gauges are summed; ratios are recomputed from the sums; per-worker Prometheus series
are already labelled by SGLang (scrape each worker's /metrics)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional

import requests

from sglang_agent.gateway import worker_urls

SHOWN = ("sessions", "sessions_in_tool_call", "pins", "pinned_tokens", "tool_calls", "tool_calls_detected",
         "resumed_turns", "resumed_turns_with_hit", "workflows", "learned_workflows", "internal_errors")


def fetch(urls: list[str], timeout_s: float = 30.0) -> dict[str, dict]:
    """Worker URL -> its /agent/stats (or {"error": ...} when it did not answer)."""
    out = {}
    for url in urls:
        try:
            r = requests.get(url.rstrip("/") + "/agent/stats", timeout=timeout_s)
            out[url] = r.json() if r.status_code == 200 else {"error": f"HTTP {r.status_code}: {r.text[:200]}"}
        except requests.RequestException as e:
            out[url] = {"error": repr(e)}
    return out


def _add(total: dict, part: dict) -> None:
    for key, value in part.items():
        if isinstance(value, bool) or key.endswith("_rate") or key.startswith("hit_rate"):
            continue
        if isinstance(value, (int, float)):
            total[key] = total.get(key, 0) + value
        elif isinstance(value, dict) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                              for v in value.values()):
            _add(total.setdefault(key, {}), value)


def aggregate(per_worker: dict[str, dict]) -> dict:
    total: dict = {"workers": len(per_worker), "workers_answering": 0}
    for stats in per_worker.values():
        if "error" in stats:
            continue
        total["workers_answering"] += 1
        _add(total, stats)
    resumed = total.get("resumed_turns", 0)
    total["hit_rate_after_tool_calls"] = total.get("resumed_turns_with_hit", 0) / resumed if resumed else None
    return total


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sglang_agent.stats", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", action="append", required=True,
                        help="A gateway (its workers are listed from GET /workers) or a worker; repeat for more.")
    parser.add_argument("--json", action="store_true", help="Print {workers: {url: stats}, total: {...}} as JSON.")
    args = parser.parse_args(argv)
    urls = list(dict.fromkeys(u for url in args.url for u in worker_urls(url)))
    per_worker = fetch(urls)
    total = aggregate(per_worker)
    if args.json:
        print(json.dumps({"workers": per_worker, "total": total}, indent=2))
    else:
        width = max(len(u) for u in [*urls, "total"])
        print(f"{'worker':<{width}}  " + "  ".join(SHOWN))
        for url, stats in [*per_worker.items(), ("total", total)]:
            if "error" in stats:
                print(f"{url:<{width}}  {stats['error']}")
                continue
            print(f"{url:<{width}}  " + "  ".join(f"{stats.get(k, 0):>{len(k)}}" for k in SHOWN))
    return 0 if total["workers_answering"] == total["workers"] else 1


if __name__ == "__main__":
    sys.exit(main())
