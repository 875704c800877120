"""The only places that use other libraries' private names, one module per library.

Everything else in tiltedsam goes through public APIs.  Each module lists what it uses, why no
public way exists, and the release it was checked against; ``self_check()`` exercises every
name and returns what no longer works, and ``tests/test_compat.py`` fails with the library
version that broke it (run ``make test-latest`` before bumping the lock).
"""
