"""The ``mvc`` command-line interface, thin over ``mvcstore.repo``.

Each module holds one command family: it parses options, calls the ``Repo``
API and formats the result. No storage logic lives here. ``main`` owns the
click group and the one error handler that turns an ``MvcError`` into an
``error:`` line, a ``hint:`` line and exit status 1.
"""

__all__: list[str] = []
