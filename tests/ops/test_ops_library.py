"""The fused focal loss as a torch.library operator (``retina_focal::sigmoid_focal_loss`` and
its gradient ``retina_focal::sigmoid_focal_loss_backward``): registration checked by
``torch.library.opcheck``, ``torch.compile(fullgraph=True)`` without a graph break at the loss,
``torch.export``, and a registration that survives a second import."""
import pytest
import torch
from conftest import REPO, run_tool

from retina_focal.ops import sigmoid_focal_loss_labels
from retina_focal.ops._cpu_kernel import KernelUnavailable, _find_compiler
from retina_focal.ops._fused import alpha_vectors, focal_loss_backward_op, focal_loss_op

try:
    _find_compiler()
    NO_COMPILER = None
except KernelUnavailable as e:
    NO_COMPILER = str(e)
# The operator's CPU kernel is the C++ one: without a compiler the fused path (and so the
# operator) is not used on the CPU, and these tests have nothing to check.
pytestmark = pytest.mark.skipif(
    NO_COMPILER is not None, reason=f"the fused CPU kernel cannot be built: {NO_COMPILER}"
)

OPCHECK_TESTS = ("test_schema", "test_autograd_registration", "test_faketensor",
                 "test_aot_dispatch_dynamic")


def op_inputs(num_anchors=29, num_classes=5, dtype=torch.float32, reduction="sum",
              alpha="scalar", weights=True, seed=0):
    """Arguments of ``retina_focal::sigmoid_focal_loss`` as ``sigmoid_focal_loss_labels`` builds
    them: logits (R, K) requiring grad, labels (R,) in {-1, 0..K}, alpha vectors (K,) and
    weights (R,) in the compute dtype."""
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(num_anchors, num_classes, generator=g) * 3).to(dtype)
    labels = torch.randint(-1, num_classes + 1, (num_anchors,), generator=g)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    a = {"scalar": 0.25, "none": -1, "per_class": torch.rand(num_classes, generator=g)}[alpha]
    alpha_pos, alpha_neg = alpha_vectors(a, num_classes, acc, "cpu")
    w = torch.rand(num_anchors, generator=g).to(acc) * 2 if weights else None
    return (logits.requires_grad_(), labels, alpha_pos, alpha_neg, 2.0, reduction, w)


CASES = {
    "sum": dict(reduction="sum"),
    "mean": dict(reduction="mean"),
    "none": dict(reduction="none"),
    "bfloat16-sum": dict(dtype=torch.bfloat16, reduction="sum"),
    "bfloat16-none": dict(dtype=torch.bfloat16, reduction="none", alpha="per_class"),
    "float64-mean": dict(dtype=torch.float64, reduction="mean"),
    "per-class-alpha": dict(alpha="per_class", reduction="mean"),
    "no-alpha-no-weights": dict(alpha="none", weights=False, reduction="sum"),
    "no-weights-none": dict(weights=False, reduction="none"),
    "empty-sum": dict(num_anchors=0, reduction="sum"),
    "empty-none": dict(num_anchors=0, reduction="none", weights=False),
}


@pytest.mark.parametrize("case", CASES)
def test_opcheck_forward_and_backward(case):
    """Schema, autograd registration, fake (meta) kernel and AOT dispatch with dynamic shapes,
    for the loss operator (logits requiring grad, so its registered backward runs too) and for
    the gradient operator on its own."""
    args = op_inputs(**CASES[case])
    torch.library.opcheck(focal_loss_op, args, test_utils=OPCHECK_TESTS)
    loss = focal_loss_op(*args)
    grad = torch.linspace(0.5, 2, loss.numel()).reshape(loss.shape).to(loss.dtype)
    backward_args = (grad, args[0].detach()) + args[1:]
    torch.library.opcheck(focal_loss_backward_op, backward_args, test_utils=OPCHECK_TESTS)


def test_fake_kernel_gives_the_output_shape_and_dtype():
    from torch._subclasses.fake_tensor import FakeTensorMode

    for dtype, acc in ((torch.bfloat16, torch.float32), (torch.float64, torch.float64)):
        for reduction, shape in (("none", (7, 3)), ("sum", ()), ("mean", ())):
            args = op_inputs(7, 3, dtype=dtype, reduction=reduction)
            with FakeTensorMode() as mode:
                fake = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
                out = focal_loss_op(*fake)
                grad = focal_loss_backward_op(torch.ones_like(out), *fake)
            assert tuple(out.shape) == shape and out.dtype == acc
            assert grad.shape == args[0].shape and grad.dtype == dtype


