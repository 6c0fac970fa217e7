"""What drawgap ships: the one table of trained generators and critics in the package, by name.

Each is a directory under its kind's `weights/` folder (`models/weights/<name>`, `critics/weights/<name>`)
holding what training wrote and a TRAINING.md with the command, data and measured quality; `drawgap
generators` and `drawgap critics list` read this table, and names resolve through `drawgap.weights`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shipped:
    kind: str  # "generator" or "critic"
    about: str


SHIPPED: dict[str, Shipped] = {
    "strokes-ddpm": Shipped("generator", "DDPM conditioned on the exemplar, built-in strokes dataset (48 px)"),
    "strokes-cfgdm": Shipped("generator", "CFGDM (classifier-free guidance), built-in strokes dataset (48 px)"),
    "omniglot-ddpm": Shipped("generator", "DDPM conditioned on the exemplar, Omniglot weak split (48 px)"),
    "omniglot-cfgdm": Shipped("generator", "CFGDM (classifier-free guidance), Omniglot weak split (48 px)"),
    "omniglot-vae-stn": Shipped("generator", "VAE-STN (NeurIPS baseline: sequential VAE, spatial-transformer attention), Omniglot weak split (48 px)"),
    "omniglot-vae-ns": Shipped("generator", "VAE-NS (NeurIPS baseline: the Neural Statistician), Omniglot weak split (48 px)"),
    "omniglot-dagan-un": Shipped("generator", "DA-GAN-UN (NeurIPS baseline: DAGAN with a U-Net generator), Omniglot weak split (48 px)"),
    "omniglot-dagan-rn": Shipped("generator", "DA-GAN-RN (NeurIPS baseline: DAGAN without U-Net skips), Omniglot weak split (48 px)"),
    "strokes-vae-stn": Shipped("generator", "VAE-STN (NeurIPS baseline), built-in strokes dataset (48 px)"),
    "strokes-vae-ns": Shipped("generator", "VAE-NS (NeurIPS baseline), built-in strokes dataset (48 px)"),
    "strokes-dagan-un": Shipped("generator", "DA-GAN-UN (NeurIPS baseline), built-in strokes dataset (48 px)"),
    "strokes-dagan-rn": Shipped("generator", "DA-GAN-RN (NeurIPS baseline), built-in strokes dataset (48 px)"),
    "omniglot-simclr": Shipped("critic", "SimCLR features of Omniglot drawings (weak split, 50 px): diversity, originality"),
    "omniglot-protonet": Shipped("critic", "ProtoNet one-shot classifier of Omniglot drawings (weak split, 50 px): recognizability"),
    "omniglot-b-simclr": Shipped("critic", "A second, independent Omniglot SimCLR (strong augmentation, seed 7; 50 px): "
                                           "scores that do not depend on one critic (evaluate --critics omniglot,omniglot-b)"),
    "omniglot-b-protonet": Shipped("critic", "A second, independent Omniglot ProtoNet (seed 7; 50 px), the pair of omniglot-b-simclr"),
    "quickdraw-simclr": Shipped("critic", "SimCLR features of QuickDraw-FS drawings (the real Quick, Draw! build, 48 px): "
                                          "diversity, originality"),
    "quickdraw-protonet": Shipped("critic", "ProtoNet one-shot classifier of QuickDraw-FS drawings (ResNet, 48 px): recognizability"),
    "quickdraw-ddpm": Shipped("generator", "DDPM conditioned on the exemplar, QuickDraw-FS from real Quick, Draw! (48 px)"),
    "quickdraw-cfgdm": Shipped("generator", "CFGDM (classifier-free guidance), QuickDraw-FS from real Quick, Draw! (48 px)"),
    "omniglot-fsdm": Shipped("generator", "FSDM (few-shot diffusion, set-conditioned), Omniglot weak split (48 px)"),
    "strokes-simclr": Shipped("critic", "SimCLR features of the built-in strokes dataset (48 px)"),
    "strokes-protonet": Shipped("critic", "ProtoNet one-shot classifier of the built-in strokes dataset (48 px)"),
}


def shipped_names(kind: str) -> dict[str, str]:
    """{name: what it is} of the shipped weights of one kind, in the table's order."""
    return {name: s.about for name, s in SHIPPED.items() if s.kind == kind}
