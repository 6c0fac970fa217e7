"""What a samples file is called: its file name and the system name `evaluate` and `compare` show.

A name says what distinguishes the file from its siblings: the generator family, the guidance actually used
(for a model trained to be guided), and the sampler and its steps where they are not the default
(`dpm++`, 20 steps), e.g. "cfgdm g=2" or "cfgdm g=0 (ancestral, 500 steps)". Human drawings are "human",
or "human (exemplar excluded)" when no class's exemplar is among them.
"""

from __future__ import annotations

DEFAULT_SAMPLER = "dpm++"
DEFAULT_STEPS = 20
GUIDED_GENERATORS = ("cfgdm",)  # families trained with condition dropout, whose guidance changes the drawings


def samples_file_name(generator: str, guidance: float | None) -> str:
    """'cfgdm', 0.5 -> 'cfgdm_g0.5.npz'; no guidance to name -> 'ddpm.npz'. A guided model's caller passes
    the guidance used (so cfgdm at its default writes cfgdm_g1.npz); others pass only a guidance given."""
    return f"{generator}.npz" if guidance is None else f"{generator}_g{format(float(guidance), 'g')}.npz"


def guidance_suffix(generator: str, params: dict) -> str:
    """" g=2" for a guided run (cfgdm without a recorded guidance: its default 1, as files written before the
    guidance used was recorded), " g=0.5" for any other non-zero guidance, "" otherwise (DDPM's 0 says nothing)."""
    g = params.get("guidance")
    if generator in GUIDED_GENERATORS and g is None:
        g = 1.0
    return f" g={float(g):g}" if g is not None and (generator in GUIDED_GENERATORS or float(g) != 0) else ""


def system_name(meta: dict | None) -> str | None:
    """The default system name of a samples file from its meta (None when the meta names no generator)."""
    meta = meta or {}
    generator = meta.get("generator")
    if not generator:
        return None
    if generator == "human":
        return "human (exemplar excluded)" if meta.get("exemplar_rows", 1) == 0 else "human"
    params = meta.get("params") or {}
    name = str(generator)
    name += guidance_suffix(generator, params)
    sampler, steps = params.get("sampler"), params.get("steps")
    if sampler is not None and (sampler != DEFAULT_SAMPLER or steps not in (None, DEFAULT_STEPS)):
        name += f" ({sampler}" + ("" if steps is None else f", {steps} steps") + ")"
    return name


def display_name(generator: str) -> str | None:
    """How reports name a generator family: its declared `display_name` (DDPM, VAE-STN, DA-GAN-UN, ...); None
    for a family this installation does not know."""
    from drawgap.errors import InputError
    from drawgap.models.registry import generator_class

    try:
        family = generator_class(generator)
    except InputError:
        return None
    return family.display_name or family.name.upper()