def loss_model(reduction, alpha, weights):
    class Model(torch.nn.Module):
        """A linear classifier of R anchors' features and its focal loss."""

        def __init__(self):
            super().__init__()
            self.cls = torch.nn.Linear(6, 4)

        def forward(self, features, labels):
            logits = self.cls(features)
            return sigmoid_focal_loss_labels(logits, labels, alpha, 2.0, reduction,
                                             weights=weights)

    torch.manual_seed(0)
    return Model()


def model_inputs(num_anchors=40):
    g = torch.Generator().manual_seed(1)
    return torch.randn(num_anchors, 6, generator=g), torch.randint(-1, 5, (num_anchors,),
                                                                   generator=g)


@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
@pytest.mark.parametrize("per_class", [False, True])
def test_compile_fullgraph_keeps_the_loss_in_the_graph(reduction, per_class):
    """``torch.compile(fullgraph=True)`` (which raises at any graph break) of a model whose
    loss is the fused path; its loss and gradients equal eager's. Sizes change between the
    calls, as the number of anchors does between images."""
    import torch._dynamo

    alpha = torch.tensor([0.1, 0.25, 0.5, 0.9]) if per_class else 0.25
    weights = None if per_class else torch.linspace(0.5, 1.5, 40)
    model = loss_model(reduction, alpha, weights)
    features, labels = model_inputs()
    explained = torch._dynamo.explain(model)(features, labels)
    assert explained.graph_break_count == 0, explained.break_reasons
    (graph,) = explained.graphs
    targets = [n.target for n in graph.graph.nodes if n.op == "call_function"]
    assert targets.count(torch.ops.retina_focal.sigmoid_focal_loss.default) == 1
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    for num_anchors in ((40,) if weights is not None else (40, 33)):
        features, labels = model_inputs(num_anchors)
        results = []
        for fn in (model, compiled):
            model.zero_grad()
            loss = fn(features, labels)
            loss.sum().backward()
            results.append((loss.detach(), model.cls.weight.grad.clone()))
        torch.testing.assert_close(results[1], results[0], rtol=1e-6, atol=1e-6)


def test_compile_with_inductor_equals_eager():
    """The default backend: inductor calls the operator's C++ kernel from its generated code."""
    import torch._dynamo

    torch._dynamo.reset()
    model = loss_model("sum", 0.25, None)
    compiled = torch.compile(model, fullgraph=True)
    features, labels = model_inputs()
    results = []
    for fn in (model, compiled):
        model.zero_grad()
        loss = fn(features, labels)
        loss.backward()
        results.append((loss.detach(), model.cls.weight.grad.clone()))
    torch.testing.assert_close(results[1], results[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_export_records_the_operator_and_runs_like_eager(reduction, tmp_path):
    """``torch.export`` of a module computing the loss: the exported program holds one call of
    the operator, runs (also after a save/load round trip) and equals eager."""
    model = loss_model(reduction, torch.tensor([0.1, 0.25, 0.5, 0.9]), None).eval()
    features, labels = model_inputs()
    exported = torch.export.export(model, (features, labels))
    targets = [n.target for n in exported.graph.nodes if n.op == "call_function"]
    assert targets.count(torch.ops.retina_focal.sigmoid_focal_loss.default) == 1
    path = tmp_path / "loss.pt2"
    torch.export.save(exported, str(path))
    loaded = torch.export.load(str(path))
    features, labels = model_inputs()
    expected = model(features, labels)
    for program in (exported, loaded):
        torch.testing.assert_close(program.module()(features, labels), expected, rtol=0, atol=0)


def test_registration_survives_a_second_import():
    """A reload of the module (or a second import after ``sys.modules`` was cleared) finds the
    operators registered and reuses them instead of failing on a second definition."""
    code = (
        "import importlib, sys, torch\n"
        "import retina_focal.ops._fused as f\n"
        "op = f.focal_loss_op\n"
        "f = importlib.reload(f)\n"
        "for name in [m for m in sys.modules if m.startswith('retina_focal.ops')]:\n"
        "    del sys.modules[name]\n"
        "import retina_focal.ops._fused as g\n"
        "assert f.focal_loss_op is op and g.focal_loss_op is op\n"
        "x = torch.randn(6, 3, requires_grad=True)\n"
        "labels = torch.tensor([0, 3, -1, 2, 1, 3])\n"
        "from retina_focal.ops import sigmoid_focal_loss_labels as loss\n"
        "loss(x, labels).backward()\n"
        "ref = x.grad.clone(); x.grad = None\n"
        "loss(x, labels, impl='portable').backward()\n"
        "torch.testing.assert_close(x.grad, ref)\n"
        "print('ok')\n"
    )
    proc = run_tool(["-c", code], cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]
