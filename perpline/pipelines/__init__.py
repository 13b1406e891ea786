"""The Quix Streams processors: one module per processor, each `build(app)` plus `main()`."""

import warnings

# quixstreams imports authlib's httpx integration, which warns on import; authlib forces its
# warnings to "always" when imported, so silence them after importing it, not before.
try:
    from authlib.deprecate import AuthlibDeprecationWarning

    warnings.filterwarnings("ignore", category=AuthlibDeprecationWarning)
except ImportError:  # pragma: no cover (authlib comes with quixstreams)
    pass
