"""The critics that judge drawings (SPEC.md 3): SimCLR features and a ProtoNet one-shot classifier.

>>> from drawgap.critics import load_critic
>>> simclr = load_critic("omniglot-simclr")            # doctest: +SKIP
>>> simclr.features(images).shape                      # doctest: +SKIP
torch.Size([N, 256])
"""

from drawgap.critics.base import Critic
from drawgap.critics.protonet import ProtoNetCritic
from drawgap.critics.registry import SHIPPED, build_critic, load_critic, save_critic
from drawgap.critics.simclr import SimCLRCritic, nt_xent

__all__ = ["Critic", "SimCLRCritic", "ProtoNetCritic", "load_critic", "save_critic", "build_critic", "nt_xent", "SHIPPED"]
