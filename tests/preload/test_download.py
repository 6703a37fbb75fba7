"""Downloads against the Zenodo emulator: resume, md5, 429 storms, 503s, no Range support."""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from multistore.errors import ChecksumError, PreloadError
from multistore.preload.download import (
    RemoteFile,
    download_file,
    partial_path,
    range_part_path,
    remove_partial,
)
from multistore.preload.http import RateLimiter, new_session
from multistore.retry import RetryPolicy

CONTENT = bytes(range(256)) * 400  # 102400 bytes
MD5 = hashlib.md5(CONTENT).hexdigest()
FAST = RetryPolicy(max_retries=4, backoff_s=0.01, max_backoff_s=0.05, checksum_attempts=2)


@pytest.fixture
def served(zenodo):  # noqa: F811
    zenodo.add_record("7", {"data.bin": CONTENT})
    return zenodo


def remote(served, md5=MD5) -> RemoteFile:
    url = f"{served.base_url}/records/7/files/data.bin"
    return RemoteFile(
        url=url, key="data.bin", label="record 7, file 'data.bin'", size=len(CONTENT), md5=md5
    )


def downloads(served):
    return [r for r in served.requests if r.path == "/records/7/files/data.bin"]


def fetch(served, tmp_path, policy, partial="p", **kwargs):
    """``download_file`` of the test record's data.bin into ``tmp_path``."""
    return download_file(
        new_session(policy),
        remote(served),
        tmp_path / "data.bin",
        partial_dir=tmp_path / partial,
        policy=policy,
        **kwargs,
    )


