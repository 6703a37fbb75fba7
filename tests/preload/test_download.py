"""Downloads against the Zenodo emulator: resume, md5, 429 storms, 503s, no Range support."""

from __future__ import annotations

import hashlib
import time

import pytest

from multistore.errors import ChecksumError, PreloadError
from multistore.preload.download import RemoteFile, download_file, partial_path
from multistore.preload.http import RateLimiter, RetryPolicy, new_session

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
        download_file(
            new_session(no_retry),
            remote(served),
            tmp_path / "data.bin",
            partial_dir=tmp_path / "partial",
            policy=no_retry,
        )
    part = partial_path(tmp_path / "partial", remote(served))
    assert part.stat().st_size == 30000
    assert not (tmp_path / "data.bin").exists()

    # A new run (new session, as after a restart) continues where the first stopped.
    dest = download_file(
        new_session(FAST),
        remote(served),
        tmp_path / "data.bin",
        partial_dir=tmp_path / "partial",
        policy=FAST,
    )
    assert hashlib.md5(dest.read_bytes()).hexdigest() == MD5
    assert [r.range for r in downloads(served)] == [None, "bytes=30000-"]
    assert [r.status for r in downloads(served)] == [200, 206]
    assert not part.exists()


def test_truncated_bodies_are_resumed_within_one_run(served, tmp_path):
    served.file("7", "data.bin").faults.truncate = 2
    served.file("7", "data.bin").faults.truncate_at = 50000
    dest = download_file(
        new_session(FAST),
        remote(served),
        tmp_path / "data.bin",
        partial_dir=tmp_path / "p",
        policy=FAST,
    )
    assert dest.read_bytes() == CONTENT
    # the second request is cut at byte 50000 of the file: zero new bytes, then resumed again
    assert [r.range for r in downloads(served)] == [None, "bytes=50000-", "bytes=50000-"]


def test_without_range_support_a_resume_restarts_from_zero(served, tmp_path):
    faults = served.file("7", "data.bin").faults
    faults.truncate, faults.truncate_at, faults.range_support = 1, 10000, False
    dest = download_file(
        new_session(FAST),
        remote(served),
        tmp_path / "data.bin",
        partial_dir=tmp_path / "p",
        policy=FAST,
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
    dest = download_file(
        new_session(FAST),
        remote(served),
        tmp_path / "data.bin",
        partial_dir=tmp_path / "p",
        policy=FAST,
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
        download_file(
            new_session(policy),
            remote(served),
            tmp_path / "data.bin",
            partial_dir=tmp_path / "p",
            policy=policy,
        )
    assert len(downloads(served)) == 3


def test_503s_are_survived(served, tmp_path):
    served.faults.status_503 = 3
    served.faults.retry_after = 0
    dest = download_file(
        new_session(FAST),
        remote(served),
        tmp_path / "data.bin",
        partial_dir=tmp_path / "p",
        policy=FAST,
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
    assert time.monotonic() - start < 0.1


def test_slow_server_times_out_with_a_clear_error(served, tmp_path):
    served.file("7", "data.bin").faults.delay_s = 0.5
    policy = RetryPolicy(max_retries=1, backoff_s=0.01)
    with pytest.raises(
        PreloadError, match=r"record 7, file 'data.bin': download failed: .*timed out"
    ):
        download_file(
            new_session(policy),
            remote(served),
            tmp_path / "data.bin",
            partial_dir=tmp_path / "p",
            policy=policy,
            timeout=0.2,
        )
    deadline = time.monotonic() + 5  # the server logs a request when it finally answers
    while len(downloads(served)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(downloads(served)) == 2  # first try + one retry
