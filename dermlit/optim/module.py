"""What an update rule needs of the module it trains: a protocol, so that ``dermlit.optim``
does not import the model (``DermClassifier`` is one such module; a test's tiny one is another).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from torch import Tensor, nn


class TrainedModule(Protocol):
    """A LightningModule under manual optimization, as the update rules use it: the forward
    pass, the loss (``criterion``), Lightning's manual-optimization hooks (``manual_backward``,
    ``optimizers``, ``lr_schedulers``, ``clip_gradients``) and the loop's position."""

    criterion: nn.Module

    @property
    def trainer(self) -> Any: ...

    @property
    def current_epoch(self) -> int: ...

    @property
    def global_step(self) -> int: ...

    def __call__(self, x: Tensor) -> Tensor: ...

    def forward(self, x: Tensor) -> Tensor: ...

    def manual_backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None: ...

    def optimizers(self, use_pl_optimizer: bool = True) -> Any: ...

    def lr_schedulers(self) -> Any: ...

    def clip_gradients(
        self,
        optimizer: Any,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None: ...

    def log(self, name: str, value: Any, *args: Any, **kwargs: Any) -> None: ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]: ...

    def modules(self) -> Iterator[nn.Module]: ...