def test_download_verifies_and_reports_progress(served, tmp_path):
    seen = []
    dest = download_file(
        new_session(FAST),
        remote(served),
        tmp_path / "out" / "data.bin",
        partial_dir=tmp_path / "partial",
        policy=FAST,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert dest.read_bytes() == CONTENT
    assert seen[-1] == (len(CONTENT), len(CONTENT))
    assert list((tmp_path / "partial").iterdir()) == []


def test_resume_after_a_killed_download(served, tmp_path):
    served.file("7", "data.bin").faults.truncate = 1
    served.file("7", "data.bin").faults.truncate_at = 30000
    no_retry = RetryPolicy(max_retries=0, backoff_s=0.01)
    with pytest.raises(PreloadError, match="interrupted"):
        fetch(
            served,
            tmp_path,
            no_retry,
            partial="partial",
        )
    part = partial_path(tmp_path / "partial", remote(served))
    assert part.stat().st_size == 30000
    assert not (tmp_path / "data.bin").exists()

    # A new run (new session, as after a restart) continues where the first stopped.
    dest = fetch(
        served,
        tmp_path,
        FAST,
        partial="partial",
    )
    assert hashlib.md5(dest.read_bytes()).hexdigest() == MD5
    assert [r.range for r in downloads(served)] == [None, "bytes=30000-"]
    assert [r.status for r in downloads(served)] == [200, 206]
    assert not part.exists()


def test_truncated_bodies_are_resumed_within_one_run(served, tmp_path):
    served.file("7", "data.bin").faults.truncate = 2
    served.file("7", "data.bin").faults.truncate_at = 50000
    dest = fetch(
        served,
        tmp_path,
        FAST,
    )
    assert dest.read_bytes() == CONTENT
    # the second request is cut at byte 50000 of the file: zero new bytes, then resumed again
    assert [r.range for r in downloads(served)] == [None, "bytes=50000-", "bytes=50000-"]


def test_without_range_support_a_resume_restarts_from_zero(served, tmp_path):
    faults = served.file("7", "data.bin").faults
    faults.truncate, faults.truncate_at, faults.range_support = 1, 10000, False
    dest = fetch(
        served,
        tmp_path,
        FAST,
    )
    assert dest.read_bytes() == CONTENT
    assert [(r.range, r.status) for r in downloads(served)] == [(None, 200), ("bytes=10000-", 200)]


def test_md5_mismatch_is_retried_then_fails_and_caches_nothing(served, tmp_path):
    wrong = "0" * 32
    with pytest.raises(
        ChecksumError, match=r"record 7, file 'data.bin': md5 mismatch after 2"
    ) as info:
        download_file(
            new_session(FAST),
            remote(served, md5=wrong),
            tmp_path / "data.bin",
            partial_dir=tmp_path / "partial",
            policy=FAST,
        )
    assert MD5 in str(info.value) and wrong in str(info.value)
    assert len(downloads(served)) == 2
    assert not (tmp_path / "data.bin").exists()
    assert list((tmp_path / "partial").iterdir()) == []


def test_429_storm_honours_retry_after(served, tmp_path):
    served.faults.status_429 = 2
    served.faults.retry_after = 1
    start = time.monotonic()
    dest = fetch(
        served,
        tmp_path,
        FAST,
    )
    elapsed = time.monotonic() - start
    assert dest.read_bytes() == CONTENT
    assert [r.status for r in downloads(served)] == [429, 429, 200]
    assert elapsed >= 1.9  # two Retry-After: 1 waits, not the 0.01 s backoff


def test_rate_limited_after_n_retries(served, tmp_path):
    served.faults.status_429 = 10
    served.faults.retry_after = 0
    policy = RetryPolicy(max_retries=2, backoff_s=0.01)
    with pytest.raises(
        PreloadError, match=r"record 7, file 'data.bin': rate-limited \(HTTP 429\) after 2 retries"
    ):
        fetch(
            served,
            tmp_path,
            policy,
        )
    assert len(downloads(served)) == 3


def test_503s_are_survived(served, tmp_path):
    served.faults.status_503 = 3
    served.faults.retry_after = 0
    dest = fetch(
        served,
        tmp_path,
        FAST,
    )
    assert dest.read_bytes() == CONTENT
    assert [r.status for r in downloads(served)] == [503, 503, 503, 200]


def test_missing_file_is_a_clear_error(served, tmp_path):
    missing = RemoteFile(
        url=f"{served.base_url}/records/7/files/nope.bin",
        key="nope.bin",
        label="record 7, file 'nope.bin'",
        size=1,
        md5=None,
    )
    with pytest.raises(PreloadError, match=r"record 7, file 'nope.bin': not found .*404"):
        download_file(
            new_session(FAST), missing, tmp_path / "x", partial_dir=tmp_path / "p", policy=FAST
        )


def test_rate_limiter_spreads_requests():
    limiter = RateLimiter(per_minute=3, window_s=0.4)
    start = time.monotonic()
    for _ in range(4):
        limiter.acquire()
    assert 0.35 <= time.monotonic() - start < 2.0
    unlimited = RateLimiter(None)
    start = time.monotonic()
    for _ in range(100):
        unlimited.acquire()
    assert time.monotonic() - start < 1.0  # never waits (a limited one would take 13 s)


def test_slow_server_times_out_with_a_clear_error(served, tmp_path):
    served.file("7", "data.bin").faults.delay_s = 0.5
    policy = RetryPolicy(max_retries=1, backoff_s=0.01)
    with pytest.raises(
        PreloadError, match=r"record 7, file 'data.bin': download failed: .*timed out"
    ):
        fetch(
            served,
            tmp_path,
            policy,
            timeout=0.2,
        )
    deadline = time.monotonic() + 5  # the server logs a request when it finally answers
    while len(downloads(served)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(downloads(served)) == 2  # first try + one retry


SPLIT = 32768  # CONTENT in 4 ranges: 3 of 32 KiB and one of 4 KiB
SPANS = ["bytes=0-32767", "bytes=32768-65535", "bytes=65536-98303", "bytes=98304-102399"]


def test_large_file_is_fetched_in_parallel_ranges_bounded_by_the_pool(served, tmp_path):
    served.file("7", "data.bin").faults.body_delay_s = 1.0  # each range body takes >= 1 s
    seen = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        dest = fetch(
            served,
            tmp_path,
            FAST,
            partial="partial",
            split_bytes=SPLIT,
            executor=pool,
            progress=lambda d, t: seen.append((d, t)),
        )
    assert hashlib.md5(dest.read_bytes()).hexdigest() == MD5
    gets = downloads(served)
    assert gets[0].range == "bytes=0-0" and gets[0].status == 206  # the range-support probe
    assert sorted(r.range for r in gets[1:]) == SPANS
    assert all(r.status == 206 for r in gets)
    assert served.max_parallel_bodies == 2  # in parallel, and never more than the pool allows
    assert seen[-1] == (len(CONTENT), len(CONTENT))
    assert list((tmp_path / "partial").iterdir()) == []


def test_small_file_is_not_split(served, tmp_path):
    fetch(
        served,
        tmp_path,
        FAST,
        split_bytes=len(CONTENT),
    )
    assert [r.range for r in downloads(served)] == [None]


def test_an_interrupted_range_fails_the_file_then_resumes_alone(served, tmp_path):
    faults = served.file("7", "data.bin").faults
    faults.truncate, faults.truncate_start, faults.truncate_at = 1, 32768, 40000
    no_retry = RetryPolicy(max_retries=0, backoff_s=0.01)
    with pytest.raises(PreloadError, match=r"download \(bytes 32768-65535\) interrupted 1 times"):
        fetch(
            served,
            tmp_path,
            no_retry,
            partial="partial",
            split_bytes=SPLIT,
        )
    assert not (tmp_path / "data.bin").exists()
    assert range_part_path(tmp_path / "partial", remote(served), (32768, 65535)).stat().st_size == (
        40000 - 32768
    )
    served.clear_log()
    dest = fetch(
        served,
        tmp_path,
        FAST,
        partial="partial",
        split_bytes=SPLIT,
    )
    assert hashlib.md5(dest.read_bytes()).hexdigest() == MD5
    ranges = [r.range for r in downloads(served)]
    assert ranges[0] == "bytes=0-0" and "bytes=40000-65535" in ranges  # resumed where it broke
    assert not set(ranges) & {"bytes=0-", "bytes=32768-65535", None}
    assert list((tmp_path / "partial").iterdir()) == []


def test_a_range_failure_is_retried_within_the_run(served, tmp_path):
    faults = served.file("7", "data.bin").faults
    faults.truncate, faults.truncate_start, faults.truncate_at = 1, 65536, 70000
    dest = fetch(
        served,
        tmp_path,
        FAST,
        split_bytes=SPLIT,
    )
    assert dest.read_bytes() == CONTENT
    assert "bytes=70000-98303" in [r.range for r in downloads(served)]


def test_without_range_support_a_large_file_is_one_stream(served, tmp_path):
    served.file("7", "data.bin").faults.range_support = False
    dest = fetch(
        served,
        tmp_path,
        FAST,
        split_bytes=SPLIT,
    )
    assert dest.read_bytes() == CONTENT
    # the probe is answered 200 (and its body dropped), then one plain GET
    assert [(r.range, r.status) for r in downloads(served)] == [("bytes=0-0", 200), (None, 200)]


def test_split_download_with_a_wrong_md5_caches_nothing(served, tmp_path):
    with pytest.raises(ChecksumError, match="md5 mismatch after 2"):
        download_file(
            new_session(FAST),
            remote(served, md5="0" * 32),
            tmp_path / "data.bin",
            partial_dir=tmp_path / "p",
            policy=FAST,
            split_bytes=SPLIT,
        )
    assert list((tmp_path / "p").iterdir()) == []
    assert not (tmp_path / "data.bin").exists()


def test_remove_partial_removes_range_files_of_that_file_only(served, tmp_path):
    part_dir = tmp_path / "p"
    part_dir.mkdir()
    mine = range_part_path(part_dir, remote(served), (0, 9))
    other = RemoteFile(url="x", key="data.bin2", label="x", size=10, md5=MD5)
    theirs = range_part_path(part_dir, other, (0, 9))
    for path in (mine, theirs, partial_path(part_dir, remote(served))):
        path.write_bytes(b"x")
    remove_partial(part_dir, remote(served))
    assert [p.name for p in part_dir.iterdir()] == [theirs.name]
