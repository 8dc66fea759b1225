"""DRPAN reviser (Wang et al., 2018, ECCV, "Discriminative Region Proposal Adversarial
Networks for High-Quality Image-to-Image Translation", arXiv:1711.09554).

DRPAN adds a second critic to pix2pix. The PatchGAN discriminator's score map picks
the most-fake region of a generated output (the "discriminative region proposal");
that region of the *real* target is replaced by the generated one to make a masked
fake, and the reviser learns to tell real pairs from masked-fake pairs. Because the
two differ only inside the proposed region, the reviser's gradient makes the
generator fix exactly the artefacts the discriminator found.

The reviser is a discriminator on ``(condition, target)`` pairs. The authors' code
offers a patch discriminator (``reviser='patchd'``, the same network as the
PatchGAN) or an image-level one (``'imaged'``); this is the former, a 70x70 PatchGAN
classifier returning a ``(B, 1, h, w)`` map of logits, with ``image_level=True``
averaging that map to one logit per image for the latter use. Building the masked
pairs is the task's job, not the model's.
"""

from __future__ import annotations

import torch

from demgen.models.patchgan import PatchGAN


class Reviser(PatchGAN):
    """The DRPAN reviser: a PatchGAN-style classifier of real vs masked-fake pairs.

    ``in_channels`` is image bands + 1 elevation band. Returns patch logits, or
    ``(B, 1)`` image logits when ``image_level`` is set.
    """

    def __init__(
        self,
        in_channels: int = 4,
        base: int = 64,
        n_layers: int = 3,
        norm: str = "instance",
        image_level: bool = False,
    ) -> None:
        super().__init__(in_channels, base=base, n_layers=n_layers, norm=norm)
        self.image_level = image_level

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = super().forward(x)
        return logits.mean(dim=(2, 3)) if self.image_level else logits
