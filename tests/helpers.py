"""Small models shared by several test modules."""
import torch
from torch import nn


class TinyNet(nn.Module):
    """Two conv stages with in-place ReLUs, like torchvision's VGG."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.relu1 = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 5, 3, padding=1)
        self.relu2 = nn.ReLU(inplace=True)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            self.conv2.weight[0].zero_()  # unit 0 of relu2 is dead (constant 0 after ReLU) ...
            self.conv2.bias[0] = -1.0

    def forward(self, x):
        return self.relu2(self.conv2(self.pool(self.relu1(self.conv1(x)))))
