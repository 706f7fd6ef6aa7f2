"""``tripletlab serve``: a run's network and an index behind a JSON API and a static page.

- :mod:`~tripletlab.serve.gallery`: :class:`ServeConfig`, :func:`load_gallery` (the run and
  the index given, or one built at start from the run's gallery and cached in the run folder,
  :func:`~tripletlab.serve.gallery.start_index`) and :class:`Gallery`, which
  answers every API question without any web library (uploads checked by
  :func:`read_upload`: 413 over the limit, 400 for what is not a readable grey or colour
  image, 404 for an unknown item, 422 for ``k`` out of range).
- :mod:`~tripletlab.serve.app`: :func:`create_app` (FastAPI, testable in-process) and
  :func:`serve` (uvicorn), the optional ``[serve]`` extra: without it this package still
  imports and :func:`require_web` says how to install it.

The page (``static/``: HTML, JavaScript and CSS, no build step, no library, nothing fetched
from another origin) searches by upload or by item, shows the verdict, a 2-D map of the
gallery and the run's metrics with each class's precision@1 (computed once in a background
thread started with the app; the page asks again while it is computing).
"""

from tripletlab.serve.app import WEB_MISSING, create_app, require_web, serve
from tripletlab.serve.gallery import (
    MAX_K,
    MAX_PIXELS,
    Gallery,
    RequestError,
    ServeConfig,
    ServeError,
    gallery_map,
    is_loopback,
    load_gallery,
    read_upload,
)

__all__ = [
    "MAX_K",
    "MAX_PIXELS",
    "WEB_MISSING",
    "Gallery",
    "RequestError",
    "ServeConfig",
    "ServeError",
    "create_app",
    "gallery_map",
    "is_loopback",
    "load_gallery",
    "read_upload",
    "require_web",
    "serve",
]
