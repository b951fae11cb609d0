"""The embedded Tinker-compatible server (extra: ``server``).

Run it with ``tinkex server`` or ``python -m tinkex_actors.server``; build the ASGI app in
code with :func:`tinkex_actors.server.app.create_app`. See ``docs/server.md``. Importing this
package is cheap: FastAPI, uvicorn and the engines load only when used.
"""
