"""The paper's architectures: exact weight counts, output shapes, the registry's errors."""
import pytest
import torch
import torch.nn.functional as F

from adapmtl.errors import AdapMTLError
from adapmtl.models import ASPPHead, ModelError, MultiTaskModel, available_models, create_model
from adapmtl.models.spec import ModelSpec
from adapmtl.tasks import dataset_tasks

NYU = {"segment_semantic": 40, "normal": 3, "depth_zbuffer": 1}
TASKONOMY = {"segment_semantic": 17, "normal": 3, "depth_zbuffer": 1, "keypoints2d": 1, "edge_texture": 1}


def conv_weights(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.dim() == 4)


def meta_model(name, tasks, **kw):
    """Full-size models on the meta device: right shapes, no memory, no init cost."""
    with torch.device("meta"):
        return create_model(name, tasks, **kw)


def aspp_weights(features: int, classes: int, hidden: int = 1024) -> int:
    # 4 branches × (3×3 F→hidden + 1×1 hidden→hidden + 1×1 hidden→C), weights only
    return 4 * (features * hidden * 9 + hidden * hidden + hidden * classes)


def test_registry_lists_the_papers_models():
    assert available_models() == ["deeplab_resnet34", "mobilenetv2"]


def test_deeplab_resnet34_backbone_has_the_papers_conv_weight_count():
    model = meta_model("deeplab_resnet34", NYU)
    # stem 3·64·49 = 9,408; stage1 6·64·64·9 = 221,184;
    # stage2 64·128·9 + 7·128·128·9 + 64·128 = 1,114,112;
    # stage3 128·256·9 + 11·256·256·9 + 128·256 = 6,815,744;
    # stage4 256·512·9 + 5·512·512·9 + 256·512 = 13,107,200
    assert conv_weights(model.backbone) == 21_267_648
    assert model.backbone.out_channels == 512


@pytest.mark.parametrize(
    "classes, expected",
    [(40, 23_232_512), (17, 23_138_304), (3, 23_080_960), (1, 23_072_768)],
)
def test_aspp_head_weight_count_on_resnet34(classes, expected):
    model = meta_model("deeplab_resnet34", {"task": classes})
    assert conv_weights(model.heads["task"]) == expected == aspp_weights(512, classes)


def test_every_taskonomy_head_on_resnet34():
    model = meta_model("deeplab_resnet34", TASKONOMY)
    counts = {task: conv_weights(head) for task, head in model.heads.items()}
    assert counts == {
        "segment_semantic": 23_138_304,
        "normal": 23_080_960,
        "depth_zbuffer": 23_072_768,
        "keypoints2d": 23_072_768,
        "edge_texture": 23_072_768,
    }


def test_mobilenetv2_backbone_and_heads():
    model = meta_model("mobilenetv2", NYU)
    # stem 864 + inverted residuals 1,779,296 + final 320·1280 = 2,189,760 conv weights;
    # with BatchNorm 2,223,872 parameters: torchvision's 3,504,872 minus its 1,281,000 classifier.
    assert conv_weights(model.backbone) == 2_189_760
    assert sum(p.numel() for p in model.backbone.parameters()) == 2_223_872
    assert model.backbone.out_channels == 1280
    counts = {task: conv_weights(head) for task, head in model.heads.items()}
    assert counts == {"segment_semantic": 51_544_064, "normal": 51_392_512, "depth_zbuffer": 51_384_320}
    assert counts["segment_semantic"] == aspp_weights(1280, 40)


def test_head_biases_are_separate_from_the_weight_count():
    head = meta_model("deeplab_resnet34", {"seg": 40}).heads["seg"]
    biases = sum(p.numel() for p in head.parameters() if p.dim() == 1)
    assert biases == 4 * (1024 + 1024 + 40)


def test_small_knobs_shrink_backbone_and_heads():
    model = meta_model("deeplab_resnet34", {"seg": 40}, width=0.25, head_channels=32)
    assert model.backbone.out_channels == 128
    assert conv_weights(model.heads["seg"]) == aspp_weights(128, 40, hidden=32)
    assert meta_model("mobilenetv2", {"seg": 40}, width=0.5).backbone.out_channels == 640


