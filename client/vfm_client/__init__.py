"""Client for the Midnight, Derm Foundation and SAFE detector Trusses, and the `vfm` command.

    from vfm_client import MidnightClient
    client = MidnightClient("https://model-<id>.api.baseten.co/environments/production/predict",
                            api_key="...")            # or BASETEN_API_KEY in the environment
    embeddings = client.embed(["tile1.png", "tile2.png"], task="classification")   # (2, 3072)
"""

__version__ = "0.1.0"

from vfm_client.derm import DermClient
from vfm_client.errors import ItemError, PartialFailureError, RunError, SchemaError
from vfm_client.midnight import MidnightClient
from vfm_client.results import Results
from vfm_client.safe import Detection, SafeClient
from vfm_client.transport import RetryPolicy

__all__ = ["DermClient", "Detection", "ItemError", "MidnightClient", "PartialFailureError",
           "Results", "RetryPolicy", "RunError", "SafeClient", "SchemaError", "__version__"]
