"""sweep.errors.as_user_error on the S3 failures of issue 24 item 5: botocore's and s3fs's errors
(however wrapped) and pyarrow's S3 messages become one line naming credentials, endpoint or
bucket; "Is this a 'parquet' file?: CAUSE" keeps its cause (before, the line was cut off at 300
characters before the cause, and botocore errors were not known at all: a traceback)."""

from __future__ import annotations

import pyarrow as pa
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from sweep.errors import as_user_error


@pytest.fixture(autouse=True)
def _endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)


def _wrapped(err: BaseException) -> BaseException:
    try:
        try:
            raise err
        except Exception as inner:
            raise RuntimeError("fsspec gave up") from inner
    except RuntimeError as outer:
        return outer


def test_botocore_errors_are_one_line() -> None:
    cases = [
        (NoCredentialsError(), "no usable credentials", "AWS_ACCESS_KEY_ID"),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:9/bkt?list-type=2"),
         "cannot reach the endpoint http://127.0.0.1:9 (", "AWS_ENDPOINT_URL"),
        (ClientError({"Error": {"Code": "NoSuchBucket", "BucketName": "bkt"}}, "ListObjectsV2"),
         "bucket bkt does not exist", "127.0.0.1:9"),
        (ClientError({"Error": {"Code": "InvalidAccessKeyId", "Message": "no such key id"}}, "GetObject"),
         "refused the credentials", "InvalidAccessKeyId"),
    ]
    for err, *needles in cases:
        for raised in (err, _wrapped(err)):
            user = as_user_error(raised)
            assert user is not None and user.exit_code == 2, raised
            text = str(user)
            assert "\n" not in text and all(n in text for n in needles), text
            assert "list-type" not in text  # the server, not the request


def test_pyarrow_messages_keep_their_cause() -> None:
    cause = ("When reading information for key 'run/results/units/probe=match/model=x/u.parquet' in bucket "
             "'bkt': AWS Error NETWORK_CONNECTION during HeadObject operation: curlCode: 7, Could not connect "
             "to server; Details: Failed to connect to 127.0.0.1:9 after 13 ms: Could not connect to server")
    err = OSError("Error creating dataset. Could not read schema from "
                  "'bkt/run/results/units/probe=match/model=x/u.parquet'. Is this a 'parquet' file?: " + cause)
    text = str(as_user_error(err))
    assert text.startswith("cannot read bkt/run/results/units/probe=match/model=x/u.parquet: S3: cannot reach "
                           "the endpoint http://127.0.0.1:9"), text
    bad = pa.ArrowInvalid("Error creating dataset. Could not read schema from 'a/b.parquet'. Is this a 'parquet' "
                          "file?: Parquet magic bytes not found in footer. Either the file is corrupted or this "
                          "is not a parquet file.")
    assert str(as_user_error(bad)) == ("cannot read a/b.parquet: Parquet magic bytes not found in footer. Either "
                                       "the file is corrupted or this is not a parquet file.")
    missing = OSError("When listing objects under key 'run' in bucket 'nob': AWS Error NO_SUCH_BUCKET during "
                      "ListObjectsV2 operation: The specified bucket does not exist")
    assert "bucket nob does not exist" in str(as_user_error(missing))


def test_other_errors_keep_their_tracebacks() -> None:
    assert as_user_error(KeyError("x")) is None
    assert as_user_error(_wrapped(KeyError("x"))) is None
