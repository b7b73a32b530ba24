"""REST routers: every module here that defines ``router`` is included under ``/api/v1`` by ``app.create_app``."""
