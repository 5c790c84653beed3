"""Storage: asyncpg pools and SQL migrations for PostgreSQL, redis.asyncio clients and key
naming for Redis, and the embedded servers used when no `DATABASE_URL` / `REDIS_URL` is set."""
