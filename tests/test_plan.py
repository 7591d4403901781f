"""The plan is one value: results, tune, sweeps, bundles, the summary table, the report and the command line carry a
`PrecisionPlan`, their keys come from its fields, and every choice and default comes from `workbench.vocabulary`."""
from __future__ import annotations

import argparse
import inspect
import json
from dataclasses import fields

import pytest
from conftest import make_labelled_sample

from workbench import vocabulary
from workbench.backends import backend_names
from workbench.cli import GRID_KEYS, _parser, grid_configs
from workbench.distributed import job_config
from workbench.precision.plan import INT8_FIELDS, PLAN_CHOICES, PLAN_FIELDS, PrecisionPlan
from workbench.results import RunResult
from workbench.schema import SchemaError, check_run_json
from workbench.session import Workbench

GPTQ_BC = PrecisionPlan("int8", weight_rounding="gptq+bc")


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    return Workbench(make_labelled_sample(), cache_dir=tmp_path_factory.mktemp("cache"), progress=False)


@pytest.fixture(scope="module")
def plain_and_corrected(session):
    """The same INT8 configuration with round-to-nearest weights and with GPTQ + bias correction."""
    options = {"batch": 8, "runs": 3, "drift": False, "profile": False}
    return session.run(PrecisionPlan("int8"), **options), session.run(GPTQ_BC, **options)


def test_result_json_keys_come_from_the_plan_and_read_back_to_the_same_plan(plain_and_corrected):
    plain, corrected = plain_and_corrected
    for result in (plain, corrected):
        data = result.to_json()
        assert {"precision", "method", "qdq_style", "keep_fp32", "weight_rounding"} <= set(data)
        assert set(PLAN_FIELDS) <= set(data)
        assert RunResult.from_json(json.loads(json.dumps(data))).plan == result.plan
    assert corrected.to_json()["weight_rounding"] == "gptq+bc" and plain.to_json()["weight_rounding"] == "nearest"
    assert plain.cache_key != corrected.cache_key


def test_a_result_from_before_weight_rounding_reads_as_nearest(plain_and_corrected):
    data = plain_and_corrected[0].to_json()
    del data["weight_rounding"], data["per_channel"]
    check_run_json(data)
    assert RunResult.from_json(data).plan == PrecisionPlan("int8")


@pytest.mark.parametrize("key, value, problem", [
    ("weight_rounding", 3, "weight_rounding is not str or null"),
    ("per_channel", "yes", "per_channel is not bool"),
    ("keep_fp32", "conv1", "keep_fp32 is not a list of strings"),
    ("precision", "int4", "Unknown precision"),
    ("method", "histogram", "Unknown calibration method"),
])
def test_the_schema_checks_the_plan_keys_as_the_dataclass_declares_them(plain_and_corrected, key, value, problem):
    data = {**plain_and_corrected[0].to_json(), key: value}
    with pytest.raises(SchemaError, match=problem):
        check_run_json(data)


def test_the_schema_refuses_a_plan_the_plan_itself_refuses(plain_and_corrected):
    data = {**plain_and_corrected[0].to_json(), "method": "dynamic", "qdq_style": "tensorrt"}
    with pytest.raises(SchemaError, match="precision plan: method='dynamic'"):
        check_run_json(data)


def test_cache_keys_of_plans_from_before_later_fields_stay_the_same():
    assert PrecisionPlan("int8").to_json() == {"precision": "int8", "method": "minmax", "qdq_style": "onnxruntime",
                                               "per_channel": True, "keep_fp32": []}
    assert GPTQ_BC.to_json()["weight_rounding"] == "gptq+bc"
    assert PrecisionPlan.from_json(GPTQ_BC.to_record()) == GPTQ_BC


def test_gptq_with_bias_correction_is_told_apart_in_table_report_bundle_and_sweep(session, plain_and_corrected,
                                                                                  tmp_path):
    from workbench.report import build_report
    from workbench.scenarios import export_bundle
    from workbench.views import summary_html, summary_table

    plain, corrected = plain_and_corrected
    rows = summary_table([plain, corrected])
    assert [r["weight_rounding"] for r in rows] == ["nearest", "gptq+bc"]
    assert rows[0]["label"] != rows[1]["label"] and "gptq+bc" in rows[1]["label"]
    assert "gptq+bc" in summary_html([plain, corrected])
    report = build_report([session], [plain, corrected])
    assert report.count("gptq+bc") >= 1 and plain.label in report and corrected.label in report

    metadata = [json.loads((export_bundle(session, r, tmp_path / name) / "metadata.json").read_text())
                for r, name in ((plain, "plain"), (corrected, "corrected"))]
    assert [m["precision_plan"]["weight_rounding"] for m in metadata] == ["nearest", "gptq+bc"]
    assert PrecisionPlan.from_json(metadata[1]["precision_plan"]) == GPTQ_BC

    configs = [job_config(session._job_of(r)) for r in (plain, corrected)]
    assert [c["weight_rounding"] for c in configs] == ["nearest", "gptq+bc"]
    assert session.prepare_run(**configs[1]).key == corrected.cache_key  # a sweep worker rebuilds the same job


