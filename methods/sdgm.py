"""The skip deep generative model (SDGM, Maaløe et al. 2016) and its supervised-only reference.

M2 with an auxiliary latent a that is also a second stochastic layer of the generative model:
p(a | y, z) and p(x | a, y, z), inferred by q(a | x), q(y | a, x) and q(z | a, x, y). This is
the survey's "ladder of VAEs": a hierarchy of latent variables with the label at the top. The
model and its training live in `methods._auxiliary`, shared with `adgm`.
"""

from __future__ import annotations

from methods._auxiliary import SUPERVISED_REFERENCE, AuxiliaryMethod


class SDGM(AuxiliaryMethod):
    name = "sdgm"
    version = 1
    reference = "sdgm-supervised"
    description = "Skip deep generative model: M2 with an auxiliary second stochastic layer"
    skip = True


class SDGMSupervised(SDGM):
    name = "sdgm-supervised"
    version = 1
    reference = None
    description = "The SDGM's networks trained on the labeled images alone"
    defaults = {**SDGM.defaults, **SUPERVISED_REFERENCE}
