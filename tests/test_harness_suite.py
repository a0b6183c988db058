"""Suites: TOML grids expand to the intended cases; filters; argument errors; no framework import."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest

from harness import cases
from harness.cases import Case
from harness.suite import TimingSettings, expand, filter_params, load_suite

SMOKE_AXES = ("gate", "framework", "mode", "gating")


def test_smoke_has_every_gate_framework_mode_gating_once():
    smoke = expand("smoke")
    got = [tuple(getattr(c, a) for a in SMOKE_AXES) for c in smoke if c.experts == 16]
    want = set(itertools.product(cases.GATES, cases.FRAMEWORKS, cases.MODES, cases.GATINGS))
    assert sorted(got) == sorted(want)
    sweep = [c for c in smoke if c.experts != 16]  # the cost-against-experts sweep: fwdbwd, per-example
    assert {c.experts for c in sweep} == {64, 256} and {c.gate for c in sweep} == {"softmax", "topk", "dselect_k"}
    assert all(c.mode == "fwdbwd" and c.gating == "per_example" for c in sweep)


def test_kernels_has_the_named_scales_reference_and_the_expert_sweep():
    all_cases = expand("kernels")
    shapes = {(c.batch, c.input_dim, c.experts, c.k) for c in all_cases}
    for scale in [(4096, 256, 16, 4), (16384, 4096, 64, 4), (16384, 2048, 256, 8)]:
        assert scale in shapes
        assert any((c.batch, c.input_dim, c.experts, c.k) == scale and c.gate == "dselect_k"
                   and c.impl == "reference" for c in all_cases)
    sweep = sorted({c.experts for c in all_cases if c.batch == 4096 and c.input_dim == 256})
    assert sweep == [8, 16, 32, 64, 128, 256, 512]
    assert {c.impl for c in all_cases} == set(cases.IMPLS)
    # bitwise/reference only for dselect_k
    assert all(c.gate == "dselect_k" for c in all_cases if c.impl in cases.DSELECT_ONLY_IMPLS)
    assert load_suite("kernels").settings["flush_l2"] is True


def test_regress_loads_and_expands():
    suite = load_suite("regress")
    assert suite.kind == "timing" and len(expand(suite)) > 0


def _suite(**grid):
    base = {"gate": ["softmax"], "framework": ["torch"], "mode": ["fwd"], "batch": 8, "input_dim": 4,
            "experts": 4, "k": 2}
    base.update(grid)
    return {"name": "t", "grid": [base]}


def test_static_cases_drop_batch_and_deduplicate():
    got = expand(_suite(gating=["static", "per_example"], batch=[8, 16]))
    static = [c for c in got if c.gating == "static"]
    assert len(static) == 1 and static[0].batch is None and static[0].input_dim is None
    assert len([c for c in got if c.gating == "per_example"]) == 2


def test_dselect_only_impls_dropped_for_other_gates():
    got = expand(_suite(gate=["softmax", "dselect_k"], impl=["eager", "reference"]))
    assert {(c.gate, c.impl) for c in got} == {("softmax", "eager"), ("dselect_k", "eager"),
                                               ("dselect_k", "reference")}


def test_triton_impl_dropped_for_tensorflow_and_other_gates():
    got = expand(_suite(gate=["topk", "dselect_k"], framework=["torch", "tf"], impl=["eager", "triton"]))
    assert {(c.gate, c.framework, c.impl) for c in got if c.impl == "triton"} == {("dselect_k", "torch", "triton")}
    with pytest.raises(ValueError, match="impl: 'triton' exists for framework 'torch' only; got 'tf'"):
        Case("dselect_k", "tf", "gpu", "triton", "fwd", "per_example", 8, 4, 4, 2)


def test_hparams_by_gate_go_into_the_case_and_its_id():
    got = expand(_suite(gate=["topk"], hparams={"topk": {"noisy": True}}))
    assert dict(got[0].hparams) == {"noisy": True}
    assert "hparams=" in got[0].case_id
    assert Case.from_params(got[0].params()) == got[0]


@pytest.mark.parametrize("grid, match", [
    ({"gate": ["nope"]}, "gate"),
    ({"mode": ["sideways"]}, "mode"),
    ({"colour": "red"}, "unknown keys"),
    ({"k": 9}, "k"),
    ({"impl": ["bitwise"]}, None),  # dropped for softmax: no cases, no error
    ({"device": ["tpu"]}, "device"),
])
def test_bad_grids_raise_value_error_naming_the_key(grid, match):
    if match is None:
        assert expand(_suite(**grid)) == []
        return
    with pytest.raises(ValueError, match=match):
        expand(_suite(**grid))


def test_bad_suite_files(tmp_path):
    with pytest.raises(ValueError, match="suite"):
        load_suite(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_suite(bad)
    with pytest.raises(ValueError, match="kind"):
        load_suite({"name": "x", "kind": "speed", "grid": []})
    with pytest.raises(ValueError, match="settings"):
        load_suite({"name": "x", "settings": {"rep": 1}, "grid": [{}]})


def test_filters_select_by_value_and_normalise_devices():
    params = [c.params() for c in expand("smoke")]
    kept = filter_params(params, {"gate": ["topk"], "framework": ["torch"], "mode": None, "device": ["CPU"]})
    assert len(kept) == 6 + 2 and all(p["gate"] == "topk" and p["framework"] == "torch" for p in kept)  # + sweep
    assert filter_params(params, {"device": ["cuda"]}) == []
    base = [p for p in params if p["experts"] == 16]
    assert filter_params(params, {"experts": [16]}) == base and len(base) == len(params) - 12


def test_case_validation_messages():
    with pytest.raises(ValueError, match="impl"):
        Case("softmax", "torch", "cpu", "bitwise", "fwd", "per_example", 8, 4, 4, 2)
    with pytest.raises(ValueError, match="batch, input_dim"):
        Case("softmax", "torch", "cpu", "eager", "fwd", "static", 8, 4, 4, 2)
    with pytest.raises(ValueError, match="batch"):
        Case("softmax", "torch", "cpu", "eager", "fwd", "per_example", 0, 4, 4, 2)


def test_harness_modules_import_no_framework():
    code = (
        "import sys, harness, harness.timer, harness.cases, harness.suite, harness.runner, harness.executors, "
        "harness.tasks, harness.schema, harness.env, harness.adapters, gatebench.cli, gatebench.plain\n"
        "bad = [m for m in ('torch', 'tensorflow') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize("settings, match", [
    ({"warmup_ms": "fast"}, r"settings.warmup_ms: expected a finite number >= 0 \(milliseconds\); got 'fast'"),
    ({"rep_ms": -1}, "settings.rep_ms: expected a finite number >= 0"),
    ({"check": "no"}, "settings.check: expected true or false; got 'no'"),
    ({"min_reps": 0}, "settings.min_reps: expected an integer >= 1; got 0"),
    ({"min_reps": 10, "max_reps": 5}, "settings.max_reps: expected an integer >= 10; got 5"),
    ({"max_reference_bytes": 1.5}, "settings.max_reference_bytes: expected an integer"),
])
def test_bad_settings_name_the_key_and_the_file(tmp_path, settings, match):
    path = tmp_path / "bad.toml"
    lines = [f"{key} = {value!r}".replace("'", '"') for key, value in settings.items()]
    path.write_text('name = "bad"\n[settings]\n' + "\n".join(lines).lower() + "\n" + _GRID_TOML)
    with pytest.raises(ValueError, match=match) as info:
        load_suite(path)
    assert str(path) in str(info.value)


_GRID_TOML = ('[[grid]]\ngate = "softmax"\nframework = "torch"\nmode = "fwd"\n'
              'shapes = [{batch = 4, input_dim = 4, experts = 4, k = 2}]\n')


@pytest.mark.parametrize("grid, match", [
    (5, "grid: expected \\[\\[grid\\]\\] tables; got 5"),
    ([1, 2], "grid: expected \\[\\[grid\\]\\] tables; got 1 as grid 1"),
    ([], "grid: expected at least one"),
    ([{"gate": "softmax", "framework": "torch", "mode": "fwd", "shapes": [{"batch": [4], "input_dim": 4,
                                                                          "experts": 4, "k": 2}]}], "batch"),
])
def test_bad_grid_values_are_value_errors_at_load(grid, match):
    with pytest.raises(ValueError, match=match):
        load_suite({"name": "x", "grid": grid})


def test_settings_are_typed_with_defaults_and_read_as_a_mapping():
    settings = load_suite("smoke").settings
    assert isinstance(settings, TimingSettings) and settings.warmup_ms == 5.0 and isinstance(settings.rep_ms, float)
    assert settings.check is True and settings["max_reps"] == settings.max_reps == 2000
    assert TimingSettings.from_json(settings.to_json()) == settings and dict(settings) == settings.to_json()
    assert load_suite("recovery").settings is None
    with pytest.raises(ValueError, match="settings: unknown keys"):
        TimingSettings.from_json({"warmup": 1})


def test_the_clock_setting_resolves_per_device_and_needs_one_thread_for_cpu_time():
    from harness.suite import TimingSettings

    assert TimingSettings().clock == "auto" and TimingSettings().host_clock("cpu") == "cpu"
    assert TimingSettings(threads=2).host_clock("cpu") == "wall"
    assert TimingSettings(clock="wall").host_clock("cpu") == "wall"
    assert TimingSettings(clock="cpu").host_clock("gpu") == "wall"
    with pytest.raises(ValueError, match="clock: 'cpu' reads the timing thread's CPU time .* got threads = 2"):
        TimingSettings(clock="cpu", threads=2)
    with pytest.raises(ValueError, match="clock: expected one of auto, wall, cpu; got 'tsc'"):
        TimingSettings(clock="tsc")
