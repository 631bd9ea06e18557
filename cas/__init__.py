"""cas: a content-addressed, deduplicating storage server.

Public API: ``Store`` (buckets, objects, uploads, users, journal), ``load_settings``
and ``Settings``, and the error tree in ``cas.errors``.
"""

__version__ = "0.1.0"

from .config import Settings, load_settings  # noqa: E402
from .errors import CasError  # noqa: E402
from .store import BucketInfo, Listing, ObjectInfo, ObjectReader, PartInfo, Store, UploadInfo  # noqa: E402

__all__ = ["BucketInfo", "CasError", "Listing", "ObjectInfo", "ObjectReader", "PartInfo", "Settings",
           "Store", "UploadInfo", "load_settings", "__version__"]
