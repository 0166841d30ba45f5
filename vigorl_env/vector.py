"""Vector entry point: `gym.make_vec(id, num_envs=n)` gives an async vector env that works.

Observations are variable-size images and free text, which gymnasium's fixed-size shared memory
cannot hold, so the workers send observations through their pipes (`shared_memory=False`). An
explicit `vectorization_mode="async"` needs `vector_kwargs={"shared_memory": False}` for the same
reason; `"sync"` works as it is.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import gymnasium as gym

from vigorl_env.registration import ENV_ID_OF


def async_vector_env(
    num_envs: int = 1, *, benchmark: str, **kwargs: Any
) -> gym.vector.AsyncVectorEnv:
    env_id = ENV_ID_OF[benchmark]
    return gym.vector.AsyncVectorEnv(
        [partial(gym.make, env_id, **kwargs)] * num_envs, shared_memory=False
    )
