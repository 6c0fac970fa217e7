"""One-shot drawing generators behind one interface (`Generator`), their registry and their training loop."""

from drawgap.models.base import Generator
from drawgap.models.registry import create_generator, family_names, generator_class, load_generator

__all__ = ["Generator", "create_generator", "family_names", "generator_class", "load_generator"]
