"""The WebDAV resources over the Store: the root, buckets, folders and objects (wsgidav's
``DAVCollection`` / ``DAVNonCollection``), and the dead properties they keep.

Mapping (DESIGN §1): ``/`` lists the buckets the caller may see (``cas.access``); ``/BUCKET``
is a bucket; ``/BUCKET/dir`` a folder and ``/BUCKET/dir/file`` an object, as
``cas.namespace`` defines them (markers, a file wins over a folder of the same name, a
listing hides the folder's own marker). These classes only translate wsgidav's calls into
Namespace and Store calls; folder rules are not written here.

Dead properties live with their resource: in the object record (``store.set_props``) for
files, on the folder's marker object for folders (the marker is created when a folder
without one gets a property), and in ``store.kv_*`` (namespace ``davprops``) for buckets.
They therefore move, copy and vanish with the resource without extra bookkeeping.

Every Store call runs inside ``dav_errors()``; resources are per request and hold no locks.
"""

from __future__ import annotations

import base64
import binascii
import json
from urllib.parse import quote

from wsgidav import util, xml_tools
from wsgidav.dav_error import (
    HTTP_BAD_REQUEST,
    HTTP_INSUFFICIENT_STORAGE,
    HTTP_NOT_FOUND,
    DAVError,
)
from wsgidav.dav_provider import DAVCollection, DAVNonCollection
from wsgidav.util import etree

from cas import access, errors

from .content import ObjectStream, PutWriter, parse_mtime
from .error import dav_errors, forbidden, to_dav_error

NS_PROPS = "davprops"  # bucket name -> JSON {clark name: xml}
QUOTA_USED = "{DAV:}quota-used-bytes"
QUOTA_AVAILABLE = "{DAV:}quota-available-bytes"
#: ownCloud's checksum property (rclone with vendor=owncloud reads it to verify transfers)
OC_CHECKSUMS = "{http://owncloud.org/ns}checksums"
MAX_PROP_VALUE = 64 << 10  # bytes of one dead property value
MAX_PROPS = 1 << 20  # bytes of all dead properties of one resource

#: object headers (stored lower-case) that GET passes on, with their wire spelling
_PASSED_HEADERS = {
    "content-disposition": "Content-Disposition",
    "content-encoding": "Content-Encoding",
    "content-language": "Content-Language",
    "cache-control": "Cache-Control",
    "expires": "Expires",
}


# ======================================================================================
# dead properties
# ======================================================================================


def _prop_text(value) -> str:
    text = etree.tostring(value, encoding="unicode")
    if len(text.encode()) > MAX_PROP_VALUE:
        raise DAVError(HTTP_INSUFFICIENT_STORAGE, context_info="property value too large")
    return text


class _DeadProps:
    """Mixin: dead properties kept by the resource (``_props`` / ``_write_props``)."""

    def _props(self) -> dict[str, str]:
        raise NotImplementedError

    def _write_props(self, set_: dict[str, str], remove: list[str]) -> None:
        raise NotImplementedError

    def get_property_names(self, *, is_allprop):
        names = super().get_property_names(is_allprop=is_allprop)
        # RFC 4331: quota properties are not returned by allprop / propname
        names = [n for n in names if n not in (QUOTA_USED, QUOTA_AVAILABLE)]
        names.extend(self._props())
        return names

    def get_property_value(self, name):
        if name in (QUOTA_USED, QUOTA_AVAILABLE):
            value = self._quota(name)
            if value is None:
                raise DAVError(HTTP_NOT_FOUND)
            return str(value)
        if not name.startswith("{DAV:}"):
            value = self._props().get(name)
            if value is None:
                raise DAVError(HTTP_NOT_FOUND)
            return xml_tools.string_to_xml(value)
        return super().get_property_value(name)

    def set_property_value(self, name, value, *, dry_run=False):
        if name.startswith("{DAV:}"):
            return super().set_property_value(name, value, dry_run=dry_run)
        if value is None:
            if not dry_run:
                self._write_props({}, [name])
            return True
        text = _prop_text(value)
        current = self._props()
        total = sum(len(k) + len(v) for k, v in current.items() if k != name) + len(name) + len(text)
        if total > MAX_PROPS:
            raise DAVError(HTTP_INSUFFICIENT_STORAGE, context_info="too many properties")
        if not dry_run:
            self._write_props({name: text}, [])
        return True

    def _quota(self, name: str) -> int | None:
        return None



