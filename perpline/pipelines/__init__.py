"""The Quix Streams processors: one module per processor, each `build(app)` plus `main()`."""

import warnings

# quixstreams imports authlib's httpx integration, which warns on import; not our concern.
warnings.filterwarnings("ignore", message=".*httpx module is deprecated.*")
