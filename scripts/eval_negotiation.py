"""Negotiate many seeded simulated markets with each strategy and print one comparison table.

Strategies: `market` (staggered first round with real competing quotes, then callback rounds), `independent`
(every provider at once, one round, the same offer policy without competing quotes) and `seed` (accept the first
price at or under max_price). It measures the offer policy and the orchestration, not the voice model's skill:
the simulated model does exactly what each move says (see simulators/haggle_sim/market.py).

    python scripts/eval_negotiation.py [--markets N] [--first-seed S] [--rounds R] [--max-concurrent-calls C]
                                       [--no-competing-quotes] [--json]

Exits 1 when a hard rule broke (an overpay or invented leverage in any strategy).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from haggle_sim.market import STRATEGIES, Paired, Summary, paired, run_all, summarise


def table(summaries: list[Summary]) -> str:
    rows = [
        "| strategy | deal rate | price paid / lowest reservation | saving vs best first quote | overpays "
        "| invented leverage | calls per job |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        rows.append(
            f"| `{s.strategy}` | {s.deal_rate:.1%} | {s.price_vs_lowest_reservation:.3f} "
            f"| {s.saving_vs_best_first_quote:.1%} | {s.overpays} | {s.invented_leverage} | {s.calls_per_job:.2f} |"
        )
    return "\n".join(rows)


def describe(p: Paired) -> str:
    return (f"`{p.strategy}` against `{p.against}`, market by market where both made a deal: "
            f"paid less in {p.lower}, the same in {p.same}, more in {p.higher}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markets", type=int, default=2000, help="number of seeded markets (default 2000)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=2, help="NEGOTIATION_ROUNDS for the market strategy")
    parser.add_argument("--max-concurrent-calls", type=int, default=10)
    parser.add_argument("--no-competing-quotes", action="store_true",
                        help="USE_COMPETING_QUOTES off: market staggers and calls back, but never cites a quote")
    parser.add_argument("--json", action="store_true", help="print the summaries as JSON instead of a table")
    args = parser.parse_args(argv)
    if args.markets < 1 or args.rounds < 1 or args.max_concurrent_calls < 1:
        parser.error("--markets, --rounds and --max-concurrent-calls must be at least 1")

    seeds = range(args.first_seed, args.first_seed + args.markets)
    markets, results = run_all(seeds, rounds=args.rounds, max_concurrent_calls=args.max_concurrent_calls,
                               use_competing_quotes=not args.no_competing_quotes)
    summaries = [summarise(strategy, markets, results[strategy]) for strategy in STRATEGIES]
    pairs = [paired(results, "market", "independent"), paired(results, "market", "seed")]
    if args.json:
        print(json.dumps({"summaries": [asdict(s) for s in summaries], "paired": [asdict(p) for p in pairs]},
                         indent=2))
    else:
        print(f"{args.markets} seeded markets (seeds {seeds.start}-{seeds.stop - 1}), 3-6 providers each, "
              f"NEGOTIATION_ROUNDS={args.rounds}, MAX_CONCURRENT_CALLS={args.max_concurrent_calls}, "
              f"USE_COMPETING_QUOTES={'off' if args.no_competing_quotes else 'on'}\n")
        print(table(summaries))
        print()
        for p in pairs:
            print(describe(p))
    broken = [s.strategy for s in summaries if s.overpays or s.invented_leverage]
    if broken:
        print(f"hard rule broken by: {', '.join(broken)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