# ======================================================================================
# resources
# ======================================================================================


class _Collection(_DeadProps, DAVCollection):
    """A bucket or a folder: the keys under ``prefix`` in ``bucket``."""

    bucket: str
    prefix: str

    def provider_href(self, key: str) -> str:
        return quote(self.provider.mount_path + "/" + self.bucket + "/" + key)

    def _user(self) -> str:
        return self.provider.user(self.environ)

    # -- members ------------------------------------------------------------------------
    def get_member_names(self):
        with dav_errors():
            return [name for name, _ in self.provider.ns.members(self.bucket, self.prefix)]

    def get_member_list(self):
        out = []
        base = self.path.rstrip("/")
        with dav_errors():
            members = list(self.provider.ns.members(self.bucket, self.prefix))
        for name, info in members:
            path = base + "/" + name
            if info is None:
                out.append(FolderCollection(path, self.environ, self.bucket, self.prefix + name + "/"))
            else:
                out.append(ObjectResource(path, self.environ, self.bucket, info.key, info))
        return out

    # -- creating members ---------------------------------------------------------------
    def create_empty_resource(self, name: str):
        self.provider.check_writable(self.environ)
        key = self.prefix + name
        path = self.path.rstrip("/") + "/" + name
        if self.environ["REQUEST_METHOD"] == "LOCK":
            # RFC 4918 §7.3: LOCK on an unmapped URL creates an empty resource. wsgidav
            # checks for conflicting locks only after this call: check the parent first,
            # so a collection locked by someone else does not gain a member.
            self.provider.check_tree_unlocked(self, self.environ, "0")
            with dav_errors():
                info = self.provider.store.put(
                    self.bucket, key, b"", user=self._user(),
                    content_type=util.guess_mime_type(name))
            return ObjectResource(path, self.environ, self.bucket, key, info)
        # PUT: nothing is bound until the body has arrived (see ObjectResource.begin_write)
        return ObjectResource(path, self.environ, self.bucket, key, None)

    def create_collection(self, name: str):
        self.provider.check_writable(self.environ)
        mtime = parse_mtime(self.environ)
        with dav_errors():
            self.provider.ns.make_folder(self.bucket, self.prefix + name, user=self._user(), mtime=mtime)

    # -- DELETE / COPY / MOVE -----------------------------------------------------------
    def support_recursive_delete(self):
        return True

    def handle_delete(self):
        self.provider.check_writable(self.environ)
        self.provider.check_tree_unlocked(self, self.environ, "infinity")
        errs = self.delete_tree()
        self.provider.drop_locks(self.path, self.environ)
        return errs or True

    def delete(self):
        return self.delete_tree()

    def delete_tree(self) -> list:
        """Delete every key under the prefix and, for a bucket, the bucket; an error list.

        A folder's parent stays a folder (``cas.namespace``); dead properties of a bucket go
        with it (``Store.delete_bucket`` drops its kv records).
        """
        user = self._user()
        with dav_errors():
            if self.prefix:
                result = self.provider.ns.delete_tree(self.bucket, self.prefix, user=user)
            else:
                result = self.provider.ns.delete_bucket(self.bucket, user=user, recursive=True)
        if not self.prefix and result.ok:
            self.provider.forget_bucket(self.bucket, self.environ)
        return [(self.provider_href(key), to_dav_error(exc)) for key, exc in result.errors]

    def handle_copy(self, dest_path, *, depth_infinity):
        return self.provider.transfer(self, dest_path, move=False, depth_infinity=depth_infinity)

    def handle_move(self, dest_path):
        return self.provider.transfer(self, dest_path, move=True)

    def support_recursive_move(self, dest_path):
        return False

    # -- quota ----------------------------------------------------------------------------
    def _quota(self, name: str) -> int | None:
        if name == QUOTA_AVAILABLE:
            return self.provider.quota_available()
        return self.provider.used_bytes(self.bucket, self.prefix)


