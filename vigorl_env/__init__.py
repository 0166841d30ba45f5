"""vigorl_env: grounded visual reasoning as registered Gymnasium environments.

`import vigorl_env` registers the env ids (`ViGoRL/SynthSearch-v0`, `ViGoRL/VStar-v0`, …; see
docs/envs.md#env-ids).
"""

from vigorl_env.errors import DataFormatError, DataNotFoundError
from vigorl_env.registration import ENV_IDS, PROCEDURAL_IDS, UPSTREAM_IDS, register_all

register_all()

__all__ = ["ENV_IDS", "PROCEDURAL_IDS", "UPSTREAM_IDS", "DataFormatError", "DataNotFoundError"]
__version__ = "0.1.0"
