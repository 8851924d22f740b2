"""The index builder: the rebuild side of :mod:`conduit.index`, never on the start-up path.

- ``discover``: where plugins come from (built-ins, entry points, single files,
  WebAssembly modules, executables); ``ENTRY_POINT_GROUP``
- ``build``: manifests to records, API checks, resolution, routes and events; ``rebuild()``
  and ``load()``, the index reader with this builder injected
- ``resolve``: dependency resolution between plugins
- ``records``: the ``TypedDict`` shapes of the index (imported under ``TYPE_CHECKING`` only)

Nothing is imported here: ``conduit.indexer.records`` is named by type annotations on the
start-up path and must not pull in the builder.
"""
