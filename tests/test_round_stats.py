"""Per-round statistics (reports.rounds): per-round ratios, exact median intervals, noise flags, verdicts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reports.rounds import (
    METHOD_NONE,
    METHOD_POOLED,
    METHOD_RANGE,
    METHOD_ROUNDS,
    NOISY_IQR,
    RoundRatio,
    inconsistent_pairs,
    median_ci_coverage,
    median_ci_ranks,
    noise_flags,
    noise_reasons,
    per_round_ratio,
    pooled_ratio,
    round_ratios,
    verdict,
)


def _rounds(per_round: list[list[float]]) -> tuple[list[float], list[int]]:
    samples = [v for values in per_round for v in values]
    rounds = [r for r, values in enumerate(per_round) for _ in values]
    return samples, rounds


def test_round_ratios_known_values():
    cand, cand_r = _rounds([[2.0, 2.2, 1.8], [4.0, 4.0, 4.0], [3.0]])
    base, base_r = _rounds([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0], [9.0], [5.0]])  # round 3: baseline only
    assert round_ratios(cand, cand_r, base, base_r) == {0: 2.0, 1: 2.0, 2: pytest.approx(1 / 3)}


def test_per_round_ratio_uses_order_statistics():
    ratios = [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9]  # n = 10: 95% interval is x_(2) .. x_(9)
    base, base_r = _rounds([[1.0, 1.0, 1.0]] * len(ratios))
    cand, cand_r = _rounds([[r, r, r] for r in ratios])
    out = per_round_ratio(cand, cand_r, base, base_r)
    assert out.method == METHOD_ROUNDS and out.n_rounds == 10
    assert out.ratio == pytest.approx(1.45)
    assert (out.lo, out.hi) == (pytest.approx(1.1), pytest.approx(1.8))


def test_too_few_rounds_give_the_range():
    cand, cand_r = _rounds([[1.2], [1.5], [0.9]])
    base, base_r = _rounds([[1.0], [1.0], [1.0]])
    out = per_round_ratio(cand, cand_r, base, base_r)
    assert out == RoundRatio(pytest.approx(1.2), pytest.approx(0.9), pytest.approx(1.5), 3, METHOD_RANGE)
    none = per_round_ratio([1.0], [0], [1.0], [1])
    assert none.method == METHOD_NONE and none.n_rounds == 0 and math.isnan(none.ratio)


def test_median_ci_ranks_match_scipy_binomial():
    binom = pytest.importorskip("scipy.stats").binom
    for n in range(1, 60):
        for confidence in (0.8, 0.9, 0.95, 0.99):
            ranks = median_ci_ranks(n, confidence)
            coverages = {j: 1 - 2 * binom.cdf(j - 1, n, 0.5) for j in range(1, (n + 1) // 2 + 1)}
            ok = [j for j, cov in coverages.items() if cov >= confidence]
            if not ok:
                assert ranks is None, (n, confidence)
                continue
            assert ranks == (max(ok), n + 1 - max(ok)), (n, confidence)
            assert median_ci_coverage(n, max(ok)) == pytest.approx(coverages[max(ok)], abs=1e-12)
    assert median_ci_ranks(5) is None and median_ci_ranks(6) == (1, 6)  # 95% needs 6 rounds


def test_a_slow_round_does_not_change_its_ratio():
    rng = np.random.default_rng(0)
    base_rounds = [list(rng.uniform(1.0, 1.1, 5)) for _ in range(8)]
    cand_rounds = [list(1.3 * np.asarray(b) * rng.uniform(0.98, 1.02, 5)) for b in base_rounds]
    cand, cand_r = _rounds(cand_rounds)
    base, base_r = _rounds(base_rounds)
    before = per_round_ratio(cand, cand_r, base, base_r)
    # Round 4 ran on a machine three times slower: every sample of both cases in it scales alike.
    slow = np.where(np.asarray(cand_r) == 4, 3.0, 1.0)
    slow_b = np.where(np.asarray(base_r) == 4, 3.0, 1.0)
    after = per_round_ratio(np.asarray(cand) * slow, cand_r, np.asarray(base) * slow_b, base_r)
    assert after.ratio == pytest.approx(before.ratio) and after.lo == pytest.approx(before.lo)
    assert after.hi == pytest.approx(before.hi)
    assert round_ratios(np.asarray(cand) * slow, cand_r, np.asarray(base) * slow_b, base_r) == pytest.approx(
        round_ratios(cand, cand_r, base, base_r))


def test_pooled_fallback():
    rng = np.random.default_rng(1)
    cand, base = rng.uniform(1.9, 2.1, 50), rng.uniform(0.9, 1.1, 50)
    out = pooled_ratio(cand, base, seed=0)
    assert out.method == METHOD_POOLED and out.n_rounds == 0
    assert out.ratio == pytest.approx(np.median(cand) / np.median(base))
    assert out.lo < out.ratio < out.hi
    assert per_round_ratio(cand, None, base, None, seed=0) == out


def test_ratio_input_errors():
    with pytest.raises(ValueError, match="cand_rounds: expected one int round index per sample"):
        per_round_ratio([1.0, 2.0], [0], [1.0], [0])
    with pytest.raises(ValueError, match="base_samples: expected a 1-D sequence of finite times > 0"):
        per_round_ratio([1.0], [0], [0.0], [0])
    with pytest.raises(ValueError, match="confidence"):
        per_round_ratio([1.0], [0], [1.0], [0], confidence=1.5)


def test_noise_flags():
    quiet = {"median_ms": 1.0, "iqr_ms": 0.05, "load_before": 0.5, "load_after": 1.5, "usable_cores": 2}
    assert noise_flags(quiet) == [] and noise_reasons(quiet) == []
    assert noise_flags({**quiet, "iqr_ms": 1.0 * NOISY_IQR + 0.01}) == ["noisy"]
    assert noise_flags({**quiet, "load_after": 2.5}) == ["noisy"]
    both = noise_reasons({**quiet, "iqr_ms": 0.5, "load_before": 3.0})
    assert len(both) == 2 and "IQR" in both[0] and "load 3.00" in both[1]
    assert noise_flags({"median_ms": 1.0}) == []  # nothing recorded: nothing to flag
    assert noise_flags({"median_ms": 1.0, "iqr_ms": None, "load_before": None, "usable_cores": 2}) == []


def _row(mode, median, **kw):
    row = {"gate": "topk", "framework": "torch", "device": "cpu", "impl": "eager", "gating": "static",
           "batch": None, "input_dim": None, "experts": 16, "k": 4, "dtype": "float32", "mode": mode,
           "median_ms": median, "status": "ok"}
    row.update(kw)
    row["case_id"] = f"{row['gate']}-{row['framework']}-{mode}"
    return row


def test_inconsistent_pairs():
    rows = [_row("fwd", 0.5), _row("fwdbwd", 0.3), _row("bwd", 0.1),
            _row("fwd", 0.1, gate="softmax"), _row("fwdbwd", 0.3, gate="softmax"),
            _row("fwd", 0.9, framework="tf"), _row("fwdbwd", 0.3, framework="tf", status="failed")]
    assert inconsistent_pairs(rows) == {"topk-torch-fwd", "topk-torch-fwdbwd"}
    assert inconsistent_pairs([]) == set()


@pytest.mark.parametrize(
    ("ratio", "lo", "hi", "expected"),
    [
        (1.5, 1.4, 1.6, "slower"),     # above 1 and beyond the factor
        (1.35, 1.05, 1.7, "slower"),   # above 1, estimate beyond the factor
        (1.2, 1.1, 1.3, "same"),       # significant, but within the factor
        (1.0, 0.9, 1.1, "same"),       # inside [1/factor, factor]
        (1.5, 0.95, 2.0, "same"),      # straddles 1: no evidence
        (0.6, 0.5, 0.7, "faster"),
        (0.8, 0.7, 0.9, "same"),       # 0.8 > 1/1.3
    ],
)
def test_verdict_rules(ratio, lo, hi, expected):
    assert verdict(RoundRatio(ratio, lo, hi, 8, METHOD_ROUNDS), 1.3, []) == expected


def test_verdict_flags_and_missing_intervals():
    slower = RoundRatio(2.0, 1.9, 2.1, 8, METHOD_ROUNDS)
    assert verdict(slower, 1.3, ["noisy"]) == "not judged (noisy)"
    assert verdict(slower, 1.3, {"inconsistent"}) == "not judged (noisy)"
    assert verdict(RoundRatio(2.0, math.nan, math.nan, 0, METHOD_POOLED), 1.3) == "not judged (no interval)"
    with pytest.raises(ValueError, match="factor: expected a ratio >= 1"):
        verdict(slower, 0.5)


# ---- the report's timing table on rows with rounds (reports.tables, reports.comparison.per_round)
def _timing_frame(rows):
    import pandas as pd

    return pd.DataFrame([{"kind": "timing", "gating": "static", "batch": None, "input_dim": None, "n_samples": None,
                          "iqr_ms": None, "peak_mem_bytes": None, **row} for row in rows])


def _timed(gate, mode, per_round, **kw):
    samples, rounds = _rounds(per_round)
    return _row(mode, float(np.median(samples)), gate=gate, samples_ms=samples, sample_rounds=rounds, **kw)


def test_timing_table_uses_per_round_ratios_and_flags():
    from reports.tables import format_timing, timing_table

    base = [[1.0, 1.0], [2.0, 2.0], [1.0, 1.0], [3.0, 3.0], [1.0, 1.0], [1.0, 1.0], [2.0, 2.0], [1.0, 1.0]]
    rows = [_timed("topk", "fwd", base), _timed("softmax", "fwd", [[1.5 * v for v in r] for r in base]),
            _timed("topk", "fwdbwd", [[3 * v for v in r] for r in base]),
            _timed("softmax", "fwdbwd", [[4.5 * v for v in r] for r in base])]
    table = timing_table(_timing_frame(rows)).set_index(["gate", "mode"])
    fwd = table.loc[("softmax", "fwd")]
    # the slow rounds (2x, 3x) hit both cases alike: every per-round ratio is 1.5, so is the interval
    assert fwd["ratio"] == pytest.approx(1.5) and (fwd["ci_low"], fwd["ci_high"]) == (pytest.approx(1.5),) * 2
    assert fwd["method"] == METHOD_ROUNDS and fwd["rounds"] == 8 and math.isnan(fwd["p_value"])
    assert fwd["mark"] == "slower" and fwd["flags"] == ""
    shown = format_timing(table.reset_index())
    assert {"method", "IQR", "n", "rounds", "flags"} <= set(shown.columns)
    # Top-k's forward alone slower than its forward + backward: both rows inconsistent, the comparisons not judged
    rows[2] = _timed("topk", "fwdbwd", [[0.5 * v for v in r] for r in base])
    table = timing_table(_timing_frame(rows)).set_index(["gate", "mode"])
    assert table.loc[("softmax", "fwd"), "mark"] == "not judged (inconsistent)"
    assert table.loc[("topk", "fwd"), "flags"] == "inconsistent" and table.loc[("topk", "fwd"), "mark"] == "baseline"
    # a noisy side (load over the usable cores): not judged (noisy)
    rows = [_timed("topk", "fwd", base), _timed("softmax", "fwd", [[1.5 * v for v in r] for r in base],
                                                 load_before=4.0, usable_cores=2)]
    table = timing_table(_timing_frame(rows)).set_index(["gate", "mode"])
    assert table.loc[("softmax", "fwd"), "mark"] == "not judged (noisy)"
    assert table.loc[("softmax", "fwd"), "flags"] == "noisy"


def test_timing_table_without_rounds_keeps_the_pooled_statistic():
    from reports.comparison import METHOD_POOLED
    from reports.tables import timing_table

    rng = np.random.default_rng(2)
    a = list(rng.lognormal(0, 0.01, 20))
    rows = [_row("fwd", float(np.median(a)), samples_ms=a),
            _row("fwd", 2 * float(np.median(a)), gate="softmax", samples_ms=[2 * v for v in a])]
    row = timing_table(_timing_frame(rows)).set_index("gate").loc["softmax"]
    assert row["method"] == METHOD_POOLED and row["p_value"] < 1e-6 and row["mark"] == "slower"
    assert math.isnan(row["rounds"])
