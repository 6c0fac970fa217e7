"""drawgap: how human-like are machine drawings?

Reproduces and extends Boutin et al., "Diffusion Models as Artists" (ICML 2023) and the
"diversity vs. recognizability" framework (NeurIPS 2022). See DESIGN.md for the flow:
data -> critics / models -> samples -> metrics -> report.
"""

__version__ = "0.1.0"

from drawgap.errors import DrawgapError, InputError  # noqa: E402

__all__ = ["__version__", "DrawgapError", "InputError"]
