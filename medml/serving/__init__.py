"""HTTP serving of a registered model that follows its alias (``NAME@champion``).

``create_app`` builds the ASGI app (FastAPI); ``serve`` runs it with uvicorn. A background
thread polls the registry and swaps in the version the alias points at, without a restart;
concurrent requests are micro-batched into one ``predict`` call. Nothing here imports
MLflow or PyTorch at import time, and nothing imports Prefect.
"""

from medml.serving.app import DEFAULT_MAX_BODY_BYTES, create_app, serve

__all__ = ["DEFAULT_MAX_BODY_BYTES", "create_app", "serve"]