@pytest.mark.parametrize("name, native", [("deeplab_resnet34", (9, 11)), ("mobilenetv2", (3, 3))])
@pytest.mark.parametrize("tasks", [NYU, TASKONOMY, {"normal": 3}])
def test_outputs_per_task_at_input_or_native_resolution(name, native, tasks):
    torch.manual_seed(0)
    model = create_model(name, tasks, width=0.125, head_channels=8).eval()
    x = torch.randn(2, 3, 65, 79)
    with torch.no_grad():
        out = model(x)
        assert list(out) == list(tasks)
        assert {t: tuple(o.shape) for t, o in out.items()} == {t: (2, c, 65, 79) for t, c in tasks.items()}
        model.upsample = False
        native_out = model(x)
    # ResNet34: output stride 8 (⌈65/8⌉ = 9 with the ceil-mode pool); MobileNetV2: stride 32
    assert {t: tuple(o.shape) for t, o in native_out.items()} == {t: (2, c, *native) for t, c in tasks.items()}


def test_model_exposes_backbone_and_heads_for_sparsify():
    model = meta_model("deeplab_resnet34", NYU)
    assert isinstance(model, MultiTaskModel)
    assert isinstance(model.heads, torch.nn.ModuleDict)
    assert list(model.heads) == list(NYU)
    assert model.tasks == NYU
    # heads and backbone partition the parameters
    n_all = sum(p.numel() for p in model.parameters())
    n_parts = sum(p.numel() for p in model.backbone.parameters()) + sum(p.numel() for p in model.heads.parameters())
    assert n_all == n_parts


def test_initialisation_follows_the_original_code():
    torch.manual_seed(0)
    resnet = create_model("deeplab_resnet34", {"seg": 2}, width=0.5, head_channels=8)
    conv = resnet.backbone.stages[3][1].conv1.weight  # 256·256·9 weights
    assert abs(conv.std().item() - 0.01) < 0.0005
    bn = resnet.backbone.stages[3][1].bn1
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
    mobile = create_model("mobilenetv2", {"seg": 2}, head_channels=8)
    project = mobile.backbone.features[-3]  # final 1×1 conv 320→1280: std √(2/1280)
    assert abs(project.weight.std().item() - (2 / 1280) ** 0.5) < 0.001


def test_dilated_stages_dilate_their_first_block_and_project_the_shortcut():
    backbone = meta_model("deeplab_resnet34", {"seg": 2}).backbone
    dilations = [[block.conv1.dilation[0] for block in stage] for stage in backbone.stages]
    assert dilations == [[1] * 3, [1] * 4, [2] * 6, [4] * 3]
    projected = [not isinstance(stage[0].shortcut, torch.nn.Identity) for stage in backbone.stages]
    assert projected == [False, True, True, True]


@pytest.mark.parametrize(
    "args, kw, message",
    [
        (("resnet50", NYU), {}, "unknown model 'resnet50'"),
        (("deeplab_resnet34", {}), {}, "non-empty"),
        (("deeplab_resnet34", {"seg": 0}), {}, "tasks['seg'] must be a positive int"),
        (("deeplab_resnet34", NYU), {"width": 0}, "width must be > 0"),
        (("mobilenetv2", NYU), {"head_channels": 1.5}, "head_channels must be a positive int"),
        (("deeplab_resnet34", NYU), {"aspp_rates": (1, 2, 3)}, "aspp_rates must be four positive ints"),
        (("deeplab_resnet34", NYU), {"aspp_rates": (0, 1, 2, 3)}, "aspp_rates must be four positive ints"),
    ],
)
def test_bad_requests_raise_model_errors(args, kw, message):
    with pytest.raises(ModelError) as info:
        meta_model(*args, **kw)
    assert message in str(info.value)
    assert isinstance(info.value, AdapMTLError) and isinstance(info.value, ValueError)


