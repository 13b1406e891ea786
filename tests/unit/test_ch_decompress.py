"""The embedded server reads every compressed frame of a request body: clients send one frame per block."""

from __future__ import annotations

import lz4.frame
import pytest
import zstandard

from perpline.ch.server import ChError, _decompress


def test_every_lz4_and_zstd_frame_is_read() -> None:
    blocks = [b"block-%d-" % n * 1000 for n in range(5)]
    zstd = zstandard.ZstdCompressor()
    assert _decompress(b"".join(lz4.frame.compress(b) for b in blocks), "lz4") == b"".join(blocks)
    assert _decompress(b"".join(zstd.compress(b) for b in blocks), "zstd") == b"".join(blocks)


def test_a_truncated_lz4_frame_is_an_error_not_a_short_insert() -> None:
    whole = lz4.frame.compress(b"x" * 100_000)
    with pytest.raises(ChError):
        _decompress(whole[: len(whole) // 2], "lz4")
