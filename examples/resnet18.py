"""A torchvision ResNet-18 (random weights: nothing is downloaded), for `ssnfx compile`."""
import torch
import torchvision

model = torchvision.models.resnet18(num_classes=10)
example_inputs = (torch.randn(1, 3, 64, 64),)
