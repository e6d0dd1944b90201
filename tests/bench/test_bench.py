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
    runs,
)
from bdh.experiments.bench.reference import check_agreement
from bdh.experiments.bench.roofline import Roofline, measure_roofline
from bdh.experiments.bench.runs import Row, TrainRecipe, _extrapolate, format_table
from bdh.precision import resolve_precision
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


def test_roofline_measures_positive_limits() -> None:
    roof = measure_roofline("cpu", matmul_size=128, stream_mib=4, repeats=2)
    assert roof.fp32_gflops > 0 and roof.bf16_gflops > 0
    assert roof.bandwidth_gbps == max(roof.copy_gbps, roof.add_gbps) > 0
    assert roof.peak_gflops("bf16") == roof.bf16_gflops and roof.peak_gflops("fp32") == roof.fp32_gflops


def test_row_shares_are_rates_over_the_limits() -> None:
    roof = Roofline("cpu", 2, fp32_gflops=100.0, bf16_gflops=200.0, copy_gbps=10.0, add_gbps=20.0,
                    matmul_size=8, stream_mib=1)  # fmt: skip
    row = Row("tiny", "x", 1.0, 2.0, None, None, ours_precision="bf16")
    row.set_rates("official", runs.Work(flops=50e9, bytes=4e9), seconds=1.0)
    row.set_rates("ours", runs.Work(flops=50e9, bytes=4e9), seconds=0.5)
    shares = row.shares(roof)
    assert shares["official_flops_share"] == pytest.approx(0.5)  # 50 of fp32's 100
    assert shares["ours_flops_share"] == pytest.approx(0.5)  # 100 of bf16's 200
    assert shares["official_bandwidth_share"] == pytest.approx(0.2)  # 4 of the better 20
    assert shares["ours_bandwidth_share"] == pytest.approx(0.4)


def test_bench_rows_state_their_share(reference) -> None:
    roof = measure_roofline("cpu", matmul_size=128, stream_mib=4, repeats=1)
    result = bench_prefill("tiny", lengths=[64], max_official_tokens=128, reference=reference, roofline=roof)
    (row,) = result.rows
    assert row.ours_gflops > 0 and row.official_gflops > 0 and row.ours_gbps > 0
    data = result.to_dict()
    assert data["roofline"]["fp32_gflops"] == roof.fp32_gflops
    assert 0 < data["rows"][0]["ours_flops_share"] == row.ours_gflops / roof.fp32_gflops
    assert "% matmul peak" in format_table(result)


def test_default_recipes_follow_each_sides_own_training_code() -> None:
    cpu = torch.device("cpu")
    # official train.py on CPU: torch.compile, no autocast, its GradScaler enabled (dtype float16)
    assert runs.official_default_recipe(cpu) == TrainRecipe("fp32", compile=True, scaler=True, weight_decay=0.1)
    ours = runs.ours_default_recipe(cpu)
    assert ours.precision == resolve_precision("auto", cpu) and ours.grad_clip == 1.0 and ours.param_groups
    # as `bdh train`'s loop on CPU
    assert ours.reuse_buffers and "CPU buffer reuse" in ours.describe()


def test_train_bench_reuses_buffers_on_our_side_only(reference, monkeypatch) -> None:
    from bdh import buffers

    entered = []
    original = runs.reuse_cpu_buffers

    def recorded(*args, **kwargs):
        entered.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(runs, "reuse_cpu_buffers", recorded)
    result = bench_train(
        "tiny", batch_size=2, block_size=16, steps=2, warmup=1, reference=reference
    )
    assert len(entered) == 4  # one per step of our side: warm-up, two timed rounds, the peak round
    assert all(kwargs == {"release_on_exit": False} for kwargs in entered)
    recipes = list(result.settings["recipes"])
    assert any(r.startswith("ours:") and "CPU buffer reuse" in r for r in recipes)
    assert any(r.startswith("official:") and "buffer" not in r for r in recipes)
    assert buffers.cached_bytes() == 0  # released after the run


def test_train_bench_default_row_beside_like_for_like(reference, monkeypatch) -> None:
    # torch.compile takes a minute on CPU: the official default recipe without it here
    uncompiled = TrainRecipe("fp32", scaler=True, weight_decay=0.1)
    monkeypatch.setattr(runs, "official_default_recipe", lambda device: uncompiled)
    result = bench_train("tiny", batch_size=2, block_size=16, steps=2, warmup=1, reference=reference,
                         precision=["fp32", "bf16", "default"])  # fmt: skip
    fp32, bf16, default = result.rows
    assert [r.setting.split()[-1] for r in result.rows] == ["fp32", "bf16", "default"]
    assert bf16.official_precision == bf16.ours_precision == "bf16"
    assert default.official_precision == "fp32" and default.ours_precision == resolve_precision("auto", torch.device("cpu"))
    assert "GradScaler" in default.note and "clip 1" in default.note
    assert all(r.ours_tokens_per_s > 0 and r.official_tokens_per_s > 0 for r in result.rows)
    assert "untimed" in result.settings["warmup"]


def test_generate_bench_times_both_sides_in_rounds(reference, monkeypatch) -> None:
    official_runs = []
    original = runs._official_generation

    def counted(*args):
        official_runs.append(args[2])
        return original(*args)

    monkeypatch.setattr(runs, "_official_generation", counted)
    result = bench_generate(["tiny"], new_tokens=[4, 6], max_official_tokens=6, prompt_len=3, repeats=3,
                            reference=reference)  # fmt: skip
    assert official_runs == [6, 6, 6]  # once per round, not once in all
    assert "3 interleaved rounds" in result.settings["timing"]
    assert all(r.ours_gflops > 0 and r.official_gflops > 0 for r in result.rows)


def test_cli_roofline_json(capsys) -> None:
    main(["bench", "roofline", "--matmul-size", "128", "--stream-mib", "4", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert data["fp32_gflops"] > 0 and data["bandwidth_gbps"] > 0 and data["matmul_size"] == 128
