import pytest

from multistore.config.model import RetryConfig
from multistore.retry import is_transient, with_retries


def test_transient_errors_are_retried_permanent_ones_not():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("reset")
        return "ok"

    slept = []
    assert (
        with_retries(flaky, RetryConfig(max_retries=3, backoff_s=1), "x", sleep=slept.append)
        == "ok"
    )
    assert len(calls) == 3 and len(slept) == 2 and slept[1] > slept[0] * 0.9

    def missing():
        calls.append(1)
        raise FileNotFoundError("nope")

    calls.clear()
    with pytest.raises(FileNotFoundError):
        with_retries(missing, RetryConfig(max_retries=5), "x", sleep=slept.append)
    assert len(calls) == 1
    assert not is_transient(ValueError()) and is_transient(TimeoutError())
