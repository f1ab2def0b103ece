"""Model graphs of torch modules, and committing and restoring whole models."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import mvcstore.torch as mvt  # noqa: E402
from mvcstore import Graph, InvalidInputError, Node, Repo  # noqa: E402
from mvcstore.objects import object_id  # noqa: E402

INPUT = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))


class SmallCnn(nn.Module):
    def __init__(self, width1: int = 8, width2: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width1, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width1)
        self.conv2 = nn.Conv2d(width1, width2, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(width2)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(width2 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.pool(F.relu(self.bn2(self.conv2(x))))
        return self.fc(torch.flatten(x, 1))


class SkipCnn(SmallCnn):
    """The same layers as SmallCnn, wired differently."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.pool(F.relu(self.bn2(self.conv2(x))) + x.sum(1, keepdim=True))
        return self.fc(torch.flatten(x, 1))


class Branchy(nn.Module):
    """A forward pass that depends on the data, which fx cannot trace."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.body(x)
        return -self.body(x)


class TiedLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encode = nn.Linear(4, 4, bias=False)
        self.decode = nn.Linear(4, 4, bias=False)
        self.decode.weight = self.encode.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(torch.tanh(self.encode(x)))


class Gain(nn.Module):
    """A user's own block: a tensor of its own plus a torch.nn layer inside."""

    def __init__(self, size: int = 4) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.linspace(0.5, 1.5, size))
        self.register_buffer("offset", torch.full((size,), 0.25))
        self.inner = nn.Linear(size, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * self.gain + self.offset


class GainNet(nn.Module):
    """A model owning a tensor itself and holding a user's block."""

    def __init__(self, size: int = 4) -> None:
        super().__init__()
        self.mix = nn.Parameter(torch.eye(6, size))
        self.block = Gain(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x @ self.mix)


def prune_output_channels(model: SmallCnn, layer: int, keep: list[int]) -> None:
    """Keep only the listed output channels of conv1 or conv2, in place."""
    conv = getattr(model, f"conv{layer}")
    bn = getattr(model, f"bn{layer}")
    new_conv = nn.Conv2d(conv.in_channels, len(keep), 3, padding=1)
    new_conv.weight.data = conv.weight.data[keep].clone()
    new_conv.bias.data = conv.bias.data[keep].clone()
    new_bn = nn.BatchNorm2d(len(keep))
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(new_bn, name).data = getattr(bn, name).data[keep].clone()
    new_bn.num_batches_tracked = bn.num_batches_tracked.clone()
    setattr(model, f"conv{layer}", new_conv)
    setattr(model, f"bn{layer}", new_bn)
    if layer == 1:
        nxt = model.conv2
        smaller = nn.Conv2d(len(keep), nxt.out_channels, 3, padding=1)
        smaller.weight.data = nxt.weight.data[:, keep].clone()
        smaller.bias.data = nxt.bias.data.clone()
        model.conv2 = smaller
    else:
        columns = torch.tensor([c * 16 + i for c in keep for i in range(16)])
        smaller = nn.Linear(len(keep) * 16, 10)
        smaller.weight.data = model.fc.weight.data[:, columns].clone()
        smaller.bias.data = model.fc.bias.data.clone()
        model.fc = smaller


def trained_pruned_cnn() -> tuple[SmallCnn, torch.optim.Optimizer]:
    """A SmallCnn trained a little, channel-pruned, then trained again."""
    torch.manual_seed(0)
    model = SmallCnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    target = torch.arange(5) % 10
    for _ in range(2):
        optimizer.zero_grad()
        F.cross_entropy(model(INPUT), target).backward()
        optimizer.step()
    prune_output_channels(model, 1, [0, 2, 3, 5, 7])
    prune_output_channels(model, 2, [1, 4, 6, 8, 9, 10, 15])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        optimizer.zero_grad()
        F.cross_entropy(model(INPUT), target).backward()
        optimizer.step()
    return model, optimizer


def eval_output(model: nn.Module) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(INPUT)


# -- capture ---------------------------------------------------------------


def test_same_model_captured_twice_gives_the_same_graph_id() -> None:
    model = SmallCnn()

    assert object_id(mvt.capture_graph(model)) == object_id(mvt.capture_graph(model))


def test_graph_id_does_not_depend_on_weight_values() -> None:
    torch.manual_seed(1)
    first = SmallCnn()
    torch.manual_seed(2)
    second = SmallCnn()

    assert object_id(mvt.capture_graph(first)) == object_id(mvt.capture_graph(second))


def test_changed_width_gives_another_graph_id() -> None:
    wide = mvt.capture_graph(SmallCnn(8, 16))
    narrow = mvt.capture_graph(SmallCnn(8, 12))

    assert object_id(wide) != object_id(narrow)
    assert narrow.nodes["conv2"].data["args"]["out_channels"] == 12
    assert narrow.nodes["fc"].data["params"]["weight"]["shape"] == [10, 12 * 16]


def test_changed_wiring_gives_another_graph_id() -> None:
    assert object_id(mvt.capture_graph(SmallCnn())) != object_id(
        mvt.capture_graph(SkipCnn())
    )


def test_graph_nodes_hold_constructor_arguments_shapes_and_wiring() -> None:
    graph = mvt.capture_graph(SmallCnn())

    conv = graph.nodes["conv1"].data
    bn = graph.nodes["bn1"].data
    assert conv["class"] == "torch.nn.modules.conv.Conv2d"
    assert conv["args"] == {
        "in_channels": 1,
        "out_channels": 8,
        "kernel_size": [3, 3],
        "stride": [1, 1],
        "padding": [1, 1],
        "dilation": [1, 1],
        "groups": 1,
        "bias": True,
        "padding_mode": "zeros",
    }
    assert conv["params"]["weight"] == {"shape": [8, 1, 3, 3], "dtype": "F32"}
    # newer torch releases add arguments (such as bias) to BatchNorm
    assert {
        "num_features": 8,
        "eps": 1e-5,
        "momentum": 0.1,
        "affine": True,
        "track_running_stats": True,
    }.items() <= bn["args"].items()
    assert bn["buffers"]["num_batches_tracked"] == {"shape": [], "dtype": "I64"}
    assert graph.nodes["bn1"].inputs["in0"]["connections"] == [
        {"node": "conv1", "output": "out"}
    ]
    assert {"node": "bn1", "input": "in0"} in graph.nodes["conv1"].outputs["out"][
        "connections"
    ]
    assert graph.meta["capture"] == "fx"


def test_graph_round_trips_through_its_json_form() -> None:
    graph = mvt.capture_graph(SmallCnn(), INPUT)

    again = Graph.from_value(graph.to_value())

    assert object_id(again) == object_id(graph)
    assert all(isinstance(node, Node) for node in again.nodes.values())


def test_example_input_records_shapes_and_leaves_the_model_untouched() -> None:
    model = SmallCnn().train()
    before = {name: t.clone() for name, t in model.state_dict().items()}

    graph = mvt.capture_graph(model, INPUT)

    assert model.training
    assert all(torch.equal(before[name], t) for name, t in model.state_dict().items())
    assert graph.meta["inputs"] == [{"shape": [5, 1, 8, 8], "dtype": "F32"}]
    assert graph.nodes["conv2"].data["output_shapes"] == [[5, 16, 8, 8]]


def test_untraceable_model_falls_back_to_the_module_tree() -> None:
    model = Branchy()

    graph = mvt.capture_graph(model)

    assert graph.meta["capture"] == "module-tree"
    assert object_id(graph) == object_id(mvt.capture_graph(model))
    assert graph.nodes["body.0"].outputs["out"]["connections"] == [
        {"node": "body.1", "input": "in0"}
    ]


def test_pruning_plan_id_marks_the_layers_it_acts_on() -> None:
    graph = mvt.capture_graph(SmallCnn())

    marked = mvt.with_pruning_plan(graph, "l1", ["conv1", "conv2"])

    assert {n.id for n in marked.nodes.values() if n.pruning_plan_id == "l1"} == {
        "conv1",
        "conv2",
    }
    with pytest.raises(InvalidInputError, match="conv9"):
        mvt.with_pruning_plan(graph, "l1", ["conv9"])


# -- commit and restore ----------------------------------------------------


def test_restore_of_pruned_cnn_with_factory_gives_bit_equal_outputs(
    repo: Repo,
) -> None:
    model, optimizer = trained_pruned_cnn()
    mvt.commit(repo.session("a"), model, optimizer=optimizer, step=4)

    restored = mvt.restore(repo, "a", factory=SmallCnn)

    assert restored.conv2.weight.shape == (7, 5, 3, 3)
    assert torch.equal(eval_output(restored), eval_output(model))


def test_restore_of_pruned_cnn_without_factory_gives_bit_equal_outputs(
    repo: Repo,
) -> None:
    model, _ = trained_pruned_cnn()
    mvt.commit(repo.session("a"), model)

    restored = mvt.restore(repo, "a")

    assert isinstance(restored, torch.fx.GraphModule)
    assert torch.equal(eval_output(restored), eval_output(model))


def test_restore_of_an_earlier_epoch_follows_that_epochs_graph(repo: Repo) -> None:
    torch.manual_seed(3)
    model = SmallCnn()
    session = repo.session("a")
    mvt.commit(session, model)
    expected = eval_output(model)
    prune_output_channels(model, 2, [0, 1, 2])
    mvt.commit(session, model)

    restored = mvt.restore(repo, "a#1", factory=lambda: SmallCnn(4, 4))

    assert restored.fc.in_features == 16 * 16
    assert torch.equal(eval_output(restored), expected)


def test_strict_load_error_lists_missing_and_unexpected_names(repo: Repo) -> None:
    class Renamed(SmallCnn):
        def __init__(self) -> None:
            super().__init__()
            self.head = self.fc
            del self.fc

    mvt.commit(repo.session("a"), SmallCnn())

    with pytest.raises(InvalidInputError) as caught:
        mvt.restore(repo, "a", factory=Renamed)

    message = caught.value.message
    assert "missing head.bias, head.weight" in message
    assert "unexpected fc.bias, fc.weight" in message
    assert caught.value.hint is not None and "factory" in caught.value.hint


def test_restore_without_factory_refuses_a_module_tree_graph(repo: Repo) -> None:
    mvt.commit(repo.session("a"), Branchy())

    with pytest.raises(InvalidInputError, match="module tree") as caught:
        mvt.restore(repo, "a")

    assert "factory" in (caught.value.hint or "")
    restored = mvt.restore(repo, "a", factory=Branchy)
    assert isinstance(restored, Branchy)


def test_optimizer_state_is_keyed_by_parameter_name(repo: Repo) -> None:
    model, optimizer = trained_pruned_cnn()

    epoch = mvt.commit(repo.session("a"), model, optimizer=optimizer)
    extra = repo.checkout("a", as_="torch").extra["optimizer"]

    assert "conv2.weight/momentum_buffer" in extra
    assert torch.equal(
        extra["conv2.weight/momentum_buffer"],
        optimizer.state[model.conv2.weight]["momentum_buffer"],
    )
    groups = epoch.meta["optimizer"]["param_groups"]
    assert groups[0]["lr"] == 0.1
    assert groups[0]["params"][:2] == ["conv1.weight", "conv1.bias"]


def test_optimizer_over_foreign_tensors_is_refused(repo: Repo) -> None:
    stray = nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([stray], lr=0.1)

    with pytest.raises(InvalidInputError, match="not a parameter of the model"):
        mvt.commit(repo.session("a"), SmallCnn(), optimizer=optimizer)
    assert repo.session_head("a") is None


def test_tied_weights_are_stored_once_and_tied_again_on_restore(repo: Repo) -> None:
    model = TiedLinear()

    epoch = mvt.commit(repo.session("a"), model)
    restored = mvt.restore(repo, "a")

    assert epoch.meta["tied"] == {"decode.weight": "encode.weight"}
    state = repo.get(epoch.state)
    assert state.tensors["decode.weight"] == state.tensors["encode.weight"]
    assert restored.decode.weight is restored.encode.weight
    x = torch.randn(3, 4)
    assert torch.equal(restored(x), model(x))


def test_pruning_plan_is_kept_in_params_and_on_graph_nodes(repo: Repo) -> None:
    plan = {"id": "l1-20", "share": 0.2, "every": 2, "layers": ["conv1", "conv2"]}

    epoch = mvt.commit(
        repo.session("a"), SmallCnn(), params={"lr": 0.1}, pruning_plan=plan
    )

    assert epoch.params == {"lr": 0.1, "pruning_plan": plan}
    graph = repo.read_graph(epoch.graph)
    assert graph.nodes["conv2"].pruning_plan_id == "l1-20"
    assert graph.nodes["fc"].pruning_plan_id is None


def test_pruning_plan_without_an_id_is_refused(repo: Repo) -> None:
    with pytest.raises(InvalidInputError, match="'id'"):
        mvt.commit(repo.session("a"), SmallCnn(), pruning_plan={"share": 0.2})


def test_rebuild_refuses_a_function_outside_the_allow_list() -> None:
    graph = mvt.capture_graph(SmallCnn())
    program = [dict(entry) for entry in graph.meta["program"]]
    flatten = next(entry for entry in program if entry["name"] == "flatten")
    flatten["target"] = "os.system"
    tampered = Graph(nodes=graph.nodes, meta={**graph.meta, "program": program})

    with pytest.raises(InvalidInputError, match="os.system"):
        mvt.rebuild_model(tampered)


def test_rebuild_refuses_a_layer_class_outside_torch_nn() -> None:
    graph = mvt.capture_graph(SmallCnn())
    node = graph.nodes["fc"]
    data = {**node.data, "class": "subprocess.Popen"}
    nodes = {**graph.nodes, "fc": Node(id="fc", name="fc", data=data)}

    with pytest.raises(InvalidInputError, match="subprocess.Popen"):
        mvt.rebuild_model(Graph(nodes=nodes, meta=graph.meta))


def test_example_input_that_does_not_fit_is_refused_and_modes_kept() -> None:
    model = SmallCnn().train()

    with pytest.raises(InvalidInputError, match="example input does not fit"):
        mvt.capture_graph(model, torch.zeros(2, 3, 8, 8))

    assert all(module.training for module in model.modules())


@pytest.mark.parametrize("factory", [GainNet, None], ids=["factory", "graph-only"])
def test_restore_reshapes_tensors_of_the_model_and_users_own_blocks(
    repo: Repo, factory
) -> None:
    torch.manual_seed(4)
    model = GainNet(size=3)
    nn.init.normal_(model.mix)
    x = torch.randn(2, 6)
    mvt.commit(repo.session("a"), model)

    restored = mvt.restore(repo, "a", factory=factory)

    assert restored.block.gain.shape == (3,)
    assert torch.equal(restored(x), model(x))
