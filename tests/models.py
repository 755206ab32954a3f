"""Small models shared by the tests."""
import torch
from torch import nn


class SmallCNN(nn.Module):
    """conv-bn-relu-maxpool, conv-relu, conv, GAP, linear: feature-map and vector layers, a reused ReLU."""

    def __init__(self, in_ch=1, width=6, classes=5):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.conv3 = nn.Conv2d(width, width, 3, padding=1, stride=2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(width, classes)
        with torch.no_grad():  # non-trivial BN statistics
            self.bn1.running_mean.uniform_(-0.5, 0.5)
            self.bn1.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        x = self.pool(self.relu(self.bn1(self.conv1(x))))
        x = self.relu(self.conv2(x))
        x = self.conv3(x)
        return self.fc(self.flatten(self.gap(x)))


class ChannelsLastNet(nn.Module):
    """A conv, then an nn.Linear on the B x h x w x C permutation (a channels-last layer)."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(self.conv(x).permute(0, 2, 3, 1))