def test_a_small_model_trains_on_every_taskonomy_loss_at_native_resolution():
    torch.manual_seed(0)
    tasks = dataset_tasks("taskonomy")
    model = create_model("deeplab_resnet34", {t: task.out_channels for t, task in tasks.items()},
                         width=0.125, head_channels=8, upsample=False)
    batch = {
        "segment_semantic": torch.randint(0, 17, (2, 32, 32)),
        "normal": F.normalize(torch.randn(2, 3, 32, 32), dim=1),
        "depth_zbuffer": torch.rand(2, 1, 32, 32),
        "keypoints2d": torch.rand(2, 1, 32, 32),
        "edge_texture": torch.rand(2, 1, 32, 32),
    }
    out = model(torch.randn(2, 3, 32, 32))
    assert out["normal"].shape == (2, 3, 5, 5)  # 32 → 16 → 9 (ceil-mode pool) → 5
    loss = sum(task.loss(out[t], batch[t]) for t, task in tasks.items())
    loss.backward()
    assert all(head.branches[0].conv1.weight.grad is not None for head in model.heads.values())



def head_gradients(rates):
    """Each conv weight's gradient of one ASPP head (no dropout) under a sum-of-squares loss on a 6×8
    map: the backbone's output for the bench's 48×64 inputs."""
    torch.manual_seed(0)
    head = ASPPHead(16, 3, hidden=16, dropout=0.0, rates=rates)
    head(torch.randn(4, 16, 6, 8)).square().sum().backward()
    return {name: p.grad for name, p in head.named_parameters() if p.dim() == 4}


def test_small_aspp_rates_give_every_dilated_weight_a_gradient_on_a_6x8_map():
    grads = head_gradients((1, 2, 3, 4))
    dilated = [g for name, g in grads.items() if name.endswith("conv1.weight")]
    assert len(dilated) == 4 and all((g != 0).all() for g in dilated)
    # the 1×1 convs see no padding: the rates cannot starve them (only a ReLU unit dead on the whole batch can)
    assert all((g != 0).any() for g in grads.values())


def test_the_papers_rates_leave_most_3x3_taps_without_gradient_on_a_6x8_map():
    grads = head_gradients((6, 12, 18, 24))
    live = {name: (g != 0).any(dim=(0, 1)) for name, g in grads.items() if name.endswith("conv1.weight")}
    # rate 6 reaches across 8 columns, not across 6 rows: the middle row of taps; rates 12-24: the centre only
    assert live["branches.0.conv1.weight"].tolist() == [[False] * 3, [True] * 3, [False] * 3]
    for i in (1, 2, 3):
        assert live[f"branches.{i}.conv1.weight"].tolist() == [[False] * 3, [False, True, False], [False] * 3]


def test_default_rates_are_the_papers_and_the_option_reaches_every_head():
    paper = meta_model("deeplab_resnet34", NYU)
    small = meta_model("deeplab_resnet34", NYU, aspp_rates=(1, 2, 3, 4))
    for model, rates in ((paper, [6, 12, 18, 24]), (small, [1, 2, 3, 4])):
        for head in model.heads.values():
            assert [b.conv1.dilation for b in head.branches] == [(r, r) for r in rates]
            assert [b.conv1.padding for b in head.branches] == [(r, r) for r in rates]
    assert conv_weights(small) == conv_weights(paper)  # the rates move taps, not weights


def test_model_spec_records_the_rates_and_reads_specs_written_before_them():
    spec = ModelSpec("deeplab_resnet34", {"seg": 2}, width=0.125, head_channels=8, aspp_rates=(1, 2, 3, 4))
    recorded = spec.to_dict()
    assert recorded["aspp_rates"] == [1, 2, 3, 4]
    assert ModelSpec.from_dict(recorded) == spec
    head = spec.build().heads["seg"]
    assert [b.conv1.dilation[0] for b in head.branches] == [1, 2, 3, 4]
    del recorded["aspp_rates"]  # as every spec written before the option
    assert ModelSpec.from_dict(recorded).aspp_rates == (6, 12, 18, 24)
    with pytest.raises(ModelError, match="not a valid model spec"):
        ModelSpec.from_dict({**recorded, "aspp_rates": ["a", 2, 3, 4]})
