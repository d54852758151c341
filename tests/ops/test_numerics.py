"""Numerics: a non-finite loss stops training clearly; mixed precision trains on CPU;
extreme logits give finite losses and gradients."""
import math

import pytest
import torch
import torch.nn.functional as F

from retina_focal import SigmoidFocalLoss
from retina_focal.engine import device
from retina_focal.engine.trainer import CheckedSimpleTrainer, CPUAutocastTrainer


def _trainer(cfg, tmp_path, **opts):
    from retina_focal.engine.defaults import Trainer

    cfg.merge_from_list(["OUTPUT_DIR", str(tmp_path), "DATASETS.TEST", "()",
                         "SOLVER.IMS_PER_BATCH", "2", "SEED", "3"]
                        + [x for kv in opts.items() for x in kv])
    return Trainer(cfg)


def test_non_finite_loss_stops_training_naming_iteration_and_loss(tiny_cfg, tmp_path):
    # a huge learning rate: the first update blows the weights up, iteration 1 overflows
    trainer = _trainer(tiny_cfg, tmp_path, **{"SOLVER.BASE_LR": "1e30", "SOLVER.MAX_ITER": "4"})
    trainer.resume_or_load(resume=False)
    with pytest.raises(FloatingPointError) as info:
        trainer.train()
    msg = str(info.value)
    assert "Loss became infinite or NaN at iteration=1" in msg  # Detectron2's own check
    assert "Non-finite loss at iteration 1:" in msg
    named = [k for k in ("loss_cls", "loss_box_reg") if f"{k}" in msg.split("Non-finite")[1]]
    assert named, msg
    # it stopped there: no further iteration ran
    assert trainer.iter == 1


@pytest.mark.parametrize("text, native", [
    ("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 avx512_vnni\n", True),
    ("processor\t: 0\nflags\t\t: fpu sse2 avx512f amx_tile amx_bf16\n", True),
    ("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n", False),
    ("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n", True),
    ("processor\t: 0\nFeatures\t: fp asimd crc32\n", False),
    ("model name\t: avx512_bf16 in a name is not a flag\nflags\t: fpu\n", False),
], ids=["avx512_bf16", "amx_bf16", "avx512-without-bf16", "arm-bf16", "arm", "name-only"])
def test_native_bfloat16_is_read_from_the_cpu_flags(tmp_path, text, native):
    info = tmp_path / "cpuinfo"
    info.write_text(text)
    assert device.cpu_has_native_bfloat16(str(info)) is native


def test_no_cpuinfo_means_no_native_bfloat16(tmp_path):
    assert device.cpu_has_native_bfloat16(str(tmp_path / "absent")) is False


@pytest.mark.parametrize("native", [True, False], ids=["bf16-cpu", "no-bf16-cpu"])
@pytest.mark.parametrize("mode", ["native", "always"])
def test_amp_on_cpu_uses_bfloat16_only_where_the_cpu_has_it(
        tiny_cfg, tmp_path, monkeypatch, caplog, native, mode):
    monkeypatch.setattr(device, "cpu_has_native_bfloat16", lambda: native)
    trainer = _trainer(tiny_cfg, tmp_path, **{"SOLVER.AMP.ENABLED": "True",
                                              "MODEL.RETINA_FOCAL.CPU_BFLOAT16": mode})
    expect_bf16 = native or mode == "always"
    assert isinstance(trainer._trainer, CPUAutocastTrainer) is expect_bf16
    if not expect_bf16:
        assert type(trainer._trainer) is CheckedSimpleTrainer
        assert "no bfloat16 instructions: training in float32" in caplog.text


def test_amp_off_is_float32_on_any_cpu(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(device, "cpu_has_native_bfloat16", lambda: True)
    trainer = _trainer(tiny_cfg, tmp_path)
    assert type(trainer._trainer) is CheckedSimpleTrainer


def test_a_bad_cpu_bfloat16_value_names_the_key(tiny_cfg, tmp_path):
    with pytest.raises(ValueError,
                       match=r"MODEL\.RETINA_FOCAL\.CPU_BFLOAT16='yes'.*'native', 'always'"):
        _trainer(tiny_cfg, tmp_path, **{"SOLVER.AMP.ENABLED": "True",
                                        "MODEL.RETINA_FOCAL.CPU_BFLOAT16": "yes"})


def test_amp_on_cpu_trains_in_bfloat16_with_finite_float32_losses(tiny_cfg, tmp_path):
    # "always": bfloat16 whether or not this CPU has bfloat16 instructions
    trainer = _trainer(tiny_cfg, tmp_path, **{"SOLVER.AMP.ENABLED": "True",
                                              "MODEL.RETINA_FOCAL.CPU_BFLOAT16": "always",
                                              "SOLVER.MAX_ITER": "2"})
    assert isinstance(trainer._trainer, CPUAutocastTrainer)
    model = trainer.model
    seen = {}
    head = model.head.cls_score if hasattr(model.head, "cls_score") else None
    assert head is not None

    def record(module, inputs, output):
        seen["dtype"] = output.dtype

    head.register_forward_hook(record)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert seen["dtype"] == torch.bfloat16  # the head really ran in bfloat16
    losses = trainer.storage.history("total_loss").values()
    assert len(losses) == 2 and all(math.isfinite(v) for v, _ in losses)
    after = model.state_dict()
    assert all(after[k].dtype == before[k].dtype for k in before)  # weights stay float32
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    assert any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("gamma", [0.0, 2.0, 5.0])
def test_focal_loss_at_logits_of_plus_minus_100_is_finite_with_finite_gradient(gamma):
    # every (logit sign, target) combination: confidently right and confidently wrong
    logits = torch.tensor([[100.0, -100.0], [-100.0, 100.0], [100.0, 100.0], [-100.0, -100.0]],
                          requires_grad=True)
    labels = torch.tensor([0, 0, 2, 1])  # K = 2: labels 0/1 foreground, 2 background
    alpha = 0.25
    loss = SigmoidFocalLoss(alpha=alpha, gamma=gamma)(logits, labels)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    # the paper's FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t), in float64 with a stable log
    x = logits.detach().double()
    t = F.one_hot(labels, 3)[:, :2].double()
    log_pt = -F.binary_cross_entropy_with_logits(x, t, reduction="none")
    alpha_t = alpha * t + (1 - alpha) * (1 - t)
    expected = (-alpha_t * (1 - log_pt.exp()) ** gamma * log_pt).sum()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # confidently wrong anchors have gradient of magnitude alpha_t (d/dx of alpha_t*|x|)
    assert logits.grad[1, 0].item() == pytest.approx(-alpha, rel=1e-4)  # x=-100, target 1
    assert logits.grad[1, 1].item() == pytest.approx(1 - alpha, rel=1e-4)  # x=100, target 0
    assert logits.grad[2].tolist() == pytest.approx([1 - alpha] * 2, rel=1e-4)


def test_focal_loss_under_cpu_autocast_matches_float32():
    torch.manual_seed(0)
    logits = (torch.randn(500, 6) * 30).requires_grad_()
    labels = torch.randint(-1, 7, (500,))
    ref = SigmoidFocalLoss()(logits, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = SigmoidFocalLoss()(logits.bfloat16(), labels)
    assert out.dtype == torch.float32 and torch.isfinite(out)
    # the only difference is the bfloat16 rounding of the logits themselves
    ref_rounded = SigmoidFocalLoss()(logits.bfloat16().float(), labels)
    assert out.item() == pytest.approx(ref_rounded.item(), rel=1e-5)
    assert out.item() == pytest.approx(ref.item(), rel=2e-2)
