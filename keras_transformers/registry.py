"""Name -> class registries for attention cores and positional encodings.

Both registries resolve an identifier the same way: a registered name (``"performer"``), a dict
(``{"name": "performer", "num_features": 64}`` or a Keras serialized config), or an instance.
Every registered class is also Keras-serializable under the package ``keras_transformers``, so
models that use it save to ``.keras`` and load back without ``custom_objects``.
"""

import keras

PACKAGE = "keras_transformers"


def _normalise(name):
    return str(name).strip().lower().replace("-", "_")


class Registry:
    """A registry of layer classes of one kind (``"attention"`` or ``"positional"``)."""

    def __init__(self, kind, base_class):
        self.kind = kind
        self.base_class = base_class
        self._classes = {}

    def register(self, name):
        """Class decorator: register under ``name`` and as a Keras serializable."""

        def decorator(cls):
            key = _normalise(name)
            if key in self._classes and self._classes[key] is not cls:
                raise ValueError(f"{self.kind} variant {name!r} is registered twice.")
            cls.registry_name = key
            self._classes[key] = cls
            return keras.saving.register_keras_serializable(package=PACKAGE)(cls)

        return decorator

    def available(self):
        """Sorted list of registered names."""
        return sorted(self._classes)

    def get_class(self, name):
        key = _normalise(name)
        if key not in self._classes:
            raise ValueError(
                f"Unknown {self.kind} variant {name!r}. Allowed values: "
                f"{', '.join(self.available())}."
            )
        return self._classes[key]

    def get(self, identifier, **kwargs):
        """Resolve a name, config dict or instance to a layer instance.

        Args:
            identifier: registered name, ``{"name": ..., **kwargs}``, a Keras serialized config
                (``{"class_name": ..., "config": ...}``) or an instance of the base class.
            **kwargs: constructor arguments (merged over a dict's own).
        """
        if isinstance(identifier, self.base_class):
            if kwargs:
                raise ValueError(
                    f"Got an {self.kind} instance and extra keyword arguments {sorted(kwargs)}; "
                    "configure the instance instead."
                )
            return identifier
        if isinstance(identifier, str):
            return self.get_class(identifier)(**kwargs)
        if isinstance(identifier, dict):
            if "class_name" in identifier and "config" in identifier:
                layer = keras.saving.deserialize_keras_object(identifier)
                if kwargs:
                    layer = layer.__class__.from_config({**layer.get_config(), **kwargs})
                return layer
            config = dict(identifier)
            if "name" not in config:
                raise ValueError(
                    f"An {self.kind} config dict needs a 'name' key naming the variant; got keys "
                    f"{sorted(config)}. Allowed names: {', '.join(self.available())}."
                )
            cls = self.get_class(config.pop("name"))
            return cls(**{**config, **kwargs})
        raise TypeError(
            f"{self.kind} must be a name, a config dict or a {self.base_class.__name__} instance; "
            f"got {type(identifier).__name__}. Allowed names: {', '.join(self.available())}."
        )

    def fresh(self, identifier):
        """Like :meth:`get`, but an instance is cloned from its config (one per layer)."""
        if isinstance(identifier, self.base_class):
            config = identifier.get_config()
            config.pop("name", None)
            return identifier.__class__.from_config(config)
        return self.get(identifier)
