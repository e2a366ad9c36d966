"""keras_transformers: the transformer family as Keras 3 layers and model builders.

import keras_transformers as kt
kt.attention.available()
model = kt.models.build_decoder_lm(vocab_size=260, max_length=128, attention="full",
                                   position="rope")

Subpackages load on first use (PEP 562 module ``__getattr__``), so ``import keras_transformers``,
``keras-transformers --help`` and every example's ``--help`` answer without loading a framework.

Everything a ``.keras`` file can name (layers, models, losses, metrics, the optimizer, the
schedules) is registered as soon as Keras is loaded: here at once when Keras is already imported,
otherwise by a small import hook right after ``import keras`` finishes. Either order works::

    import keras_transformers
    import keras
    model = keras.saving.load_model("runs/lm/<run>/best.keras")   # no custom_objects
"""

import importlib
import sys

__version__ = "0.1.0"

# Subpackages reachable as attributes (``kt.models``), imported on first access.
SUBPACKAGES = (
    "attention",
    "blocks",
    "callbacks",
    "cli",
    "data",
    "distribution",
    "generation",
    "losses",
    "memory",
    "models",
    "ops",
    "optimizers",
    "positional",
    "recipes",
    "schedules",
)
# The modules whose import registers every Keras-serialisable class of the package.
REGISTERING = (
    "attention",
    "positional",
    "blocks",
    "losses",
    "memory",
    "models",
    "optimizers",
    "schedules",
)

__all__ = [*SUBPACKAGES, "__version__"]

_registered = False


def __getattr__(name):
    if name in SUBPACKAGES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *SUBPACKAGES})


def _initializing(module):
    spec = getattr(module, "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


def _register_all(just_loaded=None):
    """Import the registering subpackages once Keras is loaded and no import of ours is half done.

    ``just_loaded``: the module whose ``exec_module`` just returned (its spec still reads as
    initialising). Called by the import hook after every import of ``keras`` or of one of our
    modules; a call that comes too early leaves the work to a later one.
    """
    global _registered
    if _registered:
        return
    keras = sys.modules.get("keras")
    if keras is None or (keras is not just_loaded and _initializing(keras)):
        return
    for name, module in list(sys.modules.items()):
        if name.startswith(f"{__name__}.") and module is not just_loaded and _initializing(module):
            return  # e.g. `import keras_transformers.models` imports Keras half-way through
    _registered = True
    for name in REGISTERING:
        importlib.import_module(f"{__name__}.{name}")


class _NotifyingLoader:
    """Wraps a module's loader; after the module has executed, calls :func:`_register_all`."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _register_all(just_loaded=module)

    def __getattr__(self, name):  # get_source, get_resource_reader, is_package, ...
        return getattr(self._loader, name)


class _RegisterAfterKeras:
    """``sys.meta_path`` finder: wraps the loaders of ``keras`` and of our own modules.

    It finds nothing itself; it asks the finders after it and wraps the loader they return.
    Once the package has registered its classes it is inert.
    """

    def find_spec(self, fullname, path=None, target=None):
        if _registered or not (fullname == "keras" or fullname.startswith(f"{__name__}.")):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _NotifyingLoader(spec.loader)
                return spec
        return None


if "keras" in sys.modules and not _initializing(sys.modules["keras"]):
    _register_all()
elif not any(isinstance(finder, _RegisterAfterKeras) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterKeras())
