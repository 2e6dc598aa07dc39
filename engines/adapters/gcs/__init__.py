"""The GCS BlobStore: objects ``{prefix}{tenant}/{name}`` in the routing entry's bucket.

The bucket is provisioned outside the service (it is never created here). The storage SDK is
synchronous, so calls run in worker threads; it honours ``STORAGE_EMULATOR_HOST``. The SDK is
imported only by :mod:`.adapters`.
"""