class RootCollection(_DeadProps, DAVCollection):
    """``/``: the buckets the user may see."""

    def get_display_name(self):
        return ""

    def _buckets(self):
        with dav_errors():
            return access.visible_buckets(self.provider.store, self.provider.principal(self.environ))

    def get_member_names(self):
        return [b.name for b in self._buckets()]

    def get_member_list(self):
        return [BucketCollection("/" + b.name, self.environ, b) for b in self._buckets()]

    def create_collection(self, name: str):
        self.provider.check_writable(self.environ)
        try:
            with dav_errors():
                self.provider.store.create_bucket(name, owner=self.provider.user(self.environ))
            self.provider.forget_bucket(name, self.environ)
        except DAVError as exc:
            if isinstance(exc.__cause__, errors.AlreadyExists):
                # exists, but not for this user (else MKCOL would have said 405)
                raise forbidden("that bucket name is taken") from exc
            if isinstance(exc.__cause__, errors.InvalidName):
                raise forbidden(exc.__cause__.message) from exc
            raise

    def create_empty_resource(self, name: str):
        raise forbidden("only buckets (collections) can live at the top level")

    def _props(self):
        return {}

    def _write_props(self, set_, remove):
        raise forbidden("the root collection has no properties")

    def set_property_value(self, name, value, *, dry_run=False):
        if not name.startswith("{DAV:}"):
            self._write_props({}, [])  # refuses, in the dry run already
        return super().set_property_value(name, value, dry_run=dry_run)

    def _quota(self, name: str) -> int | None:
        if name == QUOTA_AVAILABLE:
            return self.provider.quota_available()
        return sum(self.provider.used_bytes(b.name, "") for b in self._buckets())

    def handle_delete(self):
        raise forbidden("cannot delete the root")

    def handle_copy(self, dest_path, *, depth_infinity):
        raise forbidden("cannot copy the root")

    def handle_move(self, dest_path):
        raise forbidden("cannot move the root")

    def support_recursive_delete(self):
        return False


class BucketCollection(_Collection):
    """``/BUCKET``."""

    def __init__(self, path: str, environ: dict, binfo):
        super().__init__(path, environ)
        self.bucket = binfo.name
        self.prefix = ""
        self.binfo = binfo

    def get_creation_date(self):
        return self.binfo.created

    def get_last_modified(self):
        return self.binfo.created

    def set_last_modified(self, dest_path, time_stamp, *, dry_run):
        return True  # a bucket has no settable time

    def _props(self) -> dict[str, str]:
        with dav_errors():
            raw = self.provider.store.kv_get(NS_PROPS, self.bucket)
        return json.loads(raw) if raw else {}

    def _write_props(self, set_, remove):
        # read-modify-write of one kv record in one txn: concurrent PROPPATCHes of one bucket, on
        # any node, each apply to what the other wrote
        with dav_errors(), self.provider.store.kv_write() as kv:
            raw = kv.get(NS_PROPS, self.bucket)
            props = json.loads(raw) if raw else {}
            props.update(set_)
            for name in remove:
                props.pop(name, None)
            if props:
                kv.put(NS_PROPS, self.bucket, json.dumps(props).encode())
            else:
                kv.delete(NS_PROPS, self.bucket)


_UNKNOWN = object()


class FolderCollection(_Collection):
    """``/BUCKET/dir``: keys under ``dir/``; ``marker`` is the ``dir/`` object, if any."""

    def __init__(self, path: str, environ: dict, bucket: str, prefix: str, marker=_UNKNOWN):
        super().__init__(path, environ)
        self.bucket = bucket
        self.prefix = prefix
        self._marker = marker

    @property
    def marker(self):
        """The ``dir/`` marker object (looked up on first use), or None."""
        if self._marker is _UNKNOWN:
            with dav_errors():
                self._marker = self.provider.ns.marker(self.bucket, self.prefix)
        return self._marker

    def get_creation_date(self):
        m = self.marker
        return m.mtime if m is not None else None

    def get_last_modified(self):
        m = self.marker
        return m.mtime if m is not None else None

    def set_last_modified(self, dest_path, time_stamp, *, dry_run):
        secs = time_stamp if isinstance(time_stamp, (int, float)) else util.parse_time_string(time_stamp)
        if secs is None:
            raise DAVError(HTTP_BAD_REQUEST, context_info="invalid time")
        if not dry_run:
            with dav_errors():
                if self.marker is None:
                    self._marker = self.provider.ns.make_folder(self.bucket, self.prefix, user=self._user(),
                                                                mtime=float(secs))
                else:
                    self._marker = self.provider.store.touch(self.bucket, self.prefix, float(secs))
        return True

    def _props(self) -> dict[str, str]:
        m = self.marker
        return dict(m.props or {}) if m is not None else {}

    def _write_props(self, set_, remove):
        store = self.provider.store
        with dav_errors():
            if self.marker is None:
                if not set_:
                    return
                self._marker = self.provider.ns.make_folder(self.bucket, self.prefix, user=self._user(),
                                                            props=set_)
            else:
                self._marker = store.set_props(self.bucket, self.prefix, set=set_ or None, remove=remove)


