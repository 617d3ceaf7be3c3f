"""JsonBatchHandler.forward on an accelerator: inputs go to `self.device`, outputs come back.

No GPU here: PyTorch's "meta" device stands in for it (tensors with shapes and no data), which
is enough to see where each tensor was sent.
"""

import torch

from json_batch_handler import JsonBatchHandler, to_device


class Recorder(JsonBatchHandler):
    """collate returns a tensor and a list of tensors; the model records what it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list = []
        self.ids = torch.arange(6).view(2, 3)
        self.images = [torch.zeros(3, 4, 5, dtype=torch.uint8), torch.ones(3, 2, 2)]

        def model(ids, images):
            self.seen = [ids, *images]
            return torch.full((ids.shape[0], 2), 0.5)  # a CPU output, as after the copy back

        self.model = model

    def collate(self, items):
        return self.ids, self.images

    def respond(self, outputs, items):
        assert outputs.device.type == "cpu"
        return outputs.tolist()


def test_to_device_recurses_through_tuples_and_lists():
    nested = (torch.zeros(2), [torch.ones(1, dtype=torch.uint8), (torch.zeros(3),)], "k", 3)
    moved = to_device(nested, torch.device("meta"))
    assert isinstance(moved, tuple) and isinstance(moved[1], list)
    assert isinstance(moved[1][1], tuple)
    assert [t.device.type for t in (moved[0], moved[1][0], moved[1][1][0])] == ["meta"] * 3
    assert moved[1][0].dtype == torch.uint8 and moved[2:] == ("k", 3)


def test_forward_moves_inputs_to_the_device():
    handler = Recorder()
    handler.device = torch.device("meta")
    assert handler.forward(["a", "b"]) == [[0.5, 0.5], [0.5, 0.5]]
    assert [t.device.type for t in handler.seen] == ["meta"] * 3
    assert [t.shape for t in handler.seen] == [(2, 3), (3, 4, 5), (3, 2, 2)]


def test_forward_on_cpu_copies_nothing():
    handler = Recorder()
    handler.device = torch.device("cpu")
    handler.forward(["a", "b"])
    assert handler.seen[0] is handler.ids
    assert all(a is b for a, b in zip(handler.seen[1:], handler.images))
    del handler.device  # a handler used before BaseHandler.initialize has no device yet
    handler.forward(["a"])
    assert handler.seen[0] is handler.ids


class GradProbe(Recorder):
    """Records whether autograd was recording when the model ran."""

    def __init__(self, grad: bool) -> None:
        super().__init__()
        self.grad = grad

        def model(ids, images):
            self.seen = [torch.is_grad_enabled(), torch.is_inference_mode_enabled()]
            return torch.zeros(ids.shape[0], 2)

        self.model = model

    def needs_grad(self, items):
        return self.grad


def test_predict_records_autograd_only_when_the_handler_needs_it():
    for grad in (False, True):
        handler = GradProbe(grad)
        handler.predict(["a", "b"])
        assert handler.seen == [grad, not grad]
