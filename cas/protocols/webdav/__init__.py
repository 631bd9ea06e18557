"""WebDAV drive: wsgidav over the Store, mounted at ``/dav`` (see ``app.make_app``).

Modules: ``app`` (the WSGI stack), ``provider`` (namespace and resources),
``lock`` (lock storage in the index), ``auth`` (Basic / Bearer), ``error``
(CasError -> DAV status).
"""
