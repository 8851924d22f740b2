"""``conduit bundle``: one file with Conduit, chosen plugins and a frozen index.

``build.py`` writes a bundle (a PEP 441 zip application made with the standard library's
``zipapp``), ``boot.py`` is its ``__main__.py`` (copied into the bundle, never imported
here). See docs/user-guide.md, "Bundling Conduit for colleagues and CI".
"""