class ObjectResource(_DeadProps, DAVNonCollection):
    """``/BUCKET/key``: one object; ``info`` is None for a PUT target not yet written."""

    def __init__(self, path: str, environ: dict, bucket: str, key: str, info):
        super().__init__(path, environ)
        self.bucket = bucket
        self.key = key
        self.info = info

    def _user(self) -> str:
        return self.provider.user(self.environ)

    # -- live properties ----------------------------------------------------------------
    def get_content_length(self):
        return self.info.size if self.info is not None else 0

    def get_content_type(self):
        ctype = self.info.content_type if self.info is not None else None
        return ctype or util.guess_mime_type(self.path)

    def get_creation_date(self):
        return self.info.mtime if self.info is not None else None

    def get_last_modified(self):
        return self.info.mtime if self.info is not None else None

    def get_etag(self):
        return self.info.etag if self.info is not None else None

    def support_etag(self):
        return True

    def finalize_headers(self, environ, response_headers):
        """GET/HEAD: the representation headers stored with the object (e.g. set over S3)."""
        if self.info is None:
            return
        present = {k.lower() for k, _ in response_headers}
        for name, value in (self.info.headers or {}).items():
            if name.lower() in _PASSED_HEADERS and name.lower() not in present:
                response_headers.append((_PASSED_HEADERS[name.lower()], value))

    def get_property_value(self, name):
        if name == "{DAV:}getetag" and self.info is not None:
            return f'"{self.info.etag}"'  # RFC 4918 §15.6: the entity tag, quotes included
        if name == OC_CHECKSUMS and self.info is not None:
            sums = []
            sha1 = (self.info.checksums or {}).get("sha1")
            if sha1:
                try:
                    sums.append("SHA1:" + base64.b64decode(sha1).hex())
                except (binascii.Error, ValueError):
                    pass
            if "-" not in self.info.etag:  # a single-part object's ETag is the MD5 of its bytes
                sums.append("MD5:" + self.info.etag)
            if not sums:
                raise DAVError(HTTP_NOT_FOUND)
            el = etree.Element(OC_CHECKSUMS)
            etree.SubElement(el, "{http://owncloud.org/ns}checksum").text = " ".join(sums)
            return el
        return super().get_property_value(name)

    def support_ranges(self):
        return True

    def set_last_modified(self, dest_path, time_stamp, *, dry_run):
        secs = time_stamp if isinstance(time_stamp, (int, float)) else util.parse_time_string(time_stamp)
        if secs is None:
            raise DAVError(HTTP_BAD_REQUEST, context_info="invalid time")
        if not dry_run and self.info is not None and self.info.mtime != float(secs):
            with dav_errors():
                self.info = self.provider.store.touch(self.bucket, self.key, float(secs))
        return True

    # -- dead properties ----------------------------------------------------------------
    def _props(self) -> dict[str, str]:
        return dict(self.info.props or {}) if self.info is not None else {}

    def _write_props(self, set_, remove):
        with dav_errors():
            self.info = self.provider.store.set_props(self.bucket, self.key, set=set_ or None, remove=remove)

    # -- content --------------------------------------------------------------------------
    def get_content(self):
        return ObjectStream(self.provider.store, self.bucket, self.key, self.info)

    def begin_write(self, *, content_type=None):
        self.provider.check_writable(self.environ)
        return PutWriter(self, content_type)

    def end_write(self, *, with_errors):
        pass

    # -- DELETE / COPY / MOVE -----------------------------------------------------------
    def handle_delete(self):
        self.provider.check_writable(self.environ)
        self.provider.check_tree_unlocked(self, self.environ, "0")
        with dav_errors():
            self.provider.ns.delete(self.bucket, self.key, user=self._user())  # its folder stays
        self.provider.drop_locks(self.path, self.environ)
        return True

    def delete(self):
        with dav_errors():
            self.provider.store.delete(self.bucket, self.key, user=self._user())
        self.provider.drop_locks(self.path, self.environ)

    def handle_copy(self, dest_path, *, depth_infinity):
        return self.provider.transfer(self, dest_path, move=False)

    def handle_move(self, dest_path):
        return self.provider.transfer(self, dest_path, move=True)

    def support_recursive_move(self, dest_path):
        return False
