"""The auxiliary deep generative model (ADGM, Maaløe et al. 2016) and its supervised-only
reference.

M2 whose posterior is enriched by an auxiliary latent a: the generative model p(x | y, z) is
M2's, with p(a | x, y, z) beside it; inference is q(a | x), q(y | a, x) and q(z | a, x, y), so
the classifier sees a draw of a as well as x. The model and its training live in
`methods._auxiliary`, shared with `sdgm`.
"""

from __future__ import annotations

from methods._auxiliary import SUPERVISED_REFERENCE, AuxiliaryMethod


class ADGM(AuxiliaryMethod):
    name = "adgm"
    version = 1
    reference = "adgm-supervised"
    description = "Auxiliary deep generative model: M2 with an auxiliary latent in q(y, z | x)"
    skip = False


class ADGMSupervised(ADGM):
    name = "adgm-supervised"
    version = 1
    reference = None
    description = "The ADGM's networks trained on the labeled images alone"
    defaults = {**ADGM.defaults, **SUPERVISED_REFERENCE}
