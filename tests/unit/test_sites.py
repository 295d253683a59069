"""Sites (issue #5): `--shard i/n` assignment (stable, documented) and its bad values."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest

from matomo_kafka.source.sites import Shard, parse_shard, shard_of
from support.cli import run_cli


def test_shard_assignment_is_stable_and_documented() -> None:
    assert shard_of(1, 4) == zlib.crc32(b"1") % 4 == 3
    assert [shard_of(i, 2) for i in range(1, 11)] == [1, 1, 1, 0, 0, 0, 0, 1, 1, 1]
    before = {i: shard_of(i, 4) for i in range(1, 200)}
    assert set(before.values()) == {0, 1, 2, 3}
    assert all(shard_of(i, 4) == shard for i, shard in before.items()), "no site moves"
    shards = [parse_shard(f"{i}/4") for i in range(4)]
    selected = [shard.select(range(1, 200)) for shard in shards]
    assert sorted(i for part in selected for i in part) == list(range(1, 200))
    assert parse_shard(" 0 / 1 ") == Shard(0, 1) and str(Shard(2, 3)) == "2/3"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2/2", "INDEX must be between 0 and 1"),
        ("0/0", "COUNT must be between 1"),
        ("-1/2", "must be INDEX/COUNT"),
        ("$(JOB_COMPLETION_INDEX)/4", "must be INDEX/COUNT"),
        ("1", "must be INDEX/COUNT"),
    ],
)
def test_bad_shard(tmp_path: Path, value: str, expected: str) -> None:
    result = run_cli("run", "--parm-dir", str(tmp_path / "not-read"), "--shard", value)
    assert result.code == 2, result.output
    assert expected in result.stderr
