"""vigorl_env: grounded visual reasoning as registered Gymnasium environments."""
from vigorl_env.errors import DataFormatError, DataNotFoundError

__all__ = ["DataFormatError", "DataNotFoundError"]
