"""See which keys an attention core lets each query attend: a boolean ``(L, L)`` matrix or a PNG.

The pattern is read off the core itself, not from a separate description: the core runs its
debug path (``return_attention_scores=True``) on small random queries and keys, and a pair
``(i, j)`` belongs to the pattern when its attention weight is positive. (Inputs are scaled down
so that no allowed weight underflows to zero.) This works for every core that can return its
weights, including content-based ones, whose pattern then depends on the random inputs.

Example:
    >>> from keras_transformers.attention.patterns import pattern_matrix, render_pattern
    >>> int(pattern_matrix("sliding_window", length=8, window=1).sum())
    22
    >>> render_pattern("strided", length=64, path="/tmp/strided.png", causal="both", stride=8)
    '/tmp/strided.png'
"""

import numpy as np

from keras_transformers.attention import registry


def _core(attention, kwargs):
    if isinstance(attention, str | dict):
        return registry.get(attention, **kwargs)
    if kwargs:
        raise ValueError(
            f"Got an attention instance and extra keyword arguments {sorted(kwargs)}; configure "
            "the instance instead."
        )
    return registry.get(attention)


def attention_weights(
    attention, length=64, num_heads=1, causal=False, key_dim=8, seed=0, call_kwargs=None, **kwargs
):
    """Dense ``(h, L, L)`` numpy weights of a core on random inputs (its debug path).

    Args:
        attention: core name, config dict or instance.
        length: sequence length ``L``.
        num_heads: heads ``h`` (patterns may differ per head, e.g. ``mode="multihead"``).
        causal: run the causal form.
        key_dim: head size of the random inputs.
        seed: seed of the random inputs.
        call_kwargs: extra keyword arguments for the core call (e.g. ``global_mask``).
        **kwargs: constructor arguments when ``attention`` is a name or dict.
    """
    core = _core(attention, kwargs)
    if length < 1:
        raise ValueError(f"length={length}: must be >= 1.")
    if num_heads < 1:
        raise ValueError(f"num_heads={num_heads}: must be >= 1.")
    rng = np.random.default_rng(seed)
    q, k, v = (
        0.1 * rng.standard_normal((1, length, num_heads, key_dim)).astype("float32")
        for _ in range(3)
    )
    result = core(q, k, v, causal=causal, return_attention_scores=True, **(call_kwargs or {}))
    if not isinstance(result, tuple | list) or len(result) != 2:
        raise NotImplementedError(
            f"attention={core.variant!r} did not return attention "
            "weights with return_attention_scores=True."
        )
    import keras

    return keras.ops.convert_to_numpy(result[1])[0].astype("float32")  # (h, L, L)


def pattern_matrix(attention, length=64, num_heads=1, causal=False, head=None, **kwargs):
    """The bool pattern of a core: ``(L, L)``, True where query ``i`` attends key ``j``.

    Args:
        attention: core name, config dict or instance.
        head: which head's pattern; None gives the union over the ``num_heads`` heads.
        **kwargs: forwarded to :func:`attention_weights` (constructor arguments,
            ``key_dim``, ``seed``, ``call_kwargs``).
    """
    weights = attention_weights(attention, length, num_heads, causal, **kwargs)
    pattern = weights > 0  # (h, L, L)
    if head is not None:
        if not 0 <= head < num_heads:
            raise ValueError(f"head={head}: must be in [0, num_heads={num_heads}).")
        return pattern[head]
    return pattern.any(axis=0)


def render_pattern(
    attention, length=64, path=None, num_heads=1, causal=False, title=None, **kwargs
):
    """Draw a core's attention pattern as a heatmap PNG (matplotlib, Agg backend).

    One panel per distinct head pattern; ``causal="both"`` draws the non-causal and the causal
    pattern side by side.

    Args:
        attention: core name, config dict or instance.
        length: sequence length ``L``.
        path: output PNG path; None returns the matplotlib figure instead.
        num_heads: heads to run (use 2 to see ``mode="multihead"``).
        causal: False, True or ``"both"``.
        title: figure title (default: the core's name and arguments).
        **kwargs: constructor arguments and :func:`attention_weights` options.

    Returns:
        ``path`` (or the figure when ``path`` is None).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    options = {k: kwargs.pop(k) for k in ("key_dim", "seed", "call_kwargs") if k in kwargs}
    core = _core(attention, kwargs)
    modes = [False, True] if causal == "both" else [bool(causal)]
    if causal == "both" and not core.supports_causal:
        modes = [False]
    panels = []
    for mode in modes:
        pattern = attention_weights(core, length, num_heads, mode, **options) > 0  # (h, L, L)
        distinct = [0] + [
            i
            for i in range(1, num_heads)
            if not any((pattern[i] == pattern[j]).all() for j in range(i))
        ]
        for h in distinct:
            label = "causal" if mode else "non-causal"
            if len(distinct) > 1:
                label += f", head {h}"
            panels.append((label, pattern[h]))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.9), squeeze=False)
    for ax, (label, pattern) in zip(axes[0], panels):
        ax.imshow(pattern, cmap="Blues", interpolation="nearest", vmin=0, vmax=1)
        ax.set_title(f"{label}\n{int(pattern.sum())} of {length * length} pairs", fontsize=9)
        ax.set_xlabel("key j")
        ax.set_ylabel("query i")
    if title is None:
        config = core.get_config()
        shown = {
            k: v
            for k, v in config.items()
            if k not in ("name", "trainable", "dtype") and v is not None
        }
        title = f"{core.variant}  L={length}  {shown}"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    if path is None:
        return fig
    import os

    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
