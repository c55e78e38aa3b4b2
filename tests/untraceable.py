"""A model torch.fx cannot trace (data-dependent control flow), for CLI error tests."""

from torch import nn


class Gate(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x
        return -x


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3)
        self.gate = Gate()
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        return self.head(self.gate(self.stem(x)).mean((2, 3)))


def build():
    return Net()
