"""One-shot drawing generators behind one interface (`Generator`), their registry and their training loop."""

from drawgap.models.base import Generator
from drawgap.models.registry import GENERATORS, create_generator, generator_class, load_generator

__all__ = ["GENERATORS", "Generator", "create_generator", "generator_class", "load_generator"]
