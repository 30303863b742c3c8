"""Settings of the users service."""

from __future__ import annotations

from dataclasses import dataclass

from mesh.backing_settings import StoreUrls
from mesh.settings import Env


@dataclass(frozen=True, slots=True)
class UsersSettings:
    stores: StoreUrls
    # argon2id cost; OWASP's floor is m=19 MiB, t=2, p=1.
    argon2_memory_kib: int
    argon2_time_cost: int
    hashing_threads: int

    @classmethod
    def from_env(cls, env: Env) -> UsersSettings:
        return cls(
            stores=StoreUrls.from_env(env),
            argon2_memory_kib=env.int("MESH_USERS_ARGON2_MEMORY_KIB", 19 * 1024, minimum=19 * 1024),
            argon2_time_cost=env.int("MESH_USERS_ARGON2_TIME_COST", 2, minimum=2),
            hashing_threads=env.int("MESH_USERS_HASHING_THREADS", 2, minimum=1, maximum=64),
        )
