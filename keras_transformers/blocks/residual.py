"""The residual sub-layer shared by the encoder, decoder and universal (transition) blocks.

Pre-norm (``norm_first=True``, Xiong et al., 2020): ``x + Dropout(F(LN(x)))``.
Post-norm (``norm_first=False``, Vaswani et al., 2017): ``LN(x + Dropout(F(x)))``.
Shapes: ``x (B, L, d) -> (B, L, d)``. The GTrXL block (:mod:`.gated`) replaces the add by a gate
and keeps its own step.
"""


def residual_sublayer(x, sublayer, norm, dropout, norm_first, training=None):
    """Apply one residual sub-layer around ``sublayer``.

    Args:
        x: ``(B, L, d)`` residual stream.
        sublayer: ``h -> y`` or ``h -> (y, extra)`` (e.g. attention with its new cache), ``y``
            shaped like ``x``.
        norm: the sub-layer's LayerNormalization (before ``sublayer`` pre-norm, after the add
            post-norm).
        dropout: Dropout layer on ``y``.
        norm_first: pre-norm (True) or post-norm (False).
        training: passed to ``dropout``.

    Returns:
        ``(x, extra)``: the new stream ``(B, L, d)`` and ``extra`` (None when ``sublayer``
        returns ``y`` alone).
    """
    out = sublayer(norm(x) if norm_first else x)
    y, extra = out if isinstance(out, tuple) else (out, None)
    x = x + dropout(y, training=training)  # (B, L, d)
    return (x if norm_first else norm(x)), extra