def test_the_cli_grid_and_report_flags_carry_weight_rounding():
    configs = grid_configs(["precision=fp32,int8", "weight_rounding=nearest,gptq+bc"])
    assert configs == [{"precision": "fp32"}, {"precision": "int8", "weight_rounding": "nearest"},
                       {"precision": "int8", "weight_rounding": "gptq+bc"}]
    args = _parser().parse_args(["report", "tiny", "--weight-rounding", "gptq+bc", "--method", "dynamic"])
    assert (args.weight_rounding, args.method) == ("gptq+bc", "dynamic")
    args = _parser().parse_args(["tune", "tiny", "--weight-rounding", "nearest", "--weight-rounding", "gptq"])
    assert args.weight_rounding == ["nearest", "gptq"]


def test_run_takes_the_plan_or_its_fields_by_name_but_not_both(session):
    assert session.prepare_run("int8", weight_rounding="gptq+bc", batch=8).plan == GPTQ_BC
    assert session.prepare_run(GPTQ_BC, keep_fp32=(), batch=8).plan == GPTQ_BC
    with pytest.raises(Exception, match="PrecisionPlan and plan keywords"):
        session.prepare_run(GPTQ_BC, method="entropy")


# ---- one vocabulary --------------------------------------------------------------------------------------------
VOCABULARY = {"precision": vocabulary.PRECISIONS, "method": vocabulary.METHODS, "qdq_style": vocabulary.QDQ_STYLES,
              "weight_rounding": vocabulary.WEIGHT_ROUNDINGS, "metric": vocabulary.TUNE_METRICS,
              "algorithms": vocabulary.ALGORITHMS,
              "backend": tuple(backend_names())}  # engine names and Q/DQ styles share words
REDUCED = tuple(p for p in vocabulary.PRECISIONS if p != "fp32")  # what `tune` searches


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_cli_choice_and_default_comes_from_the_vocabulary():
    checked = []
    for command, parser in _subcommands().items():
        for action in parser._actions:
            if not action.choices:
                continue
            if action.dest in VOCABULARY:  # a flag named after a word of the plan offers all of it, in order
                expected = REDUCED if (command, action.dest) == ("tune", "precision") else VOCABULARY[action.dest]
                assert tuple(action.choices) == expected, f"{command} --{action.dest}"
                checked.append((command, action.dest))
            else:  # and no other flag offers a part of one
                words = set(map(str, action.choices))
                assert not any(words & set(vocab) for name, vocab in VOCABULARY.items() if name != "backend"), \
                    f"{command} --{action.dest}"
    assert {("report", "method"), ("report", "qdq_style"), ("report", "weight_rounding"), ("report", "precision"),
            ("tune", "method"), ("tune", "weight_rounding"), ("tune", "metric"), ("lint", "qdq_style"),
            ("warm", "method"), ("warm", "precision")} <= set(checked)
    defaults = {command: {a.dest: a.default for a in parser._actions} for command, parser in _subcommands().items()}
    assert defaults["tune"]["max_drop"] == vocabulary.DEFAULT_MAX_DROP
    assert defaults["tune"]["budget"] == vocabulary.DEFAULT_BUDGET
    assert defaults["tune"]["metric"] == vocabulary.DEFAULT_METRIC
    assert defaults["tune"]["runs"] == defaults["report"]["runs"] == vocabulary.DEFAULT_RUNS
    assert set(PLAN_CHOICES) <= set(GRID_KEYS) and set(INT8_FIELDS) <= {a.dest for a in
                                                                      _subcommands()["report"]._actions}


def test_every_python_default_comes_from_the_vocabulary():
    from workbench import tune as tune_module

    for function in (Workbench.tune, tune_module.tune):
        parameters = inspect.signature(function).parameters
        assert parameters["max_drop"].default == vocabulary.DEFAULT_MAX_DROP
        assert parameters["budget"].default == vocabulary.DEFAULT_BUDGET
        assert parameters["metric"].default == vocabulary.DEFAULT_METRIC
    for function in (Workbench.sensitivity, tune_module.sensitivity):
        assert inspect.signature(function).parameters["confirm"].default == vocabulary.DEFAULT_CONFIRM
    assert inspect.signature(Workbench.prepare).parameters["runs"].default == vocabulary.DEFAULT_RUNS
    assert {f.name: f.metadata.get("choices") for f in fields(PrecisionPlan) if f.name in VOCABULARY} == \
        {name: VOCABULARY[name] for name in PLAN_CHOICES}


def test_every_widget_option_and_default_comes_from_the_vocabulary(explorer):
    assert [value for _, value in explorer.precision.options] == list(vocabulary.PRECISIONS)
    methods = list(explorer.method.options)
    assert methods == [m for m in vocabulary.METHODS if m in methods] and methods[0] == vocabulary.METHODS[0]
    assert set(vocabulary.METHODS) - set(methods) <= {"dynamic"}  # dynamic joins for models it quantises
    assert tuple(explorer.qdq_style.options) == vocabulary.QDQ_STYLES
    mixed = explorer.mixed
    assert tuple(mixed.metric.options) == vocabulary.TUNE_METRICS and mixed.metric.value == vocabulary.DEFAULT_METRIC
    assert mixed.max_drop.value == vocabulary.DEFAULT_MAX_DROP and mixed.budget.value == vocabulary.DEFAULT_BUDGET

