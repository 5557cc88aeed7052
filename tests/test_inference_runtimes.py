"""The dense runtimes the benchmark compares with: they give the model's outputs, and the rounds alternate."""
import pytest
import torch

import adapmtl
from adapmtl.export.onnx import write_onnx
from adapmtl.inference import InferenceError
from adapmtl.inference.runtimes import RUNTIMES, max_difference, openvino_available
from adapmtl.inference.speed import time_alternating
from adapmtl.models.spec import ModelSpec

TASKS = {"segment_semantic": 5, "depth_zbuffer": 1}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = adapmtl.models.create_model("mobilenetv2", TASKS, width=0.25, head_channels=16).eval()
    path, _ = write_onnx(model, ModelSpec("mobilenetv2", TASKS, width=0.25, head_channels=16),
                         tmp_path_factory.mktemp("onnx") / "model.onnx", (32, 40))
    return model, path


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("batch", [1, 3])
def test_runtime_gives_the_models_outputs(exported, runtime, batch):
    if runtime == "openvino" and not openvino_available():
        pytest.skip("OpenVINO is the optional extra 'bench'")
    model, path = exported
    x = torch.randn(batch, 3, 32, 40)
    run = RUNTIMES[runtime](path, x, 1)
    outputs = run(x)
    with torch.no_grad():
        expected = model(x)
    assert [o.shape for o in outputs] == [expected[t].shape for t in TASKS]  # the dict's order
    assert max_difference(run, model, x) < 1e-4
    with pytest.raises(InferenceError, match="output 0 differs"):  # a wrong runtime is refused
        max_difference(lambda x: (outputs[0] + 1, outputs[1]), model, x)
    for other in (torch.randn(batch + 1, 3, 32, 40), torch.randn(batch, 3, 40, 32)):  # set up for x's shape only
        with pytest.raises(InferenceError, match=rf"set up for inputs of shape \[{batch}, 3, 32, 40\] .*got "
                                                 rf"\[{other.shape[0]}, 3, {other.shape[2]}, {other.shape[3]}\]"):
            run(other)


def test_rounds_alternate_after_one_warm_up_each_in_shuffled_orders():
    def run(rounds):
        calls = []
        times = time_alternating({name: lambda x, name=name: calls.append(name) for name in "abcd"},
                                 torch.zeros(1), rounds=rounds)
        return calls, times

    calls, times = run(12)
    assert "".join(calls[:4]) == "abcd"  # the warm-up, in order
    rounds = ["".join(calls[4 + 4 * r:8 + 4 * r]) for r in range(12)]
    assert all(sorted(order) == list("abcd") for order in rounds)  # every round calls each once
    # what runs right before "b" varies: a fixed order, or a rotation, would keep "a" there most of the time
    before_b = [order[order.index("b") - 1] for order in rounds if order.index("b") > 0]
    assert max(before_b.count(name) for name in "acd") <= len(before_b) // 2 + 1 and len(set(before_b)) >= 2
    assert run(12)[0] == calls  # seeded: the same orders every time
    assert all(len(times[name]) == 12 and all(t >= 0 for t in times[name]) for name in "abcd")
    with pytest.raises(ValueError, match="at least one contender"):
        time_alternating({}, torch.zeros(1))
    with pytest.raises(ValueError, match="rounds must be at least 1"):
        time_alternating({"a": lambda x: None}, torch.zeros(1), rounds=0)


def test_onnxruntime_stops_spinning_when_a_run_returns(exported, monkeypatch):
    """Its pool's spinning threads would otherwise take a core from the next contender (measured: the compiled
    model 33-36 ms on two threads alone, 51-57 ms right after an ONNX Runtime call)."""
    import onnxruntime as ort

    model, path = exported
    opened = []

    class Recording(ort.InferenceSession):
        def __init__(self, path, sess_options=None, **kwargs):
            opened.append(sess_options)
            super().__init__(path, sess_options, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", Recording)
    run = RUNTIMES["onnxruntime"](path, torch.randn(1, 3, 32, 40), 2)
    timed = opened[-1]  # the session that runs (the first only reads the input's name and batch)
    assert timed.get_session_config_entry("session.force_spinning_stop") == "1"
    assert timed.intra_op_num_threads == 2 and timed.inter_op_num_threads == 1
    assert len(run(torch.randn(1, 3, 32, 40))) == len(TASKS)


def test_openvino_compiled_takes_extra_properties(exported):
    if not openvino_available():
        pytest.skip("OpenVINO is the optional extra 'bench'")
    from adapmtl.inference.runtimes import openvino_compiled

    _, path = exported
    x = torch.randn(2, 3, 32, 40)
    compiled = openvino_compiled(path, x, 1, PERF_COUNT=True)  # the profile script's use
    assert list(compiled.inputs[0].shape) == [2, 3, 32, 40]
    request = compiled.create_infer_request()
    request.infer({0: x.numpy()})
    assert any(info.node_type == "Convolution" for info in request.profiling_info)
