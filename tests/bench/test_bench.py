"""`bdh bench`: both sides run on the same weights, agree, and produce sane rows."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from bdh.cli import main
from bdh.experiments.bench import (
    BenchError,
    bench_generate,
    bench_memory,
    bench_prefill,
    bench_train,
    official_and_ours,
)
from bdh.experiments.bench.reference import check_agreement
from bdh.experiments.bench.runs import _extrapolate, format_table
from tests.conftest import REFERENCE_DIR, load_reference


@pytest.fixture
def reference() -> str:
    load_reference("official_bdh")  # skips when the reference is absent
    return str(REFERENCE_DIR / "official_bdh.py")


def test_pair_has_identical_weights(reference) -> None:
    ref, ours = official_and_ours("tiny", reference)
    ref_state = ref.state_dict()
    for name, tensor in ours.state_dict().items():
        assert torch.equal(tensor, ref_state[name]), name


def test_train_bench(reference) -> None:
    result = bench_train("tiny", batch_size=2, block_size=16, steps=2, warmup=0, reference=reference)
    (row,) = result.rows
    assert result.agreement["logits"] <= 1e-4
    assert row.official_tokens_per_s > 0 and row.ours_tokens_per_s > 0
    assert row.ratio == pytest.approx(row.ours_tokens_per_s / row.official_tokens_per_s)
    assert "ours/official" in format_table(result)


def test_generate_bench_measures_then_extrapolates(reference) -> None:
    result = bench_generate(["tiny"], new_tokens=[4, 12], max_official_tokens=8, prompt_len=3, reference=reference)
    short, long = result.rows
    assert result.agreement["tiny"] <= 1e-4
    assert not short.official_extrapolated and short.official_peak_mib is not None
    assert long.official_extrapolated and long.official_peak_mib is None
    assert "extrapolated" in long.note and "* extrapolated" in format_table(result)


def test_extrapolation_recovers_a_quadratic_cost() -> None:
    prompt = 5
    per_token = [0.01 + 1e-4 * (prompt + i) + 1e-6 * (prompt + i) ** 2 for i in range(40)]
    elapsed = list(np.cumsum(per_token[:20]))
    assert _extrapolate(elapsed, prompt, 40) == pytest.approx(sum(per_token), rel=1e-6)


def test_prefill_bench_skips_official_beyond_its_cap(reference) -> None:
    result = bench_prefill("tiny", lengths=[64, 300], max_official_tokens=128, reference=reference)
    short, long = result.rows
    assert short.official_tokens_per_s is not None
    assert long.official_tokens_per_s is None and "official not run" in long.note
    assert long.ours_tokens_per_s > 0


def test_memory_bench_runs_in_a_child_process(reference) -> None:
    # The official side is capped below the length: one child process (ours) keeps this short.
    result = bench_memory("tiny", lengths=[2048], max_official_tokens=64, reference=reference)
    (row,) = result.rows
    assert row.official_peak_mib is None and "official not run" in row.note
    assert row.ours_peak_mib > 0 and row.ours_tokens_per_s > 0


def test_disagreement_is_refused() -> None:
    with pytest.raises(BenchError, match="differ"):
        check_agreement(torch.ones(3), torch.zeros(3) + 2, "test")


def test_cli_missing_reference_is_one_line_error(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "train", "--reference", str(tmp_path / "nope.py")])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: official BDH code not found") and "\n" not in err


def test_cli_without_reference_is_one_line_error(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "generate"])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "--reference" in err and "\n" not in err


def test_cli_json_output(reference, capsys) -> None:
    main(["bench", "prefill", "--preset", "tiny", "--length", "32", "--reference", reference, "--json"])
    data = json.loads(capsys.readouterr().out)
    assert data["bench"] == "prefill" and data["rows"][0]["setting"] == "B=1 T=32"
    assert data["environment"]["torch"] == torch.__version__


@pytest.mark.parametrize("kernel_counter", [True, False])
def test_peak_memory_sees_a_freed_allocation(monkeypatch, kernel_counter) -> None:
    """The peak includes memory allocated and freed inside; nested contexts agree."""
    from bdh.experiments.bench import measure as measure_module

    if not kernel_counter:
        monkeypatch.setattr(measure_module, "_reset_peak_rss", lambda: False)

    def allocate() -> None:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        time.sleep(0.05)  # long enough for the sampling fallback
        del block

    with measure_module.PeakMemory() as outer:
        with measure_module.PeakMemory() as inner:
            allocate()
    for peak in (outer.peak(), inner.peak()):
        assert 60 * 2**20 <= peak <= 90 * 2**20
    assert measure_module.PeakMemory._open_on_cpu == 0
